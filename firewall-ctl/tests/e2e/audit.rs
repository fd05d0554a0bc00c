//! Audit mode end to end (`mode: audit`, docs/semantics.md item 18): what
//! the policy would drop passes and is reported — in `stats`, the metrics,
//! the flow log and `conntrack list` — as `would_drop`; switched to
//! enforce, the same connection times out.
//!
//! Hosts: srv 203.0.113.1 carries web-server (seed Example 1, in audit mode
//! first); other 203.0.113.20.
use std::time::{Duration, Instant};

use common::{agent::*, *};
use Outcome::{Connected, TimedOut};

use crate::common;

#[test]
fn audit_lets_through_and_reports_what_enforce_then_drops() {
    let lab = lab("audit");
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let other = host(&lab, "other", &["203.0.113.20/24"]);
    let sg = Sgctl::new(&lab, &srv);
    let _l = listen(&srv, &["203.0.113.1:80", "203.0.113.1:8080"]);
    let dir = TempDir::new("audit");
    let enforce_text = policy_text("web-server.yaml");
    let audit_text = replace_once(
        &enforce_text,
        "    description: Basic web server\n",
        "    description: Basic web server\n    mode: audit\n",
    );
    let file = dir.write("web.yaml", &audit_text);
    let log = dir.path().join("flows.log");
    let agent = Agent::start(&sg, &["--window", "1", "--quiet", "--flow-log", log.to_str().expect("utf-8")]);
    sg.apply(&[&file]);

    expect_all(
        "audit: nothing is dropped",
        vec![tcp(&other, "203.0.113.1:80", Connected), tcp(&other, "203.0.113.1:8080", Connected)],
    );
    let mut kept = open(&other, "203.0.113.1:8080");
    let explain = |dport: &str| sg.explain_tcp_in("203.0.113.20", "203.0.113.1", dport);
    let why = explain("8080");
    assert_eq!(why["verdict"], "would_drop", "{why:#}");
    assert_eq!(why["allowed"], true, "{why:#}");
    assert_eq!(why["audit_groups"], serde_json::json!(["web-server"]), "{why:#}");
    let stats = sg.stats();
    let eth0 = &stats["interfaces"][0];
    assert!(count(eth0, "would_drop") >= 1, "the blocked SYN counts as would_drop: {stats:#}");
    assert_eq!(count(eth0, "dropped_no_rule"), 0, "nothing really dropped: {stats:#}");
    assert_eq!(count(rule_stats(&stats, "web-server/inbound/1"), "flows"), 1, "port 80 is credited as ever");
    let s = samples(&agent.scrape());
    assert!(sample_of(&s, "sgctl_audit_would_drop_packets_total", &[("direction", "inbound")]) >= 1);
    assert_eq!(sample_of(&s, "sgctl_dropped_packets_total", &[("reason", "no_rule")]), 0);
    let flows = sg.json(&["conntrack", "list"]);
    assert!(
        flows["flows"].as_array().expect("flows").iter().any(|f| f["rule"] == "(audit: would drop)"),
        "the audited connection is tracked as such: {flows:#}"
    );
    let started = Instant::now();
    let record = loop {
        let run = sg.run(&["flows", "--file", log.to_str().expect("utf-8"), "--action", "would-drop", "--json"]);
        let records =
            if run.code == Some(0) { run.json()["records"].as_array().cloned().unwrap_or_default() } else { vec![] };
        if let Some(r) = records.iter().find(|r| r["dstport"] == 8080) {
            break r.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(8), "no would_drop record: {run:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(record["action"], "ACCEPT", "it passed: {record}");
    assert_eq!(record["drop-reason"], "would_drop", "{record}");
    assert_eq!(record["group"], "web-server", "the audit group: {record}");

    // Enforce: the same connection now times out, and the audited one is cut.
    sg.apply(&[&dir.write("web.yaml", &enforce_text)]);
    expect_all("enforce", vec![tcp(&other, "203.0.113.1:80", Connected), tcp(&other, "203.0.113.1:8080", TimedOut)]);
    assert_eq!(kept.echo(BLOCKED), TimedOut, "a flow audit let through is cut by enforce");
    assert_eq!(explain("8080")["verdict"], "dropped");
    let after = sg.stats();
    assert!(count(&after["interfaces"][0], "dropped_no_rule") >= 1, "{after:#}");
}
