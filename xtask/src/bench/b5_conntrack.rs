//! B5: connection tracking under a flood of new connections. `trafgen`
//! sends TCP SYNs from random addresses of 198.18.0.0/16 and random ports
//! to an allowed port (80, where a listener answers each with a SYN-ACK,
//! and the generator's kernel, owning those addresses but no socket, with
//! a RST) while one iperf3 flow, opened before the flood, keeps running.
//! (With nothing listening the server's own RST would end each attempt,
//! and nf_conntrack deletes a flow whose only reply is a RST at once.)
//! sgctl's table is given nf_conntrack's size (`nf_conntrack_max`, a
//! host-wide setting this benchmark reads and never changes), so both
//! fill up; the table shows what each does then.
//!
//! Beside the flood, a legitimate client (the generator's own address,
//! 198.18.0.1, through its kernel's TCP stack) opens one connection after
//! another to the same port and round-trips a few bytes on each: what a
//! real user of the host sees while the flood runs, second by second.
use std::{
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::{json, Value};
use testlab::{Lab, LabHost};

use super::{
    flood::{self, Flood},
    harness::{self, cell, median, ratio, Bench, Report, Sgctl},
    policies::{self, IFACE},
};

const ROUNDS: usize = 3;
/// The flood's length, sampled once a second.
const FLOOD_SECS: u64 = 12;
/// The rule that allows TCP 80 in the 10-rule policy (see `policies::rules_policy`).
const RULE: &str = "bench/inbound/6";
/// How long the legitimate client waits for a connection and its echo.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Sgctl,
    Nft,
}

/// One run: new flows admitted and refused per second (over each
/// sampling interval), table entries when the flood ends, and the iperf3
/// flow's throughput before and during the flood.
struct Sample {
    admitted: Vec<f64>,
    refused: Vec<f64>,
    entries: u64,
    gbps_before: f64,
    gbps_during: f64,
    survived: bool,
    /// The legitimate client's connections started in each second of the
    /// flood, and how many of those connected and echoed.
    attempted: Vec<u64>,
    completed: Vec<u64>,
}

