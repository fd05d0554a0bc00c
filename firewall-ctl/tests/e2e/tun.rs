//! Interfaces without an Ethernet header, end to end: two hosts joined by
//! a pair of TUN devices (a relay of the test copies the packets between
//! them), a policy on the server's tun device. Packets there begin with
//! the IP header; before issue 6 they passed unjudged as "not IP". Then
//! real WireGuard, IP-in-IP and GRE devices, whose modules only the Debian
//! 12 guest has (`#[ignore]`d on the host, run by `cargo xtask test` there).
use common::*;
use serde_json::Value;
use Outcome::{Connected, TimedOut};

use crate::common;

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
    // The peer routes appear once IPv6 counts the device as ready, which
    // may be a moment after the address (a probe before it is "Network is
    // unreachable", not a verdict).
    for (h, peer) in [(&srv, "fd99::2"), (&cli, "fd99::1")] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while !h.run(&["ip", "-6", "route", "get", peer]).expect("ip runs").status.success() {
            assert!(std::time::Instant::now() < deadline, "no route to {peer} over tun0 within 3 s");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
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
    assert_eq!(status["interfaces"][0]["ingress"], tc_hook(), "a tun device is filtered with tc: {status}");

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

// ---- Real L3 tunnels. The host kernel has no loadable modules, so these
// run in the Debian 12 guest (Linux 6.1), where `cargo xtask test` runs
// them with `--include-ignored`; on a kernel without the modules they fail.

/// Runs `cmd` in `host` (or on the machine, for `None`), which must succeed; its stdout.
fn must(host: Option<&LabHost>, cmd: &[&str]) -> String {
    let out = match host {
        Some(h) => h.run(cmd).expect("runs"),
        None => std::process::Command::new(cmd[0]).args(&cmd[1..]).output().expect("runs"),
    };
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Two lab hosts on one segment (192.0.2.1 and .2) for a tunnel between them.
fn underlay(name: &str) -> (Lab, LabHost, LabHost) {
    let lab = lab(name);
    let srv = host(&lab, "srv", &["192.0.2.1/24"]);
    let cli = host(&lab, "cli", &["192.0.2.2/24"]);
    (lab, srv, cli)
}

/// A policy allowing tcp/80 from 10.98.0.0/24 in on `iface`, everything out.
fn tunnel_policy(files: &TempDir, iface: &str) -> std::path::PathBuf {
    let text = POLICY.replace("10.99.0.0/24", "10.98.0.0/24").replace("tun0", iface);
    files.write("tunnel.yaml", &text)
}

/// Filters `iface` of `srv` with [`tunnel_policy`]: 80 connects over the
/// tunnel, 8080 (a listener, no rule) times out.
fn only_80_passes(lab: &Lab, srv: &LabHost, cli: &LabHost, iface: &str) {
    let _listeners = listen(srv, &["10.98.0.1:80", "10.98.0.1:8080"]);
    expect_all("before apply: the tunnel carries everything", vec![tcp(cli, "10.98.0.1:8080", Connected)]);
    let files = TempDir::new(iface);
    let sg = Sgctl::new(lab, srv);
    sg.apply(&[&tunnel_policy(&files, iface)]);
    let status = sg.status();
    assert_eq!(status["interfaces"][0]["ingress"], tc_hook(), "{iface} is filtered with tc: {status}");
    expect_all(
        &format!("{iface}: only tcp/80 allowed"),
        vec![tcp(cli, "10.98.0.1:80", Connected), tcp(cli, "10.98.0.1:8080", TimedOut)],
    );
    let stats = sg.stats();
    assert_eq!(count(rule_stats(&stats, "tunnel/inbound/0"), "flows"), 1, "{stats:#}");
    assert_eq!(count(&stats["interfaces"][0], "dropped_malformed"), 0, "the tunnel's packets parse: {stats:#}");
}

#[test]
#[ignore = "needs the wireguard, ipip and ip_gre modules: cargo xtask test runs it in the Debian 12 guest"]
fn a_wireguard_interface_passes_only_what_its_rules_allow() {
    let (lab, srv, cli) = underlay("wg");
    must(None, &["modprobe", "wireguard"]);
    let keys = TempDir::new("wg");
    let mut public = Vec::new();
    for (h, name) in [(&srv, "srv"), (&cli, "cli")] {
        let private = must(None, &["wg", "genkey"]);
        let file = keys.write(&format!("{name}.key"), &private);
        let mut pubkey = std::process::Command::new("wg")
            .arg("pubkey")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("wg pubkey");
        std::io::Write::write_all(pubkey.stdin.as_mut().expect("stdin"), private.as_bytes()).expect("key");
        let out = pubkey.wait_with_output().expect("wg pubkey");
        public.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        must(Some(h), &["ip", "link", "add", "wg0", "type", "wireguard"]);
        let key = file.to_str().expect("utf-8").to_owned();
        must(Some(h), &["wg", "set", "wg0", "listen-port", "51820", "private-key", &key]);
    }
    for (h, local, peer_key, peer) in
        [(&srv, "10.98.0.1/24", &public[1], "192.0.2.2"), (&cli, "10.98.0.2/24", &public[0], "192.0.2.1")]
    {
        let endpoint = format!("{peer}:51820");
        must(Some(h), &["wg", "set", "wg0", "peer", peer_key, "allowed-ips", "10.98.0.0/24", "endpoint", &endpoint]);
        must(Some(h), &["ip", "addr", "add", local, "dev", "wg0"]);
        must(Some(h), &["ip", "link", "set", "wg0", "up"]);
    }
    only_80_passes(&lab, &srv, &cli, "wg0");
}

#[test]
#[ignore = "needs the wireguard, ipip and ip_gre modules: cargo xtask test runs it in the Debian 12 guest"]
fn an_ipip_interface_passes_only_what_its_rules_allow() {
    let (lab, srv, cli) = underlay("ipip");
    must(None, &["modprobe", "ipip"]);
    for (h, local, remote, addr) in
        [(&srv, "192.0.2.1", "192.0.2.2", "10.98.0.1/24"), (&cli, "192.0.2.2", "192.0.2.1", "10.98.0.2/24")]
    {
        must(Some(h), &["ip", "link", "add", "ipip1", "type", "ipip", "local", local, "remote", remote]);
        must(Some(h), &["ip", "addr", "add", addr, "dev", "ipip1"]);
        must(Some(h), &["ip", "link", "set", "ipip1", "up"]);
    }
    only_80_passes(&lab, &srv, &cli, "ipip1");
}

#[test]
#[ignore = "needs the wireguard, ipip and ip_gre modules: cargo xtask test runs it in the Debian 12 guest"]
fn a_gre_interface_is_refused_in_one_line_and_nothing_changes() {
    let (lab, srv, _cli) = underlay("gre");
    must(None, &["modprobe", "ip_gre"]);
    must(Some(&srv), &["ip", "link", "add", "gre1", "type", "gre", "local", "192.0.2.1", "remote", "192.0.2.2"]);
    must(Some(&srv), &["ip", "link", "set", "gre1", "up"]);
    let files = TempDir::new("gre");
    let sg = Sgctl::new(&lab, &srv);
    let run = sg.run(&["apply", tunnel_policy(&files, "gre1").to_str().expect("utf-8")]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("gre1: GRE devices are not supported"), "{run:?}");
    assert_eq!(run.stderr.trim().lines().count(), 1, "{run:?}");
    let status = sg.status();
    assert_eq!((&status["generation"], &status["interfaces"]), (&Value::Null, &serde_json::json!([])), "{status:#}");
}
