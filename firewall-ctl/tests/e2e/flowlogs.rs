//! Flow logs end to end: `sgctl agent` turning the datapath's flow events
//! into AWS VPC Flow Logs records for the seed tables' exchanges, and a
//! flood against a dropped port held to the kernel's rate limit.
//!
//! Hosts (one L2 segment): srv 203.0.113.1 carries web-server (seed
//! Example 1); ssh 203.0.113.10; other 203.0.113.20.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    time::{Duration, Instant},
};

use common::{agent::*, *};
use firewall_common::events::EVENTS_PER_SEC;
use serde_json::Value;
use Outcome::{Connected, TimedOut};

use crate::common;

/// `sgctl flows --file F --json ARGS…`, polled until `done` holds.
#[track_caller]
pub(crate) fn flows_until(sg: &Sgctl, file: &Path, args: &[&str], done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let mut all = vec!["flows", "--file", file.to_str().expect("utf-8 path"), "--last", "100000"];
        all.extend_from_slice(args);
        let run = sg.run(&[all.as_slice(), &["--json"]].concat());
        if run.code == Some(0) {
            let records = run.json()["records"].as_array().cloned().unwrap_or_default();
            if done(&records) {
                return records;
            }
            assert!(
                started.elapsed() < Duration::from_secs(8),
                "flow log never showed what was expected: {records:#?}"
            );
        } else {
            assert!(started.elapsed() < Duration::from_secs(8), "sgctl flows: {run:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn find<'a>(records: &'a [Value], src: &str, dport: u64, action: &str) -> Option<&'a Value> {
    records.iter().find(|r| r["srcaddr"] == src && r["dstport"] == dport && r["action"] == action)
}

/// Lines parsed by flowlogs-reader: the 14 default fields, then `extra`.
pub(crate) fn flowlogs_reader(lines: &str, extra: &[&str]) -> Vec<Value> {
    let args: Vec<&std::ffi::OsStr> = extra.iter().map(|e| std::ffi::OsStr::new(*e)).collect();
    python("flowlog_records.py", &args, lines)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("flowlog_records.py printed {l:?}: {e}")))
        .collect()
}

/// A record as flowlogs-reader parsed it (its field names; absent: `-`)
/// against the same record of `sgctl flows --json` (AWS's names; `-` as null).
#[track_caller]
pub(crate) fn assert_same_record(parsed: &Value, ours: &Value) {
    for (theirs, field) in [
        ("version", "version"),
        ("account_id", "account-id"),
        ("interface_id", "interface-id"),
        ("srcaddr", "srcaddr"),
        ("dstaddr", "dstaddr"),
        ("srcport", "srcport"),
        ("dstport", "dstport"),
        ("protocol", "protocol"),
        ("packets", "packets"),
        ("bytes", "bytes"),
        ("start", "start"),
        ("end", "end"),
        ("action", "action"),
        ("log_status", "log-status"),
    ] {
        assert_eq!(parsed.get(theirs).unwrap_or(&Value::Null), &ours[field], "{field}: {parsed} vs {ours}");
    }
    assert!(["ACCEPT", "REJECT"].contains(&parsed["action"].as_str().unwrap_or_default()), "{parsed}");
    assert!(parsed["srcaddr"].as_str().is_some_and(|a| a.parse::<std::net::IpAddr>().is_ok()), "{parsed}");
}

