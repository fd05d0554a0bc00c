//! B1 of `cargo xtask bench`: what a packet costs in the real XDP program
//! under BPF_PROG_TEST_RUN, beside an empty XDP program run the same way
//! in the same round (the floor), for the generated policies `cargo xtask
//! bench` writes (10 and 1,000 rules; 10, 10k, 100k and 1M CIDRs; 1M
//! single addresses; 10 rules with per-flow accounting on).
//!
//! Cases, IPv4 and IPv6, each over many different source addresses (not
//! one hot key): a tracked flow (a TCP ACK of a flow opened before), an
//! allowed new flow (a SYN on a fresh flow, one run per call, so the floor
//! is measured one run per call too), a dropped packet (a SYN from an
//! address no rule allows: the lookups miss). Each figure is the median of
//! [`ROUNDS`] rounds.
//!
//! Usage (through `cargo xtask bench b1`):
//! `cargo bench -p firewall-ctl --bench datapath -- --policies DIR --out FILE`.
//! It prints a table and writes one JSON document to FILE.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use firewall_common::proto;
use firewall_ctl::{
    compile,
    datapath::{PROG_EGRESS_TC, PROG_INGRESS_XDP},
    policy::{self, PeerTarget, Policy},
    testing::{
        frames::{ip, tcp, tcp_seq, TCP_ACK, TCP_SYN},
        testrun::{Loaded, PROG_EMPTY_XDP},
    },
};
use ipnet::IpNet;
use rand_xoshiro::{
    rand_core::{Rng as _, SeedableRng as _},
    SplitMix64,
};
use serde_json::{json, Value};

const ROUNDS: usize = 3;
/// Distinct sources per case.
const SOURCES: usize = 32;
/// Runs per source, in one call, for the tracked and dropped cases.
const REPEAT: u32 = 10_000;
/// Fresh flows per round for the new-flow case (one run per call).
const NEW_FLOWS: usize = 3_000;
/// The generated policies, in table order.
/// `rules-10-acct` is `rules-10` with `conntrack: { accounting: true }`:
/// what counting each tracked flow's packets and bytes costs.
const POLICIES: [&str; 8] =
    ["rules-10", "rules-10-acct", "rules-1000", "cidrs-10", "cidrs-10k", "cidrs-100k", "cidrs-1m", "hosts-1m"];
const GROUP: &str = "bench";
const DST4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 1, 0, 0, 0, 1);

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(nix::unistd::Uid::effective().is_root(), "the benchmark loads eBPF programs: run it as root");
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(PathBuf::from);
    let dir = arg("--policies").context("--policies DIR (written by `cargo xtask bench b1`)")?;
    let out = arg("--out").context("--out FILE")?;

    // `--object FILE`: measure another build of the kernel programs;
    // `--only POLICY`: one of the policies (to compare builds quickly).
    let object = arg("--object").map(|p| std::fs::read(&p).with_context(|| format!("{}", p.display()))).transpose()?;
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1));

    let mut rows = Vec::new();
    for name in POLICIES {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        rows.extend(bench_policy(&dir, name, object.as_deref())?);
    }
    let doc = json!({ "rounds": ROUNDS, "sources": SOURCES, "repeat": REPEAT, "new_flows": NEW_FLOWS, "rows": rows });
    std::fs::write(&out, serde_json::to_string_pretty(&doc)?).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// Every case of one policy, or one row saying why it cannot be loaded.
