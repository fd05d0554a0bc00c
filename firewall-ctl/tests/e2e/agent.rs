//! `sgctl agent` end to end: its metrics scraped over HTTP against `sgctl
//! stats` (the tools users point at them read them in tests/e2e/prometheus.rs),
//! interfaces that appear after `apply`, and a SIGKILL.
//!
//! Hosts (one L2 segment): srv 203.0.113.1 carries web-server (seed
//! Example 1); ssh 203.0.113.10 (the SSH rule's source); other 203.0.113.20.
use std::time::{Duration, Instant};

use common::{agent::*, *};
use serde_json::Value;
use Outcome::{Connected, TimedOut};

use crate::common;

/// srv 203.0.113.1 and a client, other 203.0.113.20, on one segment.
struct WebLab {
    lab: Lab,
    srv: LabHost,
    other: LabHost,
}

fn web_lab(name: &str) -> WebLab {
    let lab = lab(name);
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let other = host(&lab, "other", &["203.0.113.20/24"]);
    WebLab { lab, srv, other }
}

/// Rule and drop counters of `stats --json` and the same from an exposition.
fn compare(stats: &Value, exposition: &str, what: &str) {
    let s = samples(exposition);
    for rule in stats["rules"].as_array().expect("rules") {
        let id = rule["rule"].as_str().expect("rule id");
        for (field, metric) in [
            ("flows", "sgctl_rule_flows_total"),
            ("packets", "sgctl_rule_packets_total"),
            ("bytes", "sgctl_rule_bytes_total"),
        ] {
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
fn stats_and_scrape(sg: &Sgctl, agent: &Agent) -> (Value, String) {
    (sg.stats(), agent.scrape())
}

#[test]
fn metrics_scraped_over_http_equal_stats_json() {
    let Counted { agent, sg, srv, .. } = &counted("metrics");
    let (stats, text) = stats_and_scrape(sg, agent);
    eprintln!("GET /metrics:\n{text}");
    compare(&stats, &text, "GET /metrics");
    let s = samples(&text);
    assert_eq!(sample_of(&s, "sgctl_rule_flows_total", &[("rule", "web-server/inbound/1")]), 2);
    assert_eq!(
        sample_of(
            &s,
            "sgctl_rule_flows_total",
            &[("netns", srv.netns()), ("group", "web-server"), ("direction", "inbound")]
        ),
        3,
        "two HTTP and one SSH flow"
    );
    assert!(sample_of(&s, "sgctl_dropped_packets_total", &[("reason", "no_rule"), ("direction", "inbound")]) >= 2);
    for table in ["confirmed", "pending"] {
        let at = [("interface", "eth0"), ("table", table)];
        assert_eq!(sample_of(&s, "sgctl_conntrack_entries_limit", &at), 65536, "{table}");
    }
    let confirmed = sample_of(&s, "sgctl_conntrack_entries", &[("interface", "eth0"), ("table", "confirmed")]);
    assert!(confirmed >= 3, "the three flows completed their handshakes: {confirmed}");
    assert_eq!(sample_of(&s, "sgctl_policy_generation", &[("netns", srv.netns())]), 1);
    assert!(text.contains("sgctl_build_info{version="), "{text}");
    assert!(text.contains("sgctl_flow_events_suppressed_total{"), "{text}");
    assert!(text.contains("sgctl_conntrack_entries{"), "{text}");

    // The textfile form, for node_exporter on hosts without the agent.
    let textfile = sg.ok(&["stats", "--format", "prometheus"]).stdout;
    compare(&sg.stats(), &textfile, "stats --format prometheus");
    assert_eq!(samples(&textfile), samples(&agent.scrape()), "the textfile form is the endpoint's exposition");
}

/// web-server.yaml with a second interface, `late0` (not there yet), in a
/// temporary directory (kept while the returned guard lives).
fn web_server_and_late0(name: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(name);
    let file = dir.write(
        "late.yaml",
        &replace_once(
            &policy_text("web-server.yaml"),
            "  eth0: [web-server]",
            "  eth0: [web-server]\n  late0: [web-server]",
        ),
    );
    (dir, file)
}

#[test]
fn an_interface_created_after_apply_is_attached_within_a_second() {
    let WebLab { lab, srv, other, .. } = web_lab("hotplug");
    let sg = Sgctl::new(&lab, &srv);
    let _l = listen(&srv, &["0.0.0.0:80", "0.0.0.0:8080"]);
    let (_dir, file) = web_server_and_late0("hotplug");
    let refused = sg.run(&["apply", &file.display().to_string()]);
    assert_eq!(refused.code, Some(2), "a missing interface is refused without --allow-missing: {refused:?}");
    let report = sg.json(&["apply", "--allow-missing", &file.display().to_string()]);
    assert_eq!(report["missing"], serde_json::json!(["late0"]), "{report:#}");
    let agent = Agent::start(&sg, &["--no-flow-log", "--quiet"]);
    assert!(filtered(&sg, "late0").is_none());

    plug_veth(&srv, &other);
    let took = wait_filtered(&sg, "late0", true, None, &agent);
    eprintln!("late0 attached {took:?} after it was created");
    assert!(took < Duration::from_secs(1), "attached within a second, took {took:?}:\n{}", agent.log());
    expect_all(
        "late0 filtered like eth0",
        vec![tcp(&other, "10.9.0.1:80", Connected), tcp(&other, "10.9.0.1:8080", TimedOut)],
    );

    // Gone: its state goes too. Back with a new ifindex: attached again.
    let first = ifindex_in(&srv, "late0");
    let out = srv.run(&["ip", "link", "del", "late0"]).expect("ip link del");
    assert!(out.status.success());
    wait_filtered(&sg, "late0", false, None, &agent);
    let state_dir = sg.state_dir().join(format!("netns-{}", srv.netns().replace('.', "%2E"))).join("if-late0");
    let gone = Instant::now();
    while state_dir.exists() && gone.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!state_dir.exists(), "{} removed", state_dir.display());
    plug_veth(&srv, &other);
    let second = ifindex_in(&srv, "late0");
    assert_ne!(first, second, "a new device");
    let took = wait_filtered(&sg, "late0", true, Some(second), &agent);
    eprintln!("late0 re-created (ifindex {first} -> {second}) attached after {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    expect_all(
        "late0 filtered again",
        vec![tcp(&other, "10.9.0.1:80", Connected), tcp(&other, "10.9.0.1:8080", TimedOut)],
    );
    assert!(agent.log().contains("attached late0"), "the agent says what it did:\n{}", agent.log());
}

/// A device deleted and created again under a policy's name (a container or
/// tunnel restarted) at any instant of the agent's work, including while it
/// removes the old device's state: the new one is always attached. (It was
/// once dropped from the saved policy when it came back between the removal
/// and the save, and stayed unfiltered for good.)
#[test]
fn an_interface_created_again_at_any_instant_is_always_attached_again() {
    let WebLab { lab, srv, other, .. } = web_lab("replug");
    let sg = Sgctl::new(&lab, &srv);
    let _l = listen(&srv, &["0.0.0.0:80", "0.0.0.0:8080"]);
    let (_dir, file) = web_server_and_late0("replug");
    sg.json(&["apply", "--allow-missing", &file.display().to_string()]);
    let agent = Agent::start(&sg, &["--no-flow-log", "--quiet"]);
    plug_veth(&srv, &other);
    wait_filtered(&sg, "late0", true, None, &agent);
    let mut seed = 0x5eed_u64 ^ u64::from(std::process::id());
    for round in 0..8 {
        let before = ifindex_in(&srv, "late0");
        ip(&srv, &["link", "del", "late0"]);
        // Back after 0-300 ms: before the agent looks, while it removes
        // the old device's state, or after.
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis((seed >> 33) % 300));
        plug_veth(&srv, &other);
        let now = ifindex_in(&srv, "late0");
        assert_ne!(before, now, "round {round}: a new device");
        wait_filtered(&sg, "late0", true, Some(now), &agent);
    }
    expect_all(
        "late0 filtered after eight restarts",
        vec![tcp(&other, "10.9.0.1:80", Connected), tcp(&other, "10.9.0.1:8080", TimedOut)],
    );
}

#[test]
fn a_killed_agent_changes_nothing_and_a_new_one_picks_up_the_counters() {
    let WebLab { lab, srv, other, .. } = web_lab("kill9");
    let sg = Sgctl::new(&lab, &srv);
    let _l = listen(&srv, &["203.0.113.1:80", "203.0.113.1:8080"]);
    sg.apply(&[&policy("web-server.yaml")]);
    let mut agent = Agent::start(&sg, &["--no-flow-log", "--quiet", "--window", "1"]);
    expect_all("before", vec![tcp(&other, "203.0.113.1:80", Connected), tcp(&other, "203.0.113.1:8080", TimedOut)]);
    let before = samples(&agent.scrape());
    let flows_before = sample_of(&before, "sgctl_rule_flows_total", &[("rule", "web-server/inbound/1")]);
    assert_eq!(flows_before, 1);
    let status_before = sg.status();

    agent.kill9();
    expect_all(
        "agent killed: enforcement unchanged",
        vec![
            tcp(&other, "203.0.113.1:80", Connected),
            tcp(&other, "203.0.113.1:8080", TimedOut),
            tcp(&other, "203.0.113.1:80", Connected),
        ],
    );
    let status_after = sg.status();
    assert_eq!(status_before["generation"], status_after["generation"], "no policy change");
    assert_eq!(
        status_before["interfaces"][0]["ingress_program_id"],
        status_after["interfaces"][0]["ingress_program_id"]
    );

    let again = Agent::start(&sg, &["--no-flow-log", "--quiet"]);
    let (stats, text) = stats_and_scrape(&sg, &again);
    compare(&stats, &text, "restarted agent");
    let after = samples(&text);
    assert_eq!(
        sample_of(&after, "sgctl_rule_flows_total", &[("rule", "web-server/inbound/1")]),
        3,
        "the counters went on while no agent ran: {text}"
    );
    assert!(
        sample_of(&after, "sgctl_dropped_packets_total", &[("reason", "no_rule")])
            > sample_of(&before, "sgctl_dropped_packets_total", &[("reason", "no_rule")])
    );
}