pub fn run(b: &Bench) -> anyhow::Result<Report> {
    let dir = b.dir("b5")?;
    let max = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .context("reading nf_conntrack_max")?
        .trim()
        .parse::<u32>()
        .context("nf_conntrack_max")?
        .clamp(1024, 4_194_304);
    let policy = policies::write(&dir, "b5", &policies::rules_policy(10, 1, false, Some(max)))?;

    let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for (v, variant) in [Variant::Sgctl, Variant::Nft].into_iter().enumerate() {
            let s = one_run(b, &dir, &policy, variant)?;
            println!(
                "b5: round {round}, {}: admitted/s {:?}, entries {:?}, refused {:?}, client {:?} of {:?}, iperf3 \
                 {:.2} -> {:.2} Gbit/s{}",
                if variant == Variant::Sgctl { "sgctl" } else { "nft" },
                s.admitted.iter().map(|x| x.round()).collect::<Vec<_>>(),
                s.entries,
                s.refused.iter().map(|x| x.round()).collect::<Vec<_>>(),
                s.completed,
                s.attempted,
                s.gbps_before,
                s.gbps_during,
                if s.survived { "" } else { " (the established flow failed)" }
            );
            samples[v].push(s);
        }
    }

    let mut report = Report::new("b5", "connection tracking under a flood of new connections");
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    let first_second: Vec<f64> = samples
        .iter()
        .map(|s| median(&s.iter().map(|x| x.admitted.first().copied().unwrap_or(f64::NAN)).collect::<Vec<_>>()))
        .collect();
    for (v, label) in ["sgctl (tcx)", "nf_conntrack (nftables export)"].iter().enumerate() {
        let runs = &samples[v];
        let m = |f: &dyn Fn(&Sample) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let last = |x: &Sample| x.admitted.last().copied().unwrap_or(f64::NAN);
        let refused_last = |x: &Sample| x.refused.last().copied().unwrap_or(f64::NAN);
        rows.push(vec![
            (*label).to_owned(),
            cell(first_second[v], 0),
            ratio(first_second[v], first_second[1]),
            cell(m(&|x| x.entries as f64), 0),
            cell(m(&last), 0),
            cell(m(&refused_last), 0),
            cell(m(&|x| x.gbps_before), 2),
            cell(m(&|x| x.gbps_during), 2),
            format!("{}/{}", runs.iter().filter(|x| x.survived).count(), runs.len()),
        ]);
        json_rows.push(json!({
            "variant": label,
            "runs": runs.iter().map(|x| json!({
                "admitted_per_second": x.admitted, "entries_at_end": x.entries,
                "refused_per_second": x.refused, "gbps_before": x.gbps_before,
                "gbps_during": x.gbps_during, "survived": x.survived,
                "client_attempted_per_second": x.attempted, "client_completed_per_second": x.completed,
            })).collect::<Vec<Value>>(),
        }));
    }
    report.table(
        &format!(
            "SYN flood to an allowed port, table size {max} (nf_conntrack_max), {FLOOD_SECS} s, median of {ROUNDS}"
        ),
        &[
            "tracker",
            "new flows/s admitted (1st s)",
            "vs nf_conntrack",
            "entries at the end",
            "new flows/s admitted (last s)",
            "new flows/s refused (last s)",
            "iperf3 Gbit/s before",
            "iperf3 Gbit/s during",
            "established flow survived",
        ],
        &rows,
    );
    report.note(
        "Admitted: flows the allowing rule opened (sgctl: the rule's `flows` counter; nftables: the packets its \
         rule accepted, one per new flow). Refused: sgctl's `dropped_conntrack_full`; nf_conntrack's `drop` \
         (new packets it could not track) from /proc/net/stat/nf_conntrack. When its pending table is full, \
         sgctl evicts the least recently used pending flow (one whose handshake never completed) and never a \
         confirmed one (semantics.md item 12); nf_conntrack evicts entries that never became assured to make \
         room (`early_drop`). Both keep admitting. The SYNs' source addresses are the \
         generator's own (a local route makes 198.18.0.0/16 local to it).",
    );
    per_second_table(&mut report, &samples);
    report.json["results"] = json!(json_rows);
    report.json["table_size"] = json!(max);
    Ok(report)
}

/// Each second of the flood side by side: new flows admitted by each
/// tracker, and the legitimate client's connections started and completed
/// (medians over the rounds), with the share completed.
fn per_second_table(report: &mut Report, samples: &[Vec<Sample>; 2]) {
    let per_second = |runs: &[Sample], f: &dyn Fn(&Sample) -> &[f64], s: usize| {
        median(&runs.iter().map(|x| f(x).get(s).copied().unwrap_or(f64::NAN)).collect::<Vec<_>>())
    };
    let counts = |runs: &[Sample], f: &dyn Fn(&Sample) -> &[u64], s: usize| {
        median(&runs.iter().map(|x| f(x).get(s).map_or(f64::NAN, |n| *n as f64)).collect::<Vec<_>>())
    };
    let seconds = samples.iter().flatten().map(|x| x.admitted.len()).max().unwrap_or(0);
    let mut rows = Vec::new();
    for s in 0..seconds {
        let mut row = vec![(s + 1).to_string()];
        for runs in samples {
            let attempted = counts(runs, &|x| &x.attempted, s);
            let completed = counts(runs, &|x| &x.completed, s);
            row.push(cell(per_second(runs, &|x| &x.admitted, s), 0));
            row.push(format!("{} / {}", cell(completed, 0), cell(attempted, 0)));
            row.push(if attempted > 0.0 { format!("{:.1}%", 100.0 * completed / attempted) } else { "—".to_owned() });
        }
        rows.push(row);
    }
    report.table(
        "Each second of the flood: new flows admitted, and the legitimate client's connections completed / \
         started (median of the rounds)",
        &[
            "second",
            "sgctl admitted/s",
            "sgctl client completed / started",
            "sgctl client %",
            "nf_conntrack admitted/s",
            "nf_conntrack client completed / started",
            "nf_conntrack client %",
        ],
        &rows,
    );
    report.note(&format!(
        "The legitimate client connects from the generator's own address (198.18.0.1) through its kernel's TCP \
         stack, one connection after another, and counts a connection completed when the handshake finished \
         and {} bytes came back from the server within {} s. The flood's random sources may hit 198.18.0.1 \
         too, on other ports.",
        b"testlab probe\n".len(),
        CLIENT_TIMEOUT.as_secs()
    ));
}

