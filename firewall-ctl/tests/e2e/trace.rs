//! `sgctl trace` end to end: live per-packet verdicts with the rule or the
//! reason and the conntrack state, for a match given on the command line;
//! off again when it stops.
//!
//! Hosts: srv 203.0.113.1 carries web-server (seed Example 1); other 203.0.113.20.
use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
    time::Duration,
};

use common::*;
use serde_json::Value;
use Outcome::{Connected, TimedOut};

use crate::common;

/// Starts `sgctl trace ARGS --json`, waits until it traces, runs `traffic`,
/// and returns the JSON lines it printed (it stops by itself: --count).
fn trace(sg: &Sgctl, args: &[&str], traffic: impl FnOnce()) -> Vec<Value> {
    let mut all = vec!["trace", "--json"];
    if !args.contains(&"--duration") {
        all.extend_from_slice(&["--duration", "20"]);
    }
    all.extend_from_slice(args);
    let mut child = sg.command(&all).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("sgctl trace");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("reading trace's stderr");
    assert!(line.starts_with("sgctl: tracing eth0"), "trace should say it is on: {line:?}");
    traffic();
    let out = child.wait_with_output().expect("trace output");
    assert!(out.status.success(), "sgctl trace failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn trace_shows_each_judged_packet_with_verdict_rule_and_conntrack_state() {
    let lab = lab("trace");
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let other = host(&lab, "other", &["203.0.113.20/24"]);
    let sg = Sgctl::new(&lab, &srv);
    let _l = listen(&srv, &["203.0.113.1:80", "203.0.113.1:8080"]);
    sg.apply(&[&policy("web-server.yaml")]);

    let dropped = trace(&sg, &["--iface", "eth0", "--proto", "tcp", "--dport", "8080", "--count", "1"], || {
        expect_all("blocked", vec![tcp(&other, "203.0.113.1:8080", TimedOut)]);
    });
    eprintln!("{dropped:#?}");
    assert_eq!(dropped.len(), 1, "{dropped:#?}");
    let d = &dropped[0];
    assert_eq!(d["verdict"], "dropped", "{d}");
    assert_eq!(d["reason"], "dropped_no_rule", "{d}");
    assert_eq!(d["rule"], Value::Null, "{d}");
    assert_eq!(d["conntrack"], "none", "{d}");
    assert_eq!(d["src"], "203.0.113.20", "{d}");
    assert_eq!(d["dst"], "203.0.113.1", "{d}");
    assert_eq!(d["direction"], "inbound", "{d}");
    assert_eq!(d["tcp_flags"], 2, "a SYN: {d}");

    // Both directions of an allowed connection: the first packet opens the
    // flow through the rule, the rest ride it.
    let allowed = trace(&sg, &["--src", "203.0.113.0/24", "--proto", "tcp", "--count", "4"], || {
        expect_all("allowed", vec![tcp(&other, "203.0.113.1:80", Connected)]);
    });
    eprintln!("{allowed:#?}");
    let first = &allowed[0];
    assert_eq!(first["verdict"], "passed", "{first}");
    assert_eq!(first["reason"], "pass_new_flow", "{first}");
    assert_eq!(first["rule"], "web-server/inbound/1", "{first}");
    assert_eq!(first["conntrack"], "opening", "{first}");
    assert_eq!(first["dport"], 80, "{first}");
    let reply = &allowed[1];
    assert_eq!(reply["direction"], "outbound", "the SYN-ACK: {reply}");
    assert_eq!(reply["reason"], "pass_tracked", "{reply}");
    assert_eq!(reply["rule"], "web-server/inbound/1", "{reply}");
    assert_eq!(reply["conntrack"], "opening", "the handshake is not complete yet: {reply}");
    let ack = &allowed[2];
    assert_eq!((&ack["direction"], &ack["reason"]), (&"inbound".into(), &"pass_tracked".into()), "{ack}");
    assert_eq!(ack["conntrack"], "established", "the opener's ACK completes the handshake: {ack}");

    // A trace of nothing in particular, stopped by its duration, sees nothing of port 9.
    let quiet = trace(&sg, &["--dport", "9", "--count", "1", "--duration", "1"], || {});
    assert!(quiet.is_empty(), "{quiet:#?}");
    // Stopped: the interface's trace entry is off again, so traffic costs no trace events.
    let pin = sg.state_dir().join(format!("netns-{}", srv.netns())).join("if-eth0").join("TRACE");
    let entry: aya::maps::Array<aya::maps::MapData, firewall_common::events::TraceMatch> =
        aya::maps::Array::try_from(aya::maps::Map::Array(firewall_ctl::datapath::maps::open(&pin).expect("TRACE pin")))
            .expect("TRACE is an array");
    assert_eq!(entry.get(&0, 0).expect("TRACE[0]").until, 0, "trace off after sgctl trace exits");
    std::thread::sleep(Duration::from_millis(100));
    let left = sg.ok(&["trace", "--dport", "80", "--count", "1", "--duration", "1", "--json"]).stdout;
    assert!(left.is_empty(), "nothing left over from the earlier traces: {left}");
}
