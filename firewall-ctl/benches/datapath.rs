//! `cargo xtask bench`: what a packet costs in the real programs, and what
//! `sgctl apply` costs, each beside a peer measured in the same run.
//!
//! - Per packet: BPF_PROG_TEST_RUN's in-kernel mean time per run, beside an
//!   empty XDP program run the same way. "New flow" needs a fresh flow per
//!   run, so it is measured one run per call over many source ports, with
//!   the empty program measured one run per call too; the other cases
//!   repeat one frame many times in one call.
//! - The same new-flow cost with 3 rules and with 1000 rules: the lookup
//!   does not loop over rules, so the two should match.
//! - `sgctl apply` of the seed's examples in a throwaway namespace, beside
//!   `nft -f` of an equivalent stateful ruleset in the same namespace.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use firewall_common::proto;
use firewall_ctl::{
    compile,
    datapath::{PROG_EGRESS_TC, PROG_INGRESS_TC, PROG_INGRESS_XDP},
    frames::*,
    policy,
    testrun::{Loaded, PROG_EMPTY_XDP},
};

const REPEAT: u32 = 1_000_000;
const NEW_FLOWS: u16 = 10_000;
/// Each figure is the median of this many measurements.
const ROUNDS: usize = 5;

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(nix::unistd::Uid::effective().is_root(), "the benchmark loads eBPF programs: run it as root");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let web = std::fs::read_to_string(root.join("policies/web-server.yaml"))?;

    println!("per-packet cost (BPF_PROG_TEST_RUN, in-kernel mean)");
    let small = load(&web, &["web-server"])?;
    let big = load(&thousand_rules(), &["big"])?;
    let a = |s: &str| -> IpAddr { s.parse().expect("address") };
    let syn = |sport| ip(proto::TCP, a("198.51.100.7"), a("10.0.0.1"), &tcp_seq(sport, 80, TCP_SYN, 1, 0));
    let syn_ack = ip(proto::TCP, a("10.0.0.1"), a("198.51.100.7"), &tcp_seq(80, 9, TCP_SYN | TCP_ACK, 900, 2));
    let ack = ip(proto::TCP, a("198.51.100.7"), a("10.0.0.1"), &tcp_seq(9, 80, TCP_ACK, 2, 901));
    let denied = ip(proto::TCP, a("198.51.100.7"), a("10.0.0.1"), &tcp(9, 8080, TCP_SYN));
    let denied6 = ip(proto::TCP, a("2001:db8::7"), a("2001:db8::1"), &tcp(9, 8080, TCP_SYN));

    let empty = mean(&small, PROG_EMPTY_XDP, &ack, REPEAT)?;
    let empty_single = new_flows(&small, PROG_EMPTY_XDP, syn)?;
    let new_small = new_flows(&small, PROG_INGRESS_XDP, syn)?;
    let new_big = new_flows(&big, PROG_INGRESS_XDP, syn)?;
    // The handshake of the flow `ack` belongs to: established, as a tracked
    // flow mostly is.
    small.run(PROG_INGRESS_XDP, &syn(9), 1)?;
    small.run(PROG_EGRESS_TC, &syn_ack, 1)?;
    small.run(PROG_INGRESS_XDP, &ack, 1)?;
    let rows = [
        ("empty XDP program (baseline)", empty, empty),
        ("XDP: new flow, allowed, 4 rules", new_small, empty_single),
        ("XDP: new flow, allowed, 1000 rules", new_big, empty_single),
        ("XDP: tracked flow", mean(&small, PROG_INGRESS_XDP, &ack, REPEAT)?, empty),
        ("XDP: dropped, no rule (IPv4)", mean(&small, PROG_INGRESS_XDP, &denied, REPEAT)?, empty),
        ("XDP: dropped, no rule (IPv6)", mean(&small, PROG_INGRESS_XDP, &denied6, REPEAT)?, empty),
        ("tc ingress: tracked flow", mean(&small, PROG_INGRESS_TC, &ack, REPEAT)?, empty),
        ("tc ingress: dropped, no rule", mean(&small, PROG_INGRESS_TC, &denied, REPEAT)?, empty),
        (
            "tc egress: reply of tracked flow",
            mean(
                &small,
                PROG_EGRESS_TC,
                &ip(proto::TCP, a("10.0.0.1"), a("198.51.100.7"), &tcp_seq(80, 9, TCP_ACK, 901, 2)),
                REPEAT,
            )?,
            empty,
        ),
    ];
    println!("{:<38} {:>10} {:>14} {:>16}", "case", "ns/packet", "baseline ns", "ratio to baseline");
    for (name, ns, base) in rows {
        println!("{name:<38} {ns:>10.1} {base:>14.1} {:>16.2}", ns / base);
    }

    println!("\nsgctl apply (wall clock, {} runs each: min / median)", APPLY_RUNS);
    apply_bench(&root)?;
    Ok(())
}

fn load(yaml: &str, groups: &[&str]) -> anyhow::Result<Loaded> {
    let policy = policy::parse_sources(&[("bench.yaml".into(), yaml.into())])?;
    let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    Loaded::new(&compile::compile_interface(&policy, &groups, &BTreeMap::new())?)
}

