//! Security groups across a fleet through etcd (issue 18, docs/fleet.md),
//! end to end: real etcd (Debian's etcd-server) on loopback, three hosts —
//! network namespaces on one bridge, each with its own state and lib
//! directories and its own `sgctl agent -n HOST --etcd …` — and real
//! connections between them.
//!
//! - db 198.51.100.1 carries `db` (3306 from `sg:app`);
//! - app1 198.51.100.2 carries `app` (3306 to `sg:db`, nothing else out);
//! - app2 198.51.100.3 carries `batch` (everything out, but it is not `app`).
//!
//! Nobody lists anybody's address: db learns app1's from etcd, app1 db's.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{
    agent::{sample_of, samples, Agent},
    *,
};
use serde_json::Value;
use testlab::etcd::Etcd;
use Outcome::{Connected, TimedOut};

use crate::common;

const DB: &str = "198.51.100.1:3306";
/// Short: a host's keys go this long after its agent dies.
const TTL: &str = "2";

/// The fleet's groups (`policies/fleet-groups.yaml`, as `cargo xtask demo-fleet` publishes them).
fn fleet_groups() -> String {
    policy_text("fleet-groups.yaml")
}

/// Three hosts on one bridge, each an `Sgctl` with directories of its own.
struct Fleet {
    dir: TempDir,
    _db: LabHost,
    app1: LabHost,
    app2: LabHost,
    sg: [Sgctl; 3],
    _listeners: Vec<Listener>,
    _lab: Lab,
}

fn fleet(name: &str) -> Fleet {
    let lab = lab(name);
    let db = host(&lab, "db", &["198.51.100.1/24"]);
    let app1 = host(&lab, "app1", &["198.51.100.2/24"]);
    let app2 = host(&lab, "app2", &["198.51.100.3/24"]);
    let sg = [Sgctl::own_dirs(&lab, &db), Sgctl::own_dirs(&lab, &app1), Sgctl::own_dirs(&lab, &app2)];
    let listeners = listen(&db, &[DB]);
    Fleet { dir: TempDir::new(name), _db: db, app1, app2, sg, _listeners: listeners, _lab: lab }
}

impl Fleet {
    /// Each host applies the shared groups and its own `interfaces:`.
    fn apply_own_files(&self) {
        let groups = self.dir.path().join("groups.yaml");
        std::fs::write(&groups, fleet_groups()).expect("writing groups.yaml");
        for (sg, group) in self.sg.iter().zip(["db", "app", "batch"]) {
            let own = self.dir.path().join(format!("{group}-host.yaml"));
            std::fs::write(&own, format!("interfaces:\n  eth0: [{group}]\n")).expect("writing a host's file");
            sg.apply(&[&groups, &own]);
        }
    }

    /// `sgctl agent -n HOST --etcd ENDPOINTS --host-id NAME` for each host.
    fn agents(&self, endpoints: &str) -> Vec<Agent> {
        self.sg.iter().zip(["db", "app1", "app2"]).map(|(sg, id)| agent(sg, endpoints, id)).collect()
    }
}

fn agent(sg: &Sgctl, endpoints: &str, id: &str) -> Agent {
    Agent::start(
        sg,
        &["--no-flow-log", "--quiet", "--no-hotplug", "--etcd", endpoints, "--host-id", id, "--lease-ttl", TTL],
    )
}

/// Every agent's log, each under its host's name.
fn agents_logs(agents: &[Agent]) -> String {
    ["db", "app1", "app2"].iter().zip(agents).map(|(id, a)| format!("--- {id}:\n{}", a.log())).collect()
}

/// The fleet part of `sgctl status --json` of `sg`'s scope.
fn fleet_status(sg: &Sgctl) -> Value {
    let status = sg.run(&["--json", "status"]).ok().json();
    status["scopes"][0]["fleet"].clone()
}

