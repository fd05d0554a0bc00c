//! Fragmented datagrams end to end: the first fragment is judged with its
//! ports, the later ones follow it (docs/semantics.md item 14).
use std::{net::UdpSocket, time::Duration};

use common::*;

use crate::common;

const POLICY: &str = "\
groups:
  udp-service:
    inbound:
      - { protocol: udp, ports: 5000, source: [0.0.0.0/0, \"::/0\"], description: big datagrams }
interfaces:
  eth0: [udp-service]
";

/// Sends one `size`-byte datagram from `from` to `to` and waits for the echo.
fn big_exchange(from: &LabHost, to: &str, size: usize) -> bool {
    let to: std::net::SocketAddr = to.parse().expect("socket address");
    from.in_netns(move || {
        let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let socket = UdpSocket::bind(bind).expect("bind");
        socket.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        socket.connect(to).expect("connect");
        let payload = vec![0x5a; size];
        socket.send(&payload).expect("send");
        let mut buf = vec![0; size + 16];
        matches!(socket.recv(&mut buf), Ok(n) if n == size && buf[..n] == payload[..])
    })
}

#[test]
fn fragmented_datagrams_pass_when_their_first_fragment_does() {
    let lab = lab("frag");
    let srv = host(&lab, "srv", &["203.0.113.1/24", "2001:db8::1/64"]);
    let cli = host(&lab, "cli", &["203.0.113.20/24", "2001:db8::20/64"]);
    let _echo = udp_echo(&srv, &["203.0.113.1:5000", "[2001:db8::1]:5000", "203.0.113.1:6000"]);
    let files = TempDir::new("frag");
    let sg = Sgctl::new(&lab, &srv);
    sg.apply(&[&files.write("udp.yaml", POLICY)]);

    // 4000 bytes over a 1500-byte MTU: three fragments each way; the echo
    // goes out as a tracked flow's reply, fragmented too.
    assert!(big_exchange(&cli, "203.0.113.1:5000", 4000), "IPv4 fragmented datagram and its echo");
    assert!(big_exchange(&cli, "[2001:db8::1]:5000", 4000), "IPv6 fragmented datagram and its echo");
    assert!(big_exchange(&cli, "203.0.113.1:5000", 200), "small datagram");
    assert!(!big_exchange(&cli, "203.0.113.1:6000", 4000), "no rule for 6000: none of it passes");

    let stats = sg.stats();
    let iface = &stats["interfaces"][0];
    assert!(count(&iface["inbound"], "pass_fragment") >= 2, "{stats}");
    assert!(count(&iface["outbound"], "pass_fragment") >= 2, "{stats}");
    assert!(count(iface, "dropped_fragment") >= 2, "6000's later fragments: {stats}");
    // One flow per exchange (each uses its own socket, so its own port).
    assert_eq!(count(rule_stats(&stats, "udp-service/inbound/0"), "flows"), 3, "{stats}");
    assert_eq!(count(iface, "dropped_no_rule"), 1, "6000's first fragment: {stats}");
}
