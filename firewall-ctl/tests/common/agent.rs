//! `sgctl agent` as a child process of a test: started against a lab's
//! state, its metrics address read from its first line on stderr, its
//! output kept, killed when dropped.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{expect_all, host, lab, listen, policy, tcp, Lab, LabHost, Listener, Outcome, Sgctl};

/// What a Prometheus 2.x server sends (scrape.go, `scrapeAcceptHeader`).
pub const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                                     version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

pub struct Agent {
    child: Child,
    addr_rx: Mutex<std::sync::mpsc::Receiver<String>>,
    addr: Mutex<Option<SocketAddr>>,
    /// Everything it printed on stderr so far.
    pub log: Arc<Mutex<String>>,
    pub flow_log: Option<PathBuf>,
}

impl Agent {
    /// `sgctl agent --listen 127.0.0.1:0 EXTRA…`; waits until it serves.
    pub fn start(sg: &Sgctl, extra: &[&str]) -> Self {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Self::start_with(sg, &args, "sgctl agent: metrics on http://", |_| {})
    }

    /// `sgctl agent ARGS…`, set up by `configure` before it starts; waits
    /// for a line starting with `wait_for` on its stderr.
    pub fn start_with(
        sg: &Sgctl,
        extra: &[&str],
        wait_for: &'static str,
        configure: impl FnOnce(&mut std::process::Command),
    ) -> Self {
        let mut args = vec!["agent"];
        args.extend_from_slice(extra);
        let mut cmd = sg.command(&args);
        configure(&mut cmd);
        Self::spawn(cmd, wait_for)
    }

