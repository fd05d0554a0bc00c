//! Upgrading from the release before the two-table conntrack layout
//! (`common::previous`, which filtered each interface with one table of
//! 40-byte keys) to this one, for real: the previous `sgctl` applies, this
//! `sgctl` applies the same files, and the connections tracked under the
//! old layout carry on in the new tables (docs/semantics.md item 16). An
//! upgrade killed at any point leaves the interface filtered by the old
//! tables or the new ones, and the next `sgctl` finishes it.
use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::*;
use Outcome::{Connected, TimedOut};

use crate::common;

/// Inbound 80 from the lab; outbound only to the client's 9000: every
/// packet the server sends back on a connection to 80, and every packet
/// the client sends back on the server's connection to 9000, passes only
/// because its flow is tracked.
const POLICY: &str = "groups:
  web:
    inbound:
      - { protocol: tcp, ports: 80, source: 203.0.113.0/24 }
    outbound:
      - { protocol: tcp, ports: 9000, destination: 203.0.113.10/32 }
interfaces:
  eth0: [web]
";

/// Pins only the previous layout has.
const LEGACY_PINS: [&str; 3] = ["CONNTRACK", "CT_SWEPT_AT", "CT_CONFIG"];

struct UpgradeLab {
    lab: Lab,
    srv: LabHost,
    cli: LabHost,
    _listeners: Vec<Listener>,
}

fn upgrade_lab(name: &str) -> UpgradeLab {
    let lab = lab(name);
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let cli = host(&lab, "cli", &["203.0.113.10/24"]);
    let mut listeners = listen(&srv, &["203.0.113.1:80", "203.0.113.1:8080"]);
    listeners.extend(listen(&cli, &["203.0.113.10:9000"]));
    UpgradeLab { lab, srv, cli, _listeners: listeners }
}

fn iface_dir(sg: &Sgctl) -> std::path::PathBuf {
    sg.state_dir().join(format!("netns-{}/if-eth0", sg.netns()))
}

fn pinned(sg: &Sgctl, name: &str) -> bool {
    iface_dir(sg).join(name).exists()
}

/// Echoes on `conn` every 20 ms until stopped; the echoes that failed.
fn keep_echoing(mut conn: Conn, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(Conn, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut n, mut failed) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let got = conn.echo(ALLOWED);
            if got != Connected {
                failed.push(format!("{} echo {n}: {got:?}", conn.name()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (conn, failed)
    })
}

/// Whether the policy is enforced: a new connection to 80 connects, one to
/// 8080 (a listener, no rule) times out; both outcomes.
fn enforced(cli: &LabHost) -> (Outcome, Outcome) {
    let probe = |port: u16| {
        let cli = cli.clone();
        std::thread::spawn(move || {
            cli.tcp_connect(format!("203.0.113.1:{port}").parse().expect("addr"), Duration::from_millis(500))
        })
    };
    let (allowed, denied) = (probe(80), probe(8080));
    (allowed.join().expect("probe"), denied.join().expect("probe"))
}

const ENFORCED: (Outcome, Outcome) = (Connected, TimedOut);

/// The flows `conntrack list` shows, as `(from, to, state, table)`.
fn flows(sg: &Sgctl) -> Vec<(String, String, String, String)> {
    let list = sg.json(&["conntrack", "list"]);
    list["flows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            (s("src"), s("dst"), s("state"), s("table"))
        })
        .collect()
}

