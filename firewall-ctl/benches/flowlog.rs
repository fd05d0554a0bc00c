//! B8 of `cargo xtask bench`: what the agent's flow logs cost with
//! per-flow accounting, at 10k, 100k and 1M tracked flows, every one of
//! which moved in every window (the worst case: one record each).
//!
//! The real programs are loaded (BPF_PROG_TEST_RUN's maps, as B1), their
//! confirmed table filled with N live flows; then, window after window,
//! every flow's counters are raised (from userspace, as the datapath
//! would have) and the agent's window work runs on them: the very
//! functions `sgctl agent` runs (`flowlog::accounting::interface_window`:
//! read the four tables in batches, subtract what was reported, build the
//! records; then the log file written). Measured per window: wall and CPU
//! time of that work (against the window it must fit in), the records
//! written, and the process's resident memory (the ledger of reported
//! flows is the agent's memory that grows with the flows).
//!
//! Usage (through `cargo xtask bench b8`):
//! `cargo bench -p firewall-ctl --bench flowlog -- --out FILE [--only N]`.
use std::{collections::BTreeMap, path::PathBuf, time::Instant};

use anyhow::Context as _;
use aya::maps::{HashMap, Map, MapData};
use firewall_common::{
    conntrack::{FlowEntry, FlowKey4},
    map_names, proto,
};
use firewall_ctl::{
    compile,
    datapath::{clock::clock, conntrack::Tracked},
    flowlog::{
        accounting::{interface_window, Ledger, WindowTimes},
        aggregate::IfaceInfo,
        file::Writer,
    },
    policy,
    testing::testrun::Loaded,
};
use serde_json::json;

#[path = "common/mod.rs"]
mod common;

const FLOWS: [u32; 3] = [10_000, 100_000, 1_000_000];
/// Windows measured per size (after one that reads the flows for the first time).
const WINDOWS: usize = 3;
/// The agent's default window, seconds: the work must fit in it.
const WINDOW_SECS: f64 = 60.0;
/// Records the agent writes at a time.
const BATCH: usize = 4096;
const POLICY: &str = "groups:
  bench:
    inbound:
      - { protocol: udp, ports: 53, source: 0.0.0.0/0 }
    outbound: []
conntrack:
  max_entries: 1048576
  accounting: true
";
/// The `i`-th flow, as the datapath counts it: one packet each way so far.
fn flow(i: u32, now: u64) -> Tracked {
    let mut f = common::flow(i, proto::UDP, 53, now);
    f.entry.packets = [1, 1];
    f.entry.bytes = [100, 100];
    f
}

/// This process's CPU time (user + system), seconds.
fn cpu_secs() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(usage.user_time()) + t(usage.system_time())
}

/// This process's resident memory, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").to_owned()))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(nix::unistd::Uid::effective().is_root(), "the benchmark loads eBPF programs: run it as root");
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let out = PathBuf::from(arg("--out").context("--out FILE")?);
    let only: Option<u32> = arg("--only").map(|n| n.parse()).transpose().context("--only N")?;
    let policy = policy::parse_sources(&[("b8.yaml".into(), POLICY.into())]).context("policy")?;
    let compiled = compile::compile_interface(&policy, &["bench".to_owned()], &BTreeMap::new())?;
    let info = IfaceInfo { ifname: "bench0".into(), ..IfaceInfo::default() };
    let log_dir = std::env::temp_dir().join(format!("sgctl-b8-{}", std::process::id()));
    let mut rows = Vec::new();
    for n in FLOWS.into_iter().filter(|n| only.is_none_or(|o| o == *n)) {
        let loaded = Loaded::new(&compiled)?;
        let maps = loaded.maps();
        let now = clock().now();
        let flows: Vec<Tracked> = (0..n).map(|i| flow(i, now)).collect();
        let added = maps.add_flows(flows.iter().copied())?;
        anyhow::ensure!(added == n as usize, "{added} of {n} flows added");
        let mut table: HashMap<MapData, FlowKey4, FlowEntry> =
            HashMap::try_from(Map::HashMap(maps.data(map_names::CT4)?))?;
        let _ = std::fs::remove_dir_all(&log_dir);
        let mut writer = Writer::new(&log_dir.join("flows.log"), u64::MAX, 1);
        let mut ledger = Ledger::default();
        let rss_before = rss_kib();
        let mut peak_rss = rss_before;
        let unix = |ts: u64| clock().unix_ns(ts) / 1_000_000_000;
        let mut windows = Vec::new();
        for w in 0..=WINDOWS {
            // Every flow moves: one more packet and 100 bytes each way.
            let bump = Instant::now();
            for f in &flows {
                let key = f.key.v4().context("IPv4")?;
                let mut e = table.get(&key, 0)?;
                e.packets = [e.packets[0] + 1, e.packets[1] + 1];
                e.bytes = [e.bytes[0] + 100, e.bytes[1] + 100];
                e.last_seen = clock().now();
                table.insert(key, e, 0)?;
            }
            let bumped = bump.elapsed();
            let (cpu0, wall0) = (cpu_secs(), Instant::now());
            let times = WindowTimes { bounds: (0, u64::MAX), unix_secs: &unix };
            // As the agent does: records written a batch at a time as they are made.
            let (mut records, mut batch, mut written) = (0_usize, Vec::with_capacity(BATCH), Ok(()));
            interface_window(&maps, &mut ledger, &info, &times, &mut |r| {
                records += 1;
                batch.push(r);
                if batch.len() >= BATCH {
                    written = std::mem::replace(&mut written, Ok(())).and_then(|()| writer.write(&batch));
                    batch.clear();
                }
            })?;
            written.and_then(|()| writer.write(&batch))?;
            let (wall, cpu) = (wall0.elapsed().as_secs_f64(), cpu_secs() - cpu0);
            let rss = rss_kib();
            peak_rss = peak_rss.max(rss);
            println!(
                "{n:>8} flows window {w}: {records} records in {wall:.3} s wall, {cpu:.3} s CPU; RSS {rss} KiB; \
                 counters raised in {:.1} s",
                bumped.as_secs_f64()
            );
            // Window 0 reads every flow for the first time (a new agent).
            if w > 0 {
                anyhow::ensure!(records == 2 * n as usize, "every flow, both directions: {records}");
                windows.push(json!({ "records": records, "wall_s": wall, "cpu_s": cpu }));
            }
        }
        let median = |k: &str| {
            let mut v: Vec<f64> = windows.iter().filter_map(|w| w[k].as_f64()).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let log_bytes = std::fs::metadata(log_dir.join("flows.log")).map_or(0, |m| m.len());
        rows.push(json!({
            "flows": n,
            "records_per_window": 2 * n,
            "wall_s": median("wall_s"),
            "cpu_s": median("cpu_s"),
            "cpu_share_of_window": median("cpu_s") / WINDOW_SECS,
            "within_window": median("wall_s") < WINDOW_SECS,
            "rss_kib": peak_rss,
            "rss_growth_kib": peak_rss.saturating_sub(rss_before),
            "ledger_flows": ledger.len(),
            "log_bytes_per_window": log_bytes / (WINDOWS as u64 + 1),
            "windows": windows,
        }));
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    let doc = json!({ "window_s": WINDOW_SECS, "windows": WINDOWS, "rows": rows });
    std::fs::write(&out, serde_json::to_string_pretty(&doc)?).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
