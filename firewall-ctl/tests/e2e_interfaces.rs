//! A host with two filtered interfaces carrying different groups: each
//! interface enforces its own groups only, and they share nothing.
mod common;

use common::*;
use Outcome::{Connected, TimedOut};

const POLICY: &str = "\
groups:
  web-server:
    inbound:
      - { protocol: tcp, ports: 80, source: 0.0.0.0/0, description: HTTP }
  backend-side:
    inbound:
      - { protocol: tcp, ports: 5432, source: 10.9.0.0/24, description: Postgres from the backend net }
interfaces:
  eth0: [web-server]
  eth1: [backend-side]
";

#[test]
fn two_interfaces_enforce_their_own_groups() {
    let lab = lab("twoif");
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let cli = host(&lab, "cli", &["203.0.113.20/24"]);
    let backend = host(&lab, "backend", &["203.0.113.30/24"]);
    lab.link(&srv, "eth1", &["10.9.0.1/24"], &backend, "eth1", &["10.9.0.2/24"])
        .unwrap_or_else(|e| panic!("second link: {e:#}"));
    let _listeners = listen(&srv, &["203.0.113.1:80", "203.0.113.1:5432", "10.9.0.1:80", "10.9.0.1:5432"]);

    let files = TempDir::new("twoif");
    let policy = files.write("two-interfaces.yaml", POLICY);
    let sg = Sgctl::new(&lab, &srv);
    let applied = sg.apply(&[&policy]);
    assert_eq!(applied["interfaces"].as_array().map(Vec::len), Some(2), "{applied}");

    let status = sg.status();
    let ifaces = &status["interfaces"];
    let groups_of = |name: &str| {
        ifaces
            .as_array()
            .and_then(|a| a.iter().find(|i| i["interface"] == name))
            .map(|i| i["groups"].clone())
            .unwrap_or_else(|| panic!("{name} not in {status}"))
    };
    assert_eq!(groups_of("eth0"), serde_json::json!(["web-server"]));
    assert_eq!(groups_of("eth1"), serde_json::json!(["backend-side"]));

    expect_all(
        "each interface enforces its own groups",
        vec![
            tcp(&cli, "203.0.113.1:80", Connected),
            tcp(&cli, "203.0.113.1:5432", TimedOut),
            tcp(&backend, "10.9.0.1:5432", Connected),
            tcp(&backend, "10.9.0.1:80", TimedOut),
            // The backend reaching srv's eth0 address goes over the bridge:
            // eth0's groups apply there.
            tcp(&backend, "203.0.113.1:80", Connected),
            tcp(&backend, "203.0.113.1:5432", TimedOut),
        ],
    );

    let stats = sg.stats();
    assert_eq!(count(rule_stats(&stats, "web-server/inbound/0"), "flows"), 2, "{stats}");
    assert_eq!(count(rule_stats(&stats, "backend-side/inbound/0"), "flows"), 1, "{stats}");
}

#[test]
fn a_deleted_interface_leaves_no_state_that_blocks_the_next_apply() {
    let lab = lab("gone");
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let backend = host(&lab, "backend", &["203.0.113.30/24"]);
    lab.link(&srv, "eth1", &["10.9.0.1/24"], &backend, "eth1", &["10.9.0.2/24"])
        .unwrap_or_else(|e| panic!("second link: {e:#}"));
    let files = TempDir::new("gone");
    let policy = files.write("two-interfaces.yaml", &POLICY.replace("  eth1: [backend-side]\n", ""));
    let sg = Sgctl::new(&lab, &srv);
    sg.apply(&[&policy]);
    sg.json(&["attach", "eth1", "--groups", "backend-side"]);
    assert_eq!(sg.status()["interfaces"].as_array().map(Vec::len), Some(2));

    // The interface goes away under sgctl's feet (its programs go with it).
    let out = srv.run(&["ip", "link", "del", "eth1"]).expect("ip runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let applied = sg.apply(&[&policy]);
    let changes = applied["interfaces"].to_string();
    assert!(changes.contains("\"detached\"") && changes.contains("eth1"), "{applied}");
    let status = sg.status();
    let names: Vec<&str> =
        status["interfaces"].as_array().into_iter().flatten().filter_map(|i| i["interface"].as_str()).collect();
    assert_eq!(names, ["eth0"], "{status}");
}

#[test]
fn state_of_a_deleted_namespace_is_pruned() {
    let lab = lab("prune");
    let gone = host(&lab, "gone", &["203.0.113.1/24"]);
    let stays = host(&lab, "stays", &["203.0.113.2/24"]);
    for h in [&gone, &stays] {
        Sgctl::new(&lab, h).apply(&[&policy("web-server.yaml")]);
    }
    let state = lab.state_dir().expect("state dir");
    let out = std::process::Command::new("ip").args(["netns", "del", gone.netns()]).output().expect("ip runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let status = std::process::Command::new(env!("CARGO_BIN_EXE_sgctl"))
        .arg("--state-dir")
        .arg(&state)
        .args(["status", "--json"])
        .output()
        .expect("sgctl runs");
    assert_eq!(status.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains(gone.netns()) && stderr.contains("no longer exists"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    let scopes: Vec<&str> =
        json["scopes"].as_array().into_iter().flatten().filter_map(|s| s["netns"].as_str()).collect();
    assert_eq!(scopes, [stays.netns()], "{json}");
    assert!(!state.join(format!("netns-{}", gone.netns())).exists(), "its pinned maps are gone");
}
