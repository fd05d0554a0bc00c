//! `sgctl members add|remove` (issue 7 item 2: membership changes on a
//! large group stay incremental): a change made in place takes effect at
//! once and touches nothing else, packets never see a mix, a kill at any
//! instant leaves the old membership or the new one and the next command
//! finishes it, and a change that cannot be made in place is a full one.
use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use common::{
    flood::{ConnectLoop, SynFlood},
    *,
};
use serde_json::Value;
use Outcome::{Connected, TimedOut};

use crate::common;

/// `web` lets `sg:fleet` in on 80 and 203.0.113.30 (`ops`) on 22; `fleet`
/// has 203.0.113.10 (`a`) and 5,000 other members that send nothing.
fn fleet_policy() -> String {
    let mut text = String::from(
        "groups:
  web:
    inbound:
      - { protocol: tcp, ports: 80, source: sg:fleet, description: from the fleet }
      - { protocol: tcp, ports: 22, source: 203.0.113.30/32, description: ops }
  fleet:
    inbound: []
members:
  fleet:
    - 203.0.113.10
",
    );
    for i in 0..5000 {
        let _ = writeln!(text, "    - 10.{}.{}.{}", i / 62_500, (i / 250) % 250, i % 250 + 1);
    }
    text + "interfaces:\n  eth0: [web]\n"
}

/// `srv` (203.0.113.1, echo servers on 22 and 80) and clients `a`
/// (203.0.113.10, a member), `b` (203.0.113.20, not yet), `ops`
/// (203.0.113.30, allowed on 22 by a CIDR), the policy applied.
struct FleetLab {
    lab: Lab,
    srv: LabHost,
    a: LabHost,
    b: LabHost,
    ops: LabHost,
    sg: Sgctl,
    file: std::path::PathBuf,
    _files: TempDir,
    _listeners: Vec<Listener>,
}

fn fleet_lab(name: &str) -> FleetLab {
    let lab = lab(name);
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let a = host(&lab, "a", &["203.0.113.10/24"]);
    let b = host(&lab, "b", &["203.0.113.20/24"]);
    let ops = host(&lab, "ops", &["203.0.113.30/24"]);
    let _listeners = listen(&srv, &["203.0.113.1:22", "203.0.113.1:80"]);
    let sg = Sgctl::new(&lab, &srv);
    let files = TempDir::new(name);
    let file = files.write("fleet.yaml", &fleet_policy());
    sg.apply(&[&file]);
    FleetLab { lab, srv, a, b, ops, sg, file, _files: files, _listeners }
}

fn web(port: u16) -> std::net::SocketAddr {
    format!("203.0.113.1:{port}").parse().expect("addr")
}

/// Whether `a` and `b` get through to port 80 (probed at once, each
/// waiting as long as a probe that should be dropped).
fn who_gets_in(a: &LabHost, b: &LabHost) -> (Outcome, Outcome) {
    probe_both(a, b, BLOCKED)
}

fn probe_both(a: &LabHost, b: &LabHost, wait: Duration) -> (Outcome, Outcome) {
    let (a, b) = (a.clone(), b.clone());
    let pa = std::thread::spawn(move || a.tcp_connect(web(80), wait));
    let pb = std::thread::spawn(move || b.tcp_connect(web(80), wait));
    (pa.join().expect("probe"), pb.join().expect("probe"))
}

fn members(sg: &Sgctl, verb: &str, addrs: &[&str]) -> Value {
    let mut args = vec!["members", verb, "fleet"];
    args.extend(addrs);
    sg.json(&args)
}

