//! Flow logs with per-flow accounting (`conntrack: { accounting: true }`):
//! every packet of a flow is counted by the datapath, and `sgctl agent`
//! writes, each window, what each direction of each flow carried in it,
//! and a flow's end once.
//!
//! Hosts (one L2 segment): srv 203.0.113.1 (UDP echo on 5000, TCP on 80);
//! cli 203.0.113.20.
use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    time::Duration,
};

use common::{agent::*, *};
use serde_json::Value;
use Outcome::Connected;

use super::flowlogs::{assert_same_record, flowlogs_reader, flows_until};
use crate::common;

const POLICY: &str = "groups:
  acct:
    inbound:
      - { protocol: udp, ports: 5000, source: 203.0.113.0/24 }
      - { protocol: tcp, ports: 80, source: 203.0.113.0/24 }
    outbound:
      - { protocol: all, destination: 0.0.0.0/0 }
interfaces:
  eth0: [acct]
conntrack:
  accounting: true
";

/// Ethernet, IPv4 and UDP headers: what a datagram's frame adds to its payload.
const UDP_FRAME: u64 = 14 + 20 + 8;

struct Setup {
    _lab: Lab,
    srv: LabHost,
    cli: LabHost,
    sg: Sgctl,
    _dir: TempDir,
    log: std::path::PathBuf,
    _servers: Vec<Listener>,
    agent: Agent,
}

/// srv filtered by `policy`, its servers up, an agent with 2-second windows.
fn setup(name: &str, policy: &str) -> Setup {
    let lab = lab(name);
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let cli = host(&lab, "cli", &["203.0.113.20/24"]);
    let sg = Sgctl::new(&lab, &srv);
    let mut servers = udp_echo(&srv, &["203.0.113.1:5000"]);
    servers.extend(listen(&srv, &["203.0.113.1:80"]));
    let dir = TempDir::new(name);
    sg.apply(&[&dir.write("acct.yaml", policy)]);
    let log = dir.path().join("flows.log");
    let agent = Agent::start(&sg, &["--window", "2", "--quiet", "--flow-log", log.to_str().expect("utf-8")]);
    // The agent's first look at the tables (its baseline) is done once it
    // names its log: flows opened after it are counted from their first packet.
    let started = std::time::Instant::now();
    while !agent.log.lock().unwrap_or_else(|p| p.into_inner()).contains("sgctl agent: flow logs to ") {
        assert!(started.elapsed() < Duration::from_secs(10), "the agent never started its flow logs");
        std::thread::sleep(Duration::from_millis(50));
    }
    Setup { _lab: lab, srv, cli, sg, _dir: dir, log, _servers: servers, agent }
}

/// A UDP socket of `host` bound to `local`.
fn udp_socket(host: &LabHost, local: &str) -> UdpSocket {
    let local: SocketAddr = local.parse().expect("address");
    host.in_netns(|| UdpSocket::bind(local)).unwrap_or_else(|e| panic!("binding {local}: {e}"))
}

fn records_of(sg: &Sgctl, log: &Path, args: &[&str], n: usize) -> Vec<Value> {
    flows_until(sg, log, args, |r| r.len() >= n)
}

fn number(r: &Value, field: &str) -> u64 {
    r[field].as_u64().unwrap_or_else(|| panic!("{field} of {r}"))
}

