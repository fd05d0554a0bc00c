//! The `sgctl` verbs around the policy, end to end on a lab host: bad input
//! is refused with a located one-line error and exit status 2, changing
//! nothing; attach/detach and the ingress hook (tcx or XDP) over the life of
//! an attachment that outlives every `sgctl` process.
//!
//! Hosts: srv 203.0.113.1 / 2001:db8::1 (filtered), cli 203.0.113.20 /
//! 2001:db8::20 (unfiltered).
use common::*;
use serde_json::Value;
use Outcome::{Connected, TimedOut};

use crate::common;

fn srv_lab(name: &str) -> (Lab, LabHost, LabHost) {
    let lab = lab(name);
    let srv = host(&lab, "srv", &["203.0.113.1/24", "2001:db8::1/64"]);
    let cli = host(&lab, "cli", &["203.0.113.20/24", "2001:db8::20/64"]);
    (lab, srv, cli)
}

/// The parts of `status` a refused command must leave alone.
fn snapshot(sg: &Sgctl) -> Value {
    let s = sg.status();
    let ifaces: Vec<Value> = s["interfaces"]
        .as_array()
        .expect("status has interfaces")
        .iter()
        .map(|i| {
            serde_json::json!({
                "interface": i["interface"], "groups": i["groups"], "ingress": i["ingress"],
                "ingress_program_id": i["ingress_program_id"], "egress_program_id": i["egress_program_id"],
                "generation": i["generation"],
            })
        })
        .collect();
    serde_json::json!({ "generation": s["generation"], "sources": s["sources"], "interfaces": ifaces })
}

#[test]
fn bad_input_exits_2_with_a_located_error_and_changes_nothing() {
    let (lab, srv, cli) = srv_lab("badinput");
    let sg = Sgctl::new(&lab, &srv);
    let _l = listen(&srv, &["203.0.113.1:80", "203.0.113.1:8080"]);
    let good = policy("web-server.yaml");
    let text = policy_text("web-server.yaml");
    let tmp = TempDir::new("badinput");
    let bad_port = tmp.write("bad-port.yaml", &replace_once(&text, "ports: 22,", "ports: 70000,"));
    let bad_ref = tmp.write(
        "bad-ref.yaml",
        &replace_once(
            &text,
            "source: 0.0.0.0/0,       description: Allow HTTP",
            "source: sg:nosuch, description: Allow HTTP",
        ),
    );
    let bad_iface = tmp.write("bad-iface.yaml", &replace_once(&text, "eth0: [web-server]", "eth9: [web-server]"));
    // An empty group list once dropped everything on eth0: a lockout from a typo.
    let no_groups = tmp.write("no-groups.yaml", &replace_once(&text, "eth0: [web-server]", "eth0: []"));

    // (file, the line the error must point at, what it must quote)
    let bad = [(&bad_port, 6, "70000"), (&bad_ref, 7, "nosuch"), (&bad_iface, 13, "eth9"), (&no_groups, 13, "eth0")];

    // Nothing applied yet: a bad file leaves nothing behind.
    let empty = snapshot(&sg);
    assert_eq!(empty["generation"], Value::Null, "{empty:#}");
    assert_eq!(empty["interfaces"], serde_json::json!([]), "{empty:#}");
    for &(file, line, quoted) in &bad {
        assert_located_error(&sg.run(&["check".as_ref(), file.as_os_str()]), file, line, quoted);
        assert_located_error(&sg.run(&["apply".as_ref(), file.as_os_str()]), file, line, quoted);
        assert_eq!(snapshot(&sg), empty, "a refused apply of {} changed the state", file.display());
    }
    expect_all("nothing attached after refused applies", vec![tcp(&cli, "203.0.113.1:8080", Connected)]);

    // A good policy in force; bad input must keep it, programs and all.
    sg.apply(&[&good]);
    let before = snapshot(&sg);
    assert_eq!(before["generation"], 1, "{before:#}");
    assert_eq!(before["interfaces"][0]["interface"], "eth0", "{before:#}");
    for &(file, line, quoted) in &bad {
        assert_located_error(&sg.run(&["apply".as_ref(), file.as_os_str()]), file, line, quoted);
        assert_located_error(&sg.run(&["apply".as_ref(), "--dry-run".as_ref(), file.as_os_str()]), file, line, quoted);
        assert_eq!(snapshot(&sg), before, "a refused apply of {} changed the state", file.display());
    }
    // A bad file among good ones spoils the whole apply.
    let mixed = sg.run(&["apply".as_ref(), good.as_os_str(), bad_ref.as_os_str()]);
    assert_eq!(mixed.code, Some(2), "{mixed:?}");

    // Bad names on the command line: exit 2 too, one line on stderr.
    for args in [
        vec!["attach", "eth9", "--groups", "web-server"],
        vec!["attach", "eth0", "--groups", "nosuch"],
        vec!["detach", "eth9"],
        vec!["attach", "eth0", "--groups", "web-server", "--mode", "bogus"],
    ] {
        let run = sg.run(&args);
        assert_eq!(run.code, Some(2), "sgctl {args:?} must exit 2: {run:?}");
        assert!(!run.stderr.trim().is_empty(), "sgctl {args:?} must say why on stderr: {run:?}");
    }
    let missing_ns = Sgctl::for_netns(&lab, "tl-no-such-netns").run(&["status"]);
    assert_eq!(missing_ns.code, Some(2), "a namespace that does not exist is bad input: {missing_ns:?}");
    assert_eq!(snapshot(&sg), before, "refused commands changed the state");

    // And the old policy is still enforced.
    expect_all(
        "generation 1 still enforced",
        vec![tcp(&cli, "203.0.113.1:80", Connected), tcp(&cli, "203.0.113.1:8080", TimedOut)],
    );
}