/// A group of 1000 rules: 999 that never match the probe (other ports and
/// sources) and HTTP from anywhere.
fn thousand_rules() -> String {
    let mut y = String::from("groups:\n  big:\n    inbound:\n");
    for i in 0..999u32 {
        y.push_str(&format!(
            "      - {{ protocol: tcp, ports: {}, source: 10.{}.{}.0/24 }}\n",
            1000 + i,
            i / 256,
            i % 256
        ));
    }
    y.push_str("      - { protocol: tcp, ports: 80, source: 0.0.0.0/0 }\n");
    y
}

/// Median over [`ROUNDS`] of the in-kernel mean of `repeat` runs.
fn mean(loaded: &Loaded, program: &str, frame: &[u8], repeat: u32) -> anyhow::Result<f64> {
    let mut rounds = (0..ROUNDS)
        .map(|_| Ok(loaded.run(program, frame, repeat)?.1.as_nanos() as f64))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    Ok(median_f64(&mut rounds))
}

/// Median over [`ROUNDS`] of the mean in-kernel time of one run per call,
/// each call on a source port no round has used (so each opens a flow).
/// `first_port` keeps the programs measured on one `Loaded` apart.
fn new_flows(loaded: &Loaded, program: &str, frame: impl Fn(u16) -> Vec<u8>) -> anyhow::Result<f64> {
    let mut rounds = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS as u16 {
        let first = 10_000 + round * NEW_FLOWS;
        let mut total = Duration::ZERO;
        for sport in first..first + NEW_FLOWS {
            total += loaded.run(program, &frame(sport), 1)?.1;
        }
        rounds.push(total.as_nanos() as f64 / f64::from(NEW_FLOWS));
    }
    Ok(median_f64(&mut rounds))
}

fn median_f64(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

const APPLY_RUNS: usize = 10;

fn apply_bench(root: &Path) -> anyhow::Result<()> {
    let lab = testlab::Lab::new("bench")?;
    let host = lab.host("srv", &["10.0.0.1/24", "fd00::1/64"])?;
    let state = lab.state_dir()?;
    let sgctl = env!("CARGO_BIN_EXE_sgctl");
    let run = |args: &[&str]| -> anyhow::Result<Duration> {
        let start = Instant::now();
        let out = Command::new(sgctl).arg("--state-dir").arg(&state).args(["-n", host.netns()]).args(args).output()?;
        let took = start.elapsed();
        anyhow::ensure!(out.status.success(), "sgctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(took)
    };
    let web = root.join("policies/web-server.yaml");
    let app = root.join("policies/app-server.yaml");
    let db = root.join("policies/database.yaml");
    let (web, app, db) =
        (web.to_str().unwrap_or_default(), app.to_str().unwrap_or_default(), db.to_str().unwrap_or_default());

    let mut first = Vec::new();
    let mut again = Vec::new();
    for _ in 0..APPLY_RUNS {
        first.push(run(&["apply", web])?); // loads, verifies, attaches
        again.push(run(&["apply", web])?); // rewrites maps only
        run(&["detach", "eth0"])?;
    }
    let mut multi = Vec::new();
    run(&["apply", app, db])?;
    run(&["attach", "eth0", "--groups", "app-server"])?;
    for _ in 0..APPLY_RUNS {
        multi.push(run(&["apply", app, db])?);
    }
    run(&["detach", "eth0"])?;

    // The web-server group as a stateful nftables input chain.
    let ruleset = std::env::temp_dir().join(format!("sgctl-bench-{}.nft", std::process::id()));
    std::fs::write(
        &ruleset,
        "flush ruleset\ntable inet bench {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    \
         ct state established,related accept\n    iifname != \"eth0\" accept\n    \
         ip saddr 203.0.113.10 tcp dport 22 accept\n    ip version 4 tcp dport 80 accept\n    tcp dport 443 accept\n  }\n}\n",
    )?;
    let ruleset = ruleset.to_str().unwrap_or_default().to_owned();
    let mut nft = Vec::new();
    for _ in 0..APPLY_RUNS {
        let start = Instant::now();
        let out = host.run(&["nft", "-f", &ruleset])?;
        nft.push(start.elapsed());
        anyhow::ensure!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
    }
    host.run(&["nft", "flush ruleset"])?;
    let _ = std::fs::remove_file(&ruleset);

    let nft_median = median(&mut nft.clone());
    for (name, mut times) in [
        ("web-server.yaml, first apply (load+attach)", first),
        ("web-server.yaml, re-apply (maps only)", again),
        ("app-server.yaml+database.yaml, re-apply", multi),
        ("nft -f equivalent ruleset (peer)", nft),
    ] {
        let min = *times.iter().min().unwrap_or(&Duration::ZERO);
        let med = median(&mut times);
        println!(
            "{name:<46} {:>8.1} ms {:>8.1} ms   {:.2}× nft",
            min.as_secs_f64() * 1e3,
            med.as_secs_f64() * 1e3,
            med.as_secs_f64() / nft_median.as_secs_f64()
        );
    }
    Ok(())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}
