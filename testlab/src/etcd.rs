//! A real etcd (Debian's `etcd-server`, installed by `cargo xtask
//! bootstrap`) for the fleet's tests, demo and benchmark: one member or a
//! cluster, on loopback ports of its own, its data in a temporary
//! directory, killed (and its data removed) when dropped; stopped and
//! started again on the same data as a test needs. Keys are read and
//! written with `etcdctl` (Debian's `etcd-client`), as an operator or an
//! attacker would, or — where many writes must land at a known instant —
//! through etcd's own JSON gateway (`POST /v3/kv/put`).
use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _};
use base64::{engine::general_purpose::STANDARD, Engine as _};

/// One member.
struct Member {
    name: String,
    client: String,
    peer: String,
    data: PathBuf,
    child: Option<Child>,
}

/// An etcd cluster of one or more members on loopback.
pub struct Etcd {
    members: Vec<Member>,
    cluster: String,
    token: String,
    dir: PathBuf,
    tls: Option<Tls>,
    /// `USER:PASSWORD` of etcd's root, once auth is on.
    root: Option<String>,
}

/// Certificates of an etcd that serves TLS and asks clients for theirs
/// (`--client-cert-auth`), made with `openssl` in the etcd's directory.
#[derive(Clone, Debug)]
pub struct Tls {
    /// The CA that signed both.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate (CN `client`) and its key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Tls {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate.
    fn make(dir: &std::path::Path) -> anyhow::Result<Self> {
        let openssl = |args: &[&str]| -> anyhow::Result<()> {
            let out = Command::new("openssl").args(args).current_dir(dir).stdin(Stdio::null()).output()?;
            if !out.status.success() {
                bail!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
            }
            Ok(())
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            &[
                &["req", "-x509"],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=testlab-ca"],
            ]
            .concat(),
        )?;
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )?;
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
        for (name, cn) in [("server", "/CN=127.0.0.1"), ("client", "/CN=client")] {
            let (key, csr, pem, ext) =
                (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
            openssl(&[&["req"], &ec[..], &["-keyout", &key, "-out", &csr, "-subj", cn]].concat())?;
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ])?;
        }
        Ok(Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        })
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from("/usr/bin").join(name);
    if !path.exists() {
        bail!(
            "{} is missing: the fleet needs Debian's etcd-server and etcd-client (cargo xtask bootstrap)",
            path.display()
        );
    }
    Ok(path)
}

impl Etcd {
    /// One member, started and answering.
    pub fn single() -> anyhow::Result<Self> {
        Self::cluster(1)
    }

    /// `n` members forming one cluster, started and answering.
    pub fn cluster(n: usize) -> anyhow::Result<Self> {
        Self::new(n, false)
    }

    /// One member that serves TLS only, to clients with a certificate of its CA.
    pub fn single_tls() -> anyhow::Result<Self> {
        Self::new(1, true)
    }

    fn new(n: usize, tls: bool) -> anyhow::Result<Self> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("testlab-etcd-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tls = if tls { Some(Tls::make(&dir)?) } else { None };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut members = Vec::new();
        for i in 0..n {
            let name = format!("m{i}");
            members.push(Member {
                data: dir.join(&name),
                client: format!("{scheme}://127.0.0.1:{}", free_port()?),
                peer: format!("http://127.0.0.1:{}", free_port()?),
                name,
                child: None,
            });
        }
        let cluster = members.iter().map(|m| format!("{}={}", m.name, m.peer)).collect::<Vec<_>>().join(",");
        let token = format!("testlab-{}-{nanos}", std::process::id());
        let mut etcd = Self { members, cluster, token, dir, tls, root: None };
        for i in 0..n {
            etcd.start(i)?;
        }
        etcd.wait_healthy()?;
        Ok(etcd)
    }

    /// Every member's client URL, comma-separated (what `--etcd` takes).
    pub fn endpoints(&self) -> String {
        self.members.iter().map(|m| m.client.clone()).collect::<Vec<_>>().join(",")
    }

    /// The client URLs of the members running now.
    fn running(&self) -> String {
        self.members.iter().filter(|m| m.child.is_some()).map(|m| m.client.clone()).collect::<Vec<_>>().join(",")
    }

