//! An interface without an Ethernet header, end to end: two hosts joined by
//! a pair of TUN devices (a relay of the test copies the packets between
//! them), a policy on the server's tun device. Packets there begin with
//! the IP header; before issue 6 they passed unjudged as "not IP".
mod common;

use common::*;
use Outcome::{Connected, TimedOut};

const POLICY: &str = "\
groups:
  tunnel:
    inbound:
      - { protocol: tcp, ports: 80, source: [10.99.0.0/24, \"fd99::/64\"], description: HTTP over the tunnel }
    outbound:
      - { protocol: all, destination: [0.0.0.0/0, \"::/0\"] }
interfaces:
  tun0: [tunnel]
";

#[test]
fn a_tun_interface_is_filtered_like_any_other() {
    let lab = lab("tun");
    let srv = host(&lab, "srv", &[]);
    let cli = host(&lab, "cli", &[]);
    let _link = srv.tun_link("tun0", "10.99.0.1", &cli, "10.99.0.2").unwrap_or_else(|e| panic!("tun link: {e:#}"));
    for (h, local, peer) in [(&srv, "fd99::1", "fd99::2"), (&cli, "fd99::2", "fd99::1")] {
        let out = h.run(&["ip", "addr", "add", local, "peer", peer, "dev", "tun0", "nodad"]).expect("ip runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let _listeners = listen(&srv, &["10.99.0.1:80", "10.99.0.1:8080", "[fd99::1]:80", "[fd99::1]:8080"]);
    expect_all(
        "before apply: the tunnel carries everything",
        vec![tcp(&cli, "10.99.0.1:8080", Connected), tcp(&cli, "[fd99::1]:8080", Connected)],
    );

    let files = TempDir::new("tun");
    let policy = files.write("tunnel.yaml", POLICY);
    let sg = Sgctl::new(&lab, &srv);
    sg.apply(&[&policy]);
    let status = sg.status();
    assert_eq!(status["interfaces"][0]["ingress"], "tc", "a tun device is filtered with tcx: {status}");

    expect_all(
        "tunnel policy applied",
        vec![
            tcp(&cli, "10.99.0.1:80", Connected),
            tcp(&cli, "10.99.0.1:8080", TimedOut),
            tcp(&cli, "[fd99::1]:80", Connected),
            tcp(&cli, "[fd99::1]:8080", TimedOut),
            ping(&cli, "10.99.0.1", TimedOut),
        ],
    );
    let stats = sg.stats();
    assert_eq!(count(rule_stats(&stats, "tunnel/inbound/0"), "flows"), 2, "{stats:#}");
    let tun = &stats["interfaces"][0];
    assert!(count(tun, "dropped_no_rule") >= 3, "the 8080 SYNs and the ping were dropped by the rules: {tun:#}");
    assert_eq!(count(tun, "dropped_malformed"), 0, "the tunnel's packets parse: {tun:#}");

    // XDP has no protocol to go by on such a device: refused, one line.
    let run = sg.run(&["attach", "tun0", "--groups", "tunnel", "--mode", "xdp"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("without an Ethernet header"), "{run:?}");
    assert_eq!(run.stderr.trim().lines().count(), 1, "{run:?}");
}