/// Polls `what` until it holds, or fails after `within`, saying what it last saw.
#[track_caller]
fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let started = Instant::now();
    let deadline = started + within;
    loop {
        match check() {
            Ok(()) => {
                eprintln!("{what}: after {:?} (bound {within:?})", started.elapsed());
                return;
            }
            Err(last) if Instant::now() > deadline => panic!("{what}: not within {within:?}; last: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Polls `sg`'s fleet status until `holds` says yes, or fails after `within`.
#[track_caller]
fn eventually_status(what: &str, sg: &Sgctl, within: Duration, holds: impl Fn(&Value) -> bool) {
    eventually(what, within, || {
        let s = fleet_status(sg);
        if holds(&s) {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
}

/// Connects from `from` to `to` until the connection comes to `want`, or
/// fails after `within`.
#[track_caller]
fn eventually_tcp(from: &LabHost, to: &str, want: Outcome, within: Duration) {
    let addr: SocketAddr = to.parse().expect("socket address");
    let attempt = if want == Connected { ALLOWED } else { BLOCKED };
    eventually(&format!("{} -> {to}: {want}", from.name()), within, || {
        let got = from.tcp_connect(addr, attempt);
        if got == want {
            Ok(())
        } else {
            Err(got.to_string())
        }
    });
}

/// The value of `name{labels…}` in db's agent's `/metrics`.
#[track_caller]
fn metric(agent: &Agent, name: &str, with: &[(&str, &str)]) -> u64 {
    sample_of(&samples(&agent.scrape()), name, with)
}

/// Connects from `from` (from `src` if given) to `to` again and again, each
/// attempt `attempt` long, until one connects: when the successful attempt
/// started. Short attempts time the change itself, not TCP's SYN
/// retransmission (1 s, then 3 s) after a first SYN the change came too late for.
fn first_connect(from: &LabHost, src: Option<&str>, to: &str, attempt: Duration, within: Duration) -> Option<Instant> {
    let addr = to.parse().expect("socket address");
    let local = src.map(|s| SocketAddr::new(s.parse().expect("address"), 0));
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let started = Instant::now();
        let got = match local {
            Some(local) => from.tcp_connect_from(local, addr, attempt),
            None => from.tcp_connect(addr, attempt),
        };
        if got == Connected {
            return Some(started);
        }
        if let Some(rest) = attempt.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    None
}

#[test]
fn three_hosts_share_membership_and_fail_static() {
    let f = fleet("fleet3");
    f.apply_own_files();
    // Before any agent: nobody knows anybody.
    expect_all("no fleet yet", vec![tcp(&f.app1, DB, TimedOut), tcp(&f.app2, DB, TimedOut)]);

    let mut etcd = Etcd::single().expect("etcd");
    let watch = etcd.watch("/sgctl/v1/hosts/").expect("etcdctl watch");
    let mut agents = f.agents(&etcd.endpoints());
    // Within 1 s of the later of the two puts it needs (app1's `app` on
    // db, db's `db` on app1), app1 connects. Attempts of 100 ms: the
    // successful one started at most 100 ms after the membership arrived.
    let app1_key = watch.seen("/sgctl/v1/hosts/app1/members/app", Duration::from_secs(10));
    let db_key = watch.seen("/sgctl/v1/hosts/db/members/db", Duration::from_secs(10));
    let published = app1_key.zip(db_key).map(|(a, b)| a.max(b)).unwrap_or_else(|| {
        let keys = etcd.keys("/sgctl/v1/hosts/");
        panic!("app1's app: {app1_key:?}, db's db: {db_key:?}; keys: {keys:?}; agents:\n{}", agents_logs(&agents))
    });
    let connected = first_connect(&f.app1, None, DB, Duration::from_millis(100), Duration::from_secs(10))
        .unwrap_or_else(|| panic!("app1 never connected; db's agent:\n{}", agents[0].log()));
    let took = connected.saturating_duration_since(published);
    eprintln!("propagation: app1 connected {took:?} after the later of the two puts");
    assert!(
        took < Duration::from_secs(1),
        "app1 connected {took:?} after publishing; db's agent:\n{}",
        agents[0].log()
    );
    expect_all("fleet in force", vec![tcp(&f.app1, DB, Connected), tcp(&f.app2, DB, TimedOut)]);
    let db = fleet_status(&f.sg[0]);
    assert_eq!(db["connected"], true, "{db:#}");
    assert_eq!(db["members"]["app"], 1, "{db:#}");
    assert_eq!(db["publishing"]["db"][0], "198.51.100.1", "{db:#}");
    // The same on db's agent's /metrics (written at most once a second).
    eventually("db's metrics say connected", Duration::from_secs(5), || {
        let text = agents[0].scrape();
        let s = samples(&text);
        let members =
            s.iter().any(|(k, v)| k.starts_with("sgctl_fleet_members{") && k.contains("group=\"app\"") && *v == 1.0);
        if members && s.iter().any(|(k, v)| k.starts_with("sgctl_fleet_connected{") && *v == 1.0) {
            Ok(())
        } else {
            Err(text)
        }
    });
    assert!(metric(&agents[0], "sgctl_fleet_last_sync_timestamp_seconds", &[("host", "db")]) > 1_700_000_000);
    assert!(metric(&agents[0], "sgctl_fleet_resyncs_total", &[("host", "db")]) >= 1);
    assert_eq!(metric(&agents[0], "sgctl_fleet_refused_keys", &[("host", "db")]), 0);

    // etcd stops: nothing changes, and everyone says so.
    etcd.kill(0);
    eventually_status("db reports etcd unreachable", &f.sg[0], Duration::from_secs(15), |s| s["connected"] == false);
    let text = f.sg[0].run(&["status"]).ok().stdout;
    assert!(text.contains("NOT CONNECTED"), "{text}");
    assert_eq!(metric(&agents[0], "sgctl_fleet_connected", &[("host", "db")]), 0);
    assert!(agents[0].log().contains("lost etcd"), "{}", agents[0].log());
    expect_all("etcd down: fail static", vec![tcp(&f.app1, DB, Connected), tcp(&f.app2, DB, TimedOut)]);

    // etcd back: every agent reads the prefix again.
    let resyncs = db["resyncs"].as_u64().expect("resyncs");
    etcd.start(0).expect("etcd restarted");
    etcd.wait_healthy().expect("etcd healthy again");
    for sg in &f.sg {
        eventually_status("agents back in sync", sg, Duration::from_secs(20), |s| {
            let again = s["resyncs"].as_u64().unwrap_or_default() > resyncs;
            s["connected"] == true && again
        });
    }
    expect_all("resynchronised", vec![tcp(&f.app1, DB, Connected), tcp(&f.app2, DB, TimedOut)]);
    assert_eq!(metric(&agents[0], "sgctl_fleet_connected", &[("host", "db")]), 1);

    // A host's own changes are republished at once: an address added on
    // app1's interface joins `app` on db (and leaves when it goes) ...
    let second = "198.51.100.12";
    let ip = |verb: &str| {
        let out = f.app1.run(&["ip", "addr", verb, &format!("{second}/24"), "dev", "eth0"]).expect("ip addr");
        assert!(out.status.success(), "ip addr {verb}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ip("add");
    let added = Instant::now();
    let admitted = first_connect(&f.app1, Some(second), DB, Duration::from_millis(100), Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{second} never admitted; db's agent:\n{}", agents[0].log()));
    let took = admitted.saturating_duration_since(added);
    eprintln!("an address added on app1 admitted on db after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}; db's agent:\n{}", agents[0].log());
    ip("del");
    // (status, from fleet.json, is rewritten at most once a second)
    eventually_status("db drops app1's removed address", &f.sg[0], Duration::from_secs(5), |s| {
        s["members"]["app"] == 1
    });
    // ... and db detached leaves `db` on app1 (whose outbound then refuses
    // db), attached again joins it.
    // (Bounds with room for a slow machine: each step prints what it took.)
    f.sg[0].ok(&["detach", "eth0"]);
    eventually_tcp(&f.app1, DB, TimedOut, Duration::from_secs(10));
    f.sg[0].attach("eth0", "db");
    let attached = Instant::now();
    first_connect(&f.app1, None, DB, Duration::from_millis(100), Duration::from_secs(10))
        .unwrap_or_else(|| panic!("db attached again, app1 never connected; db's agent:\n{}", agents[0].log()));
    eprintln!("db attached again: app1 connected after {:?}", attached.elapsed());
    expect_all("attached again", vec![tcp(&f.app1, DB, Connected), tcp(&f.app2, DB, TimedOut)]);

    // app1's agent SIGKILLed: after its lease, app1 has left `app` on db.
    agents[1].kill9();
    let killed = Instant::now();
    eventually("app1's keys expire", Duration::from_secs(15), || {
        let keys = etcd.keys("/sgctl/v1/hosts/app1/").expect("etcdctl get");
        if keys.is_empty() {
            Ok(())
        } else {
            Err(format!("{keys:?}"))
        }
    });
    eventually_tcp(&f.app1, DB, TimedOut, Duration::from_secs(5));
    eprintln!("app1 out {:?} after its agent was killed (lease {TTL} s)", killed.elapsed());
    let db = fleet_status(&f.sg[0]);
    assert!(db["members"]["app"].is_null(), "{db:#}");
    drop(agents);
}

/// [`fleet_groups`], and 5432 besides 3306 between app and db.
fn groups_v2() -> String {
    let text = replace_once(
        &fleet_groups(),
        "      - { protocol: tcp, ports: 3306, source: sg:app, description: MySQL from the app servers }\n",
        "      - { protocol: tcp, ports: 3306, source: sg:app, description: MySQL from the app servers }\n      - { protocol: tcp, ports: 5432, source: sg:app, description: PostgreSQL }\n",
    );
    replace_once(
        &text,
        "      - { protocol: tcp, ports: 3306, destination: sg:db, description: MySQL }\n",
        "      - { protocol: tcp, ports: 3306, destination: sg:db, description: MySQL }\n      - { protocol: tcp, ports: 5432, destination: sg:db, description: PostgreSQL }\n",
    )
}

#[test]
fn a_cluster_member_dies_and_published_generations_switch_atomically() {
    let f = fleet("fleetpub");
    let mut etcd = Etcd::cluster(3).expect("etcd cluster");
    let endpoints = etcd.endpoints();
    let groups = f.dir.path().join("groups.yaml");
    std::fs::write(&groups, fleet_groups()).expect("writing groups.yaml");
    let published =
        f.sg[0].run(&["--json", "publish", groups.to_str().expect("path"), "--etcd", &endpoints]).ok().json();
    assert_eq!(published["generation"], 1, "{published:#}");
    // Hosts with nothing applied take the published policy, then attach its groups.
    let agents = f.agents(&endpoints);
    for sg in &f.sg {
        eventually_status("generation 1 in force", sg, Duration::from_secs(10), |s| s["applied_generation"] == 1);
    }
    for (sg, group) in f.sg.iter().zip(["db", "app", "batch"]) {
        sg.attach("eth0", group);
    }
    eventually_tcp(&f.app1, DB, Connected, Duration::from_secs(10));
    expect_all("published fleet in force", vec![tcp(&f.app1, DB, Connected), tcp(&f.app2, DB, TimedOut)]);
    let generations: Vec<Value> = f.sg.iter().map(|sg| sg.status()["generation"].clone()).collect();

    // One member of three killed: the cluster goes on, and so does every host.
    etcd.kill(0);
    std::thread::sleep(Duration::from_secs(3));
    for sg in &f.sg {
        eventually_status("connected to the rest of the cluster", sg, Duration::from_secs(20), |s| {
            s["connected"] == true
        });
    }
    expect_all("a member down changes nothing", vec![tcp(&f.app1, DB, Connected), tcp(&f.app2, DB, TimedOut)]);
    let after: Vec<Value> = f.sg.iter().map(|sg| sg.status()["generation"].clone()).collect();
    assert_eq!(generations, after, "policy generations moved although nothing changed");

    // Generation 2 adds 5432. While hosts switch, 3306 (allowed by both)
    // never fails: each host switches in one step.
    let _pg = listen(&f._db, &["198.51.100.1:5432"]);
    let v2 = f.dir.path().join("groups-v2.yaml");
    std::fs::write(&v2, groups_v2()).expect("writing groups-v2.yaml");
    let running = std::sync::atomic::AtomicBool::new(true);
    let failures = std::thread::scope(|s| {
        let prober = s.spawn(|| {
            let mut failures = Vec::new();
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let outcome = f.app1.tcp_connect(DB.parse().expect("address"), ALLOWED);
                if outcome != Connected {
                    failures.push(outcome);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            failures
        });
        let published =
            f.sg[0].run(&["--json", "publish", v2.to_str().expect("path"), "--etcd", &endpoints]).ok().json();
        assert_eq!(published["generation"], 2, "{published:#}");
        for sg in &f.sg {
            eventually_status("generation 2 in force everywhere", sg, Duration::from_secs(15), |s| {
                s["applied_generation"] == 2
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        running.store(false, std::sync::atomic::Ordering::Relaxed);
        prober.join().expect("prober")
    });
    assert!(failures.is_empty(), "3306 failed while the hosts switched generation: {failures:?}");
    expect_all(
        "generation 2 in force",
        vec![tcp(&f.app1, "198.51.100.1:5432", Connected), tcp(&f.app2, "198.51.100.1:5432", TimedOut)],
    );
    // Each host's status says which generation every other host runs.
    eventually_status("db sees the generation each host runs", &f.sg[0], Duration::from_secs(10), |s| {
        let hosts = s["hosts"].as_array().cloned().unwrap_or_default();
        hosts.len() == 2 && hosts.iter().all(|h| h["policy_generation"] == 2)
    });
    let text = f.sg[0].run(&["status"]).ok().stdout;
    assert!(text.contains("published generation 2 in force"), "{text}");

    // An older generation put over it (generation 1's policy again, as a
    // replayed value would be) is refused everywhere; 5432 stays open.
    let current = etcd.ctl(&["get", "--print-value-only", "/sgctl/v1/policy"]).expect("etcdctl get");
    let mut older: Value = serde_json::from_str(current.trim()).expect("the published value is JSON");
    older["generation"] = 1.into();
    older["sources"][0]["text"] = fleet_groups().into();
    etcd.put("/sgctl/v1/policy", older.to_string().as_bytes()).expect("etcdctl put");
    for sg in &f.sg {
        eventually_status("the older generation refused", sg, Duration::from_secs(10), |s| {
            let refused = s["refused"]["/sgctl/v1/policy"].as_str().unwrap_or_default().to_owned();
            refused.contains("not newer") && s["applied_generation"] == 2
        });
    }
    expect_all(
        "generation 2 still in force",
        vec![tcp(&f.app1, "198.51.100.1:5432", Connected), tcp(&f.app2, "198.51.100.1:5432", TimedOut)],
    );
    drop(agents);
}

#[test]
fn hostile_values_under_the_prefix_are_refused_and_enforcement_stays() {
    let f = fleet("fleetbad");
    f.apply_own_files();
    let etcd = Etcd::single().expect("etcd");
    let agents = f.agents(&etcd.endpoints());
    eventually_tcp(&f.app1, DB, Connected, Duration::from_secs(10));
    let before = f.sg[0].status()["generation"].clone();
    let evil = "/sgctl/v1/hosts/evil/members/app";
    let huge: Vec<String> =
        (0..5000).map(|i| format!("\"10.{}.{}.{}\"", i / 65536 + 1, (i / 256) % 256, i % 256 + 1)).collect();
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        (evil, b"this is not JSON".to_vec()),
        (evil, br#"{"addresses": ["198.51.100.3/32"]}"#.to_vec()),
        (evil, br#"{"addresses": ["not-an-address"]}"#.to_vec()),
        (evil, br#"{"addresses": ["127.0.0.1"]}"#.to_vec()),
        (evil, br#"{"addresses": ["198.51.100.3"], "also": "this"}"#.to_vec()),
        (evil, format!(r#"{{"addresses": [{}]}}"#, huge.join(",")).into_bytes()),
        (evil, vec![b' '; 70_000]),
        ("/sgctl/v1/hosts/evil/members/nosuch", br#"{"addresses": ["198.51.100.3"]}"#.to_vec()),
        ("/sgctl/v1/hosts/EVIL/members/app", br#"{"addresses": ["198.51.100.3"]}"#.to_vec()),
        ("/sgctl/v1/policy", b"nonsense".to_vec()),
        (
            "/sgctl/v1/policy",
            br#"{"generation": 9, "published_at": 0, "sources": [{"path": "x.yaml", "text": "groups: {web: {}}\ninterfaces: {eth0: [web]}\n"}]}"#.to_vec(),
        ),
        // app1's own key, overwritten: db keeps its last good value, app1 puts it back.
        ("/sgctl/v1/hosts/app1/members/app", b"{}".to_vec()),
    ];
    for (key, value) in &hostile {
        etcd.put(key, value).expect("etcdctl put");
        expect_all(
            &format!("after a hostile put of {key}"),
            vec![tcp(&f.app1, DB, Connected), tcp(&f.app2, DB, TimedOut)],
        );
    }
    assert_eq!(f.sg[0].status()["generation"], before, "a refused value changed the policy generation");
    eventually("app1 put its own key back", Duration::from_secs(5), || {
        let value = etcd.ctl(&["get", "--print-value-only", "/sgctl/v1/hosts/app1/members/app"]).expect("etcdctl get");
        if value.contains("198.51.100.2") {
            Ok(())
        } else {
            Err(value)
        }
    });
    let db = fleet_status(&f.sg[0]);
    let refused = db["refused"].as_object().cloned().unwrap_or_default();
    for key in [evil, "/sgctl/v1/hosts/evil/members/nosuch", "/sgctl/v1/hosts/EVIL/members/app", "/sgctl/v1/policy"] {
        let listed = refused.keys().any(|k| k == key || (key.ends_with("nosuch") && k.ends_with("/members/nosuch")));
        assert!(listed, "{key} is not reported as refused: {db:#}");
    }
    assert_eq!(db["members"]["app"], 1, "{db:#}");
    assert!(metric(&agents[0], "sgctl_fleet_refused_keys", &[("host", "db")]) >= 4);
    let text = f.sg[0].run(&["status"]).ok().stdout;
    assert!(text.contains("refused /sgctl/v1/hosts/evil/members/app"), "{text}");
    assert!(agents[0].log().contains("refused /sgctl/v1/policy"), "{}", agents[0].log());

    // What the prefix's writers are trusted with: a valid value from anyone
    // who may write it is believed (docs/fleet.md, Security).
    etcd.put(evil, br#"{"addresses": ["198.51.100.3"]}"#).expect("etcdctl put");
    eventually_tcp(&f.app2, DB, Connected, Duration::from_secs(5));
    etcd.ctl(&["del", evil]).expect("etcdctl del");
    eventually_tcp(&f.app2, DB, TimedOut, Duration::from_secs(5));
    drop(agents);
}

#[test]
fn tls_with_client_certificates_and_passwords() {
    let f = fleet("fleettls");
    f.apply_own_files();
    let mut etcd = Etcd::single_tls().expect("etcd with TLS");
    etcd.enable_auth("fleet", "s3cret", "/sgctl/").expect("etcd auth");
    let tls = etcd.tls().expect("certificates").clone();
    let endpoint = etcd.endpoints();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let (ca, cert, key) = (
        tls.ca.to_str().expect("path"),
        tls.client_cert.to_str().expect("path"),
        tls.client_key.to_str().expect("path"),
    );
    let secured = |id: &'static str, user: &'static str| -> Vec<String> {
        ["--no-flow-log", "--quiet", "--no-hotplug", "--etcd", &endpoint, "--host-id", id, "--lease-ttl", TTL]
            .iter()
            .map(|s| (*s).to_owned())
            .chain(
                ["--etcd-cacert", ca, "--etcd-cert", cert, "--etcd-key", key, "--etcd-user", user].map(str::to_owned),
            )
            .collect()
    };
    let start = |sg: &Sgctl, args: Vec<String>| Agent::start(sg, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let agents = [start(&f.sg[0], secured("db", "fleet:s3cret")), start(&f.sg[1], secured("app1", "fleet:s3cret"))];
    eventually_tcp(&f.app1, DB, Connected, Duration::from_secs(10));
    // fleet.json follows within a second of a change.
    eventually_status("db reports connected over TLS", &f.sg[0], Duration::from_secs(5), |s| s["connected"] == true);

    // A wrong password: the agent keeps trying, says why, and changes nothing.
    let wrong = start(&f.sg[2], secured("app2", "fleet:wrong"));
    eventually_status("app2's agent reports the refusal", &f.sg[2], Duration::from_secs(10), |s| {
        let why = s["last_error"].as_str().unwrap_or_default().to_owned();
        s["connected"] == false && why.contains("authentication failed")
    });
    expect_all("a refused agent changes nothing", vec![tcp(&f.app1, DB, Connected), tcp(&f.app2, DB, TimedOut)]);

    // publish with the same options, the password from the environment.
    let groups = f.dir.path().join("groups.yaml");
    let publish = |password: &str| {
        let out = f.sg[0]
            .command(&[
                "publish",
                groups.to_str().expect("path"),
                "--etcd",
                &endpoint,
                "--etcd-cacert",
                ca,
                "--etcd-cert",
                cert,
                "--etcd-key",
                key,
                "--etcd-user",
                "fleet",
            ])
            .env("SGCTL_ETCD_PASSWORD", password)
            .output()
            .expect("running sgctl publish");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, text) = publish("wrong");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("authentication failed"), "{text}");
    let (code, text) = publish("s3cret");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("published policy generation 1"), "{text}");
    // An https endpoint without the CA is a usage error, before any connection.
    let run = f.sg[0].run(&["publish", groups.to_str().expect("path"), "--etcd", &endpoint]);
    assert_eq!(run.code, Some(2), "{run:?}");
    drop(wrong);
    drop(agents);
}
