//! `cargo xtask build`: the eBPF object (through firewall-ctl/build.rs) and `sgctl`.
use std::path::PathBuf;

use crate::{bootstrap, sh};

/// Where the build leaves the binary.
pub fn sgctl_path() -> PathBuf {
    sh::root().join("target/release/sgctl")
}

pub fn run() -> anyhow::Result<()> {
    bootstrap::run()?;
    build_sgctl()
}

/// The build step alone, for tasks that have bootstrapped already.
pub fn build_sgctl() -> anyhow::Result<()> {
    sh::run(sh::cargo().args(["build", "--release", "-p", "firewall-ctl"]))?;
    sh::step("build", &format!("{} ready", sgctl_path().display()));
    Ok(())
}
