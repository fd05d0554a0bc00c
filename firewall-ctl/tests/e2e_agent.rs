//! `sgctl agent` end to end: its metrics scraped over HTTP against `sgctl
//! stats`, interfaces that appear after `apply`, and a SIGKILL.
//!
//! Hosts (one L2 segment): srv 203.0.113.1 carries web-server (seed
//! Example 1); ssh 203.0.113.10 (the SSH rule's source); other 203.0.113.20.
mod common;

use std::time::{Duration, Instant};

use common::{agent::*, *};
use Outcome::{Connected, TimedOut};

struct WebLab {
    lab: Lab,
    srv: Host,
    ssh: Host,
    other: Host,
}

fn web_lab(name: &str) -> WebLab {
    let lab = lab(name);
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let ssh = host(&lab, "ssh", &["203.0.113.10/24"]);
    let other = host(&lab, "other", &["203.0.113.20/24"]);
    WebLab { lab, srv, ssh, other }
}

/// Rule and drop counters of `stats --json` and the same from an exposition.
fn compare(stats: &serde_json::Value, exposition: &str, what: &str) {
    let s = samples(exposition);
    for rule in stats["rules"].as_array().expect("rules") {
        let id = rule["rule"].as_str().expect("rule id");
        for (field, metric) in
            [("flows", "sgctl_rule_flows_total"), ("packets", "sgctl_rule_packets_total"), ("bytes", "sgctl_rule_bytes_total")]
        {
            assert_eq!(
                sample_of(&s, metric, &[("rule", id), ("interface", "eth0")]),
                count(rule, field),
                "{what}: {metric} of {id} vs stats --json {field}:\n{exposition}\n{stats:#}"
            );
        }
    }
    let eth0 = &stats["interfaces"][0];
    for (field, reason) in [("dropped_no_rule", "no_rule"), ("dropped_malformed", "malformed")] {
        assert_eq!(
            sample_of(&s, "sgctl_dropped_packets_total", &[("interface", "eth0"), ("reason", reason)]),
            count(eth0, field),
            "{what}: dropped {reason}:\n{exposition}\n{stats:#}"
        );
    }
}

/// Counters move only with traffic; two reads with none between agree.
fn stats_and_scrape(sg: &Sgctl, agent: &Agent) -> (serde_json::Value, String) {
    (sg.stats(), agent.scrape())
}

#[test]
fn metrics_scraped_over_http_equal_stats_json() {
    let WebLab { lab, srv, ssh, other } = web_lab("metrics");
    let sg = Sgctl::new(&lab, &srv);
    let _l = listen(&srv, &["203.0.113.1:22", "203.0.113.1:80", "203.0.113.1:8080"]);
    sg.apply(&[&policy("web-server.yaml")]);
    let agent = Agent::start(&sg, &["--no-flow-log", "--quiet"]);
    expect_all(
        "traffic to count",
        vec![
            tcp(&ssh, "203.0.113.1:22", Connected),
            tcp(&other, "203.0.113.1:80", Connected),
            tcp(&other, "203.0.113.1:22", TimedOut),
            tcp(&other, "203.0.113.1:8080", TimedOut),
        ],
    );
    expect_all("one more", vec![tcp(&other, "203.0.113.1:80", Connected)]);
    std::thread::sleep(Duration::from_millis(300));
    let (stats, text) = stats_and_scrape(&sg, &agent);
    eprintln!("GET /metrics:\n{text}");
    compare(&stats, &text, "GET /metrics");
    let s = samples(&text);
    assert_eq!(sample_of(&s, "sgctl_rule_flows_total", &[("rule", "web-server/inbound/1")]), 2);
    assert_eq!(
        sample_of(&s, "sgctl_rule_flows_total", &[("netns", srv.netns()), ("group", "web-server"), ("direction", "inbound")]),
        3,
        "two HTTP and one SSH flow"
    );
    assert!(sample_of(&s, "sgctl_dropped_packets_total", &[("reason", "no_rule"), ("direction", "inbound")]) >= 2);
    assert_eq!(sample_of(&s, "sgctl_conntrack_entries_limit", &[("interface", "eth0")]), 65536);
    assert_eq!(sample_of(&s, "sgctl_policy_generation", &[("netns", srv.netns())]), 1);
    assert!(text.contains("sgctl_build_info{version="), "{text}");
    assert!(text.contains("sgctl_flow_events_suppressed_total{"), "{text}");
    assert!(text.contains("sgctl_conntrack_entries{"), "{text}");

    // The textfile form, for node_exporter on hosts without the agent.
    let textfile = sg.ok(&["stats", "--format", "prometheus"]).stdout;
    compare(&sg.stats(), &textfile, "stats --format prometheus");
    assert_eq!(samples(&textfile), samples(&agent.scrape()), "the textfile form is the endpoint's exposition");
}