    /// Starts `cmd` (an `sgctl agent`, maybe behind wrappers that exec it);
    /// waits for a line starting with `wait_for` on its stderr.
    pub fn spawn(mut cmd: std::process::Command, wait_for: &'static str) -> Self {
        let flow_log = {
            let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
            args.windows(2).find(|w| w[0] == "--flow-log").map(|w| PathBuf::from(&w[1]))
        };
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting sgctl agent: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addr) = line.strip_prefix("sgctl agent: metrics on http://") {
                        let _ = addr_tx.send(addr.trim_end_matches("/metrics").to_owned());
                    }
                    if line.starts_with(wait_for) {
                        let _ = tx.send(());
                    }
                    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("sgctl agent did not say {wait_for:?}: {}", log.lock().expect("log")));
        Self { child, addr_rx: Mutex::new(addr_rx), addr: Mutex::new(None), log, flow_log }
    }

    /// Where it serves metrics (waits up to `within` for it to say so).
    pub fn addr_within(&self, within: Duration) -> Option<SocketAddr> {
        let mut known = self.addr.lock().unwrap_or_else(|p| p.into_inner());
        if known.is_none() {
            let addr = self.addr_rx.lock().unwrap_or_else(|p| p.into_inner()).recv_timeout(within).ok()?;
            *known = Some(addr.parse().unwrap_or_else(|e| panic!("agent address {addr:?}: {e}")));
        }
        *known
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where it serves metrics.
    pub fn addr(&self) -> SocketAddr {
        self.addr_within(Duration::from_secs(10)).unwrap_or_else(|| panic!("no metrics address: {}", self.log()))
    }

    /// GET /metrics with a real HTTP client, asking as a Prometheus server
    /// does (so the answer is OpenMetrics).
    pub fn scrape(&self) -> String {
        let url = format!("http://{}/metrics", self.addr());
        let mut response =
            ureq::get(&url).header("Accept", PROMETHEUS_ACCEPT).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(response.status(), 200, "GET {url}");
        let ct = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(ct.starts_with("application/openmetrics-text"), "content type {ct:?}");
        response.body_mut().read_to_string().unwrap_or_else(|e| panic!("GET {url}: body: {e}"))
    }

    /// Kills it with SIGKILL (nothing to clean up: it holds no state).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for it to exit (it flushes its window).
    pub fn stop(&mut self) {
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// web-server (seed Example 1) on srv 203.0.113.1 with an agent beside
/// it, and traffic counted: an SSH flow from ssh 203.0.113.10 and two HTTP
/// flows from other 203.0.113.20 allowed; other's SSH and 8080 dropped.
/// Dropped in the order declared: the agent before the lab.
pub struct Counted {
    pub agent: Agent,
    pub sg: Sgctl,
    _listeners: Vec<Listener>,
    pub srv: LabHost,
    _clients: (LabHost, LabHost),
    _lab: Lab,
}

pub fn counted(name: &str) -> Counted {
    use Outcome::{Connected, TimedOut};
    let lab = lab(name);
    let srv = host(&lab, "srv", &["203.0.113.1/24"]);
    let ssh = host(&lab, "ssh", &["203.0.113.10/24"]);
    let other = host(&lab, "other", &["203.0.113.20/24"]);
    let sg = Sgctl::new(&lab, &srv);
    let listeners = listen(&srv, &["203.0.113.1:22", "203.0.113.1:80", "203.0.113.1:8080"]);
    sg.apply(&[&policy("web-server.yaml")]);
    let agent = Agent::start(&sg, &["--no-flow-log", "--quiet"]);
    expect_all(
        "traffic to count",
        vec![
            tcp(&ssh, "203.0.113.1:22", Connected),
            tcp(&other, "203.0.113.1:80", Connected),
            tcp(&other, "203.0.113.1:22", TimedOut),
            tcp(&other, "203.0.113.1:8080", TimedOut),
        ],
    );
    expect_all("one more", vec![tcp(&other, "203.0.113.1:80", Connected)]);
    std::thread::sleep(Duration::from_millis(300));
    Counted { agent, sg, _listeners: listeners, srv, _clients: (ssh, other), _lab: lab }
}

/// `name{labels} value` lines of an exposition → value by `name{labels}`.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of `name` whose labels include every `label="value"` of `with`.
#[track_caller]
pub fn sample_of(samples: &BTreeMap<String, f64>, name: &str, with: &[(&str, &str)]) -> u64 {
    let found: Vec<f64> = samples
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
        .filter(|(k, _)| with.iter().all(|(l, v)| k.contains(&format!("{l}=\"{v}\""))))
        .map(|(_, v)| *v)
        .collect();
    assert!(!found.is_empty(), "no {name} with {with:?} in {samples:#?}");
    found.iter().sum::<f64>() as u64
}

/// CPU seconds (user + system) a process has used, from /proc.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    // After the command: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(14) + ticks(15)) / hz
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The `interface` entry of `status --json` named `name`, if filtered.
pub fn filtered(sg: &Sgctl, name: &str) -> Option<serde_json::Value> {
    sg.status()["interfaces"].as_array().and_then(|i| i.iter().find(|i| i["interface"] == name).cloned())
}

/// Polls until `filtered(name)` is `want` (and its ifindex `ifindex` when
/// given); returns how long that took.
#[track_caller]
pub fn wait_filtered(sg: &Sgctl, name: &str, want: bool, ifindex: Option<u64>, agent: &Agent) -> Duration {
    let started = Instant::now();
    loop {
        let now = filtered(sg, name);
        let ok = match (&now, ifindex) {
            (Some(i), Some(idx)) => want && i["ifindex"] == idx,
            (Some(_), None) => want,
            (None, _) => !want,
        };
        if ok {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name} should be {} within 5 s; status: {:#}\nagent log:\n{}",
            if want { "filtered" } else { "gone" },
            sg.status(),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn ifindex_in(host: &LabHost, name: &str) -> u64 {
    let out = host.run(&["cat", &format!("/sys/class/net/{name}/ifindex")]).expect("cat ifindex");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|e| panic!("ifindex of {name}: {e}"))
}

/// A veth `late0` in `srv` (10.9.0.1/24) whose peer `late1` is in `cli` (10.9.0.2/24).
pub fn plug_veth(srv: &LabHost, cli: &LabHost) {
    plug_veth_named(srv, "late0", cli);
}

/// A veth `name` in `srv` (10.9.0.1/24) whose peer `late1` is in `cli` (10.9.0.2/24).
pub fn plug_veth_named(srv: &LabHost, name: &str, cli: &LabHost) {
    ip(srv, &["link", "add", name, "type", "veth", "peer", "name", "late1", "netns", cli.netns()]);
    ip(srv, &["addr", "add", "10.9.0.1/24", "dev", name]);
    ip(cli, &["addr", "add", "10.9.0.2/24", "dev", "late1"]);
    ip(cli, &["link", "set", "late1", "up"]);
    ip(srv, &["link", "set", name, "up"]);
}

/// `ip -n HOST ARGS…`, which must succeed.
#[track_caller]
pub fn ip(host: &LabHost, args: &[&str]) {
    let out = std::process::Command::new("ip").args(["-n", host.netns()]).args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}
