//! `sgctl export nftables` end to end: the exported ruleset, loaded with
//! `nft -f` in a lab host's namespace (no sgctl program attached), gives the
//! same outcomes as sgctl itself for seed Example 1 (e2e_web_server.rs) and
//! Examples 2 and 3 (e2e_app_db.rs): the same probes, the same expectations.
mod common;

use std::path::PathBuf;

use common::{seed::*, *};
use serde_json::Value;
use Outcome::{Connected, TimedOut};

/// What a UDP send that the output hook drops returns to the sender.
const LOCAL_DROP: &str = "send: Operation not permitted (os error 1)";

/// `sgctl -n NETNS export nftables FILES ARGS…`, loaded with `nft -f` in
/// `host`'s namespace. Returns the ruleset text.
#[track_caller]
fn load_export(lab: &Lab, host: &LabHost, files: &[PathBuf], args: &[&str]) -> String {
    let sg = Sgctl::new(lab, host);
    let mut all: Vec<&std::ffi::OsStr> = vec!["export".as_ref(), "nftables".as_ref()];
    all.extend(files.iter().map(|f| f.as_os_str()));
    all.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
    let ruleset = sg.ok(&all).stdout;
    let tmp = TempDir::new("nft");
    let path = tmp.write("ruleset.nft", &ruleset);
    let out = host.run(&["nft", "-f", &path.to_string_lossy()]).expect("run nft");
    assert!(
        out.status.success(),
        "nft -f of the export failed on {}: {}\n{ruleset}",
        host.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    ruleset
}

/// Packets of the named counter `name` of `table inet sgctl` on `host`.
#[track_caller]
fn counter(host: &LabHost, name: &str) -> u64 {
    let out = host.run(&["nft", "-j", "list", "counter", "inet", "sgctl", name]).expect("run nft");
    assert!(out.status.success(), "nft list counter {name}: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("nft -j prints JSON");
    v["nftables"]
        .as_array()
        .and_then(|items| items.iter().find_map(|i| i["counter"]["packets"].as_u64()))
        .unwrap_or_else(|| panic!("no packets in counter {name}: {v}"))
}

#[test]
fn example1_web_server_export_enforces_the_same_verdicts() {
    let w = web_lab("nftex1");
    let WebLab { lab, srv, other, .. } = &w;
    let listeners = web_listeners(&w);
    expect_all("before loading: srv is unfiltered", web_unfiltered(&w));

    let ruleset = load_export(lab, srv, &[policy("web-server.yaml")], &[]);
    assert!(ruleset.contains("iifname vmap { \"eth0\" : jump eth0/inbound }"), "{ruleset}");
    // The one visible difference: a datagram this host sends that the
    // outbound rules drop fails at once in nftables.
    expect_all("web-server as nftables", web_enforced(&w, Outcome::Other(LOCAL_DROP.to_owned())));

    drop(listeners.https);
    expect_all("443 allowed, nothing listening", web_https_down(&w));

    // The named counters say which rule let flows in, and what was dropped.
    assert!(counter(srv, "eth0/web-server/inbound/0") >= 1, "SSH from 203.0.113.10 opened a flow");
    assert!(counter(srv, "eth0/web-server/inbound/1") >= 2, "two HTTP connections");
    assert!(counter(srv, "eth0/web-server/outbound/0") >= 3, "srv opened TCP, ICMP and UDP flows");
    assert!(counter(srv, "eth0/inbound/dropped_no_rule") >= 6, "dropped SYNs, pings and datagrams");
    // Loading it again replaces the table (no duplicate definitions).
    load_export(lab, srv, &[policy("web-server.yaml")], &[]);
    assert_eq!(counter(srv, "eth0/web-server/inbound/1"), 0, "a reload starts from fresh counters");
    expect_all("after a reload", vec![tcp(other, "203.0.113.1:80", Connected), tcp(other, "203.0.113.1:22", TimedOut)]);
}

#[test]
fn examples2_3_export_enforces_the_same_verdicts() {
    let a = app_lab("nftex23");
    let listeners = app_listeners(&a);
    let files = vec![policy("app-server.yaml"), policy("database.yaml")];
    for (host, group) in [(&a.lb, "load-balancer"), (&a.app, "app-server"), (&a.db, "database")] {
        let attach = format!("eth0={group}");
        load_export(&a.lab, host, &files, &["--attach", &attach]);
    }
    expect_all("examples 2 and 3 as nftables", app_db_enforced(&a));

    drop(listeners.db);
    expect_all("3306 allowed, nothing listening on db", app_db_down(&a));
    assert!(
        counter(&a.db, "eth0/database/inbound/0") >= 2,
        "app's connections to 3306 went through database/inbound/0"
    );
    assert!(counter(&a.db, "eth0/outbound/dropped_no_rule") >= 4, "db opened nothing: its attempts were dropped");
}

#[test]
fn linear_export_enforces_the_same_verdicts() {
    let lab = lab("nftlin");
    let lb = host(&lab, "lb", &["10.0.0.10/8", "fd00::10/16"]);
    let app = host(&lab, "app", &["10.0.1.10/8", "fd00:1::10/16"]);
    let outsider = host(&lab, "outsider", &["10.0.3.3/8", "fd00:3::3/16"]);
    let _app_l = listen(&app, &["10.0.1.10:8080", "[fd00:1::10]:8080", "10.0.1.10:22"]);
    let files: Vec<PathBuf> = ["app-server.yaml", "database.yaml"].iter().map(|f| policy(f)).collect();
    let ruleset = load_export(&lab, &app, &files, &["--attach", "eth0=app-server", "--linear"]);
    assert!(!ruleset.contains("\tset "), "--linear uses no sets:\n{ruleset}");
    expect_all(
        "app-server, linear rules",
        vec![
            tcp(&lb, "10.0.1.10:8080", Connected),
            tcp(&lb, "[fd00:1::10]:8080", Connected),
            tcp(&outsider, "10.0.1.10:8080", TimedOut),
            tcp(&outsider, "[fd00:1::10]:8080", TimedOut),
            tcp(&lb, "10.0.1.10:22", TimedOut),
        ],
    );
}

#[test]
fn bad_export_input_exits_2_and_says_why() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sgctl"))
            .args(["export", "nftables"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run sgctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let web = policy("web-server.yaml");
    let web = web.to_str().expect("utf-8 path");

    let (code, stdout, stderr) = run(&[web, "--attach", "eth1=nope"]);
    assert_eq!(code, Some(2), "unknown group: {stderr}");
    assert!(stdout.is_empty(), "no partial ruleset on stdout: {stdout}");
    assert!(stderr.contains("interface eth1: unknown group \"nope\""), "{stderr}");

    let (code, _, stderr) = run(&[web, "--attach", "eth1"]);
    assert_eq!(code, Some(2), "malformed --attach: {stderr}");
    assert!(stderr.contains("expected IFACE=GROUP"), "{stderr}");

    let (code, _, stderr) = run(&[web, "--json"]);
    assert_eq!(code, Some(2), "--json: {stderr}");

    let tmp = TempDir::new("badpolicy");
    let bad = tmp
        .write("bad.yaml", "groups:\n  g:\n    inbound:\n      - { protocol: tcp, ports: 22, source: 10.0.0.1/8 }\n");
    let (code, stdout, stderr) = run(&[bad.to_str().expect("utf-8 path")]);
    assert_eq!(code, Some(2), "invalid policy: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.starts_with(&format!("{}:4:", bad.display())), "located error: {stderr}");
}