/// `ip -d link show eth0` in `host`'s namespace.
fn ip_link(host: &LabHost) -> String {
    let out = host.run(&["ip", "-d", "link", "show", "dev", "eth0"]).expect("ip link");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn program_ids(iface: &Value) -> (u64, u64) {
    let id = |f: &str| iface[f].as_u64().filter(|id| *id > 0).unwrap_or_else(|| panic!("no {f} in {iface:#}"));
    let ids = (id("ingress_program_id"), id("egress_program_id"));
    assert_ne!(ids.0, ids.1, "ingress and egress run different programs: {iface:#}");
    ids
}

#[test]
fn lifecycle_attach_detach_and_hooks() {
    let (lab, srv, cli) = srv_lab("life");
    let sg = Sgctl::new(&lab, &srv);
    let _l = listen(&srv, &["203.0.113.1:80", "203.0.113.1:8080", "[2001:db8::1]:80", "[2001:db8::1]:443"]);
    let _c = listen(&cli, &["203.0.113.20:9000"]);
    let enforced = |what: &str| {
        expect_all(
            what,
            vec![
                tcp(&cli, "203.0.113.1:80", Connected),
                tcp(&cli, "203.0.113.1:8080", TimedOut),
                tcp(&cli, "[2001:db8::1]:443", Connected),
                tcp(&cli, "[2001:db8::1]:80", TimedOut),
                tcp(&srv, "203.0.113.20:9000", Connected),
            ],
        );
    };
    let unfiltered = |what: &str| {
        expect_all(
            what,
            vec![
                tcp(&cli, "203.0.113.1:8080", Connected),
                tcp(&cli, "[2001:db8::1]:80", Connected),
                ping(&cli, "203.0.113.1", Connected),
            ],
        );
    };

    // Auto mode on a veth: tc ingress (tcx, or clsact before Linux 6.6).
    // Each sgctl run has exited by now.
    let policy = policy("web-server.yaml");
    sg.apply(&[&policy]);
    let status = sg.status();
    assert_eq!(status["generation"], 1, "{status:#}");
    assert_eq!(status["sources"], serde_json::json!([policy.display().to_string()]), "{status:#}");
    let eth0 = &status["interfaces"][0];
    assert_eq!(eth0["interface"], "eth0", "{status:#}");
    assert_eq!(eth0["groups"], serde_json::json!(["web-server"]), "{status:#}");
    assert_eq!(eth0["ingress"], tc_hook(), "auto mode on veth uses tc ingress: {status:#}");
    let (tc_in, tc_out) = program_ids(eth0);
    assert!(!ip_link(&srv).contains("xdp"), "no XDP program on eth0 in tc mode:\n{}", ip_link(&srv));
    if tc_hook() == "clsact" {
        for (side, id) in [("ingress", tc_in), ("egress", tc_out)] {
            let filters = clsact_filters(&srv, side);
            assert!(filters.iter().any(|f| f.contains(&format!(" id {id} "))), "{side}: {filters:?}");
        }
    }
    enforced("applied, tc ingress");

    // Detach: unfiltered again, state gone, no filter left on the clsact hooks.
    let changes = sg.json(&["detach", "eth0"]);
    assert_eq!(changes[0]["change"], "detached", "{changes:#}");
    assert_eq!(sg.status()["interfaces"], serde_json::json!([]));
    for side in ["ingress", "egress"] {
        assert!(clsact_filters(&srv, side).is_empty(), "{side}: {:?}", clsact_filters(&srv, side));
    }
    unfiltered("detached");

    // Native XDP on the veth: the same policy, the same verdicts.
    let changes = sg.json(&["attach", "eth0", "--groups", "web-server", "--mode", "xdp"]);
    assert_eq!(changes[0]["change"], "attached", "{changes:#}");
    assert_eq!(changes[0]["ingress"], "xdp-native", "{changes:#}");
    let status = sg.status();
    let eth0 = &status["interfaces"][0];
    assert_eq!(eth0["ingress"], "xdp-native", "{status:#}");
    let (ingress_id, _) = program_ids(eth0);
    let link = ip_link(&srv);
    assert!(
        link.contains(&format!("prog/xdp id {ingress_id}")),
        "the kernel should run program {ingress_id} as native XDP on eth0:\n{link}"
    );
    enforced("attached with --mode xdp");

    // Re-applying keeps the hook the interface was attached with.
    let report = sg.apply(&[&policy]);
    assert_eq!(report["interfaces"][0]["change"], "updated", "{report:#}");
    let status = sg.status();
    assert_eq!(status["generation"], 4, "apply, detach, attach, apply: {status:#}");
    assert_eq!(status["interfaces"][0]["ingress"], "xdp-native", "{status:#}");
    assert_eq!(program_ids(&status["interfaces"][0]).0, ingress_id, "an update keeps the programs: {status:#}");
    enforced("re-applied over XDP");

    sg.json(&["detach", "eth0"]);
    assert!(!ip_link(&srv).contains("xdp"), "detach removes the XDP program:\n{}", ip_link(&srv));
    unfiltered("detached from XDP");
}

#[test]
fn explain_names_the_rule_that_allows_a_packet() {
    let (lab, srv, _cli) = srv_lab("explain");
    let sg = Sgctl::new(&lab, &srv);
    sg.apply(&[&policy("web-server.yaml")]);
    let explain = |args: &[&str]| {
        let mut all = vec!["explain", "--iface", "eth0"];
        all.extend_from_slice(args);
        sg.json(&all)
    };
    let http = explain(&["--in", "--proto", "tcp", "--src", "198.51.100.7", "--dst", "203.0.113.1", "--dport", "80"]);
    assert_eq!(http["allowed"], true, "{http}");
    assert_eq!(http["verdict"], "allowed", "{http}");
    assert_eq!(http["rule"], "web-server/inbound/1", "{http}");
    assert_eq!(http["description"], "Allow HTTP (web traffic)", "{http}");
    let ssh = explain(&["--in", "--proto", "tcp", "--src", "203.0.113.10", "--dst", "203.0.113.1", "--dport", "22"]);
    assert_eq!(ssh["rule"], "web-server/inbound/0", "{ssh}");
    for (what, args) in [
        ("8080", ["--in", "--proto", "tcp", "--src", "198.51.100.7", "--dst", "203.0.113.1", "--dport", "8080"]),
        (
            "SSH from elsewhere",
            ["--in", "--proto", "tcp", "--src", "198.51.100.7", "--dst", "203.0.113.1", "--dport", "22"],
        ),
        ("HTTP over IPv6", ["--in", "--proto", "tcp", "--src", "2001:db8::7", "--dst", "2001:db8::1", "--dport", "80"]),
    ] {
        let v = explain(&args);
        assert_eq!(v["allowed"], false, "{what}: {v}");
        assert_eq!(v["verdict"], "dropped", "{what}: {v}");
        assert_eq!(v["rule"], Value::Null, "{what}: {v}");
    }
    // Neighbour discovery is never judged; the same type over IPv4 is.
    let nd =
        explain(&["--in", "--proto", "icmpv6", "--icmp-type", "135", "--src", "fe80::7", "--dst", "ff02::1:ff00:1"]);
    assert_eq!(
        (&nd["verdict"], &nd["allowed"], &nd["rule"]),
        (&serde_json::json!("unfiltered"), &Value::Bool(true), &Value::Null),
        "{nd}"
    );
    let nd4 = explain(&["--in", "--proto", "58", "--icmp-type", "135", "--src", "192.0.2.7", "--dst", "203.0.113.1"]);
    assert_eq!(nd4["verdict"], "dropped", "{nd4}");
    let out = explain(&["--out", "--proto", "udp", "--src", "203.0.113.1", "--dst", "192.0.2.53", "--dport", "53"]);
    assert_eq!(out["rule"], "web-server/outbound/0", "{out}");
    let text = sg.ok(&[
        "explain",
        "--iface",
        "eth0",
        "--in",
        "--proto",
        "tcp",
        "--src",
        "198.51.100.7",
        "--dst",
        "203.0.113.1",
        "--dport",
        "8080",
    ]);
    assert!(text.stdout.contains("dropped"), "{}", text.stdout);
    sg.run(&["explain", "--iface", "eth0", "--in", "--proto", "bogus", "--src", "1.2.3.4", "--dst", "203.0.113.1"])
        .code(2);
    let mixed = sg.run(&["explain", "--iface", "eth0", "--in", "--proto", "tcp", "--src", "1.2.3.4", "--dst", "::1"]);
    assert!(mixed.code(2).stderr.contains("not of the same IP version"));
}

#[test]
fn without_capabilities_sgctl_says_which_are_missing() {
    require_root();
    // Still uid 0 (so file permissions stay as they are), but with an empty
    // bounding set: the exec'd sgctl gets no capability at all.
    let out = std::process::Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-all"])
        .arg(env!("CARGO_BIN_EXE_sgctl"))
        .args(["--state-dir", "/sys/fs/bpf", "status"])
        .output()
        .expect("setpriv (util-linux) runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("missing: CAP_BPF, CAP_NET_ADMIN"), "{stderr}");
    // `check` needs no privilege at all.
    let check = std::process::Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-all"])
        .arg(env!("CARGO_BIN_EXE_sgctl"))
        .args(["check", "--json"])
        .arg(policy("app-server.yaml"))
        .arg(policy("database.yaml"))
        .output()
        .expect("setpriv runs");
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));
}

