//! B7: the fleet (docs/fleet.md). How long a change of one host's group
//! membership takes to reach another host's maps through etcd.
//!
//! - Three real hosts (namespaces on a bridge, each with its agent, one
//!   etcd on loopback): app1 gains an address 100 times (a join) and loses
//!   it 100 times (a leave); measured from the change on app1 and from the
//!   put of app1's key in etcd (an `etcdctl watch`) to db's agent saying
//!   the address is written in its maps.
//! - 1,000 hosts × 10 addresses, simulated: one real agent (db) and 1,000
//!   member keys written straight into etcd, then churn at 10 changes a
//!   second (a host swaps one address: a join and a leave on db) for 60 s,
//!   from the put (through etcd's JSON gateway, so its instant is known) to
//!   db's agent's word. Also the agent's CPU and memory over the churn, and
//!   the cost of each in-place change, beside the same change made as a
//!   full `sgctl apply` of the membership written in a file (the peer:
//!   what a fleet without etcd re-applies on every host).
use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::json;
use testlab::{
    etcd::{self, Etcd},
    Lab, LabHost,
};

use super::harness::{self, Bench, Report};

const JOINS: usize = 100;
const SIM_HOSTS: u32 = 1000;
const SIM_ADDRESSES: u32 = 10;
const CHURN_PER_SEC: u32 = 10;
const CHURN_SECS: u32 = 60;

const GROUPS: &str = "\
groups:
  db:
    inbound:
      - { protocol: tcp, ports: 3306, source: sg:app }
    outbound: []
  app:
    inbound: []
    outbound:
      - { protocol: tcp, ports: 3306, destination: sg:db }
";

/// An agent in the background whose stderr lines are kept with the instant each arrived.
struct Agent {
    child: Child,
    lines: etcd::TimedLines,
}

impl Agent {
    fn start(cmd: &mut Command) -> anyhow::Result<Self> {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().context("starting sgctl agent")?;
        let stderr = child.stderr.take().context("the agent's stderr")?;
        Ok(Self { child, lines: etcd::timed_lines(stderr) })
    }

    /// Every membership change logged so far: (when, joined?, address, ms of the change).
    fn changes(&self) -> Vec<(Instant, bool, String, f64)> {
        let lines = self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        for (at, line) in lines.iter() {
            let Some(rest) = line.strip_prefix("sgctl agent: fleet: ") else { continue };
            let (addresses, joined, how) = if let Some((a, h)) = rest.split_once(" joined ") {
                (a, true, h)
            } else if let Some((a, h)) = rest.split_once(" left ") {
                (a, false, h)
            } else {
                continue;
            };
            let ms = how.rsplit(", ").next().and_then(|t| t.strip_suffix(" ms")).and_then(|t| t.parse().ok());
            for address in addresses.split_whitespace() {
                out.push((*at, joined, address.to_owned(), ms.unwrap_or(f64::NAN)));
            }
        }
        out
    }

