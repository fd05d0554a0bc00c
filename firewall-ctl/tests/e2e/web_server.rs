//! Seed Example 1 (`policies/web-server.yaml`) end to end: the real `sgctl`
//! filtering a lab host's eth0, probed with real TCP and ICMP, plus the
//! counters (`stats`) and the flow table (`conntrack`) it reports.
//!
//! Hosts (one L2 segment): srv 203.0.113.1 / 2001:db8::1 carries web-server;
//! ssh 203.0.113.10 / 2001:db8::10 (the SSH rule's source); other
//! 203.0.113.20 / 2001:db8::20. Only srv is filtered.
use common::{seed::*, *};
use Outcome::{Connected, TimedOut};

use crate::common;

/// `sgctl apply web-server.yaml` on srv; checks it attached eth0.
fn apply_web_server(sg: &Sgctl) {
    let report = sg.apply(&[&policy("web-server.yaml")]);
    let ifaces = report["interfaces"].as_array().expect("apply report has interfaces");
    assert!(
        ifaces.iter().any(|c| c["interface"] == "eth0" && c["change"] == "attached"),
        "apply should attach eth0 (the policy names it): {report:#}"
    );
}

#[test]
fn example1_web_server_both_families() {
    let w = web_lab("ex1");
    let sg = Sgctl::new(&w.lab, &w.srv);
    let listeners = web_listeners(&w);
    expect_all("before apply: srv is unfiltered", web_unfiltered(&w));

    apply_web_server(&sg);

    expect_all("web-server applied", web_enforced(&w, TimedOut));

    // An allowed port where nothing listens: the host's own RST gets out.
    drop(listeners.https);
    expect_all("443 allowed, nothing listening", web_https_down(&w));
}

#[test]
fn stats_count_exactly_the_rules_that_carried_traffic() {
    let WebLab { lab, srv, ssh, other } = web_lab("stats");
    let sg = Sgctl::new(&lab, &srv);
    let _l = listen(&srv, &["203.0.113.1:22", "203.0.113.1:80", "203.0.113.1:443", "203.0.113.1:8080"]);
    let _c = listen(&ssh, &["203.0.113.10:9000"]);
    apply_web_server(&sg);

    let fresh = sg.stats();
    for rule in ["web-server/inbound/0", "web-server/inbound/1", "web-server/inbound/2", "web-server/outbound/0"] {
        let r = rule_stats(&fresh, rule);
        for field in ["flows", "packets", "bytes"] {
            assert_eq!(count(r, field), 0, "{rule}.{field} on a fresh attachment: {fresh:#}");
        }
    }

    // Two HTTP connections and one HTTPS, one after the other.
    expect_all("first http", vec![tcp(&other, "203.0.113.1:80", Connected)]);
    expect_all("second http", vec![tcp(&other, "203.0.113.1:80", Connected)]);
    expect_all("https", vec![tcp(&other, "203.0.113.1:443", Connected)]);
    let stats = sg.stats();
    eprintln!("stats after 2×80 + 1×443: {stats:#}");

    let http = rule_stats(&stats, "web-server/inbound/1");
    assert_eq!(http["group"], "web-server", "{http}");
    assert_eq!(http["direction"], "inbound", "{http}");
    assert_eq!(http["index"], 1, "{http}");
    assert_eq!(http["description"], "Allow HTTP (web traffic)", "{http}");
    assert_eq!(count(http, "flows"), 2, "two connections to port 80: {stats:#}");
    // Each connection is at least SYN, SYN-ACK, ACK, data in, data out,
    // counted in both directions, each packet at least an IPv4 + TCP header.
    assert!(count(http, "packets") >= 2 * 5, "packets of two echo exchanges on 80: {http}");
    assert!(count(http, "bytes") >= 40 * count(http, "packets"), "bytes of {http}");

    let https = rule_stats(&stats, "web-server/inbound/2");
    assert_eq!(https["description"], "Allow HTTPS (secure web traffic)", "{https}");
    assert_eq!(count(https, "flows"), 1, "one connection to 443: {stats:#}");
    assert!(count(https, "packets") >= 5, "{https}");
    assert!(count(https, "bytes") >= 40 * count(https, "packets"), "{https}");

    let ssh_rule = rule_stats(&stats, "web-server/inbound/0");
    assert_eq!(ssh_rule["description"], "SSH access", "{ssh_rule}");
    for field in ["flows", "packets", "bytes"] {
        assert_eq!(count(ssh_rule, field), 0, "SSH carried nothing: {stats:#}");
    }
    // Replies of inbound flows belong to the inbound rule, not to outbound.
    let out = rule_stats(&stats, "web-server/outbound/0");
    for field in ["flows", "packets", "bytes"] {
        assert_eq!(count(out, field), 0, "srv opened nothing, so outbound/0 carried nothing: {stats:#}");
    }

    let ifaces = stats["interfaces"].as_array().expect("stats has interfaces");
    assert_eq!(ifaces.len(), 1, "one filtered interface: {stats:#}");
    let eth0 = &ifaces[0];
    assert_eq!(eth0["interface"], "eth0", "{eth0}");
    assert_eq!(eth0["netns"], srv.netns(), "{eth0}");
    assert_eq!(count(eth0, "dropped_malformed"), 0, "{eth0}");
    assert_eq!(count(eth0, "dropped_conntrack_full"), 0, "{eth0}");
    let dropped_before = count(eth0, "dropped_no_rule");

    // Blocked attempts: SSH from the wrong client, and a port with no rule.
    expect_all("blocked", vec![tcp(&other, "203.0.113.1:22", TimedOut), tcp(&other, "203.0.113.1:8080", TimedOut)]);
    // srv opens one connection: outbound/0 gets exactly that flow.
    expect_all("srv opens one", vec![tcp(&srv, "203.0.113.10:9000", Connected)]);
    let after = sg.stats();
    eprintln!("stats after the blocked attempts and one outbound flow: {after:#}");
    let eth0 = &after["interfaces"][0];
    assert!(
        count(eth0, "dropped_no_rule") >= dropped_before + 2,
        "two dropped SYNs at least (before: {dropped_before}): {eth0}"
    );
    let ssh_rule = rule_stats(&after, "web-server/inbound/0");
    assert_eq!(count(ssh_rule, "flows"), 0, "a dropped SSH attempt opens no flow: {ssh_rule}");
    assert_eq!(count(ssh_rule, "packets"), 0, "a dropped SSH attempt counts on no rule: {ssh_rule}");
    assert_eq!(count(rule_stats(&after, "web-server/inbound/1"), "flows"), 2, "{after:#}");
    assert_eq!(count(rule_stats(&after, "web-server/inbound/2"), "flows"), 1, "{after:#}");
    let out = rule_stats(&after, "web-server/outbound/0");
    assert_eq!(count(out, "flows"), 1, "srv opened one connection: {after:#}");
    assert!(count(out, "packets") >= 5 && count(out, "bytes") >= 40 * 5, "{out}");
}