/// A legitimate client opening one connection after another to `to` from
/// `from`, each round-tripping a few bytes, until stopped: when each
/// started, and whether it completed.
struct LegitClient {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(Instant, bool)>>,
}

impl LegitClient {
    fn start(from: &LabHost, to: std::net::SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, from) = (stop.clone(), from.clone());
        let thread = std::thread::spawn(move || {
            let mut tries = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                let ok = from.tcp_connect(to, CLIENT_TIMEOUT) == testlab::Outcome::Connected;
                tries.push((started, ok));
                std::thread::sleep(Duration::from_millis(2));
            }
            tries
        });
        Self { stop, thread }
    }

    /// Stops; per second since `since` (`seconds` of them), the
    /// connections started and those of them that completed.
    fn stop(self, since: Instant, seconds: usize) -> (Vec<u64>, Vec<u64>) {
        self.stop.store(true, Ordering::Relaxed);
        let tries = self.thread.join().unwrap_or_default();
        let (mut attempted, mut completed) = (vec![0; seconds], vec![0; seconds]);
        for (at, ok) in tries {
            let Some(s) = at.checked_duration_since(since).map(|d| d.as_secs() as usize) else { continue };
            if s < seconds {
                attempted[s] += 1;
                completed[s] += u64::from(ok);
            }
        }
        (attempted, completed)
    }
}

/// Rates between consecutive `(time, count)` samples, per second.
fn rates(samples: &[(Instant, u64)]) -> Vec<f64> {
    samples.windows(2).map(|w| w[1].1.saturating_sub(w[0].1) as f64 / (w[1].0 - w[0].0).as_secs_f64()).collect()
}

