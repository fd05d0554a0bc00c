//! `cargo xtask test`: bootstrap, the code gates (formatting, clippy), then
//! every test of the workspace, as root, tier by tier.
//!
//! The tiers (CONTRIBUTING.md says what each holds and how long it takes):
//! - **pure**: the unit tests of every crate, their doc tests and
//!   firewall-ctl's `offline` binary. They share nothing, so they run in
//!   parallel, one thread per CPU.
//! - **serial**: every other test binary of the workspace, one at a time and
//!   one test at a time (`--test-threads=1`): firewall-ctl's `kernel` and
//!   `e2e`, testlab's harness, xtask's package test. They load eBPF programs
//!   and tell drops from answers by timeouts on a 2-core machine. A test
//!   binary nobody listed lands here, on the safe side. Last, the
//!   end-to-end tests that matter on Debian 12's kernel, in the 6.1 guest
//!   (`guest::TESTS`).
//!
//! `.cargo/config.toml` keeps `RUST_TEST_THREADS=1` as the default of every
//! `cargo test` (what a plain `cargo test` as root must do to stay correct);
//! only the pure tier overrides it, here.
use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::{bootstrap, gates, guest, sh};

mod failures;

/// firewall-ctl's test binary whose tests need neither root nor the kernel.
const PURE_TEST_BINARY: &str = "offline";