#[test]
fn flow_logs_name_the_rule_that_allowed_and_the_reason_that_dropped() {
    let lab = lab("flowlog");
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let ssh = host(&lab, "ssh", &["203.0.113.10/24"]);
    let other = host(&lab, "other", &["203.0.113.20/24"]);
    let sg = Sgctl::new(&lab, &srv);
    let _l = listen(&srv, &["203.0.113.1:22", "203.0.113.1:80", "203.0.113.1:8080"]);
    let _c = listen(&ssh, &["203.0.113.10:9000"]);
    sg.apply(&[&policy("web-server.yaml")]);
    let dir = TempDir::new("flowlog");
    let log = dir.path().join("flows.log");
    let _agent = Agent::start(&sg, &["--window", "1", "--quiet", "--flow-log", log.to_str().expect("utf-8")]);
    expect_all(
        "seed Example 1 exchanges",
        vec![
            tcp(&ssh, "203.0.113.1:22", Connected),
            tcp(&other, "203.0.113.1:80", Connected),
            tcp(&other, "203.0.113.1:22", TimedOut),
            tcp(&other, "203.0.113.1:8080", TimedOut),
            tcp(&srv, "203.0.113.10:9000", Connected),
        ],
    );
    let records = flows_until(&sg, &log, &[], |r| {
        find(r, "203.0.113.20", 8080, "REJECT").is_some() && find(r, "203.0.113.1", 9000, "ACCEPT").is_some()
    });
    eprintln!("records: {records:#?}");
    let ssh_in = find(&records, "203.0.113.10", 22, "ACCEPT").expect("the SSH flow");
    assert_eq!(ssh_in["rule-id"], "web-server/inbound/0", "{ssh_in}");
    assert_eq!(ssh_in["group"], "web-server", "{ssh_in}");
    assert_eq!(ssh_in["flow-direction"], "ingress", "{ssh_in}");
    assert_eq!(ssh_in["interface-id"], format!("eth0@{}", srv.netns()), "{ssh_in}");
    assert_eq!(ssh_in["protocol"], 6, "{ssh_in}");
    assert_eq!(ssh_in["type"], "IPv4", "{ssh_in}");
    assert_eq!(ssh_in["tcp-flags"], 2, "the flow's first packet is a SYN: {ssh_in}");
    assert_eq!(ssh_in["drop-reason"], Value::Null, "{ssh_in}");
    assert_eq!(ssh_in["log-status"], "OK", "{ssh_in}");
    // Without accounting, an ACCEPT record counts the flows opened and
    // their first packets, and says so.
    assert_eq!(ssh_in["counted"], "first-packet", "{ssh_in}");
    assert_eq!(ssh_in["packets"], 1, "{ssh_in}");
    assert_eq!(ssh_in["end-reason"], Value::Null, "{ssh_in}");
    let http = find(&records, "203.0.113.20", 80, "ACCEPT").expect("the HTTP flow");
    assert_eq!(http["rule-id"], "web-server/inbound/1", "{http}");
    let out = find(&records, "203.0.113.1", 9000, "ACCEPT").expect("srv's own connection");
    assert_eq!(out["rule-id"], "web-server/outbound/0", "{out}");
    assert_eq!(out["flow-direction"], "egress", "{out}");
    for dport in [22, 8080] {
        let rejected = find(&records, "203.0.113.20", dport, "REJECT").expect("a rejected SYN");
        assert_eq!(rejected["drop-reason"], "no_rule", "{rejected}");
        assert_eq!(rejected["rule-id"], Value::Null, "{rejected}");
        assert_eq!(rejected["counted"], "reported", "{rejected}");
        assert!(rejected["packets"].as_u64() >= Some(1), "{rejected}");
    }
    assert!(
        find(&records, "203.0.113.10", 22, "REJECT").is_none()
            && find(&records, "203.0.113.20", 80, "REJECT").is_none(),
        "no allowed flow is also logged as rejected: {records:#?}"
    );

    // The default v2 format: 14 fields exactly, as AWS writes them.
    let v2 = sg.ok(&["flows", "--file", log.to_str().expect("utf-8"), "--format", "v2", "--last", "1000"]).stdout;
    assert!(!v2.is_empty());
    for line in v2.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 14, "v2 has 14 fields: {line:?}");
        assert_eq!(fields[0], "2", "{line}");
        assert!(["ACCEPT", "REJECT"].contains(&fields[12]), "{line}");
        assert_eq!(fields[13], "OK", "{line}");
    }
    assert!(v2
        .lines()
        .any(|l| l.contains(" 203.0.113.20 203.0.113.1 ") && l.contains(" 8080 6 ") && l.ends_with("REJECT OK")));
    // A published parser of VPC Flow Logs (flowlogs-reader) reads every v2
    // line, and the file's custom lines with their extra AWS fields, to the
    // values `sgctl flows --json` gives.
    // (Read both again until no record arrived between the two reads.)
    let (parsed, json_records) = (0..20)
        .find_map(|_| {
            let v2 = sg.ok(&["flows", "--file", log.to_str()?, "--format", "v2", "--last", "100000"]).stdout;
            let records = flows_until(&sg, &log, &[], |_| true);
            let parsed = flowlogs_reader(&v2, &[]);
            std::thread::sleep(Duration::from_millis(100));
            (parsed.len() == records.len()).then_some((parsed, records))
        })
        .expect("the flow log stopped growing");
    assert!(!parsed.is_empty());
    for (p, r) in parsed.iter().zip(&json_records) {
        assert_same_record(p, r);
    }
    let text = std::fs::read_to_string(&log).expect("the log file");
    let custom: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    for (p, line) in flowlogs_reader(&custom, &["flow_direction", "tcp_flags", "type"]).iter().zip(custom.lines()) {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(p["flow_direction"].as_str(), Some(fields[14]), "{line}\n{p}");
        assert_eq!(p["tcp_flags"].to_string(), fields[15], "{line}\n{p}");
        assert_eq!(p["type"].as_str(), Some(fields[16]), "{line}\n{p}");
        assert_eq!(p["interface_id"].as_str(), Some(fields[2]), "{line}\n{p}");
    }
    // Filters.
    let only = flows_until(&sg, &log, &["--rule", "web-server/inbound/1"], |r| !r.is_empty());
    assert!(only.iter().all(|r| r["rule-id"] == "web-server/inbound/1"), "{only:#?}");
    let rejected = flows_until(&sg, &log, &["--action", "reject", "--dport", "8080"], |r| !r.is_empty());
    assert!(rejected.iter().all(|r| r["action"] == "REJECT" && r["dstport"] == 8080), "{rejected:#?}");
    assert!(text.starts_with("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status flow-direction tcp-flags type rule-id group drop-reason end-reason counted\n"), "{text}");
}

