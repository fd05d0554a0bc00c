//! A host with two filtered interfaces carrying different groups: each
//! interface enforces its own groups only, and they share nothing.
use common::*;
use Outcome::{Connected, TimedOut};

use crate::common;

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

/// `sgctl` (no `-n`) with the lab's state directories.
fn sgctl_all(lab: &Lab, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sgctl"))
        .arg("--state-dir")
        .arg(lab.state_dir().expect("state dir"))
        .arg("--lib-dir")
        .arg(lab.lib_dir().expect("lib dir"))
        .args(args)
        .env_remove("SGCTL_STATE_DIR")
        .env_remove("SGCTL_LIB_DIR")
        .output()
        .expect("sgctl runs")
}

fn scopes(status: &std::process::Output) -> Vec<String> {
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    json["scopes"].as_array().into_iter().flatten().filter_map(|s| s["netns"].as_str().map(str::to_owned)).collect()
}

#[test]
fn state_of_a_deleted_namespace_is_pruned_by_the_next_change_not_by_a_report() {
    let lab = lab("prune");
    let gone = host(&lab, "gone", &["203.0.113.1/24"]);
    let stays = host(&lab, "stays", &["203.0.113.2/24"]);
    for h in [&gone, &stays] {
        Sgctl::new(&lab, h).apply(&[&policy("web-server.yaml")]);
    }
    let state = lab.state_dir().expect("state dir");
    let gone_state = state.join(format!("netns-{}", gone.netns()));
    let out = std::process::Command::new("ip").args(["netns", "del", gone.netns()]).output().expect("ip runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A report changes nothing, whatever it finds.
    let status = sgctl_all(&lab, &["status", "--json"]);
    assert_eq!(status.status.code(), Some(0), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(status.stderr.is_empty(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(gone_state.exists(), "a read-only verb removed state");
    let shown: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(shown["saved_without_namespace"], serde_json::json!([gone.netns()]), "{shown:#}");
    let gone_saved = lab.lib_dir().expect("lib dir").join(format!("netns-{}", gone.netns()));
    assert!(gone_saved.exists(), "its policy was saved");

    // The next change (here in the other namespace) removes it.
    let gc = sgctl_all(&lab, &["conntrack", "gc", "--json"]);
    assert_eq!(gc.status.code(), Some(0), "{}", String::from_utf8_lossy(&gc.stderr));
    let stderr = String::from_utf8_lossy(&gc.stderr);
    assert!(stderr.contains(gone.netns()) && stderr.contains("no longer exists"), "{stderr}");
    assert!(!gone_state.exists(), "its pinned maps are gone");
    assert!(!gone_saved.exists(), "its saved policy is gone: never restored at a boot again");
    assert_eq!(scopes(&sgctl_all(&lab, &["status", "--json"])), [stays.netns()]);
}

#[test]
fn a_namespace_deleted_by_name_but_still_alive_stays_filtered() {
    let lab = lab("alive");
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let cli = host(&lab, "cli", &["203.0.113.10/24"]);
    // The listeners' sockets keep the namespace alive after its name goes.
    let _listeners = listen(&srv, &["203.0.113.1:80", "203.0.113.1:8080"]);
    Sgctl::new(&lab, &srv).apply(&[&policy("web-server.yaml")]);
    let state = lab.state_dir().expect("state dir");
    let srv_state = state.join(format!("netns-{}", srv.netns()));
    let out = std::process::Command::new("ip").args(["netns", "del", srv.netns()]).output().expect("ip runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    for args in
        [&["status", "--json"][..], &["stats", "--json"], &["conntrack", "list", "--json"], &["conntrack", "gc"]]
    {
        let out = sgctl_all(&lab, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(srv_state.exists(), "`sgctl {}` removed the state of a live namespace", args.join(" "));
    }
    expect_all(
        "still filtered by its policy",
        vec![tcp(&cli, "203.0.113.1:80", Connected), tcp(&cli, "203.0.113.1:8080", TimedOut)],
    );
}

#[test]
fn a_state_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let lab = lab("perm");
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let sg = Sgctl::new(&lab, &srv);
    sg.apply(&[&policy("web-server.yaml")]);
    let state = lab.state_dir().expect("state dir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    for args in [&["apply", policy("web-server.yaml").to_str().unwrap_or_default()][..], &["status"]] {
        let run = sg.run(args);
        assert_eq!(run.code, Some(2), "{run:?}");
        assert!(run.stderr.contains("writable by others") && run.stderr.contains("chmod 700"), "{run:?}");
    }
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    sg.ok(&["status"]);
}
