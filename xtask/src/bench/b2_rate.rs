//! B2: packet rate on a real path. `trafgen` in one namespace floods UDP
//! over a veth pair into another, whose `r0` is filtered by (a) nothing,
//! (b) sgctl on tcx, (c) sgctl on XDP, (d) the `sgctl export nftables`
//! ruleset (the form an nftables expert writes: one concatenated interval
//! map lookup per interface, direction and family), (e) the same exported
//! `--linear` (one nftables rule per rule and CIDR); at 10, 100, 1,000 and
//! 10,000 rules; a flood no rule allows (UDP 9) and one the last rule allows (UDP
//! 5001, 4,352 flows). The whole path (generator, veth, verdict, UDP
//! layer) runs on the generator's core, so packets per second at the
//! receiver are packets per second per core.
use std::{
    net::UdpSocket,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::json;
use testlab::{Lab, LabHost};

use super::{
    flood::{self, Flood, Wire},
    harness::{self, cell, median, ratio, Bench, Report, Sgctl},
    policies::{self, IFACE},
};

const ROUNDS: usize = 3;
const WARMUP: Duration = Duration::from_millis(400);
const WINDOW: Duration = Duration::from_millis(1200);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    None,
    SgctlTc,
    SgctlXdp,
    NftExpert,
    NftLinear,
}

const VARIANTS: [Variant; 5] =
    [Variant::None, Variant::SgctlTc, Variant::SgctlXdp, Variant::NftExpert, Variant::NftLinear];

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::SgctlTc => "sgctl tcx",
            Self::SgctlXdp => "sgctl XDP",
            Self::NftExpert => "nft expert",
            Self::NftLinear => "nft linear",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    Dropped,
    Allowed,
}

/// (label, rules, CIDRs per filler rule): "10,000 rules" is 1,000 rules of
/// 10 CIDRs, 10,000 rules in the linear export (sgctl takes at most 1,024
/// rules per interface; AWS at most 1,000).
const SIZES: [(&str, usize, usize); 4] = [("10", 10, 1), ("100", 100, 1), ("1,000", 1000, 1), ("10,000", 1000, 10)];

struct Size {
    label: &'static str,
    policy: PathBuf,
    expert: PathBuf,
    linear: PathBuf,
}

pub fn run(b: &Bench) -> anyhow::Result<Report> {
    let dir = b.dir("b2")?;
    let lab = Lab::new("b2")?;
    let gen = lab.host("gen", &[])?;
    let rcv = lab.host("rcv", &[])?;
    let wire = flood::wire_up(&lab, &gen, &rcv, IFACE)?;
    // The allowed flood's sink: bound, never read (its queue fills, then
    // the UDP layer drops and counts).
    let _sink = rcv.in_netns(|| UdpSocket::bind(("198.19.0.1", policies::ALLOWED_UDP))).context("UDP sink")?;
    let sg = Sgctl { bin: &b.sgctl, state: lab.state_dir()?, lib: lab.lib_dir()?, netns: rcv.netns().to_owned() };

    let mut sizes = Vec::new();
    for (label, rules, per_rule) in SIZES {
        let name = format!("b2-rules-{rules}x{per_rule}");
        let policy = policies::write(&dir, &name, &policies::rules_policy(rules, per_rule, false, None))?;
        let export = |linear: bool| -> anyhow::Result<PathBuf> {
            let attach = format!("{IFACE}={}", policies::GROUP);
            let mut args = vec!["export", "nftables", policy.to_str().unwrap_or_default(), "--attach", &attach];
            if linear {
                args.push("--linear");
            }
            let path = dir.join(format!("{name}{}.nft", if linear { "-linear" } else { "" }));
            std::fs::write(&path, sg.run(&args)?)?;
            Ok(path)
        };
        sizes.push(Size { label, expert: export(false)?, linear: export(true)?, policy });
    }

    // samples[size][variant][flow]
    let mut samples = vec![vec![[Vec::new(), Vec::new()]; VARIANTS.len()]; sizes.len()];
    for (s, size) in sizes.iter().enumerate() {
        sg.run(&["apply", size.policy.to_str().unwrap_or_default()])?;
        for round in 0..ROUNDS {
            for (v, &variant) in VARIANTS.iter().enumerate() {
                setup(&sg, &rcv, variant, size)?;
                for (f, flow) in [Flow::Dropped, Flow::Allowed].into_iter().enumerate() {
                    let pps = measure(b, &gen, &rcv, &sg, &wire, variant, flow)?;
                    println!(
                        "b2: {} rules, round {round}, {:<10} {:<7}: {:>9.0} pps",
                        size.label,
                        variant.label(),
                        if flow == Flow::Dropped { "dropped" } else { "allowed" },
                        pps
                    );
                    samples[s][v][f].push(pps);
                }
                teardown(&sg, &rcv, variant)?;
            }
        }
    }

    let mut report = Report::new("b2", "packet rate on a real path (veth, UDP floods, one core)");
    let mut json_rows = Vec::new();
    for (f, flow) in
        ["dropped (no rule allows UDP 9)", "allowed (the last rule allows UDP 5001; 4,352 flows)"].iter().enumerate()
    {
        let mut rows = Vec::new();
        for (s, size) in sizes.iter().enumerate() {
            let m: Vec<f64> = (0..VARIANTS.len()).map(|v| median(&samples[s][v][f])).collect();
            let mut row = vec![size.label.to_owned()];
            row.extend(m.iter().map(|pps| cell(pps / 1e3, 0)));
            row.push(ratio(m[2], m[3]));
            row.push(ratio(m[1], m[3]));
            row.push(ratio(m[1], m[4]));
            row.push(ratio(m[1], m[0]));
            rows.push(row);
            for (v, variant) in VARIANTS.iter().enumerate() {
                json_rows.push(json!({
                    "flood": if f == 0 { "dropped" } else { "allowed" },
                    "rules": size.label, "variant": variant.label(),
                    "pps_median": m[v], "pps_samples": samples[s][v][f],
                }));
            }
        }
        report.table(
            &format!("Flood {flow}: thousand packets per second at the receiver (median of {ROUNDS})"),
            &[
                "rules",
                "none",
                "sgctl tcx",
                "sgctl XDP",
                "nft expert",
                "nft linear",
                "XDP / nft expert",
                "tcx / nft expert",
                "tcx / nft linear",
                "tcx / none",
            ],
            &rows,
        );
    }
    report.note(
        "Counted at the receiver: for the dropped flood, the firewall's own drop counter (sgctl `dropped_no_rule`, \
         nft `r0/inbound/dropped_no_rule`; with no firewall, the UDP layer's count); for the allowed flood, the \
         datagrams that reached the receiver's UDP layer (`/proc/net/snmp` InDatagrams + InErrors + NoPorts). \
         trafgen runs as one process pinned to CPU 0 and the veth receive path runs in its softirq on the same \
         CPU, so these are packets per second on one core. '10,000 rules' is 1,000 rules of 10 CIDRs each: \
         10,000 rules in the linear export, still one lookup per family in the expert export (its maps hold \
         one element per address range and port range: about 10,000); sgctl takes at most 1,024 rules per \
         interface. The allowed rule is the last one, the worst place for a linear ruleset. nftables tracks a \
         UDP flow that never saw a reply as `ct state new`, so every allowed packet is judged again (a map \
         lookup in the expert form, a walk of the rules in the linear one); sgctl tracks it after its first \
         packet.",
    );
    report.json["results"] = json!(json_rows);
    Ok(report)
}

