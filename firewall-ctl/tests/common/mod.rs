//! Shared helpers of the end-to-end tests: run the real `sgctl` binary
//! against a lab host, probe the network concurrently, read JSON output.
//!
//! Every lab has its own bpffs state directory and every `sgctl` call passes
//! it with `--state-dir`, so tests never share pinned state and may run in
//! parallel.
#![allow(dead_code)] // each test binary uses a subset

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

pub mod agent;
pub mod bin;
pub mod capture;
pub mod flood;
pub mod hostile;
pub mod previous;
pub mod seed;

use serde_json::Value;
pub use testlab::{Lab, LabHost, Listener, Outcome};

/// How long a probe that should be dropped waits: its SYN is silently
/// dropped, so anything it could get back (SYN-ACK, RST) would come within
/// milliseconds on veth.
pub const BLOCKED: Duration = Duration::from_secs(1);
/// How long a probe that should get an answer may take (a generous margin on
/// a busy 2-core machine; it takes milliseconds when things work).
pub const ALLOWED: Duration = Duration::from_secs(3);

/// The `sgctl` the labs run: this build's, or the one `SGCTL_E2E_SGCTL`
/// names. The Debian 12 guest of `cargo xtask test` runs the release build
/// (the one the package ships): under QEMU's emulation an unoptimized
/// `sgctl` spends seconds on each command, and the guest part must stay short.
pub fn sgctl_bin() -> PathBuf {
    std::env::var_os("SGCTL_E2E_SGCTL").map_or_else(|| env!("CARGO_BIN_EXE_sgctl").into(), Into::into)
}

/// Fails the test (never skips) unless we are root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "the end-to-end tests need root (network namespaces, eBPF, bpffs); run them as root, \
         e.g. `cargo xtask test` or `sudo -E cargo test -p firewall-ctl`"
    );
}

/// A new lab (its namespaces and state directory go when it is dropped).
pub fn lab(name: &str) -> Lab {
    require_root();
    Lab::new(name).unwrap_or_else(|e| panic!("creating lab {name}: {e:#}"))
}

/// A host of `lab` with `eth0` carrying `addrs`.
pub fn host(lab: &Lab, name: &str, addrs: &[&str]) -> LabHost {
    lab.host(name, addrs).unwrap_or_else(|e| panic!("creating host {name} {addrs:?}: {e:#}"))
}

/// A policy file of the repository's `policies/` directory.
pub fn policy(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies").join(name);
    path.canonicalize().unwrap_or_else(|e| panic!("policy {}: {e}", path.display()))
}

/// Reads a policy of `policies/`.
pub fn policy_text(name: &str) -> String {
    std::fs::read_to_string(policy(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

/// A scratch directory for modified policy files, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("sgctl-e2e-{}-{tag}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to `name` in the directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `text` with `from` replaced by `to`, exactly once (fails if `from` is
/// not in it, so a policy edit cannot silently do nothing).
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "expected exactly one {from:?} in:\n{text}");
    text.replacen(from, to, 1)
}

/// What one `sgctl` run did.
#[derive(Debug)]
pub struct Run {
    pub cmdline: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "`{}` exited {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.cmdline, self.code, self.stdout, self.stderr
        )
    }

    /// Asserts exit status 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "sgctl failed: {}", self.describe());
        self
    }

    /// Asserts the exit status.
    #[track_caller]
    pub fn code(self, want: i32) -> Self {
        assert_eq!(self.code, Some(want), "unexpected exit status: {}", self.describe());
        self
    }

    /// stdout parsed as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", self.describe()))
    }
}

/// `sgctl --state-dir <lab's> -n <host's netns>`: the host as a machine.
pub struct Sgctl {
    bin: PathBuf,
    state_dir: PathBuf,
    lib_dir: PathBuf,
    netns: String,
}

impl Sgctl {
    pub fn new(lab: &Lab, host: &LabHost) -> Self {
        Self::for_netns(lab, host.netns())
    }

    /// `sgctl` for a namespace by name (which need not exist).
    pub fn for_netns(lab: &Lab, netns: &str) -> Self {
        let state_dir = lab.state_dir().unwrap_or_else(|e| panic!("lab state dir: {e:#}"));
        let lib_dir = lab.lib_dir().unwrap_or_else(|e| panic!("lab lib dir: {e:#}"));
        Self { bin: sgctl_bin(), state_dir, lib_dir, netns: netns.to_owned() }
    }

    /// The same, running another build of `sgctl` (an older release).
    pub fn with_binary(self, bin: &Path) -> Self {
        Self { bin: bin.to_owned(), ..self }
    }

