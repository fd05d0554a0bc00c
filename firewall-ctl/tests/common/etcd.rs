//! A real etcd (Debian's etcd-server, installed by `cargo xtask bootstrap`)
//! for the fleet's tests: one member or a cluster, on loopback ports of its
//! own, its data in a temporary directory; stopped, killed and started
//! again on the same data as a test needs; `etcdctl` (Debian's
//! etcd-client) to read and write keys as an operator or an attacker would.
use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::TempDir;

/// One etcd member.
pub struct Member {
    pub name: String,
    pub client: String,
    peer: String,
    cluster: String,
    token: String,
    data: PathBuf,
    child: Option<Child>,
}

/// An etcd cluster of one or more members on loopback.
pub struct Etcd {
    pub members: Vec<Member>,
    _dir: TempDir,
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("finding a free port: {e}"));
    listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("finding a free port: {e}"))
}

fn binary(name: &str) -> PathBuf {
    let path = PathBuf::from("/usr/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: the fleet's tests need Debian's etcd-server and etcd-client (cargo xtask bootstrap)",
        path.display()
    );
    path
}

impl Etcd {
    /// One member, started and answering.
    pub fn single() -> Self {
        Self::cluster(1)
    }

    /// `n` members forming one cluster, started and answering.
    pub fn cluster(n: usize) -> Self {
        let dir = TempDir::new("etcd");
        let token = format!("sgctl-test-{}-{}", std::process::id(), free_port());
        let named: Vec<(String, u16, u16)> = (0..n).map(|i| (format!("m{i}"), free_port(), free_port())).collect();
        let cluster =
            named.iter().map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}")).collect::<Vec<_>>().join(",");
        let members = named
            .into_iter()
            .map(|(name, client, peer)| Member {
                data: dir.path().join(&name),
                name,
                client: format!("http://127.0.0.1:{client}"),
                peer: format!("http://127.0.0.1:{peer}"),
                cluster: cluster.clone(),
                token: token.clone(),
                child: None,
            })
            .collect();
        let mut etcd = Self { members, _dir: dir };
        for i in 0..n {
            etcd.start(i);
        }
        etcd.wait_healthy();
        etcd
    }

    /// Every member's client URL, comma-separated (what `--etcd` takes).
    pub fn endpoints(&self) -> String {
        self.members.iter().map(|m| m.client.clone()).collect::<Vec<_>>().join(",")
    }

    /// Starts member `i` (again, on its data).
    pub fn start(&mut self, i: usize) {
        let m = &mut self.members[i];
        let state = if m.data.exists() { "existing" } else { "new" };
        let mut cmd = Command::new(binary("etcd"));
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data)
            .args(["--listen-client-urls", &m.client, "--advertise-client-urls", &m.client])
            .args(["--listen-peer-urls", &m.peer, "--initial-advertise-peer-urls", &m.peer])
            .args(["--initial-cluster", &m.cluster, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", &m.token])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        m.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("starting etcd {}: {e}", m.name)));
    }

    /// SIGKILLs member `i` (its data stays).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until every running member answers `endpoint health`.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let running: Vec<&str> = self.members.iter().filter(|m| m.child.is_some()).map(|m| m.client.as_str()).collect();
        loop {
            let out = Command::new(binary("etcdctl"))
                .args(["--endpoints", &running.join(","), "--command-timeout=1s", "endpoint", "health"])
                .env("ETCDCTL_API", "3")
                .output()
                .unwrap_or_else(|e| panic!("running etcdctl: {e}"));
            if out.status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not become healthy: {}", String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `etcdctl --endpoints <all> ARGS…`: its stdout, or a panic.
    #[track_caller]
    pub fn ctl(&self, args: &[&str]) -> String {
        let running: Vec<&str> = self.members.iter().filter(|m| m.child.is_some()).map(|m| m.client.as_str()).collect();
        let out = Command::new(binary("etcdctl"))
            .args(["--endpoints", &running.join(","), "--command-timeout=3s"])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .unwrap_or_else(|e| panic!("running etcdctl: {e}"));
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `etcdctl put KEY VALUE` (VALUE from standard input, so any bytes go).
    #[track_caller]
    pub fn put(&self, key: &str, value: &[u8]) {
        let running: Vec<&str> = self.members.iter().filter(|m| m.child.is_some()).map(|m| m.client.as_str()).collect();
        let mut child = Command::new(binary("etcdctl"))
            .args(["--endpoints", &running.join(","), "--command-timeout=3s", "put", key])
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running etcdctl: {e}"));
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("piped stdin");
            stdin.write_all(value).unwrap_or_else(|e| panic!("etcdctl put {key}: {e}"));
        }
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("etcdctl put {key}: {e}"));
        assert!(out.status.success(), "etcdctl put {key}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The keys under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.ctl(&["get", "--prefix", "--keys-only", prefix])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `etcdctl watch --prefix PREFIX` in the background: each line it
    /// prints, with when it arrived.
    pub fn watch(&self, prefix: &str) -> Watch {
        let mut child = Command::new(binary("etcdctl"))
            .args(["--endpoints", &self.endpoints(), "watch", "--prefix", prefix])
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("running etcdctl watch: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push((Instant::now(), line));
                }
            });
        }
        Watch { child, lines }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A running `etcdctl watch`.
pub struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Watch {
    /// When the watch first printed a line equal to `line` (a key, for a
    /// put or delete of it), waiting up to `timeout`.
    pub fn seen(&self, line: &str, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let found =
                self.lines.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(_, l)| l == line).map(|(t, _)| *t);
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