#[test]
fn a_flood_from_many_sources_is_held_to_the_rate_limit_and_the_agent_keeps_up() {
    let lab = lab("flood");
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let other = host(&lab, "other", &["203.0.113.20/24"]);
    let sg = Sgctl::new(&lab, &srv);
    let _l = listen(&srv, &["203.0.113.1:80"]);
    sg.apply(&[&policy("web-server.yaml")]);
    let dir = TempDir::new("flood");
    let log = dir.path().join("flows.log");
    let agent = Agent::start(&sg, &["--window", "1", "--quiet", "--flow-log", log.to_str().expect("utf-8")]);
    let pid = agent.pid();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;

    let secs = 4.0;
    let cpu_before = cpu_secs(pid);
    let started = Instant::now();
    let sent = flood::udp_from_many(
        &other,
        Ipv4Addr::new(198, 18, 0, 0),
        50_000,
        SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 5353),
        secs,
    );
    let elapsed = started.elapsed().as_secs_f64();
    // Let the agent drain and write its last window.
    std::thread::sleep(Duration::from_millis(2500));
    let cpu = cpu_secs(pid) - cpu_before;
    let rss = rss_kib(pid);

    let s = samples(&agent.scrape());
    let dropped = sample_of(&s, "sgctl_dropped_packets_total", &[("reason", "no_rule"), ("direction", "inbound")]);
    let suppressed = sample_of(&s, "sgctl_flow_events_suppressed_total", &[("interface", "eth0")]);
    let records = flows_until(&sg, &log, &["--dport", "5353", "--action", "reject"], |r| !r.is_empty());
    let logged: u64 = records.iter().filter_map(|r| r["packets"].as_u64()).sum();
    let skipdata = std::fs::read_to_string(&log).expect("log").lines().filter(|l| l.contains(" SKIPDATA ")).count();
    let cap = EVENTS_PER_SEC * cpus * (elapsed.ceil() as u64 + 1);
    eprintln!(
        "flood: {sent} datagrams from 50000 sources in {elapsed:.1} s ({:.0}/s); dropped {dropped}; events logged \
         {logged} ({:.0}/s), suppressed {suppressed}; {} records, {skipdata} SKIPDATA; agent CPU {cpu:.2} s over \
         {:.1} s ({:.1}% of one core), RSS {rss} KiB",
        sent as f64 / elapsed,
        logged as f64 / elapsed,
        records.len(),
        elapsed + 2.5,
        100.0 * cpu / (elapsed + 2.5),
    );
    assert!(dropped >= sent * 9 / 10, "the flood reached srv and was dropped: {dropped} of {sent}");
    assert!(logged > 0, "drops were logged");
    assert!(logged <= cap, "the kernel's limit holds: {logged} events > {cap}");
    assert!(suppressed > 0 && logged + suppressed >= dropped * 9 / 10, "the rest is counted as suppressed");
    assert!(skipdata > 0, "windows with suppressed events say SKIPDATA");
    assert!(cpu / (elapsed + 2.5) < 0.5, "the agent's CPU stays bounded: {cpu:.2} s in {:.1} s", elapsed + 2.5);
    assert!(rss < 200 * 1024, "the agent's memory stays bounded: {rss} KiB");
}

#[test]
fn flow_logs_of_seed_examples_2_and_3_name_the_group_reference_rule() {
    let lab = lab("flowlog-db");
    let app = host(&lab, "app", &["10.0.1.10/8"]);
    let db = host(&lab, "db", &["10.0.2.5/8"]);
    let outsider = host(&lab, "outsider", &["10.0.3.3/8"]);
    let sg = Sgctl::new(&lab, &db);
    sg.apply(&[&policy("app-server.yaml"), &policy("database.yaml")]);
    sg.attach("eth0", "database");
    let _l = listen(&db, &["10.0.2.5:3306"]);
    let dir = TempDir::new("flowlog-db");
    let log = dir.path().join("flows.log");
    let _agent = Agent::start(&sg, &["--window", "1", "--quiet", "--flow-log", log.to_str().expect("utf-8")]);
    expect_all(
        "seed Examples 2 and 3 on the database",
        vec![tcp(&app, "10.0.2.5:3306", Connected), tcp(&outsider, "10.0.2.5:3306", TimedOut)],
    );
    let records = flows_until(&sg, &log, &[], |r| {
        find(r, "10.0.1.10", 3306, "ACCEPT").is_some() && find(r, "10.0.3.3", 3306, "REJECT").is_some()
    });
    let accepted = find(&records, "10.0.1.10", 3306, "ACCEPT").expect("the app server's connection");
    assert_eq!(accepted["rule-id"], "database/inbound/0", "sg:app-server credited: {accepted}");
    assert_eq!(accepted["group"], "database", "{accepted}");
    let rejected = find(&records, "10.0.3.3", 3306, "REJECT").expect("the outsider's SYN");
    assert_eq!(rejected["drop-reason"], "no_rule", "{rejected}");
    // The database has `outbound: []`: its replies ride the flow and are no record of their own.
    assert!(records.iter().all(|r| r["flow-direction"] == "ingress"), "{records:#?}");
}