    /// `sgctl` for `host` with a state and a lib directory of its own
    /// (inside the lab's), as a separate machine has: no lock shared with
    /// the lab's other hosts.
    pub fn own_dirs(lab: &Lab, host: &LabHost) -> Self {
        let state_dir = lab.state_dir().unwrap_or_else(|e| panic!("lab state dir: {e:#}")).join(host.name());
        let lib_dir = lab.lib_dir().unwrap_or_else(|e| panic!("lab lib dir: {e:#}")).join(host.name());
        Self { bin: sgctl_bin(), state_dir, lib_dir, netns: host.netns().to_owned() }
    }

    /// The lab's state directory (bpffs).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The lab's directory for what sgctl saves on disk.
    pub fn lib_dir(&self) -> &Path {
        &self.lib_dir
    }

    /// The command line `run` uses, to start `sgctl` some other way.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--lib-dir")
            .arg(&self.lib_dir)
            .args(["-n", &self.netns])
            .args(args)
            .env_remove("SGCTL_STATE_DIR")
            .env_remove("SGCTL_LIB_DIR")
            .stdin(Stdio::null());
        cmd
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Runs `sgctl --state-dir S -n NS ARGS…`, whatever its exit status.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Run {
        let mut cmd = self.command(args);
        let mut cmdline = format!("sgctl --state-dir {} -n {}", self.state_dir.display(), self.netns);
        for a in args {
            let _ = write!(cmdline, " {}", a.as_ref().to_string_lossy());
        }
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run `{cmdline}`: {e}"));
        Run {
            cmdline,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `args` and kills it (SIGKILL) after a random delay of up to
    /// `max` drawn from `seed`; its exit status and stderr if it finished
    /// first.
    pub fn run_and_kill(&self, args: &[&str], max: Duration, seed: &mut u64) -> Option<(i32, String)> {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let delay = Duration::from_micros(*seed % (max.as_micros() as u64 + 1));
        let mut child = self.command(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("sgctl runs");
        thread::sleep(delay);
        let _ = child.kill();
        let out = child.wait_with_output().expect("wait");
        out.status.code().map(|code| (code, String::from_utf8_lossy(&out.stderr).into_owned()))
    }

    /// Runs and asserts exit status 0.
    #[track_caller]
    pub fn ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Run {
        self.run(args).ok()
    }

    /// Runs with `--json`, asserts exit status 0, parses stdout.
    #[track_caller]
    pub fn json<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Value {
        let mut all: Vec<&std::ffi::OsStr> = args.iter().map(AsRef::as_ref).collect();
        all.push("--json".as_ref());
        self.run(&all).ok().json()
    }

    /// `sgctl explain --json` for a TCP packet arriving on eth0 from `src`
    /// to `dst`:`dport`.
    #[track_caller]
    pub fn explain_tcp_in(&self, src: &str, dst: &str, dport: &str) -> Value {
        self.json(&[
            "explain", "--iface", "eth0", "--in", "--proto", "tcp", "--src", src, "--dst", dst, "--dport", dport,
        ])
    }

    /// `sgctl apply FILES…`.
    #[track_caller]
    pub fn apply(&self, files: &[&Path]) -> Value {
        let mut args: Vec<&std::ffi::OsStr> = vec!["apply".as_ref()];
        args.extend(files.iter().map(|f| f.as_os_str()));
        self.json(&args)
    }

    /// `sgctl attach IFACE --groups G,…` (auto mode).
    #[track_caller]
    pub fn attach(&self, iface: &str, groups: &str) -> Value {
        self.json(&["attach", iface, "--groups", groups])
    }

    /// The one scope of `sgctl status --json` (this host's).
    #[track_caller]
    pub fn status(&self) -> Value {
        let status = self.json(&["status"]);
        let scopes = status["scopes"].as_array().unwrap_or_else(|| panic!("status has no scopes array: {status}"));
        assert_eq!(scopes.len(), 1, "status -n {} should show exactly its scope: {status}", self.netns);
        assert_eq!(scopes[0]["netns"], self.netns.as_str(), "status scope: {status}");
        scopes[0].clone()
    }

    /// `sgctl stats --json`.
    #[track_caller]
    pub fn stats(&self) -> Value {
        self.json(&["stats"])
    }
}

/// The entry of `stats["rules"]` named `rule` (`GROUP/DIRECTION/N`).
#[track_caller]
pub fn rule_stats<'a>(stats: &'a Value, rule: &str) -> &'a Value {
    stats["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["rule"] == rule))
        .unwrap_or_else(|| panic!("no rule {rule} in stats: {stats:#}"))
}

/// A counter of a JSON object as u64.
#[track_caller]
pub fn count(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("field {field} is not a count in {v}"))
}

/// Starts echo servers on `host`, one per socket address (`ip:port`,
/// `[ip6]:port`); they stop when the returned listeners are dropped.
pub fn listen(host: &LabHost, addrs: &[&str]) -> Vec<Listener> {
    start_servers(host, addrs, "TCP echo", LabHost::tcp_listen)
}

/// Starts one server per socket address with `start`, panicking with `what`.
fn start_servers(
    host: &LabHost,
    addrs: &[&str],
    what: &str,
    start: impl Fn(&LabHost, SocketAddr) -> anyhow::Result<Listener>,
) -> Vec<Listener> {
    addrs
        .iter()
        .map(|a| {
            let addr: SocketAddr = a.parse().unwrap_or_else(|e| panic!("socket address {a:?}: {e}"));
            start(host, addr).unwrap_or_else(|e| panic!("{what} on {a} on {}: {e:#}", host.name()))
        })
        .collect()
}

/// One network probe and what it should come to.
pub struct Probe<'a> {
    name: String,
    want: Outcome,
    run: Box<dyn FnOnce(Duration) -> Outcome + Send + 'a>,
}