/// Builds the previous release (if this run has not yet): the tests below
/// need it, and this one needs neither root nor the kernel, so it can run
/// before them, outside any lock.
#[test]
fn the_previous_release_builds() {
    let sgctl = previous::sgctl();
    let out = std::process::Command::new(&sgctl).arg("--version").output().expect("previous sgctl runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_upgrade_moves_tracked_flows_into_the_new_tables_without_a_gap() {
    let UpgradeLab { lab, srv, cli, _listeners } = upgrade_lab("upgrade");
    let files = TempDir::new("upgrade");
    let policy = files.write("policy.yaml", POLICY);
    let new = Sgctl::new(&lab, &srv);
    let old = Sgctl::new(&lab, &srv).with_binary(&previous::sgctl());
    old.ok(&["apply", policy.to_str().expect("utf-8")]);
    assert!(pinned(&old, "CONNTRACK") && !pinned(&old, "CT4"), "the previous layout: one table");
    assert_eq!(enforced(&cli), ENFORCED, "the previous release enforces the policy");

    // Both ways: a connection the client opened, one the server opened.
    let stop = Arc::new(AtomicBool::new(false));
    let inbound = keep_echoing(open(&cli, "203.0.113.1:80"), stop.clone());
    let outbound = keep_echoing(open(&srv, "203.0.113.10:9000"), stop.clone());
    std::thread::sleep(Duration::from_millis(200));

    let report = new.apply(&[&policy]);
    assert_eq!(report["interfaces"][0]["change"], "reattached", "{report:#}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (mut inbound, in_failed) = inbound.join().expect("echo thread");
    let (mut outbound, out_failed) = outbound.join().expect("echo thread");
    assert!(in_failed.is_empty() && out_failed.is_empty(), "a connection broke: {in_failed:?} {out_failed:?}");

    for name in LEGACY_PINS {
        assert!(!pinned(&new, name), "{name} of the previous layout is gone");
    }
    let tracked = flows(&new);
    for (from, to) in
        [(inbound.local_addr().to_string(), "203.0.113.1:80"), (outbound.local_addr().to_string(), "203.0.113.10:9000")]
    {
        let flow = tracked.iter().find(|f| f.0 == from && f.1 == to);
        assert_eq!(
            flow.map(|f| (f.2.as_str(), f.3.as_str())),
            Some(("established", "confirmed")),
            "{from} -> {to} moved as it was: {tracked:?}"
        );
    }
    // Idle for a while, then talking again: the flows are where the
    // programs look, not only taken over by the first packets.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(inbound.echo(ALLOWED), Connected);
    assert_eq!(outbound.echo(ALLOWED), Connected);
    assert_eq!(enforced(&cli), ENFORCED, "the upgraded interface enforces the same policy");
    let again = new.apply(&[&policy]);
    assert_eq!(again["changed"], false, "an upgraded interface is up to date: {again:#}");
}

#[test]
fn a_killed_upgrade_leaves_the_old_tables_or_the_new_ones_enforcing() {
    let UpgradeLab { lab, srv, cli, _listeners } = upgrade_lab("upgkill");
    let files = TempDir::new("upgkill");
    let policy = files.write("policy.yaml", POLICY);
    let path = policy.to_str().expect("utf-8");
    let new = Sgctl::new(&lab, &srv);
    let old = Sgctl::new(&lab, &srv).with_binary(&previous::sgctl());
    // How long a whole upgrade takes here: the kills land anywhere in it.
    old.ok(&["apply", path]);
    let started = Instant::now();
    new.ok(&["apply", path]);
    let took = started.elapsed();
    let mut seed = 0x0dd_ba11_u64 ^ u64::from(std::process::id());
    let (mut killed, mut finished) = (0, 0);
    for i in 0..12 {
        new.ok(&["detach", "eth0"]);
        old.ok(&["apply", path]);
        assert!(pinned(&old, "CONNTRACK"), "iteration {i}: back to the previous layout");
        let mut held = open(&cli, "203.0.113.1:80");
        match new.run_and_kill(&["apply", path], took, &mut seed) {
            Some((0, _)) => finished += 1,
            Some((code, stderr)) => panic!("iteration {i}: the upgrading apply failed with {code}: {stderr}"),
            None => killed += 1,
        }
        assert_eq!(enforced(&cli), ENFORCED, "iteration {i}: after a killed upgrade the policy must stay enforced");
        assert_eq!(held.echo(ALLOWED), Connected, "iteration {i}: the held connection, right after the kill");
        // The next sgctl finishes (or redoes) the move.
        new.ok(&["apply", path]);
        assert!(!pinned(&new, "CONNTRACK") && pinned(&new, "CT4"), "iteration {i}: moved to the new tables");
        assert_eq!(held.echo(ALLOWED), Connected, "iteration {i}: the held connection, once moved");
        assert_eq!(enforced(&cli), ENFORCED, "iteration {i}: enforced after the move");
    }
    eprintln!("12 upgrades: {killed} killed part way, {finished} finished before the kill");
    assert!(killed >= 4, "the kills must land inside the upgrade often enough to mean something ({killed})");
    leftovers_are_gone(&iface_dir(&new));
}

/// Nothing half-made is left pinned.
fn leftovers_are_gone(dir: &Path) {
    let leftovers: Vec<String> = std::fs::read_dir(dir)
        .expect("interface state")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with("_next") || n.ends_with("_new"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