#[test]
fn a_membership_change_is_made_in_place_and_touches_nothing_else() {
    let lab = fleet_lab("members");
    let FleetLab { a, b, ops, sg, file, .. } = &lab;
    let generation = sg.status()["generation"].clone();
    assert_eq!(who_gets_in(a, b), (Connected, TimedOut));
    // Flows open across the changes: ops on 22 (another rule), a on 80.
    let mut held_ops = open(ops, "203.0.113.1:22");
    let mut held_a = open(a, "203.0.113.1:80");

    let started = Instant::now();
    let added = members(sg, "add", &["203.0.113.20"]);
    eprintln!("members add (debug build): {:?}, {added}", started.elapsed());
    assert_eq!(added["in_place"], true, "{added:#}");
    assert_eq!(added["entries_written"], 1, "{added:#}");
    assert_eq!(added["interfaces"], serde_json::json!(["eth0"]), "{added:#}");
    assert_eq!(who_gets_in(a, b), (Connected, Connected));
    // Adding a member again changes nothing.
    assert_eq!(members(sg, "add", &["203.0.113.20"])["entries_written"], 0);

    let removed = members(sg, "remove", &["203.0.113.10"]);
    assert_eq!(removed["in_place"], true, "{removed:#}");
    assert_eq!(who_gets_in(a, b), (TimedOut, Connected));
    // No full change happened, and what was open stayed open (a removed
    // member's flow lives on until it ends, as with AWS; `conntrack flush`
    // cuts it).
    assert_eq!(sg.status()["generation"], generation);
    for (held, name) in [(&mut held_ops, "ops on 22"), (&mut held_a, "a on 80")] {
        assert_eq!(held.echo(ALLOWED), Connected, "the flow of {name} broke");
    }
    // What reports show follows: explain reads the policy with the edits.
    let explain = |src: &str| sg.explain_tcp_in(src, "203.0.113.1", "80");
    assert_eq!(explain("203.0.113.20")["verdict"], "allowed", "{}", explain("203.0.113.20"));
    assert_eq!(explain("203.0.113.10")["verdict"], "dropped");

    // A change that is no single address is a full one, and works too.
    let network = members(sg, "add", &["203.0.113.8/29"]);
    assert_eq!(network["in_place"], false, "{network:#}");
    assert!(network["full_change_because"].as_str().is_some_and(|w| w.contains("not a single address")));
    assert_ne!(sg.status()["generation"], generation);
    assert_eq!(who_gets_in(a, b), (Connected, Connected));
    // After a full change the edits are in force in the new generation, and
    // in-place changes go on from there.
    assert_eq!(members(sg, "remove", &["203.0.113.8/29", "203.0.113.20"])["in_place"], false);
    assert_eq!(who_gets_in(a, b), (TimedOut, TimedOut));
    assert_eq!(members(sg, "add", &["203.0.113.20"])["in_place"], true);
    assert_eq!(who_gets_in(a, b), (TimedOut, Connected));

    // An unknown group or a bad address changes nothing.
    let run = sg.run(&["members", "add", "nosuch", "203.0.113.99"]).code(2);
    assert!(run.stderr.contains("unknown group \"nosuch\""), "{}", run.stderr);
    let run = sg.run(&["members", "add", "fleet", "203.0.113.1/24"]).code(2);
    assert!(run.stderr.contains("host bits are set; did you mean 203.0.113.0/24?"), "{}", run.stderr);
    assert_eq!(who_gets_in(a, b), (TimedOut, Connected));

    // Applying the files puts their membership back.
    sg.apply(&[file]);
    assert_eq!(who_gets_in(a, b), (Connected, TimedOut));
}

#[test]
fn the_edits_survive_a_restore_and_a_recompile() {
    let lab = fleet_lab("membersrestore");
    let FleetLab { a, b, sg, srv, .. } = &lab;
    members(sg, "add", &["203.0.113.20"]);
    members(sg, "remove", &["203.0.113.10"]);
    // A full change from the record (an interface attached) keeps them.
    let made = srv.run(&["ip", "link", "add", "spare0", "type", "veth", "peer", "name", "spare1"]).expect("ip runs");
    assert!(made.status.success(), "{made:?}");
    sg.attach("spare0", "web");
    assert_eq!(who_gets_in(a, b), (TimedOut, Connected));
    sg.json(&["detach", "spare0"]);
    // A reboot (bpffs is empty, the programs go with it) and `sgctl
    // restore`: they are saved on disk.
    std::fs::remove_dir_all(sg.state_dir()).expect("wiping the state as a reboot would");
    assert_eq!(probe_both(a, b, ALLOWED), (Connected, Connected), "unfiltered after the reboot");
    sg.json(&["restore"]);
    assert_eq!(who_gets_in(a, b), (TimedOut, Connected));
}

#[test]
fn packets_never_see_a_mix_while_memberships_change() {
    let fleet = fleet_lab("membersmix");
    let FleetLab { lab, a, sg, .. } = &fleet;
    let attacker = host(lab, "attacker", &["203.0.113.66/24"]);
    // a is a member throughout; the attacker never is; b and 2 more come and go.
    let flood = SynFlood::start(
        &attacker,
        Ipv4Addr::new(203, 0, 113, 66),
        SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 80),
        3000,
    );
    let stream = ConnectLoop::start(a, web(80), ALLOWED);
    let started = Instant::now();
    let mut changes = 0;
    while started.elapsed() < Duration::from_secs(4) {
        for verb in ["add", "remove"] {
            let out = members(sg, verb, &["203.0.113.20", "203.0.113.21", "2001:db8::20"]);
            assert_eq!(out["in_place"], true, "{out:#}");
            changes += 1;
        }
    }
    let (tried, failed) = stream.stop();
    let flood = flood.stop();
    eprintln!(
        "{changes} changes; {} SYNs from a non-member, {} answered; {tried} connections of a member, {} failed",
        flood.sent,
        flood.answered,
        failed.len()
    );
    assert_eq!(flood.answered, 0, "a non-member got through during a membership change: {flood:?}");
    assert!(failed.is_empty(), "a member's connection failed during a membership change: {failed:?}");
    assert!(changes >= 20 && tried >= 20, "{changes} changes, {tried} connections");
}

