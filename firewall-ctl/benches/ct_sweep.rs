//! What a full conntrack table costs, at the largest `max_entries`
//! (4,194,304): the confirmed IPv4 table filled with live flows, then
//! - a tracked packet of one of them, and a new flow, in the real XDP
//!   program under BPF_PROG_TEST_RUN, beside the same with the table empty:
//!   no packet walks the table, so neither may grow with it;
//! - `sgctl conntrack gc` over it (read every flow, remove the expired:
//!   none), in process context, where the walk now happens instead of in a
//!   packet's softirq (semantics.md item 12; the sweep the datapath ran
//!   when a new flow found the table full is gone).
//!
//! `cargo bench -p firewall-ctl --bench ct_sweep` (as root); prints one
//! line per figure.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use common::{flow, remote, HOST};
use firewall_common::proto;
use firewall_ctl::{
    compile,
    datapath::{clock::clock, PROG_INGRESS_XDP},
    policy,
    testing::{
        frames::{ip, tcp_seq, TCP_ACK, TCP_SYN},
        testrun::Loaded,
    },
};

#[path = "common/mod.rs"]
mod common;

const MAX_ENTRIES: u32 = 4_194_304;
const REPEAT: u32 = 100_000;
const POLICY: &str = "groups:
  bench:
    inbound:
      - { protocol: tcp, ports: 80, source: 0.0.0.0/0 }
    outbound: []
conntrack:
  max_entries: 4194304
";
/// Mean ns of a packet of flow `i`, `REPEAT` runs in one call.
fn tracked_ns(loaded: &Loaded, i: u32) -> anyhow::Result<f64> {
    let (src, sport) = remote(i);
    let frame = ip(proto::TCP, IpAddr::V4(src), IpAddr::V4(HOST), &tcp_seq(sport, 80, TCP_ACK, 1, 1));
    let (_, took) = loaded.run(PROG_INGRESS_XDP, &frame, REPEAT)?;
    Ok(took.as_nanos() as f64)
}

/// Median ns of a new flow (a SYN of a fresh port pair), one run per call.
fn new_flow_ns(loaded: &Loaded, base: u32) -> anyhow::Result<f64> {
    let mut all = Vec::new();
    for n in 0..2_000u32 {
        let src = Ipv4Addr::from(0x0b00_0000 | base | n);
        let frame = ip(proto::TCP, IpAddr::V4(src), IpAddr::V4(HOST), &tcp_seq(4000, 80, TCP_SYN, 1, 0));
        all.push(loaded.run(PROG_INGRESS_XDP, &frame, 1)?.1);
    }
    all.sort();
    Ok(all[all.len() / 2].as_nanos() as f64)
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(nix::unistd::Uid::effective().is_root(), "the benchmark loads eBPF programs: run it as root");
    let policy = policy::parse_sources(&[("sweep.yaml".into(), POLICY.into())]).context("policy")?;
    let compiled = compile::compile_interface(&policy, &["bench".to_owned()], &BTreeMap::new())?;
    let loaded = Loaded::new(&compiled)?;
    let maps = loaded.maps();
    let now = clock().now();
    maps.add_flows((0..16).map(|i| flow(i, proto::TCP, 80, now)))?;
    let opened = maps.conntrack_usage()?.pending_opened;
    let tracked_empty = tracked_ns(&loaded, 3)?;
    anyhow::ensure!(maps.conntrack_usage()?.pending_opened == opened, "the flows built here are not the datapath's");
    let empty = (tracked_empty, new_flow_ns(&loaded, 0)?);

    let started = Instant::now();
    let added = maps.add_flows((0..MAX_ENTRIES).map(|i| flow(i, proto::TCP, 80, now)))?;
    let fill = started.elapsed();
    let usage = maps.conntrack_usage()?;
    println!("filled: {added} flows added in {:.1} s; {usage:?}", fill.as_secs_f64());
    let full = (tracked_ns(&loaded, MAX_ENTRIES / 2)?, new_flow_ns(&loaded, 1 << 12)?);
    println!(
        "tracked packet: {:.0} ns with 16 flows, {:.0} ns with {} (x{:.2})",
        empty.0,
        full.0,
        usage.confirmed,
        full.0 / empty.0
    );
    println!(
        "new flow: {:.0} ns with 16 flows, {:.0} ns with the confirmed table full (x{:.2})",
        empty.1,
        full.1,
        full.1 / empty.1
    );
    let mut walks: Vec<Duration> = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let removed = maps.expire_flows()?;
        walks.push(started.elapsed());
        anyhow::ensure!(removed == 0, "live flows removed: {removed}");
    }
    walks.sort();
    println!(
        "sgctl conntrack gc over {} live flows: {:.2} s (median of 3; in process context, no packet waits for it)",
        usage.confirmed + usage.pending,
        walks[1].as_secs_f64()
    );
    Ok(())
}
