//! The edges never fail open (issue 15): each test tries, as an attacker
//! or an unlucky operator would, one way an edge used to fail open or fail
//! silently, with real programs, namespaces and connections.
//!
//! Hosts (seed Example 1's lab, one L2 segment): srv 203.0.113.1 (eth0,
//! web-server, with listeners on 22, 80 and 8080), admin 203.0.113.10 (the
//! SSH rule's source; the seed's `ssh`), cli 203.0.113.20 (its `other`).
use std::{
    net::{TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::Path,
    time::{Duration, Instant},
};

use common::{
    agent::*,
    hostile::*,
    seed::{self, WebLab as SeedLab},
    *,
};
use serde_json::Value;
use Outcome::{Connected, TimedOut};

use crate::common;

/// Seed Example 1's lab, srv listening on 22, 80 and 8080 of every
/// address it has or gets (eth1, late0).
fn web_lab(name: &str) -> (SeedLab, Vec<Listener>) {
    let w = seed::web_lab(name);
    let listeners = listen(&w.srv, &["0.0.0.0:22", "0.0.0.0:80", "0.0.0.0:8080"]);
    (w, listeners)
}

/// Polls `f` every 50 ms until it is true; false if `within` passes first.
fn until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The policy of `policies/web-server.yaml` with `extra` interfaces after eth0.
fn web_with(files: &TempDir, name: &str, extra: &str) -> std::path::PathBuf {
    let text =
        replace_once(&policy_text("web-server.yaml"), "  eth0: [web-server]", &format!("  eth0: [web-server]{extra}"));
    files.write(name, &text)
}

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// A local user holds the agent's metrics port before it starts, then
/// opens 1,100 idle connections to it: hotplug attaches new interfaces
/// within a second throughout, the agent's descriptors stay few, and the
/// endpoint serves once the port is free and the idle connections are
/// dropped. (Before: the agent exited on "Address already in use", and
/// idle connections ran it out of descriptors.)
#[test]
fn a_squatted_metrics_port_and_idle_connections_do_not_stop_hotplug() {
    let (SeedLab { lab, srv, other: cli, .. }, _listeners) = web_lab("squat");
    raise_descriptor_limit();
    let sg = Sgctl::new(&lab, &srv);
    let files = TempDir::new("squat");
    let policy = web_with(&files, "late.yaml", "\n  late0: [web-server]\n  late2: [web-server]");
    sg.json(&["apply", "--allow-missing", policy.to_str().expect("utf-8")]);

    // nobody takes a port on loopback first.
    let squatter = as_nobody(|| TcpListener::bind("127.0.0.1:0").expect("nobody binds a port"));
    let port = squatter.local_addr().expect("address").port();
    let listen = format!("127.0.0.1:{port}");
    // The agent as a unit without LimitNOFILE would run it: 1024 descriptors.
    let agent =
        Agent::start_with(&sg, &["--listen", &listen, "--no-flow-log", "--quiet"], "sgctl agent: ready", |cmd| {
            // SAFETY: setrlimit in the child before exec.
            unsafe {
                cmd.pre_exec(|| {
                    let limit = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        });
    assert!(
        until(Duration::from_secs(5), || agent.log().contains("cannot listen")),
        "the lost port is reported:\n{}",
        agent.log()
    );

    plug_veth(&srv, &cli);
    let took = wait_filtered(&sg, "late0", true, None, &agent);
    eprintln!("late0 attached {took:?} after it appeared, the metrics port squatted");
    assert!(took < Duration::from_secs(1), "attached within a second, took {took:?}:\n{}", agent.log());
    expect_all("late0 filtered", vec![tcp(&cli, "10.9.0.1:80", Connected), tcp(&cli, "10.9.0.1:8080", TimedOut)]);

    // The port is free again: the agent takes it.
    drop(squatter);
    let addr = agent.addr_within(Duration::from_secs(10)).unwrap_or_else(|| panic!("never bound:\n{}", agent.log()));
    assert_eq!(addr.port(), port);
    assert!(agent.scrape().contains("sgctl_policy_generation"));

    // 1,100 idle connections from nobody.
    let held: Vec<TcpStream> = as_nobody(move || {
        (0..1100).filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()).collect()
    });
    eprintln!("nobody holds {} connections to {addr}", held.len());
    assert!(held.len() >= 1000, "the connections were made: {}", held.len());
    let fds = open_fds(agent.pid());
    assert!(fds < 200, "the agent holds {fds} descriptors");
    ip(&srv, &["link", "add", "late2", "type", "veth", "peer", "name", "late3"]);
    ip(&srv, &["link", "set", "late2", "up"]);
    let took = wait_filtered(&sg, "late2", true, None, &agent);
    eprintln!("late2 attached {took:?} after it appeared, 1,100 connections held");
    assert!(took < Duration::from_secs(1), "attached within a second, took {took:?}:\n{}", agent.log());
    // Idle connections are dropped: the endpoint serves again while
    // nobody still holds its sockets.
    let url = format!("http://{addr}/metrics");
    assert!(
        until(Duration::from_secs(20), || ureq::get(&url).call().is_ok()),
        "the endpoint serves again:\n{}",
        agent.log()
    );
    assert!(open_fds(agent.pid()) < 200, "descriptors held: {}", open_fds(agent.pid()));
    drop(held);
}

/// The pinned link of `ifname`'s `which` hook (`ingress`/`egress`) in `sg`'s state.
fn link_pin(sg: &Sgctl, ifname: &str, which: &str) -> std::path::PathBuf {
    let scope = format!("netns-{}", sg.netns().replace('.', "%2E"));
    sg.state_dir().join(scope).join(format!("if-{ifname}")).join(format!("link_{which}"))
}

fn link_state(status: &Value, which: &str) -> String {
    status["interfaces"][0]["links"][which]["state"].as_str().unwrap_or_default().to_owned()
}

/// A link detached behind sgctl's back (`BPF_LINK_DETACH`) let unallowed
/// traffic through while `status` showed both program ids and a re-apply
/// said "unchanged". Now `status` says so, any `apply` (of the same files)
/// puts it back, and so does the agent by itself, counting the repair.
#[test]
fn a_link_detached_behind_sgctls_back_is_shown_and_put_back() {
    let (SeedLab { lab, srv, other: cli, .. }, _listeners) = web_lab("linkdet");
    let sg = Sgctl::new(&lab, &srv);
    let web = policy("web-server.yaml");
    sg.apply(&[&web]);
    let filtered = |what: &str| {
        expect_all(what, vec![tcp(&cli, "203.0.113.1:80", Connected), tcp(&cli, "203.0.113.1:8080", TimedOut)]);
    };
    filtered("applied");

    link_detach(&link_pin(&sg, "eth0", "ingress"));
    expect_all("ingress detached: unfiltered", vec![tcp(&cli, "203.0.113.1:8080", Connected)]);
    let status = sg.status();
    assert_eq!(link_state(&status, "ingress"), "detached", "{status:#}");
    assert_eq!(link_state(&status, "egress"), "ok", "{status:#}");
    assert_eq!(status["interfaces"][0]["ingress_program_id"], Value::Null, "{status:#}");
    let text = sg.ok(&["status"]).stdout;
    assert!(text.contains("ingress link detached"), "{text}");

    // The same files again: the link is put back.
    let report = sg.apply(&[&web]);
    assert_eq!(report["changed"], true, "{report:#}");
    assert_eq!(report["interfaces"][0]["change"], "repaired", "{report:#}");
    filtered("repaired by apply");
    let status = sg.status();
    assert_eq!((link_state(&status, "ingress"), link_state(&status, "egress")), ("ok".into(), "ok".into()));

    // Both links, with the agent running: it puts them back by itself.
    let agent = Agent::start(&sg, &["--no-flow-log", "--quiet"]);
    link_detach(&link_pin(&sg, "eth0", "ingress"));
    link_detach(&link_pin(&sg, "eth0", "egress"));
    let started = Instant::now();
    assert!(
        until(Duration::from_secs(10), || {
            let s = sg.status();
            link_state(&s, "ingress") == "ok" && link_state(&s, "egress") == "ok"
        }),
        "the agent repairs the links: {:#}\n{}",
        sg.status(),
        agent.log()
    );
    eprintln!("the agent put both links back {:?} after they were detached", started.elapsed());
    filtered("repaired by the agent");
    assert!(agent.log().contains("repaired eth0"), "{}", agent.log());
    let s = samples(&agent.scrape());
    assert!(sample_of(&s, "sgctl_agent_repairs_total", &[("interface", "eth0"), ("repair", "repaired")]) >= 1);
}

/// Another tool with root puts a program first on eth0's tcx ingress
/// after sgctl attached, one that passes every packet (`TCX_PASS` ends the
/// chain, so sgctl never judges): `status` says sgctl's ingress link is
/// not first and names the program, and an `apply` of the same files puts
/// sgctl first again. (Before: the pinned link looked alive and `status`
/// healthy while traffic went through unjudged.)
#[test]
fn a_program_put_before_sgctl_is_shown_and_sgctl_put_first_again() {
    use aya::programs::{tc::TcAttachOptions, LinkOrder, SchedClassifier, TcAttachType};
    let (SeedLab { lab, srv, other: cli, .. }, _listeners) = web_lab("linkorder");
    let sg = Sgctl::new(&lab, &srv);
    let web = policy("web-server.yaml");
    sg.apply(&[&web]);
    let mut other = aya::EbpfLoader::new().load(firewall_ctl::datapath::OBJECT).expect("object loads");
    let program: &mut SchedClassifier =
        other.program_mut("test_tcx_pass").expect("test program").try_into().expect("classifier");
    program.load().expect("test program loads");
    let other_id = program.info().expect("info").id();
    srv.in_netns(|| {
        program.attach_with_options("eth0", TcAttachType::Ingress, TcAttachOptions::TcxOrder(LinkOrder::first()))
    })
    .expect("attached before sgctl");
    expect_all("a pass-all program first: unjudged", vec![tcp(&cli, "203.0.113.1:8080", Connected)]);
    let status = sg.status();
    let ingress = &status["interfaces"][0]["links"]["ingress"];
    assert_eq!((ingress["state"].as_str(), &ingress["before"]), (Some("not_first"), &serde_json::json!([other_id])));
    assert!(sg.ok(&["status"]).stdout.contains("not first on its hook"), "{status:#}");

    let report = sg.apply(&[&web]);
    assert_eq!(report["interfaces"][0]["change"], "repaired", "{report:#}");
    expect_all(
        "sgctl first again",
        vec![tcp(&cli, "203.0.113.1:80", Connected), tcp(&cli, "203.0.113.1:8080", TimedOut)],
    );
    assert_eq!(link_state(&sg.status(), "ingress"), "ok");
    drop(other);
}

/// At boot, another XDP program holds the hook one interface was saved
/// with (`--mode xdp`): restore filters it with tc instead, and every
/// other interface as saved. (Before: the whole restore failed and no
/// interface was filtered.)
#[test]
fn a_restore_with_one_hook_taken_filters_every_interface() {
    let (SeedLab { lab, srv, other: cli, .. }, _listeners) = web_lab("hooktaken");
    let backend = host(&lab, "backend", &["203.0.113.30/24"]);
    lab.link(&srv, "eth1", &["10.9.0.1/24"], &backend, "eth1", &["10.9.0.2/24"]).expect("eth1");
    let sg = Sgctl::new(&lab, &srv);
    sg.apply(&[&policy("web-server.yaml")]);
    sg.json(&["attach", "eth1", "--groups", "web-server", "--mode", "xdp"]);
    assert_eq!(sg.status()["interfaces"][1]["ingress"], "xdp-native");

    // A reboot: bpffs is empty; another program takes eth1's XDP hook first.
    std::fs::remove_dir_all(sg.state_dir()).expect("wiping the state as a reboot would");
    let mut other = aya::EbpfLoader::new().load(firewall_ctl::datapath::OBJECT).expect("object loads");
    let program: &mut aya::programs::Xdp =
        other.program_mut(firewall_ctl::testing::testrun::PROG_EMPTY_XDP).expect("program").try_into().expect("xdp");
    program.load().expect("loads");
    srv.in_netns(|| program.attach("eth1", aya::programs::XdpMode::Driver)).expect("another XDP program on eth1");

    let run = sg.run(&["restore", "--all"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("eth1") && run.stderr.contains("tc instead"), "the fallback is said: {run:?}");
    let status = sg.status();
    let eth1 = &status["interfaces"][1];
    assert_eq!((eth1["interface"].as_str(), eth1["ingress"].as_str()), (Some("eth1"), Some("tc")), "{status:#}");
    assert_eq!(eth1["mode"], "xdp", "{status:#}");
    expect_all(
        "every interface filtered after the restore",
        vec![
            tcp(&cli, "203.0.113.1:80", Connected),
            tcp(&cli, "203.0.113.1:8080", TimedOut),
            tcp(&backend, "10.9.0.1:80", Connected),
            tcp(&backend, "10.9.0.1:8080", TimedOut),
        ],
    );
}

const GUARDED: &str = "\
groups:
  web-server:
    inbound:
      - { protocol: tcp, ports: 22, source: sg:admins }
      - { protocol: tcp, ports: 80, source: 0.0.0.0/0 }
    outbound:
      - { protocol: all, destination: 0.0.0.0/0 }
  admins: {}
members:
  admins: [203.0.113.10]
interfaces:
  eth0: [web-server]
";

/// `apply --confirm-within` of a policy that locks the operator out, then,
/// before the deadline, an `attach`, a `detach`, a `members` change and an
/// interface the agent attaches: at the deadline the scope is exactly as
/// it was before the unconfirmed apply. (Before: any of these changes
/// silently disarmed the rollback.)
#[test]
fn a_confirm_window_crossed_by_other_changes_still_rolls_back() {
    let (SeedLab { lab, srv, ssh: admin, other: cli }, _listeners) = web_lab("window");
    let backend = host(&lab, "backend", &["203.0.113.30/24"]);
    lab.link(&srv, "eth1", &["10.8.0.1/24"], &backend, "eth1", &["10.8.0.2/24"]).expect("eth1");
    let sg = Sgctl::new(&lab, &srv);
    let files = TempDir::new("window");
    let good = files.write("good.yaml", GUARDED);
    let lockout = files.write(
        "lockout.yaml",
        &replace_once(GUARDED, "ports: 22,", "ports: 2222,")
            .replace("  eth0: [web-server]\n", "  eth0: [web-server]\n  late0: [web-server]\n"),
    );
    sg.apply(&[&good]);
    sg.json(&["attach", "eth1", "--groups", "web-server"]);
    let ssh = |from: &LabHost| from.tcp_connect("203.0.113.1:22".parse().expect("addr"), Duration::from_millis(500));
    assert_eq!(ssh(&admin), Connected);
    let agent = Agent::start(&sg, &["--no-flow-log", "--quiet"]);

    let report = sg.json(&["apply", "--allow-missing", "--confirm-within", "8", lockout.to_str().expect("utf-8")]);
    assert!(report["confirm_by"].is_u64(), "{report:#}");
    assert_eq!(ssh(&admin), TimedOut, "locked out");
    // The operator (and the agent) keep working meanwhile.
    sg.json(&["detach", "eth1"]);
    sg.json(&["members", "add", "admins", "203.0.113.20"]);
    sg.json(&["attach", "eth1", "--groups", "web-server"]);
    sg.json(&["detach", "eth1"]);
    plug_veth(&srv, &cli);
    wait_filtered(&sg, "late0", true, None, &agent);
    let status = sg.status();
    assert!(status["pending_confirmation"]["generation"].is_u64(), "still armed: {status:#}");

    // At the deadline: the policy before the unconfirmed apply, its
    // members, its interfaces.
    assert!(until(Duration::from_secs(15), || ssh(&admin) == Connected), "rolled back:\n{}", agent.log());
    // The record went with the rollback: `status` waits for one under way.
    let status = sg.status();
    assert!(status["pending_confirmation"].is_null(), "disarmed: {status:#}");
    let names: Vec<&str> =
        status["interfaces"].as_array().into_iter().flatten().filter_map(|i| i["interface"].as_str()).collect();
    assert_eq!(names, ["eth0", "eth1"], "{status:#}");
    expect_all(
        "as before the unconfirmed apply",
        vec![
            tcp(&admin, "203.0.113.1:22", Connected),
            tcp(&cli, "203.0.113.1:22", TimedOut),
            tcp(&backend, "10.8.0.1:8080", TimedOut),
            tcp(&backend, "10.8.0.1:80", Connected),
        ],
    );
}

/// `status` never shows a rollback half made (the old policy back in
/// force beside the pending record it is about to remove, which made
/// e2e_atomic's killed-apply test flaky): while the rollback of a due
/// record holds the state (the test holds the lock in its place), `status`
/// waits; once it is done, `status` shows the policy before the
/// unconfirmed apply and no record. Reports wait for nothing else.
#[test]
fn status_waits_for_a_rollback_under_way() {
    use nix::fcntl::{Flock, FlockArg};
    let (SeedLab { lab, srv, ssh: admin, .. }, _listeners) = web_lab("halfroll");
    let sg = Sgctl::new(&lab, &srv);
    let files = TempDir::new("halfroll");
    let web = policy_text("web-server.yaml");
    sg.apply(&[&files.write("good.yaml", &web)]);
    let lockout = files.write("lockout.yaml", &replace_once(&web, "ports: 22,", "ports: 2222,"));
    let report = sg.json(&["apply", "--confirm-within", "2", lockout.to_str().expect("utf-8")]);
    let unconfirmed = &report["generation"];

    let dir = std::fs::File::open(lab.state_dir().expect("state dir")).expect("open state dir");
    let held = Flock::lock(dir, FlockArg::LockExclusive).map_err(|(_, e)| e).expect("flock");
    // Not due yet: a report does not wait.
    let status = sg.status();
    assert_eq!(status["generation"], *unconfirmed, "{status:#}");
    assert!(status["pending_confirmation"]["seconds_left"].as_u64().is_some_and(|s| s <= 2), "{status:#}");
    std::thread::sleep(Duration::from_millis(2500));
    let mut report = sg
        .command(&["--json", "status"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sgctl runs");
    std::thread::sleep(Duration::from_millis(700));
    assert!(report.try_wait().expect("try_wait").is_none(), "status waits for the due rollback");
    drop(held);
    let out = report.wait_with_output().expect("status");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("json");
    let scope = &shown["scopes"][0];
    // Either before the rollback took the lock (the unconfirmed policy
    // and its due record) or after it (the policy before, no record):
    // never one without the other.
    if scope["pending_confirmation"].is_null() {
        assert!(scope["generation"].as_u64() > unconfirmed.as_u64(), "rolled back: {shown:#}");
    } else {
        assert_eq!(scope["generation"], *unconfirmed, "{shown:#}");
        assert_eq!(scope["pending_confirmation"]["seconds_left"], 0, "{shown:#}");
    }
    assert!(until(Duration::from_secs(5), || sg.status()["pending_confirmation"].is_null()), "{:#}", sg.status());
    assert_eq!(admin.tcp_connect("203.0.113.1:22".parse().expect("addr"), Duration::from_millis(500)), Connected);
}

/// A bpffs that anyone may write (mode 1777, as sgctl used to mount it):
/// nobody makes the state directory first, or a symbolic link in its
/// place. sgctl refuses both, and the advice it gives works; sgctl's own
/// mount of bpffs is root's alone.
#[test]
fn a_squatted_state_directory_is_refused_with_advice_that_works() {
    let (SeedLab { lab, srv, other: cli, .. }, _listeners) = web_lab("squatdir");
    let web = policy("web-server.yaml");
    let mount = Path::new("/run").join(format!("sgctl-squat-{}", std::process::id()));
    std::fs::create_dir_all(&mount).expect("mount point");
    let run = |cmd: &[&str]| {
        let out = std::process::Command::new(cmd[0]).args(&cmd[1..]).output().expect("runs");
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["mount", "-t", "bpf", "-o", "mode=1777", "bpf", mount.to_str().expect("utf-8")]);
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _unmount = Unmount(mount.clone());
    let state = mount.join("sgctl");
    let lib = lab.lib_dir().expect("lib dir");
    let sgctl = |state: &Path, lib: &Path, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sgctl"))
            .arg("--state-dir")
            .arg(state)
            .arg("--lib-dir")
            .arg(lib)
            .args(["-n", srv.netns()])
            .args(args)
            .output()
            .expect("sgctl runs");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };

    {
        let state = state.clone();
        as_nobody(move || std::fs::create_dir(&state).expect("nobody makes the directory first"));
    }
    let (code, stderr) = sgctl(&state, &lib, &["apply", web.to_str().expect("utf-8")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("belongs to uid 65534"), "{stderr}");
    expect_all("nothing attached", vec![tcp(&cli, "203.0.113.1:8080", Connected)]);
    // The advice, word for word.
    let advice = stderr.split("(rm -r ").nth(1).and_then(|r| r.split(')').next()).expect("advice to remove it");
    run(&["rm", "-r", advice]);
    let (code, stderr) = sgctl(&state, &lib, &["apply", web.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "after following the advice: {stderr}");
    expect_all("filtered", vec![tcp(&cli, "203.0.113.1:8080", TimedOut), tcp(&cli, "203.0.113.1:80", Connected)]);
    {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(&state).expect("state dir");
        assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o700));
    }

    // A symbolic link in its place, to root's real directory: not followed.
    let link = mount.join("sgctl-link");
    {
        let (state, link) = (state.clone(), link.clone());
        as_nobody(move || std::os::unix::fs::symlink(&state, &link).expect("nobody links"));
    }
    let (code, stderr) = sgctl(&link, &lib, &["status"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");

    // A lib directory that is not root's: what it holds would be put in
    // force at boot.
    let lib_squat = mount.parent().expect("/run").join(format!("sgctl-squat-lib-{}", std::process::id()));
    std::fs::create_dir_all(&lib_squat).expect("lib dir");
    std::os::unix::fs::chown(&lib_squat, Some(NOBODY), Some(NOBODY)).expect("chown");
    let (code, stderr) = sgctl(&state, &lib_squat, &["restore"]);
    let _ = std::fs::remove_dir_all(&lib_squat);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("lib directory") && stderr.contains("belongs to uid 65534"), "{stderr}");

    // sgctl's own mount of bpffs (where none is mounted) is root's, mode 0700.
    let script = format!(
        "umount -l /sys/fs/bpf && {} --lib-dir {} -n {} apply {} >/dev/null && stat -c %a /sys/fs/bpf",
        env!("CARGO_BIN_EXE_sgctl"),
        lib.display(),
        srv.netns(),
        web.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env_remove("SGCTL_STATE_DIR")
        .output()
        .expect("unshare");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // (bpffs always adds the sticky bit to its root.)
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1700");
}

/// An IPv4 fragment of a UDP datagram from `src`:`sport` to `dst`:`dport`
/// with IP identification `id`: the first (`first`: the UDP header and 24
/// bytes, more fragments to come) or the second and last (40 bytes at
/// offset 32). The datagram is 72 bytes of UDP, no checksum.
fn udp_fragment(src: [u8; 4], dst: [u8; 4], dport: u16, id: u16, first: bool) -> Vec<u8> {
    let mut udp = Vec::with_capacity(72);
    udp.extend_from_slice(&40000u16.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&72u16.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend(std::iter::repeat_n(0x5a, 64));
    let (payload, flags_offset) = if first { (&udp[..32], 0x2000u16) } else { (&udp[32..], 32 / 8) };
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&id.to_be_bytes());
    ip.extend_from_slice(&flags_offset.to_be_bytes());
    ip.extend_from_slice(&[64, 17, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(payload);
    ip
}

const FRAGMENTS_POLICY: &str = "\
groups:
  svc:
    mode: audit
    inbound:
      - { protocol: udp, ports: 5000, source: 0.0.0.0/0 }
interfaces:
  eth0: [svc]
";

/// A datagram whose first fragment passed, and whose later fragment comes
/// after `conntrack flush`, or after its group left audit mode (where it
/// passed as a would-drop): the later fragment is dropped, and the
/// datagram never reaches the listener. (Before: the datagram's entry in
/// `FRAGMENTS` outlived both, and the datagram completed.)
#[test]
fn fragments_do_not_outlive_a_flush_or_the_end_of_audit() {
    let lab = lab("fragedge");
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let cli = host(&lab, "cli", &["203.0.113.20/24"]);
    let sg = Sgctl::new(&lab, &srv);
    let files = TempDir::new("fragedge");
    sg.apply(&[&files.write("audit.yaml", FRAGMENTS_POLICY)]);
    let bind = |port: u16| {
        let socket = srv.in_netns(|| std::net::UdpSocket::bind(("203.0.113.1", port))).expect("bind");
        socket.set_read_timeout(Some(BLOCKED)).expect("timeout");
        socket
    };
    let (allowed, audited) = (bind(5000), bind(6000));
    let received = |socket: &std::net::UdpSocket| socket.recv(&mut [0; 128]).is_ok_and(|n| n == 64);
    let send = |dport: u16, id: u16, first: bool| {
        cli.send_raw_ipv4(&udp_fragment([203, 0, 113, 20], [203, 0, 113, 1], dport, id, first)).expect("send");
    };
    let dropped_fragments = || count(&sg.stats()["interfaces"][0], "dropped_fragment");

    // Both fragments in a row: the datagram arrives (allowed, and audited).
    for (port, socket, id) in [(5000, &allowed, 1), (6000, &audited, 2)] {
        send(port, id, true);
        send(port, id, false);
        assert!(received(socket), "a whole datagram to {port} arrives");
    }

    // The first fragment, a flush, the last fragment.
    send(5000, 3, true);
    sg.ok(&["conntrack", "flush"]);
    let before = dropped_fragments();
    send(5000, 3, false);
    assert!(!received(&allowed), "the datagram cut by the flush never completes");
    assert_eq!(dropped_fragments(), before + 1, "its last fragment was dropped");

    // Under audit, the first fragment to 6000 (no rule) passes; the group
    // goes to enforce; the last fragment comes.
    send(6000, 4, true);
    sg.apply(&[&files.write("enforce.yaml", &replace_once(FRAGMENTS_POLICY, "    mode: audit\n", ""))]);
    let before = dropped_fragments();
    send(6000, 4, false);
    assert!(!received(&audited), "the datagram audit let through never completes in enforce mode");
    assert_eq!(dropped_fragments(), before + 1, "its last fragment was dropped");
    // Enforce still lets an allowed datagram through.
    send(5000, 5, true);
    send(5000, 5, false);
    assert!(received(&allowed), "an allowed datagram arrives");
}

const MEMBERS_POLICY: &str = "\
groups:
  web:
    inbound:
      - { protocol: udp, ports: 5000, source: sg:web }
interfaces:
  eth0: [web]
";

/// `sg:web` matches the addresses of the local interfaces `web` is
/// attached to (docs/semantics.md item 5): when srv's eth0 gains or loses
/// an address, the rule follows within seconds, with no `apply` (the agent
/// watches addresses). (Before: only the next `apply`, `attach` or
/// `detach` noticed.)
#[test]
fn local_group_membership_follows_interface_addresses() {
    let lab = lab("localsg");
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let cli = host(&lab, "cli", &["203.0.113.20/24", "203.0.113.50/32"]);
    // A datagram from srv's own (new) address arrives from outside: the
    // kernel takes it only with accept_local (and no reverse-path filter).
    let sysctl = "echo 1 > /proc/sys/net/ipv4/conf/eth0/accept_local && \
                  echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter && echo 0 > /proc/sys/net/ipv4/conf/eth0/rp_filter";
    assert!(srv.run(&["sh", "-c", sysctl]).expect("sysctl").status.success());
    let sg = Sgctl::new(&lab, &srv);
    let files = TempDir::new("localsg");
    sg.apply(&[&files.write("web.yaml", MEMBERS_POLICY)]);
    let agent = Agent::start(&sg, &["--no-flow-log", "--quiet"]);
    let socket = srv.in_netns(|| std::net::UdpSocket::bind("203.0.113.1:5000")).expect("bind");
    socket.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let member_gets_in = || {
        cli.in_netns(|| {
            let from = std::net::UdpSocket::bind("203.0.113.50:0").expect("bind .50");
            from.send_to(b"member?", "203.0.113.1:5000").expect("send")
        });
        socket.recv(&mut [0; 16]).is_ok_and(|n| n == 7)
    };
    assert!(!member_gets_in(), "203.0.113.50 carries no group yet");

    let ip = |args: &[&str]| assert!(srv.run(args).expect("ip").status.success(), "{args:?}");
    ip(&["ip", "addr", "add", "203.0.113.50/32", "dev", "eth0"]);
    let started = Instant::now();
    assert!(until(Duration::from_secs(5), member_gets_in), "an address of eth0 carries web:\n{}", agent.log());
    eprintln!("203.0.113.50 became a member of web {:?} after eth0 got it", started.elapsed());
    ip(&["ip", "addr", "del", "203.0.113.50/32", "dev", "eth0"]);
    assert!(until(Duration::from_secs(5), || !member_gets_in()), "and stops when eth0 loses it:\n{}", agent.log());
}

/// udev renames a NIC after the kernel made it (`eth5` becomes `late0`, the
/// name the policy gives it), after `sgctl restore` may already have run
/// (its unit waits for `udevadm settle`, but a NIC can come later): the
/// agent follows the rename and filters the device under its new name; a
/// filtered device renamed away is no longer the interface the policy
/// names, and its state goes. (Before: nothing looked at names after the
/// first attach.)
#[test]
fn an_interface_renamed_as_udev_does_is_followed() {
    let (SeedLab { lab, srv, other: cli, .. }, _listeners) = web_lab("rename");
    let sg = Sgctl::new(&lab, &srv);
    let files = TempDir::new("rename");
    sg.json(&[
        "apply",
        "--allow-missing",
        web_with(&files, "late.yaml", "\n  late0: [web-server]").to_str().expect("utf-8"),
    ]);
    let agent = Agent::start(&sg, &["--no-flow-log", "--quiet"]);
    // The NIC appears under the kernel's name: nothing names it.
    plug_veth_named(&srv, "eth5", &cli);
    expect_all("eth5 is not the policy's", vec![tcp(&cli, "10.9.0.1:8080", Connected)]);
    assert!(filtered(&sg, "eth5").is_none(), "{:#}", sg.status());

    // udev renames it (a device is renamed while down).
    ip(&srv, &["link", "set", "eth5", "down"]);
    ip(&srv, &["link", "set", "eth5", "name", "late0"]);
    ip(&srv, &["link", "set", "late0", "up"]);
    let took = wait_filtered(&sg, "late0", true, Some(ifindex_in(&srv, "late0")), &agent);
    eprintln!("late0 filtered {took:?} after the rename");
    expect_all("renamed to late0", vec![tcp(&cli, "10.9.0.1:80", Connected), tcp(&cli, "10.9.0.1:8080", TimedOut)]);

    // Renamed away: no longer the policy's late0.
    ip(&srv, &["link", "set", "late0", "down"]);
    ip(&srv, &["link", "set", "late0", "name", "eth6"]);
    ip(&srv, &["link", "set", "eth6", "up"]);
    wait_filtered(&sg, "late0", false, None, &agent);
    let status = sg.status();
    let unfiltered = status["unfiltered"].as_array().cloned().unwrap_or_default();
    assert!(
        unfiltered.iter().any(|u| u["interface"] == "late0" && u["exists"] == false),
        "the saved policy still names late0, shown as absent: {status:#}"
    );
    expect_all("renamed away", vec![tcp(&cli, "10.9.0.1:8080", Connected)]);
    assert!(agent.log().contains("late0"), "the agent says what it did:\n{}", agent.log());
}

/// The agent's unit file and what it restricts: `systemd-analyze verify`
/// takes both units without a word, and the agent run under the unit's
/// `CapabilityBoundingSet`, `NoNewPrivileges`, `LimitNOFILE` and a
/// read-only root (`ProtectSystem=strict`: only bpffs and its lib
/// directory writable) still attaches an interface that appears and serves
/// metrics. (This machine's PID 1 is not systemd: the restrictions are
/// applied as systemd applies them, with setpriv and a mount namespace.)
#[test]
fn the_agent_does_its_job_within_its_units_hardening() {
    let (SeedLab { lab, srv, other: cli, .. }, _listeners) = web_lab("hardened");
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging");
    let files = TempDir::new("hardened");
    let mut checked = Vec::new();
    for unit in ["sgctl-agent.service", "sgctl-restore.service"] {
        let text = std::fs::read_to_string(units.join(unit)).expect("unit");
        checked.push(files.write(unit, &text.replace("/usr/local/sbin/sgctl", env!("CARGO_BIN_EXE_sgctl"))));
    }
    let out = std::process::Command::new("systemd-analyze").args(["verify", "--man=no"]).args(&checked).output();
    let out = out.expect("systemd-analyze runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");

    let unit = std::fs::read_to_string(units.join("sgctl-agent.service")).expect("unit");
    let value = |key: &str| unit.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).map(str::to_owned);
    assert_eq!(value("Type").as_deref(), Some("notify"));
    // The network waits for the agent (ready once reconciled) and for the
    // restore, which waits for udev's renames of the NICs present at boot.
    let restore = std::fs::read_to_string(units.join("sgctl-restore.service")).expect("unit");
    for (name, text) in [("agent", &unit), ("restore", &restore)] {
        let has = |key: &str, word: &str| {
            text.lines()
                .filter_map(|l| l.strip_prefix(&format!("{key}=")))
                .any(|v| v.split_whitespace().any(|w| w == word))
        };
        assert!(
            has("Before", "network-pre.target") && has("Wants", "network-pre.target"),
            "{name}: before the network"
        );
        assert!(has("After", "systemd-udev-trigger.service"), "{name}: after udev has handled the devices at boot");
    }
    assert!(restore.lines().any(|l| l.starts_with("ExecStartPre=") && l.contains("udevadm settle")), "{restore}");
    assert_eq!(value("NoNewPrivileges").as_deref(), Some("yes"));
    assert_eq!(value("ProtectSystem").as_deref(), Some("strict"));
    // LimitNOFILE, as far as this sandbox's hard limit goes (its root lacks
    // CAP_SYS_RESOURCE to raise it; systemd as PID 1 has it).
    let nofile: u64 = value("LimitNOFILE").expect("LimitNOFILE").parse().expect("a number");
    let nofile = nofile.min(hard_descriptor_limit());
    let caps: Vec<String> = value("CapabilityBoundingSet")
        .expect("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect();

    let sg = Sgctl::new(&lab, &srv);
    sg.json(&[
        "apply",
        "--allow-missing",
        web_with(&files, "late.yaml", "\n  late0: [web-server]").to_str().expect("utf-8"),
    ]);
    let agent = sg.command(&["agent", "--listen", "127.0.0.1:0", "--no-flow-log", "--quiet"]);
    let argv: Vec<String> = std::iter::once(agent.get_program())
        .chain(agent.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let lib = sg.lib_dir().display().to_string();
    let script = format!(
        "mount -o remount,bind,ro / && mount --bind {lib} {lib} && mount -o remount,bind,rw {lib} && \
         ulimit -n {nofile} && exec setpriv --bounding-set -all,+{} --no-new-privs -- {}",
        caps.join(",+"),
        argv.join(" ")
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]).stdin(std::process::Stdio::null());
    let agent = Agent::spawn(cmd, "sgctl agent: ready");

    // What it runs with.
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).expect("status");
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default();
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    let cap_eff = u64::from_str_radix(field("CapEff:"), 16).expect("CapEff");
    let bits: u64 = [("bpf", 39), ("perfmon", 38), ("net_admin", 12), ("sys_admin", 21)]
        .iter()
        .filter(|(name, _)| caps.iter().any(|c| c == name))
        .map(|(_, bit)| 1u64 << bit)
        .sum();
    assert_eq!(cap_eff, bits, "capabilities limited to the unit's: {caps:?}");
    assert!(std::fs::write("/var/tmp/sgctl-hardened-probe", b"x").is_ok(), "the test's own root is writable");
    let _ = std::fs::remove_file("/var/tmp/sgctl-hardened-probe");

    plug_veth(&srv, &cli);
    let took = wait_filtered(&sg, "late0", true, None, &agent);
    eprintln!("late0 attached {took:?} after it appeared, by the agent under its unit's restrictions");
    expect_all("late0 filtered", vec![tcp(&cli, "10.9.0.1:80", Connected), tcp(&cli, "10.9.0.1:8080", TimedOut)]);
    assert!(agent.scrape().contains("sgctl_policy_generation"), "metrics served");
    let saved = std::fs::read_to_string(sg.lib_dir().join(format!("netns-{}", srv.netns())).join("applied.json"));
    assert!(saved.expect("saved").contains("late0"), "the agent saved what it attached");
}

/// libfaketime (Debian's `faketime`), which the test preloads into the
/// applying `sgctl` and its rollback helper to step their wall clock.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The rollback's deadline is not the wall clock's: a step of it (made by
/// libfaketime in the helper's process, as `date -s` makes one for the
/// whole host; the monotonic clocks do not move) neither brings the
/// rollback forward nor puts it off. (Before: the helper compared the
/// wall clock with the deadline, so a step forward rolled back at once
/// and a step back put it off by as much.)
#[test]
fn a_step_of_the_wall_clock_does_not_move_the_rollback() {
    assert!(Path::new(LIBFAKETIME).exists(), "{LIBFAKETIME} missing: run `cargo xtask bootstrap` (Debian's faketime)");
    let (SeedLab { lab, srv, ssh: admin, .. }, _listeners) = web_lab("clockstep");
    let sg = Sgctl::new(&lab, &srv);
    let files = TempDir::new("clockstep");
    let web = policy_text("web-server.yaml");
    sg.apply(&[&files.write("good.yaml", &web)]);
    let lockout = files.write("lockout.yaml", &replace_once(&web, "ports: 22,", "ports: 2222,"));
    let ssh = || admin.tcp_connect("203.0.113.1:22".parse().expect("addr"), Duration::from_millis(500));
    assert_eq!(ssh(), Connected);

    let clock = files.write("clock", "+0\n");
    let mut apply =
        sg.command(&[std::ffi::OsStr::new("apply"), "--confirm-within".as_ref(), "6".as_ref(), lockout.as_os_str()]);
    apply
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME_TIMESTAMP_FILE", &clock)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let applied = Instant::now();
    let out = apply.output().expect("sgctl runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(ssh(), TimedOut, "locked out");

    // An hour forward: the deadline is not reached.
    std::fs::write(&clock, "+1h\n").expect("clock step");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ssh(), TimedOut, "a step forward of the wall clock rolled back early");
    // An hour back: the deadline comes all the same.
    std::fs::write(&clock, "-1h\n").expect("clock step");
    assert!(
        until(Duration::from_secs(12), || ssh() == Connected),
        "a step back of the wall clock put the rollback off"
    );
    let took = applied.elapsed();
    eprintln!("rolled back {took:?} after the apply (deadline 6 s), the wall clock stepped twice");
    assert!(took >= Duration::from_secs(5), "rolled back before its deadline: {took:?}");
}