fn bench_policy(dir: &Path, name: &str, object: Option<&[u8]>) -> anyhow::Result<Vec<Value>> {
    let path = dir.join(format!("{name}.yaml"));
    let policy = policy::load_files(&[&path]).with_context(|| format!("{}", path.display()))?;
    let compiled = match compile::compile_interface(&policy, &[GROUP.to_owned()], &BTreeMap::new()) {
        Ok(c) => c,
        Err(e) => {
            println!("{name:<12} not loadable: {e}");
            return Ok(vec![json!({ "policy": name, "status": format!("not loadable: {e}") })]);
        }
    };
    let loaded = match object.map_or_else(|| Loaded::new(&compiled), |o| Loaded::with_object(&compiled, o)) {
        Ok(l) => l,
        Err(e) => {
            println!("{name:<12} not loadable: {e:#}");
            return Ok(vec![json!({ "policy": name, "status": format!("not loadable: {e:#}") })]);
        }
    };
    let mut rng = SplitMix64::seed_from_u64(0xb1);
    let mut rows = Vec::new();
    for v4 in [true, false] {
        let allowed = allowed_sources(&policy, v4, &mut rng);
        let denied: Vec<IpAddr> = (0..SOURCES).map(|_| denied_source(v4, &mut rng)).collect();
        let dst = if v4 { IpAddr::V4(DST4) } else { IpAddr::V6(DST6) };
        // Fresh source ports for every flow this loaded copy ever opens.
        let mut next_port = 1024_u16;
        let mut port = || {
            next_port = next_port.wrapping_add(1).max(1024);
            next_port
        };

        let mut cases: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for _ in 0..ROUNDS {
            // Tracked: one established flow per source (SYN in, SYN-ACK
            // out, ACK in, as a tracked flow mostly is), then its next ACK,
            // in the flow's sequence window, again and again.
            let tracked: Vec<Vec<u8>> = allowed
                .iter()
                .take(SOURCES)
                .map(|&src| {
                    let sport = port();
                    loaded.run(PROG_INGRESS_XDP, &ip(proto::TCP, src, dst, &tcp_seq(sport, 80, TCP_SYN, 1, 0)), 1)?;
                    let syn_ack = tcp_seq(80, sport, TCP_SYN | TCP_ACK, 900, 2);
                    loaded.run(PROG_EGRESS_TC, &ip(proto::TCP, dst, src, &syn_ack), 1)?;
                    let ack = ip(proto::TCP, src, dst, &tcp_seq(sport, 80, TCP_ACK, 2, 901));
                    loaded.run(PROG_INGRESS_XDP, &ack, 1)?;
                    Ok(ack)
                })
                .collect::<anyhow::Result<_>>()?;
            let dropped: Vec<Vec<u8>> =
                denied.iter().map(|&src| ip(proto::TCP, src, dst, &tcp(port(), 80, TCP_SYN))).collect();
            let floor = repeated(&loaded, PROG_EMPTY_XDP, &tracked)?;
            push(&mut cases, "tracked flow", repeated(&loaded, PROG_INGRESS_XDP, &tracked)?, floor);
            push(&mut cases, "dropped packet", repeated(&loaded, PROG_INGRESS_XDP, &dropped)?, floor);
            let fresh: Vec<Vec<u8>> = (0..NEW_FLOWS)
                .map(|i| ip(proto::TCP, allowed[i % allowed.len()], dst, &tcp(port(), 80, TCP_SYN)))
                .collect();
            let floor_single = single(&loaded, PROG_EMPTY_XDP, &fresh)?;
            push(&mut cases, "new flow", single(&loaded, PROG_INGRESS_XDP, &fresh)?, floor_single);
        }
        for (case, (ns, floor)) in cases {
            let (ns, floor) = (median(&ns), median(&floor));
            let family = if v4 { "IPv4" } else { "IPv6" };
            println!(
                "{name:<12} {family} {case:<15} {ns:>8.1} ns  floor {floor:>6.1} ns  above {:>7.1} ns",
                ns - floor
            );
            rows.push(json!({
                "policy": name, "family": family, "case": case,
                "ns": ns, "floor_ns": floor, "above_floor_ns": ns - floor, "status": "ok",
            }));
        }
    }
    Ok(rows)
}

fn push(cases: &mut BTreeMap<&'static str, (Vec<f64>, Vec<f64>)>, case: &'static str, ns: f64, floor: f64) {
    let entry = cases.entry(case).or_default();
    entry.0.push(ns);
    entry.1.push(floor);
}

/// Mean in-kernel time per run over `frames`, each repeated [`REPEAT`] times in one call.
fn repeated(loaded: &Loaded, program: &str, frames: &[Vec<u8>]) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for frame in frames {
        total += loaded.run(program, frame, REPEAT)?.1.as_nanos() as f64;
    }
    Ok(total / frames.len() as f64)
}

/// Mean in-kernel time of one run per call over `frames`.
fn single(loaded: &Loaded, program: &str, frames: &[Vec<u8>]) -> anyhow::Result<f64> {
    let mut total = Duration::ZERO;
    for frame in frames {
        total += loaded.run(program, frame, 1)?.1;
    }
    Ok(total.as_nanos() as f64 / frames.len() as f64)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// 256 addresses the policy's TCP 80 rules allow, spread over its
/// networks: random hosts of random CIDRs of `pl:big` when it has any of
/// the family, else of the rules' own CIDRs.
fn allowed_sources(policy: &Policy, v4: bool, rng: &mut SplitMix64) -> Vec<IpAddr> {
    let family = |n: &IpNet| matches!(n, IpNet::V4(_)) == v4;
    let mut nets: Vec<IpNet> =
        policy.prefix_list("big").map(|p| p.cidrs.iter().copied().filter(family).collect()).unwrap_or_default();
    if nets.is_empty() {
        nets = policy
            .group(GROUP)
            .into_iter()
            .flat_map(|g| &g.inbound)
            .filter(|r| r.ports == policy::Ports::Ranges(vec![policy::PortRange { first: 80, last: 80 }]))
            .flat_map(|r| &r.peers)
            .filter_map(|p| match p.target {
                PeerTarget::Cidr(n) if family(&n) => Some(n),
                _ => None,
            })
            .collect();
    }
    (0..256).map(|_| host_in(nets[(rng.next_u64() % nets.len() as u64) as usize], rng)).collect()
}

/// A random host of `net`.
fn host_in(net: IpNet, rng: &mut SplitMix64) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let host_bits = 32 - u32::from(n.prefix_len());
            let mask = if host_bits == 0 { 0 } else { u32::MAX >> (32 - host_bits) };
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | (rng.next_u64() as u32 & mask)))
        }
        IpNet::V6(n) => {
            let host_bits = 128 - u32::from(n.prefix_len());
            let mask = if host_bits == 0 { 0 } else { u128::MAX >> (128 - host_bits) };
            let r = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | (r & mask)))
        }
    }
}

/// An address no generated policy allows: 198.51.100.0/24 or 2001:db8:8000::/48.
fn denied_source(v4: bool, rng: &mut SplitMix64) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, (rng.next_u64() % 254 + 1) as u8))
    } else {
        IpAddr::V6(Ipv6Addr::from((0x2001_0db8_8000_u128 << 80) | u128::from(rng.next_u64())))
    }
}
