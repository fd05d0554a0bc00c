//! `cargo xtask bench [b1 b2 b3 b4 b5 b6 b7 b8]`: the benchmark suite (never part of
//! the test run). Each benchmark measures sgctl beside its peer (an empty
//! program, no firewall, nftables) in the same run, alternating, repeated,
//! and writes `bench/results/bN.json` with the machine it ran on; then the
//! tables of BENCHMARKS.md and README.md and the figures are made again
//! from the stored JSON (`report`). With no argument, all eight run;
//! BENCHMARKS.md explains each.
//!
//! - `b1_packet`: per-packet cost under BPF_PROG_TEST_RUN;
//! - `b2_rate`: packet rate of UDP floods over veth;
//! - `b3_tcp`: TCP throughput and latency;
//! - `b4_control`: check/apply time, memory, membership change;
//! - `b5_conntrack`: a flood of new connections against the tracker;
//! - `b6_load`: how long the kernel takes to load each program;
//! - `b7_fleet`: membership through etcd, from one host's change to another's maps;
//! - `b8_flowlog`: the agent's flow-log window with accounting, at 10k to 1M flows.
//!
//! Shared: `harness` (medians, timed runs, results), `policies` (the
//! generated inputs), `flood` (trafgen and the receiver's counters).
//! Reporting: `results` (the stored JSON read back), `tables` (Markdown),
//! `figures` (SVG), `report` (the generated sections and files, and the
//! test that holds the committed ones to the JSON).
mod b1_packet;
mod b2_rate;
mod b3_tcp;
mod b4_control;
mod b5_conntrack;
mod b6_load;
mod b7_fleet;
mod b8_flowlog;
mod figures;
mod flood;
mod harness;
mod policies;
mod report;
mod results;
mod tables;

use anyhow::bail;

use crate::{bootstrap, build, sh};

type Benchmark = fn(&harness::Bench) -> anyhow::Result<harness::Report>;

const ALL: [(&str, Benchmark); 8] = [
    ("b1", b1_packet::run),
    ("b2", b2_rate::run),
    ("b3", b3_tcp::run),
    ("b4", b4_control::run),
    ("b5", b5_conntrack::run),
    ("b6", b6_load::run),
    ("b7", b7_fleet::run),
    ("b8", b8_flowlog::run),
];

/// Debian packages only the benchmarks need: a packet generator
/// (trafgen), iperf3, and GNU time (peak RSS of a command).
const BENCH_PACKAGES: &[&str] = &["netsniff-ng", "iperf3", "time"];

pub use report::run as report;

pub fn run(only: &[String]) -> anyhow::Result<()> {
    sh::require_root("bench")?;
    for name in only {
        if !ALL.iter().any(|(n, _)| n == name) {
            bail!("unknown benchmark {name:?}: expected some of b1 b2 b3 b4 b5 b6 b7 b8");
        }
    }
    bootstrap::run()?;
    bootstrap::debian_packages(BENCH_PACKAGES)?;
    build::build_sgctl()?;
    let bench = harness::Bench::new()?;
    for (name, benchmark) in ALL {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        sh::step(&format!("bench {name}"), "running");
        let started = std::time::Instant::now();
        let report = benchmark(&bench)?;
        report.write(&bench.results)?;
        sh::step(&format!("bench {name}"), &format!("done in {:.0} s", started.elapsed().as_secs_f64()));
    }
    report::run()
}