    /// When the agent logged that `address` joined (or left), after `after`.
    fn logged(&self, address: &str, joined: bool, after: Instant, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .changes()
                .into_iter()
                .find(|(at, j, a, _)| *at >= after && *j == joined && a == address)
                .map(|c| c.0);
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn log(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        lines.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n")
    }

    /// (CPU seconds used so far, resident KiB, peak resident KiB).
    fn usage(&self) -> (f64, u64, u64) {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        // utime and stime are fields 14 and 15 (1-based), 11 and 12 after the command name.
        let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (ticks as f64 / hz, kib("VmRSS:"), kib("VmHWM:"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sgctl --state-dir S --lib-dir L -n NETNS ARGS…` of one bench host.
fn sgctl(b: &Bench, lab: &Lab, host: &LabHost, args: &[&str]) -> anyhow::Result<Command> {
    let mut cmd = Command::new(&b.sgctl);
    cmd.arg("--state-dir")
        .arg(lab.state_dir()?.join(host.name()))
        .arg("--lib-dir")
        .arg(lab.lib_dir()?.join(host.name()))
        .args(["-n", host.netns()])
        .args(args)
        .env_remove("SGCTL_STATE_DIR")
        .env_remove("SGCTL_LIB_DIR")
        .stdin(Stdio::null());
    Ok(cmd)
}

fn agent(b: &Bench, lab: &Lab, host: &LabHost, endpoints: &str) -> anyhow::Result<Agent> {
    let args = [
        "agent",
        "--listen",
        "127.0.0.1:0",
        "--no-flow-log",
        "--quiet",
        "--no-hotplug",
        "--etcd",
        endpoints,
        "--host-id",
    ];
    Agent::start(sgctl(b, lab, host, &[&args[..], &[host.name()]].concat())?.stdin(Stdio::null()))
}

/// Each host's own files: the shared groups and its own `interfaces:`.
fn apply(b: &Bench, dir: &Path, lab: &Lab, host: &LabHost, group: &str) -> anyhow::Result<()> {
    let groups = dir.join("groups.yaml");
    std::fs::write(&groups, GROUPS)?;
    let own = dir.join(format!("{}.yaml", host.name()));
    std::fs::write(&own, format!("interfaces:\n  eth0: [{group}]\n"))?;
    crate::sh::stdout(&mut sgctl(b, lab, host, &["apply", &groups.to_string_lossy(), &own.to_string_lossy()])?)?;
    Ok(())
}

/// p50, p99 and max of `ms`.
fn percentiles(ms: &mut [f64]) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    (at(0.5), at(0.99), ms[ms.len() - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn run(b: &Bench) -> anyhow::Result<Report> {
    let dir = b.dir("b7")?;
    let mut report = Report::new("b7", "the fleet: membership through etcd, from one host's change to another's maps");
    three_hosts(b, &dir, &mut report)?;
    simulated(b, &dir, &mut report)?;
    Ok(report)
}

/// 100 joins and 100 leaves of an address of app1, seen on db.
fn three_hosts(b: &Bench, dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    let lab = Lab::new("b7three")?;
    let db = lab.host("db", &["198.51.100.1/24"])?;
    let app1 = lab.host("app1", &["198.51.100.2/24"])?;
    let app2 = lab.host("app2", &["198.51.100.3/24"])?;
    for (host, group) in [(&db, "db"), (&app1, "app"), (&app2, "db")] {
        apply(b, dir, &lab, host, group)?;
    }
    let etcd = Etcd::single()?;
    let endpoints = etcd.endpoints();
    let on_db = agent(b, &lab, &db, &endpoints)?;
    let _others = [agent(b, &lab, &app1, &endpoints)?, agent(b, &lab, &app2, &endpoints)?];
    if on_db.logged("198.51.100.2", true, Instant::now() - Duration::from_secs(60), Duration::from_secs(20)).is_none() {
        bail!("db never admitted app1:\n{}", on_db.log());
    }
    let key = "/sgctl/v1/hosts/app1/members/app";
    let watch = etcd.watch(key)?;
    let mut samples: [[Vec<f64>; 2]; 2] = Default::default();
    for i in 0..JOINS {
        let address = format!("198.51.100.{}", 100 + i);
        for (side, verb) in [(0, "add"), (1, "del")] {
            let changed = Instant::now();
            let out = app1.run(&["ip", "addr", verb, &format!("{address}/24"), "dev", "eth0"])?;
            if !out.status.success() {
                bail!("ip addr {verb} {address}: {}", String::from_utf8_lossy(&out.stderr));
            }
            let Some(seen) = on_db.logged(&address, side == 0, changed, Duration::from_secs(10)) else {
                bail!("db's agent never saw {address} {verb}:\n{}", on_db.log());
            };
            let put = watch.seen_after(key, changed, Duration::from_secs(1)).unwrap_or(seen);
            samples[side][0].push(ms(seen.saturating_duration_since(put)));
            samples[side][1].push(ms(seen.saturating_duration_since(changed)));
        }
    }
    let mut results = Vec::new();
    for (side, what) in [(0, "join"), (1, "leave")] {
        let (p50, p99, max) = percentiles(&mut samples[side][0]);
        let (l50, l99, lmax) = percentiles(&mut samples[side][1]);
        results.push(json!({"change": what, "count": JOINS, "from_put_ms": {"p50": p50, "p99": p99, "max": max},
            "from_change_ms": {"p50": l50, "p99": l99, "max": lmax}}));
    }
    report.json["three_hosts"] = json!(results);
    Ok(())
}

/// The `n`th simulated address (10.64.0.0 on).
fn sim_address(n: u32) -> String {
    Ipv4Addr::from(0x0A40_0000_u32 + n).to_string()
}

fn sim_value(addresses: &[u32]) -> Vec<u8> {
    let list: Vec<String> = addresses.iter().map(|n| format!("\"{}\"", sim_address(*n))).collect();
    format!(r#"{{"addresses": [{}]}}"#, list.join(",")).into_bytes()
}

/// 1,000 simulated hosts of 10 addresses each, and churn, against db's agent.
fn simulated(b: &Bench, dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    let lab = Lab::new("b7sim")?;
    let db = lab.host("db", &["198.51.100.1/24"])?;
    apply(b, dir, &lab, &db, "db")?;
    let etcd = Etcd::single()?;
    let on_db = agent(b, &lab, &db, &etcd.endpoints())?;
    std::thread::sleep(Duration::from_secs(1));
    let mut hosts: Vec<Vec<u32>> =
        (0..SIM_HOSTS).map(|h| (0..SIM_ADDRESSES).map(|a| h * SIM_ADDRESSES + a + 1).collect()).collect();
    let mut next = SIM_HOSTS * SIM_ADDRESSES + 1;
    let key = |h: usize| format!("/sgctl/v1/hosts/sim{h:04}/members/app");
    let loaded = Instant::now();
    for (h, addresses) in hosts.iter().enumerate() {
        etcd.put_now(&key(h), &sim_value(addresses))?;
    }
    let put_all = loaded.elapsed();
    // The last address of the last host in force: all are.
    let last = sim_address(SIM_HOSTS * SIM_ADDRESSES);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = crate::sh::stdout(&mut sgctl(b, &lab, &db, &["status", "--json"])?)?;
        let status: serde_json::Value = serde_json::from_str(&status)?;
        if status["scopes"][0]["fleet"]["members"]["app"] == u64::from(SIM_HOSTS * SIM_ADDRESSES) {
            break;
        }
        if Instant::now() > deadline {
            bail!("db never took the 10,000 simulated members ({last}):\n{}", on_db.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let load = loaded.elapsed();

    // Churn: each tick one host swaps its oldest address for a new one.
    let (cpu_before, _, _) = on_db.usage();
    let churn_started = Instant::now();
    let mut puts: Vec<(Instant, String, String)> = Vec::new();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let ticks = CHURN_PER_SEC * CHURN_SECS;
    for tick in 0..ticks {
        harness::sleep_until(churn_started + Duration::from_secs_f64(f64::from(tick) / f64::from(CHURN_PER_SEC)));
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let h = (rng % u64::from(SIM_HOSTS)) as usize;
        let old = hosts[h].remove(0);
        hosts[h].push(next);
        let at = Instant::now();
        etcd.put_now(&key(h), &sim_value(&hosts[h]))?;
        puts.push((at, sim_address(next), sim_address(old)));
        next += 1;
    }
    let churn_wall = churn_started.elapsed();
    let (cpu_after, rss, hwm) = on_db.usage();
    // Every change in force (or a deadline).
    let settle = Instant::now() + Duration::from_secs(30);
    while on_db.changes().iter().filter(|c| c.0 >= churn_started).count() < 2 * puts.len() && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen: HashMap<(bool, String), (Instant, f64)> = on_db
        .changes()
        .into_iter()
        .filter(|c| c.0 >= churn_started)
        .map(|(at, joined, address, ms)| ((joined, address), (at, ms)))
        .collect();
    let (mut joins, mut leaves, mut writes) = (Vec::new(), Vec::new(), Vec::new());
    let mut missing = 0;
    for (at, new, old) in &puts {
        for (joined, address, into) in [(true, new, &mut joins), (false, old, &mut leaves)] {
            match seen.get(&(joined, address.clone())) {
                Some((logged, write_ms)) => {
                    into.push(ms(logged.saturating_duration_since(*at)));
                    writes.push(*write_ms);
                }
                None => missing += 1,
            }
        }
    }
    let cpu = (cpu_after - cpu_before) / churn_wall.as_secs_f64() * 100.0;

    // The peer: the same membership written in a file, one address changed, applied in full.
    let members: Vec<String> = hosts.iter().flatten().map(|n| sim_address(*n)).collect();
    let full = dir.join("full.yaml");
    let write_full = |extra: &str| -> anyhow::Result<()> {
        let text = format!("{GROUPS}interfaces:\n  eth0: [db]\nmembers:\n  app: [{}{extra}]\n", members.join(", "));
        Ok(std::fs::write(&full, text)?)
    };
    drop(on_db);
    write_full("")?;
    crate::sh::stdout(&mut sgctl(b, &lab, &db, &["apply", &full.to_string_lossy()])?)?;
    let mut full_ms = Vec::new();
    for i in 0..5 {
        write_full(&format!(", {}", sim_address(next + i)))?;
        let m = harness::measured(&b.work, &sgctl(b, &lab, &db, &["apply", &full.to_string_lossy()])?)?;
        if !m.success {
            bail!("apply of the full membership: {}", m.why());
        }
        full_ms.push(m.ms());
    }

    let (j50, j99, jmax) = percentiles(&mut joins);
    let (l50, l99, lmax) = percentiles(&mut leaves);
    let (w50, w99, _) = percentiles(&mut writes);
    let full_median = harness::median(&full_ms);
    report.json["simulated"] = json!({
        "hosts": SIM_HOSTS, "addresses_per_host": SIM_ADDRESSES, "changes_per_sec": CHURN_PER_SEC, "secs": CHURN_SECS,
        "join_ms": {"count": joins.len(), "p50": j50, "p99": j99, "max": jmax},
        "leave_ms": {"count": leaves.len(), "p50": l50, "p99": l99, "max": lmax},
        "agent_cpu_percent": cpu, "agent_rss_kib": rss, "agent_hwm_kib": hwm,
        "load_puts_s": put_all.as_secs_f64(), "load_in_force_s": load.as_secs_f64(),
        "in_place_change_ms": {"p50": w50, "p99": w99}, "full_apply_ms": full_median, "missing": missing,
    });
    Ok(())
}