#[test]
fn a_flow_over_three_windows_yields_three_records_that_sum_to_what_it_sent() {
    let s = setup("acct-windows", POLICY);
    let sock = udp_socket(&s.cli, "203.0.113.20:40000");
    let to: SocketAddr = "203.0.113.1:5000".parse().expect("address");
    let request = ["--src", "203.0.113.20", "--sport", "40000", "--dport", "5000"];
    // Three bursts, each sent just after the agent wrote the window before
    // (the previous burst's record appeared), so none straddles a window's end.
    let bursts: [(u64, usize); 3] = [(20, 100), (30, 400), (10, 1000)];
    for (i, (packets, payload)) in bursts.iter().enumerate() {
        for _ in 0..*packets {
            sock.send_to(&vec![7u8; *payload], to).expect("send");
        }
        records_of(&s.sg, &s.log, &request, i + 1);
    }
    // One more window: nothing more of this direction.
    std::thread::sleep(Duration::from_millis(2500));
    let records = records_of(&s.sg, &s.log, &request, 3);
    eprintln!("records: {records:#?}");
    assert_eq!(records.len(), 3, "one record per window the flow sent in: {records:#?}");
    for (r, (packets, payload)) in records.iter().zip(bursts) {
        assert_eq!(number(r, "packets"), packets, "{r}");
        assert_eq!(number(r, "bytes"), packets * (UDP_FRAME + payload as u64), "{r}");
        assert_eq!(r["counted"], "flow", "{r}");
        assert_eq!(r["action"], "ACCEPT", "{r}");
        assert_eq!(r["rule-id"], "acct/inbound/0", "{r}");
        assert_eq!(r["group"], "acct", "{r}");
        assert_eq!(r["flow-direction"], "ingress", "{r}");
        assert_eq!(r["end-reason"], Value::Null, "a UDP flow that is still live has not ended: {r}");
        assert!(number(r, "start") <= number(r, "end"), "{r}");
    }
    assert!(
        records.windows(2).all(|w| number(&w[0], "end") <= number(&w[1], "start")),
        "each record its own window, in order: {records:#?}"
    );
    let sent: u64 = bursts.iter().map(|(p, _)| p).sum();
    let sent_bytes: u64 = bursts.iter().map(|(p, len)| p * (UDP_FRAME + *len as u64)).sum();
    // The echoes are the flow's other direction: records of their own
    // (srv to cli, leaving srv), summing to what came back.
    let echoes = flows_until(&s.sg, &s.log, &["--src", "203.0.113.1", "--sport", "5000"], |r| {
        r.iter().filter_map(|r| r["packets"].as_u64()).sum::<u64>() >= sent
    });
    assert_eq!(echoes.iter().map(|r| number(r, "packets")).sum::<u64>(), sent, "{echoes:#?}");
    assert_eq!(echoes.iter().map(|r| number(r, "bytes")).sum::<u64>(), sent_bytes, "{echoes:#?}");
    assert!(echoes.iter().all(|r| r["flow-direction"] == "egress" && r["rule-id"] == "acct/inbound/0"), "{echoes:#?}");

    // The v2 lines, read by flowlogs-reader with AWS's 14 default fields,
    // give the same records.
    let log = s.log.to_str().expect("utf-8");
    let v2 = s.sg.ok(&[&["flows", "--file", log, "--format", "v2", "--last", "100000"][..], &request].concat()).stdout;
    let parsed = flowlogs_reader(&v2, &[]);
    assert_eq!(parsed.len(), 3, "{v2}");
    for (p, r) in parsed.iter().zip(&records) {
        assert_same_record(p, r);
    }

    // The top talkers: this flow's two directions, each with all it carried.
    let top = s.sg.json(&["flows", "--file", log, "--top", "2", "--by", "bytes", "--since", "1h"]);
    let top = top["top"].as_array().cloned().unwrap_or_default();
    assert_eq!(top.len(), 2, "{top:#?}");
    for t in &top {
        assert_eq!((number(t, "packets"), number(t, "bytes")), (sent, sent_bytes), "{t}");
    }
    let sources: Vec<&str> = top.iter().filter_map(|t| t["srcaddr"].as_str()).collect();
    assert!(sources.contains(&"203.0.113.20") && sources.contains(&"203.0.113.1"), "{top:#?}");
    drop(s.agent);
}

#[test]
fn a_flow_that_ends_yields_its_end_record_once() {
    let s = setup("acct-end", POLICY);
    expect_all("a connection opened and closed", vec![tcp(&s.cli, "203.0.113.1:80", Connected)]);
    let args = ["--src", "203.0.113.20", "--dport", "80"];
    let records = flows_until(&s.sg, &s.log, &args, |r| r.iter().any(|r| r["end-reason"] != Value::Null));
    // Another window: the end is not written again.
    std::thread::sleep(Duration::from_millis(4500));
    let records_later = flows_until(&s.sg, &s.log, &args, |_| true);
    eprintln!("records: {records_later:#?}");
    let ends: Vec<&Value> = records_later.iter().filter(|r| r["end-reason"] != Value::Null).collect();
    assert_eq!(ends.len(), 1, "the end is recorded once: {records_later:#?}");
    let end = ends[0];
    assert!(["fin", "rst"].contains(&end["end-reason"].as_str().unwrap_or_default()), "{end}");
    assert_eq!(end["counted"], "flow", "{end}");
    assert_eq!(end["rule-id"], "acct/inbound/1", "{end}");
    let packets: u64 = records_later.iter().map(|r| number(r, "packets")).sum();
    assert!(packets >= 3, "SYN, the handshake's ACK and the close at least: {records_later:#?}");
    assert!(number(end, "tcp-flags") & 5 != 0, "FIN or RST in the flags of its last window: {end}");
    assert!(!records.is_empty());
    let _ = &s.srv;
}

#[test]
fn without_accounting_records_say_they_count_first_packets() {
    let policy = POLICY.replace("conntrack:\n  accounting: true\n", "");
    let s = setup("acct-off", &policy);
    let sock = udp_socket(&s.cli, "203.0.113.20:40001");
    for _ in 0..5 {
        sock.send_to(&[7u8; 100], "203.0.113.1:5000").expect("send");
    }
    sock.send_to(&[7u8; 100], "203.0.113.1:6000").expect("send");
    let records = flows_until(&s.sg, &s.log, &["--src", "203.0.113.20"], |r| {
        r.iter().any(|r| r["dstport"] == 5000) && r.iter().any(|r| r["dstport"] == 6000)
    });
    eprintln!("records: {records:#?}");
    let accepted = records.iter().find(|r| r["dstport"] == 5000).expect("the UDP flow");
    assert_eq!(accepted["counted"], "first-packet", "{accepted}");
    assert_eq!((number(accepted, "packets"), number(accepted, "bytes")), (1, UDP_FRAME + 100), "{accepted}");
    let rejected = records.iter().find(|r| r["dstport"] == 6000).expect("the dropped datagram");
    assert_eq!(rejected["counted"], "reported", "{rejected}");
    assert_eq!(rejected["action"], "REJECT", "{rejected}");
    let _ = &s.srv;
}
