//! Entering a named network namespace, and running `ip`.
use std::{
    fs::File,
    io,
    process::{Command, Output, Stdio},
};

use anyhow::{bail, Context as _};
use nix::sched::{setns, CloneFlags};

/// Moves the calling thread into the namespace `ip netns add NAME` made.
/// Only the thread changes; sockets it creates afterwards belong to `NAME`.
pub(crate) fn enter(name: &str) -> io::Result<()> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    setns(file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Runs a command with no stdin, returning its output whatever its status.
pub(crate) fn output(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{program}` (is it installed? `cargo xtask bootstrap` installs it)"))
}

/// Runs `ip ARGS…`; fails with the command and its stderr unless it exits 0.
pub(crate) fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = output("ip", args)?;
    if !out.status.success() {
        bail!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
