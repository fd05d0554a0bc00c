//! `cargo xtask demo`: seed Example 1 (policies/web-server.yaml) enforced on a
//! throwaway server, probed from an allowed client and an outsider.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context as _};
use testlab::{Lab, LabHost, Outcome};

use crate::{build, sh};

/// Long enough for a handshake between namespaces, short enough to wait for a drop.
const TIMEOUT: Duration = Duration::from_millis(1500);

/// The server, the client the policy names for SSH, and anyone else.
const SERVER: [&str; 2] = ["203.0.113.1/24", "2001:db8::1/64"];
const CLIENT: [&str; 2] = ["203.0.113.10/24", "2001:db8::10/64"];
const OUTSIDER: [&str; 2] = ["203.0.113.20/24", "2001:db8::20/64"];

/// Ports the server listens on; 443 deliberately has no listener.
const LISTENING: [u16; 3] = [22, 80, 8080];

pub fn run() -> anyhow::Result<()> {
    build::run()?;
    let sgctl = build::sgctl_path();
    let policy = Path::new("policies/web-server.yaml");
    if !sh::root().join(policy).exists() {
        bail!("{} is missing", policy.display());
    }

    title("A lab: three hosts on one bridge, in throwaway network namespaces");
    let lab = Lab::new("demo")?;
    let server = lab.host("server", &SERVER)?;
    let client = lab.host("client", &CLIENT)?;
    let outsider = lab.host("outsider", &OUTSIDER)?;
    for (host, addrs) in [(&server, SERVER), (&client, CLIENT), (&outsider, OUTSIDER)] {
        println!("  {:<9} eth0 {}   (netns {})", host.name(), addrs.join(", "), host.netns());
    }
    let _servers = LISTENING
        .iter()
        .map(|&port| server.tcp_listen(SocketAddr::from(([0_u16; 8], port))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!("  server listens on TCP {LISTENING:?} (IPv4 and IPv6); nothing listens on 443");

    let mut checks = Checks::default();
    title("Before any policy: eth0 is not filtered");
    checks.expect(&outsider, "203.0.113.1:8080", Outcome::Connected, "no group attached, nothing is filtered");

    title("Apply seed Example 1, the web-server group, to the server's eth0");
    let netns = server.netns();
    let (state, lib) = (lab.state_dir()?, lab.lib_dir()?);
    println!(
        "  (sgctl keeps this demo's state in {} and what it saves in {}, through SGCTL_STATE_DIR and SGCTL_LIB_DIR)",
        state.display(),
        lib.display()
    );
    // Declared after the lab, so dropped (detached) before the namespaces go.
    let detach = Detach { sgctl: Sgctl { bin: sgctl, state, lib }, netns: netns.to_owned() };
    let sgctl = &detach.sgctl;
    sgctl.step(netns, &["apply", &policy.to_string_lossy()])?;
    let flow_log = std::env::temp_dir().join(format!("sgctl-demo-{}-flows.log", std::process::id()));
    let _agent = sgctl.agent(netns, &flow_log)?;

    title("What the security group lets through");
    checks.expect(&client, "203.0.113.1:80", Outcome::Connected, "HTTP is open to 0.0.0.0/0");
    checks.expect(
        &client,
        "203.0.113.1:8080",
        Outcome::TimedOut,
        "a server listens, but no rule allows 8080: dropped silently",
    );
    checks.expect(
        &client,
        "203.0.113.1:443",
        Outcome::Refused,
        "HTTPS is allowed, nothing listens: the host itself refuses",
    );
    checks.expect(&outsider, "203.0.113.1:22", Outcome::TimedOut, "SSH is only for 203.0.113.10/32");
    checks.expect(&client, "203.0.113.1:22", Outcome::Connected, "from 203.0.113.10, SSH connects");
    checks.expect(&client, "[2001:db8::1]:443", Outcome::Refused, "HTTPS also allows ::/0");
    checks.expect(&client, "[2001:db8::1]:80", Outcome::TimedOut, "the HTTP rule says 0.0.0.0/0: IPv4 only");

    title("Per-rule counters");
    sgctl.step(netns, &["stats"])?;

    title("What runs where, and why a packet is dropped");
    sgctl.step(netns, &["status"])?;
    sgctl.step(
        netns,
        &[
            "explain",
            "--iface",
            "eth0",
            "--in",
            "--proto",
            "tcp",
            "--src",
            "203.0.113.20",
            "--dst",
            "203.0.113.1",
            "--dport",
            "22",
        ],
    )?;

    title("The flow log of these connections (sgctl agent, 1-second windows)");
    std::thread::sleep(Duration::from_millis(2500));
    sgctl.step(netns, &["flows", "--file", &flow_log.to_string_lossy()])?;
    println!("  (the same records as AWS VPC Flow Logs v2 lines: sgctl flows --format v2)");
    let _ = std::fs::remove_file(&flow_log);

    title("Clean up: detach eth0, delete the namespaces");
    drop(detach);
    drop(lab);
    checks.finish()
}

pub(crate) fn title(text: &str) {
    println!("\n== {text}");
}

/// The freshly built `sgctl`, with the lab's own state and lib directories
/// (never the host's: `/var/lib/sgctl` is what the host restores at boot).
struct Sgctl {
    bin: PathBuf,
    state: PathBuf,
    lib: PathBuf,
}

impl Sgctl {
    /// Runs `sgctl -n NETNS ARGS…` for all to see.
    fn step(&self, netns: &str, args: &[&str]) -> anyhow::Result<()> {
        println!("$ sgctl -n {netns} {}", args.join(" "));
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(sh::root())
            .env("SGCTL_STATE_DIR", &self.state)
            .env("SGCTL_LIB_DIR", &self.lib)
            .args(["-n", netns])
            .args(args);
        sh::run(&mut cmd).with_context(|| format!("sgctl {} failed", args.join(" ")))
    }
}

/// `sgctl agent` in the background for the demo; stopped when dropped.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Sgctl {
    /// Starts `sgctl -n NETNS agent` writing its flow log to `flow_log`.
    fn agent(&self, netns: &str, flow_log: &Path) -> anyhow::Result<Agent> {
        println!("$ sgctl -n {netns} agent --listen 127.0.0.1:0 --window 1 --flow-log {} &", flow_log.display());
        let child = Command::new(&self.bin)
            .env("SGCTL_STATE_DIR", &self.state)
            .env("SGCTL_LIB_DIR", &self.lib)
            .args(["-n", netns, "agent", "--listen", "127.0.0.1:0", "--window", "1", "--quiet", "--no-hotplug"])
            .arg("--flow-log")
            .arg(flow_log)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting sgctl agent")?;
        // It reads the events ring from its start; give it a moment.
        std::thread::sleep(Duration::from_millis(500));
        Ok(Agent(child))
    }
}

/// Detaches the server's eth0 when the demo ends, also on an early error.
struct Detach {
    sgctl: Sgctl,
    netns: String,
}

impl Drop for Detach {
    fn drop(&mut self) {
        if let Err(e) = self.sgctl.step(&self.netns, &["detach", "eth0"]) {
            eprintln!("demo: {e:#}");
        }
    }
}

#[derive(Default)]
pub(crate) struct Checks {
    run: u32,
    wrong: u32,
}

impl Checks {
    /// One TCP connection from `from` to `to`, said and checked against `want`.
    pub(crate) fn expect(&mut self, from: &LabHost, to: &str, want: Outcome, why: &str) {
        let addr: SocketAddr = to.parse().expect("demo addresses are valid literals");
        let got = from.tcp_connect(addr, TIMEOUT);
        self.run += 1;
        let mark = if got == want { "ok " } else { "BAD" };
        if got != want {
            self.wrong += 1;
        }
        println!("  [{mark}] {:<8} -> {to:<18} {got:<10} ({why})", from.name());
        if got != want {
            println!("        expected {want}");
        }
    }

    pub(crate) fn finish(self) -> anyhow::Result<()> {
        if self.wrong > 0 {
            bail!("{} of {} connections did not behave as the policy says", self.wrong, self.run);
        }
        println!("\ndemo: all {} connections behaved as the policy says", self.run);
        Ok(())
    }
}