/// `from` opens a TCP connection to `to` (`ip:port`) and round-trips bytes.
pub fn tcp<'a>(from: &'a LabHost, to: &str, want: Outcome) -> Probe<'a> {
    let addr: SocketAddr = to.parse().unwrap_or_else(|e| panic!("socket address {to:?}: {e}"));
    Probe { name: format!("{} -> tcp {to}", from.name()), want, run: Box::new(move |t| from.tcp_connect(addr, t)) }
}

/// As [`tcp`], from a chosen source address.
pub fn tcp_from<'a>(from: &'a LabHost, src: &str, to: &str, want: Outcome) -> Probe<'a> {
    let addr: SocketAddr = to.parse().unwrap_or_else(|e| panic!("socket address {to:?}: {e}"));
    let local: SocketAddr = SocketAddr::new(src.parse().unwrap_or_else(|e| panic!("address {src:?}: {e}")), 0);
    Probe {
        name: format!("{} ({src}) -> tcp {to}", from.name()),
        want,
        run: Box::new(move |t| from.tcp_connect_from(local, addr, t)),
    }
}

/// `from` sends a datagram to a UDP echo server at `to` (`ip:port`).
pub fn udp<'a>(from: &'a LabHost, to: &str, want: Outcome) -> Probe<'a> {
    let addr: SocketAddr = to.parse().unwrap_or_else(|e| panic!("socket address {to:?}: {e}"));
    Probe { name: format!("{} -> udp {to}", from.name()), want, run: Box::new(move |t| from.udp_exchange(addr, t)) }
}

/// Starts UDP echo servers on `host`, one per socket address.
pub fn udp_echo(host: &LabHost, addrs: &[&str]) -> Vec<Listener> {
    start_servers(host, addrs, "UDP echo", LabHost::udp_echo)
}

/// `from` pings `to` once: `Connected` if answered, else `TimedOut`.
pub fn ping<'a>(from: &'a LabHost, to: &str, want: Outcome) -> Probe<'a> {
    let ip: std::net::IpAddr = to.parse().unwrap_or_else(|e| panic!("address {to:?}: {e}"));
    Probe {
        name: format!("{} -> ping {to}", from.name()),
        want,
        run: Box::new(move |t| if from.ping(ip, t) { Outcome::Connected } else { Outcome::TimedOut }),
    }
}

