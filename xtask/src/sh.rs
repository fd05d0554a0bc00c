//! Running commands, and where things are.
use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use anyhow::{bail, Context as _};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
}

/// `cargo`: the one that runs us if cargo started us, else from PATH.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Describes a command for error messages: program and arguments.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited stdio; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let what = describe(cmd);
    let status = cmd.status().with_context(|| format!("cannot start `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` capturing its output, whatever its exit status.
pub fn output(cmd: &mut Command) -> anyhow::Result<Output> {
    let what = describe(cmd);
    cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot start `{what}`"))
}

/// Runs `cmd`; its stdout as text if it exits 0, else an error with its stderr.
pub fn stdout(cmd: &mut Command) -> anyhow::Result<String> {
    let what = describe(cmd);
    let out = output(cmd)?;
    if !out.status.success() {
        bail!("`{what}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails with a clear message unless we run as root.
pub fn require_root(task: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "`cargo xtask {task}` must run as root: it installs packages and its tests create \
             network namespaces and load eBPF programs"
        );
    }
    Ok(())
}

/// One line per step, in one format.
pub fn step(what: &str, state: &str) {
    println!("[xtask] {what}: {state}");
}
