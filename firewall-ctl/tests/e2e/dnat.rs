//! Docker-style published ports (docs/semantics.md item 19): a DNAT rule
//! (nftables, in the server's namespace) sends the server's port 8080 to a
//! "container" behind it. sgctl judges on the host interface, before
//! netfilter, so its verdict applies to the published port: no rule for
//! 8080, no connection, whatever the DNAT target's port — the case where
//! ufw's INPUT rules never see Docker's forwarded traffic (moby#4737).
//!
//! Hosts: srv 203.0.113.1 (eth0, filtered) forwards to ctr 172.17.0.2 over a
//! second veth (srv ctr0 172.17.0.1); other 203.0.113.20 is the client.
use common::*;
use Outcome::{Connected, TimedOut};

use crate::common;

fn run_ok(host: &LabHost, cmd: &[&str]) {
    let out = host.run(cmd).unwrap_or_else(|e| panic!("{cmd:?}: {e:#}"));
    assert!(out.status.success(), "{cmd:?} in {}: {}", host.name(), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn sgctl_judges_published_ports_before_dnat() {
    let lab = lab("dnat");
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let ctr = host(&lab, "ctr", &[]);
    let other = host(&lab, "other", &["203.0.113.20/24"]);
    lab.link(&srv, "ctr0", &["172.17.0.1/24"], &ctr, "eth1", &["172.17.0.2/24"]).expect("the container's link");
    run_ok(&ctr, &["ip", "route", "add", "203.0.113.0/24", "via", "172.17.0.1"]);
    run_ok(&srv, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    run_ok(&srv, &["nft", "add", "table", "ip", "nat"]);
    run_ok(&srv, &["nft", "add", "chain", "ip", "nat", "prerouting", "{ type nat hook prerouting priority dstnat; }"]);
    run_ok(
        &srv,
        &["nft", "add", "rule", "ip", "nat", "prerouting", "tcp", "dport", "8080", "dnat", "to", "172.17.0.2:80"],
    );
    let _web = listen(&ctr, &["172.17.0.2:80"]);
    let _host_web = listen(&srv, &["203.0.113.1:80"]);
    expect_all(
        "unfiltered: the published port reaches the container",
        vec![tcp(&other, "203.0.113.1:8080", Connected)],
    );

    let sg = Sgctl::new(&lab, &srv);
    sg.apply(&[&policy("web-server.yaml")]);
    expect_all(
        "web-server: 80 is allowed, 8080 (published, DNAT to port 80) is not",
        vec![tcp(&other, "203.0.113.1:80", Connected), tcp(&other, "203.0.113.1:8080", TimedOut)],
    );
    let stats = sg.stats();
    assert!(count(&stats["interfaces"][0], "dropped_no_rule") >= 1, "{stats:#}");

    let dir = TempDir::new("dnat");
    let published = replace_once(
        &policy_text("web-server.yaml"),
        "    outbound:\n",
        "      - { protocol: tcp, ports: 8080, source: 0.0.0.0/0, description: Published container port }\n    outbound:\n",
    );
    sg.apply(&[&dir.write("published.yaml", &published)]);
    expect_all("a rule for the published port", vec![tcp(&other, "203.0.113.1:8080", Connected)]);
    let stats = sg.stats();
    let rule = rule_stats(&stats, "web-server/inbound/3");
    assert_eq!(rule["description"], "Published container port", "{rule}");
    assert_eq!(count(rule, "flows"), 1, "the published port's rule gets the flow: {stats:#}");
}