fn setup(sg: &Sgctl<'_>, rcv: &LabHost, variant: Variant, size: &Size) -> anyhow::Result<()> {
    match variant {
        Variant::None => {}
        Variant::SgctlTc => drop(sg.run(&["attach", IFACE, "--groups", policies::GROUP, "--mode", "tc"])?),
        Variant::SgctlXdp => drop(sg.run(&["attach", IFACE, "--groups", policies::GROUP, "--mode", "xdp"])?),
        Variant::NftExpert => drop(harness::nft(rcv, &["-f", size.expert.to_str().unwrap_or_default()])?),
        Variant::NftLinear => drop(harness::nft(rcv, &["-f", size.linear.to_str().unwrap_or_default()])?),
    }
    Ok(())
}

fn teardown(sg: &Sgctl<'_>, rcv: &LabHost, variant: Variant) -> anyhow::Result<()> {
    match variant {
        Variant::None => {}
        Variant::SgctlTc | Variant::SgctlXdp => drop(sg.run(&["detach", IFACE])?),
        Variant::NftExpert | Variant::NftLinear => drop(harness::nft(rcv, &["delete", "table", "inet", "sgctl"])?),
    }
    Ok(())
}

/// Packets per second the receiver handled during the window.
fn measure(
    b: &Bench,
    gen: &LabHost,
    rcv: &LabHost,
    sg: &Sgctl<'_>,
    wire: &Wire,
    variant: Variant,
    flow: Flow,
) -> anyhow::Result<f64> {
    let count = || -> anyhow::Result<u64> {
        match (flow, variant) {
            (Flow::Allowed, _) | (Flow::Dropped, Variant::None) => flood::udp_received(rcv),
            (Flow::Dropped, Variant::SgctlTc | Variant::SgctlXdp) => {
                Ok(harness::iface_count(&sg.stats()?, "dropped_no_rule"))
            }
            (Flow::Dropped, Variant::NftExpert | Variant::NftLinear) => {
                harness::nft_counter(rcv, &format!("{IFACE}/inbound/dropped_no_rule"))
            }
        }
    };
    let port = if flow == Flow::Allowed { policies::ALLOWED_UDP } else { policies::DROPPED_PORT };
    let limit = WARMUP + WINDOW + Duration::from_secs(2);
    let _flood = Flood::start(&b.work, gen, "g0", &flood::udp_config(wire, port), 100_000_000, limit)?;
    std::thread::sleep(WARMUP);
    let (c0, t0) = (count()?, Instant::now());
    std::thread::sleep(WINDOW);
    let (c1, t1) = (count()?, Instant::now());
    Ok((c1.saturating_sub(c0)) as f64 / (t1 - t0).as_secs_f64())
}
