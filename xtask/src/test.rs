//! `cargo xtask test`: bootstrap, the code gates (formatting, clippy), then
//! every test of the workspace, as root.
//!
//! How many tests run at once is decided in one place, `.cargo/config.toml`
//! (`RUST_TEST_THREADS`), so plain `cargo test` behaves the same.
use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
};

use anyhow::{bail, Context as _};

use crate::{bootstrap, gates, guest, sh};

pub fn run() -> anyhow::Result<()> {
    sh::require_root("test")?;
    bootstrap::run()?;
    gates::run()?;

    // The eBPF crate only builds for bpfel-unknown-none; firewall-ctl's build
    // script builds it (and its tests would not run on the host anyway).
    let mut cmd = sh::cargo();
    cmd.args(["test", "--workspace", "--exclude", "firewall-ebpf", "--no-fail-fast"]).stdout(Stdio::piped());
    let what = sh::describe(&cmd);
    let mut child = cmd.spawn().with_context(|| format!("cannot start `{what}`"))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let (mut passed, mut failed) = (0_u64, 0_u64);
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some((p, f)) = parse_result(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait().with_context(|| format!("waiting for `{what}`"))?;

    // The same programs and tests on the kernel Debian 12 users run.
    let guest = guest::run_tests(parse_result);
    match &guest {
        Ok(g) => {
            sh::step(
                &format!("guest (Debian 12, Linux {})", g.release),
                &format!("{} passed, {} failed in {:.0} s", g.passed, g.failed, g.duration.as_secs_f64()),
            );
            passed += g.passed;
            failed += g.failed;
        }
        Err(e) => {
            eprintln!("error: the Debian 12 guest's tests did not run: {e:#}");
            failed += 1;
        }
    }
    println!("xtask test: {passed} passed, {failed} failed");
    if !status.success() || failed > 0 {
        bail!("`{what}` failed ({status}), or the guest's tests did");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
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