#[test]
fn dry_run_watch_and_gc() {
    let (lab, srv, cli) = srv_lab("verbs");
    let sg = Sgctl::new(&lab, &srv);

    // --dry-run reports the change and makes none.
    let dry = sg.json(&["apply", "--dry-run", policy("web-server.yaml").to_str().expect("utf-8 path")]);
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["groups"][0]["rules_added"], 4, "{dry}");
    assert_eq!(sg.status()["interfaces"].as_array().map(Vec::len).unwrap_or(0), 0, "dry run attached nothing");
    let _l = listen(&srv, &["203.0.113.1:8080"]);
    expect_all("still unfiltered", vec![tcp(&cli, "203.0.113.1:8080", Connected)]);

    sg.apply(&[&policy("web-server.yaml")]);
    // `stats --watch 1` prints again every second until stopped.
    let state_dir = lab.state_dir().expect("state dir");
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_sgctl"))
        .arg("--state-dir")
        .arg(&state_dir)
        .args(["-n", srv.netns(), "stats", "--watch", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sgctl runs");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    watch.kill().expect("kill");
    let out = watch.wait_with_output().expect("output");
    let tables = String::from_utf8_lossy(&out.stdout).matches("RULE ").count();
    assert!(tables >= 2, "--watch printed {tables} tables");

    // gc removes only expired flows: a fresh one stays.
    expect_all("one flow", vec![tcp(&cli, "203.0.113.1:80", Outcome::Refused)]);
    let gc = sg.json(&["conntrack", "gc"]);
    assert_eq!(gc["interfaces"][0]["removed"], 0, "{gc}");
    assert!(!sg.json(&["conntrack", "list"])["flows"].as_array().is_none_or(Vec::is_empty));
}

#[test]
fn a_second_sgctl_waits_for_the_first_to_finish() {
    use nix::fcntl::{Flock, FlockArg};
    let (lab, srv, _cli) = srv_lab("lock");
    let sg = Sgctl::new(&lab, &srv);
    sg.apply(&[&policy("web-server.yaml")]);
    let state = lab.state_dir().expect("state dir");

    // Stand in for a first sgctl that is still applying.
    let dir = std::fs::File::open(&state).expect("open state dir");
    let held = Flock::lock(dir, FlockArg::LockExclusive).map_err(|(_, e)| e).expect("flock");
    let mut second = sg
        .command(&[std::ffi::OsStr::new("apply"), policy("web-server.yaml").as_os_str()])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sgctl runs");
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(second.try_wait().expect("try_wait").is_none(), "the second apply must wait");
    // Reports do not wait.
    sg.ok(&["status"]);
    drop(held);
    let out = second.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let holder = format!("waiting for pid {}, which holds", std::process::id());
    assert!(stderr.contains(&holder), "the message names the lock's holder: {stderr}");
}

#[test]
fn conntrack_settings_reach_the_kernel() {
    let (lab, srv, cli) = srv_lab("ctset");
    let files = TempDir::new("ctset");
    let text = format!(
        "{}conntrack:\n  udp_timeout: 45\n  udp_stream_timeout: 90\n  tcp_established_timeout: 3600\n  max_entries: 2048\n",
        policy_text("web-server.yaml").replace("outbound:", "outbound:\n      - { protocol: udp, ports: 9999, destination: 203.0.113.0/24 }")
    );
    let sg = Sgctl::new(&lab, &srv);
    sg.apply(&[&files.write("web-ct.yaml", &text)]);
    let status = sg.status();
    assert_eq!(status["interfaces"][0]["conntrack_capacity"], 2048, "{status}");

    // A one-way UDP flow (nobody answers on 9999) and an established TCP one.
    let _l = listen(&srv, &["203.0.113.1:80"]);
    let mut conn = open(&cli, "203.0.113.1:80");
    assert_eq!(conn.echo(std::time::Duration::from_secs(3)), Connected);
    srv.in_netns(|| {
        let socket = std::net::UdpSocket::bind("203.0.113.1:0").expect("bind");
        socket.send_to(b"x", "203.0.113.20:9999").expect("send");
    });

    let flows = sg.json(&["conntrack", "list"]);
    let expiry = |protocol: u64| {
        flows["flows"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["protocol"] == protocol)
            .map(|f| count(f, "expires_in_secs"))
            .unwrap_or_else(|| panic!("no protocol {protocol} flow in {flows}"))
    };
    let udp = expiry(17);
    assert!((40..=45).contains(&udp), "one-way UDP expires by udp_timeout 45 s: {udp} ({flows})");
    let tcp = expiry(6);
    assert!((3590..=3600).contains(&tcp), "established TCP expires by 3600 s: {tcp} ({flows})");
}

#[test]
fn doctor_says_what_the_kernel_has_and_an_older_kernel_is_refused_before_anything_changes() {
    let (lab, srv, cli) = srv_lab("doctor");
    let _listener = listen(&srv, &["203.0.113.1:8080"]);
    let sg = Sgctl::new(&lab, &srv);
    let doctor = sg.json(&["doctor"]);
    assert_eq!(doctor["ok"], true, "{doctor:#}");
    let check = |feature: &str| {
        doctor["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["feature"] == feature))
            .cloned()
            .unwrap_or_else(|| panic!("no {feature} check: {doctor:#}"))
    };
    for feature in ["kernel", "bpf", "map-in-map", "ring buffer", "clsact"] {
        assert_eq!(check(feature)["ok"], true, "{feature}: {doctor:#}");
    }
    let tcx = check("tcx")["detail"].as_str().unwrap_or_default().to_owned();
    assert_eq!(tcx.starts_with("present"), tc_hook() == "tc", "{doctor:#}");
    assert_eq!(check("clsact")["required"], tc_hook() == "clsact", "clsact is needed where tcx is not: {doctor:#}");
    let eth0 = doctor["interfaces"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["interface"] == "eth0"))
        .cloned()
        .unwrap_or_else(|| panic!("eth0 missing: {doctor:#}"));
    assert_eq!((eth0["kind"].as_str(), eth0["ingress"].as_str()), (Some("veth"), Some(tc_hook())), "{doctor:#}");
    let text = sg.ok(&["doctor"]).stdout;
    assert!(text.contains("clsact") && text.contains("eth0"), "{text}");

    // A kernel below the floor (stood for by the test-only override): every
    // verb that attaches is refused in one line naming it, nothing changes.
    let policy = policy("web-server.yaml");
    for args in [vec!["apply", policy.to_str().expect("utf-8")], vec!["attach", "eth0", "--groups", "web-server"]] {
        let out = sg.command(&args).env("SGCTL_TEST_KERNEL_RELEASE", "5.15.0-91-generic").output().expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("Linux 5.15.0-91-generic") && stderr.contains("older than 6.1"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    let status = sg.status();
    assert_eq!((&status["generation"], &status["interfaces"]), (&Value::Null, &serde_json::json!([])), "{status:#}");
    expect_all("refused: still unfiltered", vec![tcp(&cli, "203.0.113.1:8080", Connected)]);
    let doctor = sg.command(&["doctor", "--json"]).env("SGCTL_TEST_KERNEL_RELEASE", "5.15.0").output().expect("runs");
    assert_eq!(doctor.status.code(), Some(1), "doctor fails on a kernel below the floor");
}
