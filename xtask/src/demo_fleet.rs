//! `cargo xtask demo --fleet`: security groups across a fleet through etcd
//! (docs/fleet.md). Three hosts — network namespaces on one bridge, each with
//! its own sgctl state — and one etcd on loopback: the groups are published
//! once, an app server joins and the database admits it, then the app
//! server dies and its lease expires.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use testlab::{etcd::Etcd, Lab, LabHost, Outcome};

use crate::{
    build,
    demo::{title, Checks},
    sh,
};

const DB: &str = "198.51.100.1:3306";
/// Seconds a host's keys outlive its agent, short for the demo.
const LEASE_TTL: &str = "3";

/// The fleet's groups, published once for every host.
const GROUPS: &str = include_str!("../../policies/fleet-groups.yaml");

pub fn run() -> anyhow::Result<()> {
    build::run()?;
    let bin = build::sgctl_path();

    title("A fleet: three hosts on one bridge, one etcd on loopback");
    let lab = Lab::new("fleetdemo")?;
    let db = lab.host("db", &["198.51.100.1/24"])?;
    let app1 = lab.host("app1", &["198.51.100.2/24"])?;
    let app2 = lab.host("app2", &["198.51.100.3/24"])?;
    let _mysql = db.tcp_listen(DB.parse()?)?;
    let hosts: Vec<Host> =
        [&db, &app1, &app2].iter().map(|h| Host::new(&lab, h, &bin)).collect::<anyhow::Result<_>>()?;
    for (h, addr) in hosts.iter().zip(["198.51.100.1", "198.51.100.2", "198.51.100.3"]) {
        println!("  {:<5} eth0 {addr:<13} (netns {}, state {})", h.name, h.netns, h.state.display());
    }
    println!("  db listens on TCP 3306");
    let etcd = Etcd::single()?;
    let endpoints = etcd.endpoints();
    println!("  etcd on {endpoints} (Debian's etcd-server, its data in a temporary directory)");

    title("Publish the fleet's groups, once, for every host");
    let dir = lab.lib_dir()?.join("demo-files");
    std::fs::create_dir_all(&dir)?;
    let groups = dir.join("groups.yaml");
    std::fs::write(&groups, GROUPS)?;
    print!("{GROUPS}");
    hosts[0].step(&["publish", &groups.to_string_lossy(), "--etcd", &endpoints])?;

    title("db and app2 join: each starts its agent (which takes the published policy) and attaches its group");
    let mut agents = vec![hosts[0].agent(&endpoints)?, hosts[2].agent(&endpoints)?];
    hosts[0].wait_for_generation(1)?;
    hosts[2].wait_for_generation(1)?;
    hosts[0].step(&["attach", "eth0", "--groups", "db"])?;
    hosts[2].step(&["attach", "eth0", "--groups", "batch"])?;

    let mut checks = Checks::default();
    title("app1 is not in the fleet yet: nobody admits it");
    checks.expect(&app1, DB, Outcome::TimedOut, "app1 carries no group");
    checks.expect(&app2, DB, Outcome::TimedOut, "app2 is a batch host, not an app server");

    title("app1 joins: its agent starts, it attaches `app`, and publishes 198.51.100.2 under app");
    agents.push(hosts[1].agent(&endpoints)?);
    hosts[1].wait_for_generation(1)?;
    let watch = etcd.watch("/sgctl/v1/hosts/app1/members/app")?;
    hosts[1].step(&["attach", "eth0", "--groups", "app"])?;
    let published = watch.seen("/sgctl/v1/hosts/app1/members/app", Duration::from_secs(10));
    let admitted = first_connect(&app1, DB, Duration::from_secs(10));
    if let (Some(p), Some(a)) = (published, admitted) {
        println!("  db admitted app1 {} ms after app1's key reached etcd", a.saturating_duration_since(p).as_millis());
    }
    checks.expect(&app1, DB, Outcome::Connected, "db's agent put app1 into sg:app, in place");
    checks.expect(&app2, DB, Outcome::TimedOut, "still not an app server");
    hosts[0].step(&["status"])?;
    println!("$ etcdctl get --prefix /sgctl/v1/hosts/ --keys-only");
    for key in etcd.keys("/sgctl/v1/hosts/")? {
        println!("{key}");
    }

    title(&format!("app1 dies: its agent is killed (SIGKILL) and its lease ({LEASE_TTL} s) expires"));
    let killed = Instant::now();
    agents[2].kill();
    let gone = loop {
        if etcd.keys("/sgctl/v1/hosts/app1/")?.is_empty() {
            break Some(killed.elapsed());
        }
        if killed.elapsed() > Duration::from_secs(30) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if let Some(after) = gone {
        println!("  etcd deleted app1's keys {:.1} s after the kill", after.as_secs_f64());
    }
    std::thread::sleep(Duration::from_millis(500));
    checks.expect(&app1, DB, Outcome::TimedOut, "app1 left sg:app on db with its lease");
    hosts[0].step(&["status"])?;

    title("What db's agent logged");
    agents[0].stop();
    for line in agents[0].log()?.lines().filter(|l| l.contains("fleet:")) {
        println!("  {line}");
    }

    title("Clean up: stop the agents and etcd, detach, delete the namespaces");
    drop(agents);
    drop(etcd);
    for h in &hosts {
        let _ = h.step(&["detach", "eth0"]);
    }
    drop(lab);
    checks.finish()
}

/// One host of the demo: `sgctl -n NETNS` with state and lib directories of its own.
struct Host {
    name: String,
    netns: String,
    bin: PathBuf,
    state: PathBuf,
    lib: PathBuf,
}

impl Host {
    fn new(lab: &Lab, host: &LabHost, bin: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            name: host.name().to_owned(),
            netns: host.netns().to_owned(),
            bin: bin.to_owned(),
            state: lab.state_dir()?.join(host.name()),
            lib: lab.lib_dir()?.join(host.name()),
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(sh::root())
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--lib-dir")
            .arg(&self.lib)
            .args(["-n", &self.netns])
            .args(args);
        cmd
    }

    /// Runs `sgctl -n HOST ARGS…` for all to see.
    fn step(&self, args: &[&str]) -> anyhow::Result<()> {
        println!("$ sgctl -n {} {}", self.name, args.join(" "));
        sh::run(&mut self.command(args)).with_context(|| format!("sgctl {} failed", args.join(" ")))
    }

    /// `sgctl -n HOST agent --etcd … --host-id HOST` in the background.
    fn agent(&self, endpoints: &str) -> anyhow::Result<Agent> {
        let args = [
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--no-flow-log",
            "--quiet",
            "--etcd",
            endpoints,
            "--host-id",
            &self.name,
            "--lease-ttl",
            LEASE_TTL,
        ];
        println!("$ sgctl -n {} {} &", self.name, args.join(" "));
        let log = self.lib.with_extension("agent.log");
        let child = self
            .command(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?)
            .spawn()
            .context("starting sgctl agent")?;
        Ok(Agent { child, log })
    }

    /// Waits until this host's agent runs published generation `generation`.
    fn wait_for_generation(&self, generation: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let out = sh::output(&mut self.command(&["status", "--json"]))?;
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if status["scopes"][0]["fleet"]["applied_generation"] == generation {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!("{}: published generation {generation} not in force within 15 s", self.name)
    }
}

/// An agent in the background, its stderr in a file; killed when dropped.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and a moment to go.
    fn stop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(300));
        self.kill();
    }

    fn log(&self) -> anyhow::Result<String> {
        std::fs::read_to_string(&self.log).with_context(|| format!("reading {}", self.log.display()))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// When the first of repeated short attempts from `from` to `to` connected.
fn first_connect(from: &LabHost, to: &str, within: Duration) -> Option<Instant> {
    let addr: SocketAddr = to.parse().ok()?;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let started = Instant::now();
        if from.tcp_connect(addr, Duration::from_millis(100)) == Outcome::Connected {
            return Some(started);
        }
    }
    None
}