/// The iperf3 client or server, stopped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn one_run(b: &Bench, dir: &std::path::Path, policy: &std::path::Path, variant: Variant) -> anyhow::Result<Sample> {
    // A fresh lab each run: nothing tracked is left over from the last one.
    let lab = Lab::new("b5")?;
    let gen = lab.host("gen", &[])?;
    let srv = lab.host("srv", &[])?;
    let wire = flood::wire_up(&lab, &gen, &srv, IFACE)?;
    let sg = Sgctl { bin: &b.sgctl, state: lab.state_dir()?, lib: lab.lib_dir()?, netns: srv.netns().to_owned() };
    let path = policy.to_str().unwrap_or_default();
    match variant {
        Variant::Sgctl => {
            sg.run(&["apply", path])?;
            sg.run(&["attach", IFACE, "--groups", policies::GROUP, "--mode", "tc"])?;
        }
        Variant::Nft => {
            let ruleset = dir.join("b5.nft");
            let attach = format!("{IFACE}={}", policies::GROUP);
            std::fs::write(&ruleset, sg.run(&["export", "nftables", path, "--attach", &attach])?)?;
            harness::nft(&srv, &["-f", ruleset.to_str().unwrap_or_default()])?;
        }
    }
    // Cheap reads only while the flood runs (sgctl stats reads per-CPU
    // counters; walking a full table for its size would take seconds).
    let counters = || -> anyhow::Result<(Instant, u64, u64)> {
        let (admitted, refused) = match variant {
            Variant::Sgctl => {
                let stats = sg.stats()?;
                (harness::rule_count(&stats, RULE, "flows"), harness::iface_count(&stats, "dropped_conntrack_full"))
            }
            Variant::Nft => (harness::nft_counter(&srv, &format!("{IFACE}/{RULE}"))?, ct_stat(&srv, "drop")?),
        };
        Ok((Instant::now(), admitted, refused))
    };
    let entries = || -> anyhow::Result<u64> {
        Ok(match variant {
            Variant::Sgctl => {
                let status: Value = serde_json::from_str(&sg.run(&["status", "--json"])?)?;
                status["scopes"][0]["interfaces"][0]["conntrack_entries"].as_u64().unwrap_or(0)
            }
            Variant::Nft => {
                let out = srv.run(&["cat", "/proc/sys/net/netfilter/nf_conntrack_count"])?;
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
            }
        })
    };

    let _http = srv.tcp_listen(std::net::SocketAddr::from(([198, 19, 0, 1], 80)))?;
    let _server = Proc(
        Command::new("ip")
            .args(["netns", "exec", srv.netns(), "iperf3", "-s", "-1", "-B", "198.19.0.1", "-p", "5201"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s")?,
    );
    std::thread::sleep(Duration::from_millis(300));
    let total = FLOOD_SECS + 3;
    let client = Command::new("ip")
        .args(["netns", "exec", gen.netns(), "iperf3", "-c", "198.19.0.1", "-B", "198.18.0.1", "-p", "5201", "-J"])
        .args(["-t", &total.to_string(), "-i", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -c")?;
    let start = Instant::now();
    harness::sleep_until(start + Duration::from_secs(2));
    let mut samples = vec![counters()?];
    let (attempted, completed) = {
        let _flood = Flood::start(
            &b.work,
            &gen,
            "g0",
            &flood::syn_config(&wire, 80),
            50_000_000,
            Duration::from_secs(FLOOD_SECS),
        )?;
        let flood_start = Instant::now();
        let client = LegitClient::start(&gen, std::net::SocketAddr::from(([198, 19, 0, 1], 80)));
        for s in 1..=FLOOD_SECS - 1 {
            harness::sleep_until(flood_start + Duration::from_secs(s));
            samples.push(counters()?);
        }
        client.stop(flood_start, FLOOD_SECS as usize - 1)
    };
    let entries = entries()?;
    let output = client.wait_with_output().context("waiting for iperf3 -c")?;
    let v: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let intervals: Vec<f64> = v["intervals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["sum"]["bits_per_second"].as_f64())
        .map(|bps| bps / 1e9)
        .collect();
    let mean = |xs: &[f64]| if xs.is_empty() { f64::NAN } else { xs.iter().sum::<f64>() / xs.len() as f64 };
    let gbps_before = mean(intervals.get(..2).unwrap_or(&[]));
    let gbps_during = mean(intervals.get(2..2 + FLOOD_SECS as usize - 1).unwrap_or(&[]));
    let survived = output.status.success() && v["end"]["sum_received"]["bits_per_second"].as_f64().is_some();
    if variant == Variant::Sgctl {
        let _ = sg.run(&["detach", IFACE]);
    }
    Ok(Sample {
        admitted: rates(&samples.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>()),
        refused: rates(&samples.iter().map(|s| (s.0, s.2)).collect::<Vec<_>>()),
        entries,
        gbps_before,
        gbps_during,
        survived,
        attempted,
        completed,
    })
}

/// Sum over CPUs of a column of `/proc/net/stat/nf_conntrack` (hexadecimal).
fn ct_stat(host: &LabHost, column: &str) -> anyhow::Result<u64> {
    let text = harness::netns_proc(host, "stat/nf_conntrack")?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    let Some(at) = header.iter().position(|h| *h == column) else { return Ok(0) };
    Ok(lines.filter_map(|l| l.split_whitespace().nth(at)).filter_map(|v| u64::from_str_radix(v, 16).ok()).sum())
}
