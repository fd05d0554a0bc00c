//! What every benchmark shares: the machine record, medians, timed runs
//! with peak memory, `sgctl` and `nft` in lab namespaces, counters read
//! inside a namespace, and the result writer (Markdown + JSON in
//! `bench/results/`).
use std::{
    fmt::Write as _,
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use testlab::LabHost;

use crate::sh;

/// Paths and binaries of one benchmark run.
pub struct Bench {
    /// The release `sgctl`.
    pub sgctl: PathBuf,
    /// Scratch space (generated policies, rulesets, outputs).
    pub work: PathBuf,
    /// `bench/results/`.
    pub results: PathBuf,
}

impl Bench {
    pub fn new() -> anyhow::Result<Self> {
        let root = sh::root();
        let work = root.join("target/bench");
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let results = root.join("bench/results");
        std::fs::create_dir_all(&results).with_context(|| format!("creating {}", results.display()))?;
        Ok(Self { sgctl: crate::build::sgctl_path(), work, results })
    }

    /// A scratch directory of its own for one benchmark (created).
    pub fn dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.work.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }
}

/// The median (upper median for an even count); NaN for none.
/// Runs `cmd` (a benchmark binary told to write JSON to `out`), failing
/// unless it exits 0, and returns what it wrote.
pub fn bench_json(cmd: &mut Command, out: &Path) -> anyhow::Result<Value> {
    sh::run(cmd)?;
    Ok(serde_json::from_str(&std::fs::read_to_string(out)?)?)
}

pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The kernel, CPU, cores and date a result was measured on.
pub fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_owned()))
        .unwrap_or_else(|| "unknown".to_owned());
    let date = sh::stdout(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])).unwrap_or_default();
    json!({
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        "date": date.trim(),
        "nft": sh::stdout(Command::new("nft").arg("--version")).unwrap_or_default().trim(),
    })
}

/// One command run to completion: wall time, peak resident memory (from
/// `wait4`), exit status and its output (kept in files, so a command that
/// prints megabytes cannot block on a pipe).
pub struct Measured {
    pub wall: Duration,
    pub max_rss_kib: u64,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Measured {
    pub fn ms(&self) -> f64 {
        self.wall.as_secs_f64() * 1e3
    }

    /// Its stderr's last line, for a table cell.
    pub fn why(&self) -> String {
        self.stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("failed").trim().to_owned()
    }
}

/// Runs `cmd` with its output in files under `work`, timing it, under GNU
/// `time` for its peak RSS. (A child's own rusage would not do: a child
/// spawned from this process starts with this process's peak RSS.)
pub fn measured(work: &Path, cmd: &Command) -> anyhow::Result<Measured> {
    let what = sh::describe(cmd);
    let out_path = work.join("measured.stdout");
    let err_path = work.join("measured.stderr");
    let rss_path = work.join("measured.rss");
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("%M").arg("-o").arg(&rss_path).arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => timed.env(key, v),
            None => timed.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    timed
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).context("creating an output file")?)
        .stderr(File::create(&err_path).context("creating an output file")?);
    let start = Instant::now();
    let status = timed.status().with_context(|| format!("cannot start `{what}` under /usr/bin/time"))?;
    let wall = start.elapsed();
    let rss = std::fs::read_to_string(&rss_path).unwrap_or_default();
    Ok(Measured {
        wall,
        max_rss_kib: rss.lines().rev().find_map(|l| l.trim().parse().ok()).unwrap_or(0),
        success: status.success(),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    })
}

/// `sgctl --state-dir DIR --lib-dir DIR -n NETNS …`: the lab's own state
/// and saved policy, never the host's (`/var/lib/sgctl` is what the
/// host restores at boot).
pub struct Sgctl<'a> {
    pub bin: &'a Path,
    pub state: PathBuf,
    pub lib: PathBuf,
    pub netns: String,
}

impl Sgctl<'_> {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin);
        cmd.arg("--state-dir")
            .arg(&self.state)
            .arg("--lib-dir")
            .arg(&self.lib)
            .args(["-n", &self.netns])
            .args(args)
            .env_remove("SGCTL_STATE_DIR")
            .env_remove("SGCTL_LIB_DIR");
        cmd
    }

    /// Runs it; its stdout, or an error with its stderr.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        sh::stdout(&mut self.command(args))
    }

    /// `stats --json`.
    pub fn stats(&self) -> anyhow::Result<Value> {
        Ok(serde_json::from_str(&self.run(&["stats", "--json"])?)?)
    }
}