#[test]
fn conntrack_list_shows_flows_and_flush_empties_it() {
    let WebLab { lab, srv, other, .. } = web_lab("ct");
    let sg = Sgctl::new(&lab, &srv);
    let _l = listen(&srv, &["203.0.113.1:80", "[2001:db8::1]:443"]);
    apply_web_server(&sg);
    let empty = sg.json(&["conntrack", "list"]);
    assert_eq!(empty["flows"].as_array().map(Vec::len), Some(0), "no flow yet: {empty:#}");

    let mut v4 = open(&other, "203.0.113.1:80");
    let mut v6 = open(&other, "[2001:db8::1]:443");
    let list = sg.json(&["conntrack", "list"]);
    eprintln!("conntrack list: {list:#}");
    let flows = list["flows"].as_array().expect("conntrack list has flows");
    let find = |src: String, dst: &str| {
        flows
            .iter()
            .find(|f| f["src"] == src.as_str() && f["dst"] == dst)
            .unwrap_or_else(|| panic!("no flow {src} -> {dst} in {list:#}"))
    };
    let f4 = find(v4.local_addr().to_string(), "203.0.113.1:80");
    assert_eq!(f4["protocol"], 6, "{f4}");
    assert_eq!(f4["interface"], "eth0", "{f4}");
    assert_eq!(f4["netns"], srv.netns(), "{f4}");
    assert_eq!(f4["rule"], "web-server/inbound/1", "{f4}");
    assert_eq!(f4["state"], "established", "{f4}");
    let f6 = find(v6.local_addr().to_string(), "[2001:db8::1]:443");
    assert_eq!(f6["protocol"], 6, "{f6}");
    assert_eq!(f6["rule"], "web-server/inbound/2", "{f6}");
    assert_eq!(f6["state"], "established", "{f6}");
    assert_eq!(flows.len(), 2, "exactly the two open connections: {list:#}");

    let status = sg.status();
    assert_eq!(status["interfaces"][0]["conntrack_entries"], 2, "status counts the flows: {status:#}");

    let flushed = sg.json(&["conntrack", "flush"]);
    let removed: u64 =
        flushed["interfaces"].as_array().expect("flush reports interfaces").iter().map(|i| count(i, "removed")).sum();
    assert_eq!(removed, 2, "flush removes both flows: {flushed:#}");
    let after = sg.json(&["conntrack", "list"]);
    assert_eq!(after["flows"].as_array().map(Vec::len), Some(0), "flush empties the table: {after:#}");
    let status = sg.status();
    assert_eq!(status["interfaces"][0]["conntrack_entries"], 0, "{status:#}");

    // Both connections are still allowed by rules (80 and 443 from
    // anywhere), so they carry on after the flush.
    assert_eq!(v4.echo(ALLOWED), Connected, "{} after flush", v4.name());
    assert_eq!(v6.echo(ALLOWED), Connected, "{} after flush", v6.name());
}