pub fn run() -> anyhow::Result<()> {
    sh::require_root("test")?;
    bootstrap::run()?;
    gates::run()?;

    // Build every test first, so each tier's time is its tests' alone.
    let started = Instant::now();
    sh::run(&mut workspace_test(&["--no-run"]))?;
    sh::step("build tests", &format!("{:.0?}", started.elapsed()));

    let threads = std::thread::available_parallelism().map_or(1, usize::from).to_string();
    let mut tiers = vec![
        Tier::new(
            &format!("pure: unit tests, --test {PURE_TEST_BINARY}"),
            workspace_test(&["--lib", "--bins", "--test", PURE_TEST_BINARY]),
            &threads,
        ),
        Tier::new("pure: doc tests", workspace_test(&["--doc"]), &threads),
    ];
    for (package, target) in test_targets()? {
        if target != PURE_TEST_BINARY {
            tiers.push(Tier::new(
                &format!("serial: {package} --test {target}"),
                workspace_test(&["--test", &target]),
                "1",
            ));
        }
    }

    let mut results = Vec::new();
    for tier in &mut tiers {
        results.push((tier.name.clone(), tier.run()?));
    }
    results.push(guest_tier());
    // What each failed test said, and the times per tier, together at the
    // end where a reader (and a CI page) looks.
    for (name, r) in &results {
        for failure in &r.failures {
            sh::step(name, &format!("FAILED {}", failure.test));
            failure.lines.iter().for_each(|l| println!("    {l}"));
        }
    }
    for (name, r) in &results {
        sh::step(name, &format!("{} passed, {} failed in {:.0?}", r.passed, r.failed, r.duration));
    }
    let passed: u64 = results.iter().map(|(_, r)| r.passed).sum();
    let failed: u64 = results.iter().map(|(_, r)| r.failed).sum();
    let broken: Vec<&str> = results.iter().filter(|(_, r)| !r.success).map(|(name, _)| name.as_str()).collect();
    println!("xtask test: {passed} passed, {failed} failed");
    if !broken.is_empty() || failed > 0 {
        bail!("tests failed: {}", broken.join(", "));
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// The same programs and the end-to-end tests that matter there
/// ([`guest::TESTS`]) on the kernel Debian 12 users run, one at a time.
/// A guest that cannot run them is one failure.
fn guest_tier() -> (String, TierResult) {
    let started = Instant::now();
    match guest::run_tests(parse_result) {
        Ok(g) => (
            format!("serial: guest (Debian 12, Linux {})", g.release),
            TierResult {
                passed: g.passed,
                failed: g.failed,
                success: true,
                duration: g.duration,
                failures: Vec::new(),
            },
        ),
        Err(e) => {
            eprintln!("error: the Debian 12 guest's tests did not run: {e:#}");
            let duration = started.elapsed();
            let result = TierResult { passed: 0, failed: 1, success: false, duration, failures: Vec::new() };
            ("serial: guest (Debian 12)".to_owned(), result)
        }
    }
}

/// `cargo test` of `targets` over the workspace (the eBPF crate only builds
/// for bpfel-unknown-none; firewall-ctl's build script builds it). Always
/// the whole workspace, so every tier uses the one build: `-p` would
/// resolve features differently and rebuild.
fn workspace_test(targets: &[&str]) -> Command {
    let mut cmd = sh::cargo();
    cmd.args(["test", "--workspace", "--exclude", "firewall-ebpf", "--no-fail-fast"]).args(targets);
    cmd
}

/// Every integration test binary of the workspace's default members:
/// `(package, target)`, from `cargo metadata`.
fn test_targets() -> anyhow::Result<Vec<(String, String)>> {
    let out = sh::stdout(sh::cargo().args(["metadata", "--no-deps", "--format-version", "1"]))?;
    let metadata: serde_json::Value = serde_json::from_str(&out).context("reading cargo metadata")?;
    let default_members: Vec<&str> =
        metadata["workspace_default_members"].as_array().into_iter().flatten().filter_map(|m| m.as_str()).collect();
    let mut targets = Vec::new();
    for package in metadata["packages"].as_array().context("cargo metadata: no packages")? {
        let (Some(id), Some(name)) = (package["id"].as_str(), package["name"].as_str()) else { continue };
        if !default_members.contains(&id) {
            continue;
        }
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_test = target["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "test"));
            match target["name"].as_str() {
                // `--workspace --test NAME` runs NAME of every package that has one.
                Some(target) if is_test && !targets.iter().any(|(_, t)| t == target) => {
                    targets.push((name.to_owned(), target.to_owned()));
                }
                _ => {}
            }
        }
    }
    if targets.is_empty() {
        bail!("cargo metadata lists no test binary");
    }
    Ok(targets)
}

struct Tier {
    name: String,
    cmd: Command,
}

struct TierResult {
    passed: u64,
    failed: u64,
    success: bool,
    duration: Duration,
    /// What each failed test said (libtest's `failures:` blocks).
    failures: Vec<failures::Excerpt>,
}

impl Tier {
    fn new(name: &str, mut cmd: Command, threads: &str) -> Self {
        cmd.args(["--", "--test-threads", threads]);
        Self { name: name.to_owned(), cmd }
    }

    /// Runs the tier, its output echoed; counts what passed and failed.
    fn run(&mut self) -> anyhow::Result<TierResult> {
        sh::step(&self.name, "running");
        let what = sh::describe(&self.cmd);
        let started = Instant::now();
        let mut child = self.cmd.stdout(Stdio::piped()).spawn().with_context(|| format!("cannot start `{what}`"))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (mut passed, mut failed) = (0, 0);
        let mut failures = failures::Failures::default();
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            failures.feed(&line);
            if let Some((p, f)) = parse_result(&line) {
                passed += p;
                failed += f;
            }
        }
        let status = child.wait().with_context(|| format!("waiting for `{what}`"))?;
        let failures = failures.finish();
        Ok(TierResult { passed, failed, success: status.success(), duration: started.elapsed(), failures })
    }
}

/// `test result: ok. 3 passed; 0 failed; 0 ignored; …` → (3, 0).
pub fn parse_result(line: &str) -> Option<(u64, u64)> {
    let (_, counts) = line.strip_prefix("test result: ")?.split_once(". ")?;
    let (mut passed, mut failed) = (None, None);
    for part in counts.split(';') {
        match part.trim().split_once(' ') {
            Some((n, "passed")) => passed = n.parse().ok(),
            Some((n, "failed")) => failed = n.parse().ok(),
            _ => {}
        }
    }
    Some((passed?, failed?))
}

#[cfg(test)]
mod tests {
    use super::parse_result;

    #[test]
    fn reads_cargo_test_summaries() {
        let ok = "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(parse_result(ok), Some((12, 0)));
        let bad = "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(parse_result(bad), Some((3, 2)));
        assert_eq!(parse_result("running 3 tests"), None);
    }
}