/// Sum of `field` over the rules named `rule` in `sgctl stats --json`.
pub fn rule_count(stats: &Value, rule: &str, field: &str) -> u64 {
    stats["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["rule"] == rule)
        .filter_map(|r| r[field].as_u64())
        .sum()
}

/// Sum of `field` over the interfaces in `sgctl stats --json`.
pub fn iface_count(stats: &Value, field: &str) -> u64 {
    stats["interfaces"].as_array().into_iter().flatten().filter_map(|i| i[field].as_u64()).sum()
}

/// Runs `nft ARGS…` in `host`'s namespace; fails with its stderr.
pub fn nft(host: &LabHost, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["nft"];
    all.extend_from_slice(args);
    let out = host.run(&all)?;
    if !out.status.success() {
        bail!("nft {} in {}: {}", args.join(" "), host.netns(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Packets of the named counter `name` of `table inet sgctl`.
pub fn nft_counter(host: &LabHost, name: &str) -> anyhow::Result<u64> {
    let v: Value = serde_json::from_str(&nft(host, &["-j", "list", "counter", "inet", "sgctl", name])?)?;
    v["nftables"]
        .as_array()
        .and_then(|items| items.iter().find_map(|i| i["counter"]["packets"].as_u64()))
        .with_context(|| format!("no counter {name} in {}", host.netns()))
}

/// Reads a file of `/proc/thread-self/net/` as `host`'s namespace sees it.
pub fn netns_proc(host: &LabHost, file: &str) -> anyhow::Result<String> {
    let path = format!("/proc/thread-self/net/{file}");
    host.in_netns(|| std::fs::read_to_string(&path)).with_context(|| format!("reading {path} in {}", host.netns()))
}

/// A field of a `/proc/net/snmp` protocol line pair (e.g. `Udp`, `InDatagrams`).
pub fn snmp(text: &str, proto: &str, field: &str) -> u64 {
    let prefix = format!("{proto}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return 0 };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == field)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// The MAC address of `iface` in `host`.
pub fn mac(host: &LabHost, iface: &str) -> anyhow::Result<String> {
    let path = format!("/sys/class/net/{iface}/address");
    // sysfs shows the namespace of whoever mounted it; ask `ip` instead.
    let out = host.run(&["cat", &path])?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if text.len() == 17 {
        return Ok(text);
    }
    let out = host.run(&["ip", "-o", "link", "show", "dev", iface])?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_owned)
        .with_context(|| format!("no MAC for {iface} in {}", host.netns()))
}

/// `SUnreclaim` of /proc/meminfo, in KiB: where nf_tables keeps rules and sets.
pub fn slab_unreclaimable_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("SUnreclaim:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One benchmark's results: Markdown tables with notes, and JSON.
pub struct Report {
    pub id: &'static str,
    pub title: &'static str,
    pub markdown: String,
    pub json: Value,
}

impl Report {
    pub fn new(id: &'static str, title: &'static str) -> Self {
        Self {
            id,
            title,
            markdown: String::new(),
            json: json!({ "benchmark": id, "title": title, "machine": machine() }),
        }
    }

    /// A table under a heading.
    pub fn table(&mut self, heading: &str, headers: &[&str], rows: &[Vec<String>]) {
        let _ = writeln!(self.markdown, "\n### {heading}\n");
        let _ = writeln!(self.markdown, "| {} |", headers.join(" | "));
        let _ = writeln!(self.markdown, "|{}|", headers.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
        for row in rows {
            let _ = writeln!(self.markdown, "| {} |", row.join(" | "));
        }
    }

    pub fn note(&mut self, text: &str) {
        let _ = writeln!(self.markdown, "\n{text}");
    }

    /// Writes `bench/results/ID.md` and `ID.json`, and prints the Markdown.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let m = &self.json["machine"];
        let md = format!(
            "## {}: {}\n\nMachine: {} cores, {}, kernel {}, {}; measured {}.\n{}",
            self.id.to_uppercase(),
            self.title,
            m["cores"],
            m["cpu"].as_str().unwrap_or_default(),
            m["kernel"].as_str().unwrap_or_default(),
            m["nft"].as_str().unwrap_or_default(),
            m["date"].as_str().unwrap_or_default(),
            self.markdown
        );
        println!("{md}");
        let md_path = dir.join(format!("{}.md", self.id));
        std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
        let json_path = dir.join(format!("{}.json", self.id));
        std::fs::write(&json_path, serde_json::to_string_pretty(&self.json)? + "\n")
            .with_context(|| format!("writing {}", json_path.display()))?;
        sh::step(
            &format!("bench {}", self.id),
            &format!("results in {} and {}", md_path.display(), json_path.display()),
        );
        Ok(())
    }
}

/// A number for a table cell: `—` for NaN.
pub fn cell(value: f64, decimals: usize) -> String {
    if value.is_nan() {
        "—".to_owned()
    } else {
        format!("{value:.decimals$}")
    }
}

/// `a / b` as "1.23×", `—` when either is missing.
pub fn ratio(a: f64, b: f64) -> String {
    if a.is_nan() || b.is_nan() || b == 0.0 {
        "—".to_owned()
    } else {
        format!("{:.2}×", a / b)
    }
}

/// Sleeps until `deadline`.
pub fn sleep_until(deadline: Instant) {
    if let Some(left) = deadline.checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ignore_missing_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, f64::NAN, 2.0, 3.0]), 3.0);
        assert!(median(&[]).is_nan());
        assert_eq!(ratio(3.0, 2.0), "1.50×");
        assert_eq!(ratio(f64::NAN, 2.0), "—");
    }

    #[test]
    fn reads_snmp_counters() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 2 64\nUdp: InDatagrams NoPorts InErrors\nUdp: 5 7 11\n";
        assert_eq!(snmp(text, "Udp", "NoPorts"), 7);
        assert_eq!(snmp(text, "Udp", "InErrors"), 11);
        assert_eq!(snmp(text, "Tcp", "InSegs"), 0);
    }
}