/// Runs all probes at once and fails listing every one whose outcome was
/// not the expected one. A probe expected to time out waits [`BLOCKED`];
/// any other waits up to [`ALLOWED`].
#[track_caller]
pub fn expect_all(what: &str, probes: Vec<Probe<'_>>) {
    let started = Instant::now();
    let results: Vec<(String, Outcome, Outcome)> = thread::scope(|s| {
        let handles: Vec<_> = probes
            .into_iter()
            .map(|p| {
                s.spawn(move || {
                    let timeout = if p.want == Outcome::TimedOut { BLOCKED } else { ALLOWED };
                    let got = (p.run)(timeout);
                    (p.name, p.want, got)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    let mut report = String::new();
    let mut failed = 0;
    for (name, want, got) in &results {
        let mark = if want == got { "ok  " } else { "FAIL" };
        if want != got {
            failed += 1;
        }
        let _ = writeln!(report, "  {mark} {name:<50} want {want:<10} got {got}");
    }
    eprintln!("{what} ({:.1?}):\n{report}", started.elapsed());
    assert!(failed == 0, "{what}: {failed} of {} probes had the wrong outcome:\n{report}", results.len());
}

/// A TCP connection kept open across policy changes, to an echo server.
pub struct Conn {
    name: String,
    stream: TcpStream,
}

/// Opens a connection from `from` to `to` and checks it echoes.
#[track_caller]
pub fn open(from: &LabHost, to: &str) -> Conn {
    let addr: SocketAddr = to.parse().unwrap_or_else(|e| panic!("socket address {to:?}: {e}"));
    let name = format!("{} -> tcp {to} (kept open)", from.name());
    let stream =
        from.in_netns(|| TcpStream::connect_timeout(&addr, ALLOWED)).unwrap_or_else(|e| panic!("{name}: connect: {e}"));
    let mut conn = Conn { name, stream };
    assert_eq!(conn.echo(ALLOWED), Outcome::Connected, "{}: first echo", conn.name);
    conn
}

impl Conn {
    /// Sends a few bytes and waits for them to come back.
    pub fn echo(&mut self, timeout: Duration) -> Outcome {
        const PROBE: &[u8] = b"still there?\n";
        let res = (|| {
            self.stream.set_read_timeout(Some(timeout))?;
            self.stream.set_write_timeout(Some(timeout))?;
            self.stream.write_all(PROBE)?;
            let mut back = [0; PROBE.len()];
            self.stream.read_exact(&mut back)?;
            Ok::<_, std::io::Error>(back)
        })();
        match res {
            Ok(back) if back == PROBE => Outcome::Connected,
            Ok(back) => Outcome::Other(format!("echo was {:?}", String::from_utf8_lossy(&back))),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Outcome::TimedOut
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
            Err(e) => Outcome::Other(e.to_string()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client's end (address and port).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap_or_else(|e| panic!("{}: local_addr: {e}", self.name))
    }
}

/// Asserts `sgctl` refused bad input: exit status 2 and exactly one line on
/// stderr that starts with `FILE:LINE:COL: ` (as compilers print),
/// LINE being `line`, and quotes `must_mention`.
#[track_caller]
pub fn assert_located_error(run: &Run, file: &Path, line: u32, must_mention: &str) {
    let want_line = line;
    assert_eq!(run.code, Some(2), "bad input must exit 2: {}", run.describe());
    let lines: Vec<&str> = run.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected exactly one line on stderr: {}", run.describe());
    let line = lines[0];
    let file = file.display().to_string();
    let rest = line
        .strip_prefix(&file)
        .and_then(|r| r.strip_prefix(':'))
        .unwrap_or_else(|| panic!("stderr does not start with {file}: {}", run.describe()));
    let mut parts = rest.splitn(3, ':');
    let (line_no, col, msg) = (parts.next(), parts.next(), parts.next());
    let is_num = |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    assert!(
        is_num(line_no) && is_num(col) && msg.is_some_and(|m| m.starts_with(' ')),
        "stderr is not FILE:LINE:COL: MESSAGE: {}",
        run.describe()
    );
    assert_eq!(
        line_no,
        Some(want_line.to_string().as_str()),
        "the error should point at line {want_line}: {}",
        run.describe()
    );
    assert!(line.contains(must_mention), "the error should quote {must_mention:?}: {}", run.describe());
}

/// Runs `tests/python/SCRIPT ARGS…` with the tests' Python environment
/// (PyYAML, moto + boto3, flowlogs-reader: what `cargo xtask bootstrap`
/// installs in `~/.local/share/sgctl/python`), `stdin` on its standard
/// input; returns its standard output. Fails, saying how to fix it, when
/// the environment is missing or the script fails.
#[track_caller]
pub fn python(script: &str, args: &[&std::ffi::OsStr], stdin: &str) -> String {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    let interpreter = Path::new(&home).join(".local/share/sgctl/python/bin/python3");
    assert!(
        interpreter.exists(),
        "{} is missing: `cargo xtask bootstrap` makes the tests' Python environment",
        interpreter.display()
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let mut child = Command::new(&interpreter)
        .arg(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
    let mut input = child.stdin.take().expect("piped stdin");
    let text = stdin.to_owned();
    let writer = thread::spawn(move || input.write_all(text.as_bytes()));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
    let _ = writer.join();
    assert!(out.status.success(), "{script} {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("{script}: output is not UTF-8: {e}"))
}

/// The filters on `host`'s eth0 clsact hook `side` (`ingress` or
/// `egress`), as `tc filter show` lists them (one line per filter).
pub fn clsact_filters(host: &LabHost, side: &str) -> Vec<String> {
    let out = host.run(&["tc", "filter", "show", "dev", "eth0", side]).expect("tc runs");
    assert!(out.status.success(), "tc filter show: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("handle")).map(str::to_owned).collect()
}

/// What `status` names the tc hook `--mode tc` takes on this kernel:
/// `tc` (tcx, Linux 6.6 and later) or `clsact` (older kernels).
pub fn tc_hook() -> &'static str {
    if firewall_ctl::datapath::kernel::has_tcx() {
        "tc"
    } else {
        "clsact"
    }
}
