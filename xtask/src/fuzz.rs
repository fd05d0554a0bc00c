//! `cargo xtask fuzz [SECS]`: the coverage-guided policy fuzzer (`fuzz/`,
//! cargo-fuzz and libFuzzer on nightly) for SECS seconds, default 300.
//!
//! The corpus (`fuzz/corpus/policy/`, kept between runs, not committed)
//! is seeded on every run with `policies/*.yaml`, every finding kept in
//! `fuzz/regressions/`, and the YAML of the policy and compiler unit tests
//! (they leave it there when `SGCTL_FUZZ_SEEDS` is set). A finding is
//! copied to `fuzz/regressions/`, where `cargo test` replays it on stable
//! (`firewall-ctl/tests/offline/fuzz_policy.rs`), and the run fails.
//!
//! CI does not run this (it would need cargo-fuzz and a second,
//! instrumented build of every dependency); it runs the stable generator in
//! `cargo test` on the same property.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::{bootstrap, sh};

/// Inputs longer than this are not tried: policies that exercise every
/// branch are short, and short inputs keep the run fast.
const MAX_LEN: &str = "4096";

pub fn run(secs: u64) -> anyhow::Result<()> {
    bootstrap::cargo_fuzz()?;
    require_cxx()?;
    let root = sh::root();
    let corpus = root.join("fuzz/corpus/policy");
    seed(&root, &corpus)?;
    let artifacts = root.join("fuzz/artifacts/policy");
    let before = findings(&artifacts);

    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "fuzz", "run", "policy"])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        .arg(format!("-max_len={MAX_LEN}"))
        // A policy of at most MAX_LEN bytes that takes seconds is a finding too.
        .arg("-timeout=10")
        .arg("-print_final_stats=1")
        .current_dir(&root)
        // The target never loads the eBPF object: do not build it again.
        .env("AYA_BUILD_SKIP", "1");
    sh::step(&format!("fuzzing the policy parser and compiler for {secs} s"), "running");
    let result = sh::run(&mut cmd);

    let new: Vec<PathBuf> = findings(&artifacts).into_iter().filter(|f| !before.contains(f)).collect();
    let kept = root.join("fuzz/regressions");
    for finding in &new {
        let name = finding.file_name().context("finding without a name")?;
        let to = kept.join(name);
        fs::copy(finding, &to).with_context(|| format!("copying {} to {}", finding.display(), to.display()))?;
        println!("[xtask] finding kept as {}", to.display());
    }
    if !new.is_empty() {
        bail!(
            "the fuzzer found {} failing input(s), kept in fuzz/regressions/: fix each, rename it for what it \
             found, list it in fuzz/regressions/README.md and commit it (cargo test replays it)",
            new.len()
        );
    }
    result
}

/// libfuzzer-sys builds libFuzzer from its C++ sources.
fn require_cxx() -> anyhow::Result<()> {
    if Command::new("c++").arg("--version").output().is_ok_and(|o| o.status.success()) {
        sh::step("C++ compiler (for libFuzzer)", "already present");
        return Ok(());
    }
    bail!("libFuzzer needs a C++ compiler: apt-get install g++");
}

/// Adds the example policies, the kept findings and the unit tests' YAML
/// to the corpus (libFuzzer drops what adds no coverage).
fn seed(root: &Path, corpus: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(corpus).with_context(|| format!("creating {}", corpus.display()))?;
    for dir in ["policies", "fuzz/regressions"] {
        let dir = root.join(dir);
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_file() && path.extension().is_none_or(|e| e != "md") {
                let name = path.file_name().context("file without a name")?;
                fs::copy(&path, corpus.join(name)).with_context(|| format!("copying {}", path.display()))?;
            }
        }
    }
    let mut cmd = sh::cargo();
    cmd.args(["test", "--quiet", "-p", "firewall-ctl", "--lib", "--", "policy::", "compile::"])
        .env("SGCTL_FUZZ_SEEDS", corpus);
    sh::stdout(&mut cmd).context("running the unit tests to collect their YAML")?;
    let count = fs::read_dir(corpus).map_or(0, Iterator::count);
    sh::step(&format!("corpus {} ({count} inputs)", corpus.display()), "seeded");
    Ok(())
}

/// The crash, timeout, leak and out-of-memory inputs libFuzzer has left.
fn findings(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect()
}
