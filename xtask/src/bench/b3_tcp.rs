//! B3: TCP through the filter. iperf3 throughput (1 and 4 streams) and
//! request/response latency (a 64-byte ping-pong over one connection with
//! TCP_NODELAY, p50 and p99 of 20,000 round trips) between two namespaces
//! on one veth pair, the server's interface filtered by nothing, sgctl
//! (tcx, both directions) or the exported nftables ruleset.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::{json, Value};
use testlab::{Lab, LabHost};

use super::{
    harness::{self, cell, median, ratio, Bench, Report, Sgctl},
    policies::{self, IFACE},
};

const ROUNDS: usize = 3;
const IPERF_SECS: &str = "3";
const ROUND_TRIPS: usize = 20_000;
const SERVER: &str = "198.19.0.1";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    None,
    Sgctl,
    Nft,
}

const VARIANTS: [Variant; 3] = [Variant::None, Variant::Sgctl, Variant::Nft];

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Self::None => "no firewall",
            Self::Sgctl => "sgctl (tcx)",
            Self::Nft => "nftables (export)",
        }
    }
}

/// The iperf3 server, stopped when dropped.
struct Iperf(Child);

impl Drop for Iperf {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(b: &Bench) -> anyhow::Result<Report> {
    let dir = b.dir("b3")?;
    let lab = Lab::new("b3")?;
    let cli = lab.host("cli", &[])?;
    let srv = lab.host("srv", &[])?;
    lab.link(&cli, "c0", &["198.18.0.1/15"], &srv, IFACE, &["198.19.0.1/15"])?;
    let policy = policies::write(&dir, "b3", &policies::rules_policy(10, 1, false, None))?;
    let sg = Sgctl { bin: &b.sgctl, state: lab.state_dir()?, lib: lab.lib_dir()?, netns: srv.netns().to_owned() };
    let ruleset = dir.join("b3.nft");
    let attach = format!("{IFACE}={}", policies::GROUP);
    std::fs::write(
        &ruleset,
        sg.run(&["export", "nftables", policy.to_str().unwrap_or_default(), "--attach", &attach])?,
    )?;
    sg.run(&["apply", policy.to_str().unwrap_or_default()])?;

    let _iperf = Iperf(
        Command::new("ip")
            .args(["netns", "exec", srv.netns(), "iperf3", "-s", "-B", SERVER, "-p", "5201"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s")?,
    );
    let _echo = srv.tcp_listen(SocketAddr::from(([198, 19, 0, 1], 7)))?;
    std::thread::sleep(Duration::from_millis(300));

    // samples[variant] = (gbps 1 stream, gbps 4 streams, p50 µs, p99 µs)
    let mut samples: Vec<[Vec<f64>; 4]> = vec![Default::default(); VARIANTS.len()];
    for round in 0..ROUNDS {
        for (v, &variant) in VARIANTS.iter().enumerate() {
            match variant {
                Variant::None => {}
                Variant::Sgctl => drop(sg.run(&["attach", IFACE, "--groups", policies::GROUP, "--mode", "tc"])?),
                Variant::Nft => drop(harness::nft(&srv, &["-f", ruleset.to_str().unwrap_or_default()])?),
            }
            let one = iperf(&cli, 1)?;
            let four = iperf(&cli, 4)?;
            let (p50, p99) = ping_pong(&cli)?;
            println!(
                "b3: round {round}, {:<18} {one:.2} / {four:.2} Gbit/s, p50 {p50:.1} µs, p99 {p99:.1} µs",
                variant.label()
            );
            for (i, x) in [one, four, p50, p99].into_iter().enumerate() {
                samples[v][i].push(x);
            }
            match variant {
                Variant::None => {}
                Variant::Sgctl => drop(sg.run(&["detach", IFACE])?),
                Variant::Nft => drop(harness::nft(&srv, &["delete", "table", "inet", "sgctl"])?),
            }
        }
    }

    let mut report = Report::new("b3", "TCP throughput and latency through the filter");
    let m: Vec<[f64; 4]> =
        samples.iter().map(|s| [median(&s[0]), median(&s[1]), median(&s[2]), median(&s[3])]).collect();
    let rows: Vec<Vec<String>> = VARIANTS
        .iter()
        .enumerate()
        .map(|(v, variant)| {
            vec![
                variant.label().to_owned(),
                cell(m[v][0], 2),
                ratio(m[v][0], m[0][0]),
                cell(m[v][1], 2),
                ratio(m[v][1], m[0][1]),
                cell(m[v][2], 1),
                cell(m[v][3], 1),
                ratio(m[v][3], m[0][3]),
            ]
        })
        .collect();
    report.table(
        &format!(
            "iperf3 ({IPERF_SECS} s) and 64-byte request/response ({ROUND_TRIPS} round trips), median of {ROUNDS}"
        ),
        &["filter", "1 stream Gbit/s", "vs none", "4 streams Gbit/s", "vs none", "p50 µs", "p99 µs", "p99 vs none"],
        &rows,
    );
    report.note(
        "The server's interface carries the 10-rule benchmark policy (the allowing rules last); sgctl filters \
         ingress and egress on tcx, nftables with the exported ruleset (the default, one-lookup form). Client and server share the \
         machine's 2 cores with each other and with the generator-free rest of the system.",
    );
    report.json["results"] = json!(VARIANTS
        .iter()
        .enumerate()
        .map(|(v, variant)| json!({
            "variant": variant.label(),
            "gbps_1_stream": samples[v][0], "gbps_4_streams": samples[v][1],
            "p50_us": samples[v][2], "p99_us": samples[v][3],
        }))
        .collect::<Vec<Value>>());
    Ok(report)
}

/// iperf3 from `cli` to the server with `streams` streams: Gbit/s received.
fn iperf(cli: &LabHost, streams: u32) -> anyhow::Result<f64> {
    let n = streams.to_string();
    let out = cli.run(&["iperf3", "-c", SERVER, "-p", "5201", "-t", IPERF_SECS, "-P", &n, "-J"])?;
    let v: Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .with_context(|| format!("iperf3 -c failed: {}", v["error"]))
}

/// p50 and p99 of [`ROUND_TRIPS`] 64-byte round trips to the echo server, in µs.
fn ping_pong(cli: &LabHost) -> anyhow::Result<(f64, f64)> {
    cli.in_netns(|| {
        let mut s = TcpStream::connect_timeout(&SocketAddr::from(([198, 19, 0, 1], 7)), Duration::from_secs(3))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let msg = [0x5a_u8; 64];
        let mut back = [0_u8; 64];
        let mut rtts = Vec::with_capacity(ROUND_TRIPS);
        for i in 0..ROUND_TRIPS + 1000 {
            let start = Instant::now();
            s.write_all(&msg)?;
            s.read_exact(&mut back)?;
            if i >= 1000 {
                rtts.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
        rtts.sort_by(f64::total_cmp);
        Ok::<_, std::io::Error>((rtts[rtts.len() / 2], rtts[rtts.len() * 99 / 100]))
    })
    .context("request/response client")
}