    /// Starts member `i` (again, on its data).
    pub fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let etcd = binary("etcd")?;
        let m = &mut self.members[i];
        let state = if m.data.exists() { "existing" } else { "new" };
        let child = Command::new(etcd)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data)
            .args(["--listen-client-urls", &m.client, "--advertise-client-urls", &m.client])
            .args(["--listen-peer-urls", &m.peer, "--initial-advertise-peer-urls", &m.peer])
            .args(["--initial-cluster", &self.cluster, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--logger", "zap", "--log-level", "error"])
            .args(self.tls.iter().flat_map(|t| {
                [
                    "--cert-file".into(),
                    t.server_cert.clone().into_os_string(),
                    "--key-file".into(),
                    t.server_key.clone().into_os_string(),
                    "--trusted-ca-file".into(),
                    t.ca.clone().into_os_string(),
                    "--client-cert-auth".into(),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting etcd member {}", m.name))?;
        m.child = Some(child);
        Ok(())
    }

    /// SIGKILLs member `i` (its data stays).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the running members answer `endpoint health`.
    pub fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.etcdctl(&["--command-timeout=1s", "endpoint", "health"])?.output()?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("etcd did not become healthy: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The certificates, for an etcd made with [`Self::single_tls`].
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// Turns authentication on: a root user, and `user` with `password`
    /// and read-write access to keys under `prefix`. Later `etcdctl` calls
    /// of this value run as root.
    pub fn enable_auth(&mut self, user: &str, password: &str, prefix: &str) -> anyhow::Result<()> {
        let root = "root:testlab-root".to_owned();
        self.ctl(&["user", "add", &root])?;
        self.ctl(&["auth", "enable"])?;
        self.root = Some(root);
        self.ctl(&["user", "add", &format!("{user}:{password}")])?;
        self.ctl(&["role", "add", user])?;
        self.ctl(&["role", "grant-permission", user, "--prefix=true", "readwrite", prefix])?;
        self.ctl(&["user", "grant-role", user, user])?;
        Ok(())
    }

    /// `etcdctl --endpoints <running members> ARGS…`, to be run.
    fn etcdctl(&self, args: &[&str]) -> anyhow::Result<Command> {
        let mut cmd = Command::new(binary("etcdctl")?);
        cmd.args(["--endpoints", &self.running()]).env("ETCDCTL_API", "3").stdin(Stdio::null());
        if let Some(t) = &self.tls {
            cmd.arg("--cacert").arg(&t.ca).arg("--cert").arg(&t.client_cert).arg("--key").arg(&t.client_key);
        }
        if let Some(root) = &self.root {
            cmd.args(["--user", root]);
        }
        cmd.args(args);
        Ok(cmd)
    }

    /// `etcdctl ARGS…`: its stdout, or an error with its stderr.
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.etcdctl(&[&["--command-timeout=3s"], args].concat())?.output()?;
        if !out.status.success() {
            bail!("etcdctl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `etcdctl put KEY` with `value` on standard input, so any bytes go.
    pub fn put(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let mut child = self
            .etcdctl(&["--command-timeout=3s", "put", key])?
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().context("etcdctl's stdin")?.write_all(value)?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("etcdctl put {key}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// The keys under `prefix`.
    pub fn keys(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let out = self.ctl(&["get", "--prefix", "--keys-only", prefix])?;
        Ok(out.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect())
    }

    /// Puts `key` through the first running member's JSON gateway, in
    /// this process (no `etcdctl` to start, so the instant of the put is
    /// known to a millisecond); returns the revision.
    pub fn put_now(&self, key: &str, value: &[u8]) -> anyhow::Result<i64> {
        let endpoint = self.running().split(',').next().unwrap_or_default().to_owned();
        let body = serde_json::json!({ "key": STANDARD.encode(key), "value": STANDARD.encode(value) });
        let mut response = ureq::post(&format!("{endpoint}/v3/kv/put"))
            .send_json(&body)
            .with_context(|| format!("POST {endpoint}/v3/kv/put"))?;
        let answer: serde_json::Value = response.body_mut().read_json()?;
        // The gateway writes 64-bit integers as strings.
        let revision = &answer["header"]["revision"];
        Ok(revision.as_str().and_then(|r| r.parse().ok()).or_else(|| revision.as_i64()).unwrap_or_default())
    }

    /// `etcdctl watch --prefix PREFIX` in the background: each line it
    /// prints, with when it arrived. Returns once the watch is in place,
    /// so no put made after this returns can be missed (a watch that is
    /// still connecting when the first put lands would never print it).
    /// How it knows: etcdctl's interactive mode creates the prefix watch
    /// and then a watch of [`WATCH_PROBE`] on one stream, in that order;
    /// once a put of the probe is printed, the prefix watch exists.
    pub fn watch(&self, prefix: &str) -> anyhow::Result<Watch> {
        let mut child = self
            .etcdctl(&["watch", "--interactive"])?
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("etcdctl's stdout")?;
        let mut stdin = child.stdin.take().context("etcdctl's stdin")?;
        writeln!(stdin, "watch --prefix {prefix}\nwatch {WATCH_PROBE}")?;
        let watch = Watch { child, _commands: stdin, lines: timed_lines(stdout) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.put(WATCH_PROBE, b"probe")?;
            if watch.seen(WATCH_PROBE, Duration::from_millis(100)).is_some() {
                return Ok(watch);
            }
            if Instant::now() > deadline {
                bail!("etcdctl watch --prefix {prefix}: not watching within 10 s");
            }
        }
    }
}

/// The key [`Etcd::watch`] puts to learn that its watch is in place:
/// outside every prefix sgctl's agents watch, so they never see it.
pub const WATCH_PROBE: &str = "testlab/watch-probe";

/// Lines read from `from` on a thread of their own, each with the instant
/// it arrived (what a watcher of a child's output needs to time it).
pub type TimedLines = Arc<Mutex<Vec<(Instant, String)>>>;

/// Starts reading `from` into [`TimedLines`] until it ends.
pub fn timed_lines(from: impl std::io::Read + Send + 'static) -> TimedLines {
    let lines = TimedLines::default();
    let into = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            into.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((Instant::now(), line));
        }
    });
    lines
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `etcdctl watch`.
pub struct Watch {
    child: Child,
    /// etcdctl's standard input: interactive mode ends when it closes.
    _commands: std::process::ChildStdin,
    lines: TimedLines,
}

impl Watch {
    /// When the watch first printed a line equal to `line` (a key, for a
    /// put or delete of it), waiting up to `timeout`.
    pub fn seen(&self, line: &str, timeout: Duration) -> Option<Instant> {
        self.seen_after(line, None, timeout)
    }

    /// As [`Self::seen`], among the lines that arrived after `after`.
    pub fn seen_after(&self, line: &str, after: impl Into<Option<Instant>>, timeout: Duration) -> Option<Instant> {
        let after = after.into();
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .find(|(t, l)| l == line && after.is_none_or(|a| *t >= a))
                .map(|(t, _)| *t);
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
