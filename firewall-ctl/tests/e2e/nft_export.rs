//! `sgctl export nftables` end to end: the exported ruleset, in both its
//! forms (the default one lookup per interface, direction and family, and
//! `--linear`), checked with `nft -c -f` and loaded with `nft -f` in a lab
//! host's namespace (no sgctl program attached), gives the same outcomes
//! as sgctl itself for seed Example 1 (tests/e2e/web_server.rs) and Examples 2
//! and 3 (tests/e2e/app_db.rs): the same probes, the same expectations. A policy
//! of many rules, nested CIDRs and port ranges in both families is probed
//! under sgctl and under both forms, against what `sgctl explain` says.
use std::path::PathBuf;

use common::{seed::*, *};
use serde_json::Value;
use Outcome::{Connected, TimedOut};

use crate::common;

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
    for check in [&["-c", "-f"][..], &["-f"]] {
        let mut args = vec!["nft"];
        args.extend_from_slice(check);
        let path = path.to_string_lossy();
        args.push(&path);
        let out = host.run(&args).expect("run nft");
        assert!(
            out.status.success(),
            "nft {check:?} of the export failed on {}: {}\n{ruleset}",
            host.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
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

/// The forms of the export: the default, and `--linear`.
const FORMS: [&[&str]; 2] = [&[], &["--linear"]];

#[test]
fn example1_web_server_export_enforces_the_same_verdicts() {
    for form in FORMS {
        example1(form);
    }
}

fn example1(form: &[&str]) {
    let w = web_lab("nftex1");
    let WebLab { lab, srv, other, .. } = &w;
    let listeners = web_listeners(&w);
    expect_all("before loading: srv is unfiltered", web_unfiltered(&w));

    let ruleset = load_export(lab, srv, &[policy("web-server.yaml")], form);
    assert!(ruleset.contains("iifname vmap { \"eth0\" : jump eth0/inbound }"), "{ruleset}");
    assert_eq!(ruleset.contains("vmap @eth0/inbound/v4"), form.is_empty(), "one lookup unless --linear:\n{ruleset}");
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
    load_export(lab, srv, &[policy("web-server.yaml")], form);
    assert_eq!(counter(srv, "eth0/web-server/inbound/1"), 0, "a reload starts from fresh counters");
    expect_all("after a reload", vec![tcp(other, "203.0.113.1:80", Connected), tcp(other, "203.0.113.1:22", TimedOut)]);
}

#[test]
fn examples2_3_export_enforces_the_same_verdicts() {
    for form in FORMS {
        examples2_3(form);
    }
}

fn examples2_3(form: &[&str]) {
    let a = app_lab("nftex23");
    let listeners = app_listeners(&a);
    let files = vec![policy("app-server.yaml"), policy("database.yaml")];
    for (host, group) in [(&a.lb, "load-balancer"), (&a.app, "app-server"), (&a.db, "database")] {
        let attach = format!("eth0={group}");
        load_export(&a.lab, host, &files, &[&["--attach", attach.as_str()][..], form].concat());
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

/// Nested CIDRs and overlapping port ranges in both families, behind
/// `FILLER` rules of their own: where the maps must split and credit.
const FILLER: usize = 300;

fn overlapping_policy() -> String {
    let mut yaml = String::from(
        "groups:\n  g:\n    inbound:\n\
         \x20     - { protocol: tcp, ports: \"1000-1999\", source: 10.1.0.0/16 }\n\
         \x20     - { protocol: tcp, ports: [1500, \"3000-3999\"], source: [10.1.2.0/24, \"fd00:1::/32\"] }\n\
         \x20     - { protocol: tcp, ports: 2000, source: 10.0.0.0/8 }\n\
         \x20     - { protocol: udp, ports: \"5000-5100\", source: [10.1.2.3/32, \"fd00:1:2::/48\"] }\n\
         \x20     - { protocol: tcp, ports: all, source: 10.9.0.0/16 }\n\
         \x20     - { protocol: all, source: \"fd00:9::/32\" }\n",
    );
    for i in 0..FILLER {
        yaml.push_str(&format!(
            "      - {{ protocol: {}, ports: {}, source: [10.200.{}.0/24, \"fd00:200:{i:x}::/48\"] }}\n",
            if i % 2 == 0 { "tcp" } else { "udp" },
            40_000 + i,
            i % 256
        ));
    }
    yaml.push_str("interfaces:\n  eth0: [g]\n");
    yaml
}

#[test]
fn many_rules_nested_cidrs_and_port_ranges_match_sgctl_in_both_forms() {
    let lab = lab("nftmany");
    let srv = host(&lab, "srv", &["10.0.0.1/8", "fd00::1/16"]);
    // One client per source, each inside a different set of the rules' CIDRs.
    let sources = [
        ("c1", "10.1.2.3"),    // /32, /24, /16, /8
        ("c2", "10.1.2.9"),    // /24, /16, /8
        ("c3", "10.1.9.9"),    // /16, /8
        ("c4", "10.5.5.5"),    // /8
        ("c5", "10.9.1.1"),    // tcp all, /8
        ("c6", "10.200.7.7"),  // a filler rule's /24, /8
        ("c7", "fd00:1:2::5"), // /48, /32
        ("c8", "fd00:1:9::5"), // /32
        ("c9", "fd00:9::5"),   // all
        ("c10", "fd00:5::5"),  // nothing
    ];
    let clients: Vec<(LabHost, &str)> = sources
        .iter()
        .map(|(name, addr)| {
            let cidr = format!("{addr}/{}", if addr.contains(':') { 16 } else { 8 });
            (host(&lab, name, &[&cidr]), *addr)
        })
        .collect();
    let tcp_ports = [999, 1000, 1500, 1999, 2000, 2001, 3500, 4000, 40_007];
    let udp_ports = [5000, 5100, 5101, 40_007];
    let dst = |addr: &str, port: u16| {
        if addr.contains(':') {
            format!("[fd00::1]:{port}")
        } else {
            format!("10.0.0.1:{port}")
        }
    };
    let mut addrs = Vec::new();
    for p in tcp_ports {
        addrs.push(dst("10", p));
        addrs.push(dst(":", p));
    }
    let tcp_addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let _tcp = listen(&srv, &tcp_addrs);
    let udp_addrs: Vec<String> = udp_ports.iter().flat_map(|&p| [dst("10", p), dst(":", p)]).collect();
    let _udp = udp_echo(&srv, &udp_addrs.iter().map(String::as_str).collect::<Vec<_>>());

    let tmp = TempDir::new("many");
    let file = tmp.write("many.yaml", &overlapping_policy());
    let sg = Sgctl::new(&lab, &srv);
    sg.apply(&[&file]);

    // What sgctl's model says of each probe, and which rule it credits.
    let mut expected = Vec::new();
    for (client, src) in &clients {
        for (proto, ports) in [("tcp", &tcp_ports[..]), ("udp", &udp_ports[..])] {
            for &port in ports {
                let to = dst(src, port);
                let dst_ip = if src.contains(':') { "fd00::1" } else { "10.0.0.1" };
                let port_text = port.to_string();
                let v = sg.json(&[
                    "explain", "--iface", "eth0", "--in", "--proto", proto, "--src", src, "--dst", dst_ip, "--dport",
                    &port_text,
                ]);
                let allowed = v["allowed"].as_bool().expect("explain --json: allowed");
                let want = if allowed { Connected } else { TimedOut };
                expected.push((client, proto, to, want, v["rule"].as_str().map(str::to_owned)));
            }
        }
    }
    assert!(expected.iter().filter(|e| e.3 == Connected).count() >= 20, "the policy allows enough to tell apart");
    assert!(expected.iter().filter(|e| e.3 == TimedOut).count() >= 20, "and drops enough");
    let probes = || -> Vec<Probe<'_>> {
        expected
            .iter()
            .map(
                |(c, proto, to, want, _)| {
                    if *proto == "tcp" {
                        tcp(c, to, want.clone())
                    } else {
                        udp(c, to, want.clone())
                    }
                },
            )
            .collect()
    };
    expect_all("sgctl itself", probes());
    sg.ok(&["detach", "eth0"]);

    for form in FORMS {
        let ruleset = load_export(&lab, &srv, std::slice::from_ref(&file), form);
        if form.is_empty() {
            let inbound: Vec<&str> = ruleset
                .lines()
                .skip_while(|l| l.trim() != "chain eth0/inbound {")
                .skip(1)
                .take_while(|l| l.trim() != "}")
                .collect();
            assert!(inbound.len() <= 5, "one lookup per family and key, however many rules: {inbound:#?}");
        }
        expect_all(&format!("nftables export {form:?}"), probes());
        // Each allowed TCP probe credited the rule sgctl credits (the
        // default form credits as sgctl does: most specific, then file order).
        if form.is_empty() {
            for (_, proto, to, want, rule) in &expected {
                if *proto == "tcp" && *want == Connected {
                    let rule = rule.as_deref().expect("an allowed probe names its rule");
                    assert!(counter(&srv, &format!("eth0/{rule}")) >= 1, "{to}: {rule} was not credited");
                }
            }
        }
        assert!(counter(&srv, "eth0/inbound/dropped_no_rule") >= 1, "drops were counted");
    }
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