#[test]
fn a_killed_members_change_leaves_old_or_new_and_the_next_command_finishes_it() {
    let lab = fleet_lab("memberskill");
    let FleetLab { a, b, ops, sg, srv, .. } = &lab;
    let started = Instant::now();
    members(sg, "add", &["203.0.113.20"]);
    let took = started.elapsed();
    members(sg, "remove", &["203.0.113.20"]);
    let journal = sg.state_dir().join(format!("netns-{}/members-journal", srv.netns()));
    let mut seed = 0x3e3b_u64 ^ u64::from(std::process::id());
    let (mut seen, mut journals, mut finished) = ([0; 2], 0, 0);
    for i in 0..24 {
        let verb = if i % 2 == 0 { "add" } else { "remove" };
        if sg
            .run_and_kill(&["members", verb, "fleet", "203.0.113.20"], took * 2, &mut seed)
            .is_some_and(|(c, _)| c == 0)
        {
            finished += 1;
        }
        journals += usize::from(journal.exists());
        // a stays in, ops stays out of 80, b is in or out: never anything else.
        let ops_probe = {
            let ops = ops.clone();
            std::thread::spawn(move || ops.tcp_connect(web(80), BLOCKED))
        };
        let (in_a, in_b) = who_gets_in(a, b);
        assert_eq!(in_a, Connected, "iteration {i}: a member lost access");
        assert_eq!(ops_probe.join().expect("probe"), TimedOut, "iteration {i}: a non-member got in");
        seen[usize::from(in_b == Connected)] += 1;
    }
    eprintln!(
        "after 24 killed changes: b out {} times, in {} times; {journals} left a journal; {finished} finished first",
        seen[0], seen[1]
    );
    // The next command finishes what was left, then makes its own change.
    members(sg, "add", &["203.0.113.20"]);
    assert!(!journal.exists(), "the journal was not finished");
    assert_eq!(who_gets_in(a, b), (Connected, Connected));
    members(sg, "remove", &["203.0.113.20"]);
    assert_eq!(who_gets_in(a, b), (Connected, TimedOut));
    // The record agrees with the maps: a full change from it changes nothing for a and b.
    sg.json(&["attach", "eth0", "--groups", "web"]);
    assert_eq!(who_gets_in(a, b), (Connected, TimedOut));
}

/// A generation whose address maps hold no single address has no
/// single-address hash (the datapath skips it): the first member added in
/// place gets a hash of its own, installed with one write, and its entry
/// carries the rules of the network around it. Killed at any instant, the
/// change leaves the old membership or the new one.
#[test]
fn the_first_single_address_of_a_generation_gets_a_hash_in_place() {
    let lab = lab("membersfirst");
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let a = host(&lab, "a", &["203.0.113.10/24"]);
    let b = host(&lab, "b", &["203.0.113.20/24"]);
    let _listeners = listen(&srv, &["203.0.113.1:22", "203.0.113.1:80"]);
    let sg = Sgctl::new(&lab, &srv);
    let files = TempDir::new("membersfirst");
    // The fleet is a network; the covering /24 opens 22 to everyone on the link.
    let file = files.write(
        "first.yaml",
        "groups:
  web:
    inbound:
      - { protocol: tcp, ports: 80, source: sg:fleet }
      - { protocol: tcp, ports: 22, source: 203.0.113.0/24 }
  fleet: {}
members:
  fleet: [10.0.0.0/8]
interfaces:
  eth0: [web]
",
    );
    sg.apply(&[&file]);
    let ssh = |h: &LabHost| h.tcp_connect(web(22), BLOCKED);
    assert_eq!((who_gets_in(&a, &b), ssh(&b)), ((TimedOut, TimedOut), Connected));

    let added = members(&sg, "add", &["203.0.113.20"]);
    assert_eq!((added["in_place"].clone(), added["entries_written"].clone()), (true.into(), 1.into()), "{added:#}");
    assert_eq!((who_gets_in(&a, &b), ssh(&b)), ((TimedOut, Connected), Connected));
    let removed = members(&sg, "remove", &["203.0.113.20"]);
    assert_eq!(removed["in_place"], true, "{removed:#}");
    assert_eq!((who_gets_in(&a, &b), ssh(&b)), ((TimedOut, TimedOut), Connected));

    // Each round starts from a generation without a hash (the files again:
    // a full change), then an add killed at a random instant.
    let started = Instant::now();
    members(&sg, "add", &["203.0.113.20"]);
    let took = started.elapsed();
    let mut seed = 0x51_u64 ^ u64::from(std::process::id());
    let mut seen = [0; 2];
    for i in 0..8 {
        sg.apply(&[&file]);
        let _ = sg.run_and_kill(&["members", "add", "fleet", "203.0.113.20"], took * 2, &mut seed);
        let (in_a, in_b) = who_gets_in(&a, &b);
        assert_eq!((in_a, ssh(&b)), (TimedOut, Connected), "round {i}");
        seen[usize::from(in_b == Connected)] += 1;
        // The next command finishes it.
        members(&sg, "add", &["203.0.113.20"]);
        assert_eq!(who_gets_in(&a, &b), (TimedOut, Connected), "round {i}");
    }
    eprintln!("after 8 killed first adds: b out {} times, in {} times", seen[0], seen[1]);
}
