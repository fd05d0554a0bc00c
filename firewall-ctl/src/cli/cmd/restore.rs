//! `sgctl restore`, `sgctl confirm`, and the rollback helper of an
//! unconfirmed apply (the machinery: `control::restore`).
use std::{
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    cli::{output::print_json, Global},
    control::{
        restore::{self, Armed},
        Target,
    },
};

#[derive(Serialize)]
struct Restored {
    netns: Option<String>,
    generation: u64,
    /// The policy put back was the one before an unconfirmed apply.
    rolled_back: bool,
    attached: Vec<String>,
    /// Interfaces the saved policy names that do not exist (yet): `sgctl
    /// restore` (or the agent) attaches them when they appear.
    missing: Vec<String>,
    /// Interfaces that exist but could not be filtered, and why.
    failed: Vec<Failed>,
}

#[derive(Serialize)]
struct Failed {
    interface: String,
    error: String,
}

/// What `sgctl restore` of one scope came to: `Ok(false)` when an
/// interface that exists was left unfiltered (a partial restore).
pub fn restore(target: &Target, global: &Global, json: bool) -> anyhow::Result<bool> {
    let pending = target.lib.pending(&target.scope)?;
    // An apply awaiting confirmation in this boot stays in force (and armed:
    // its helper may be gone, so one is started); one of an earlier boot,
    // or past its deadline, is rolled back.
    let rolled_back = pending.as_ref().is_some_and(|p| restore::time_left(p).is_zero());
    let to_restore = match &pending {
        Some(p) if rolled_back => p.previous.clone(),
        _ => target.lib.applied(&target.scope)?,
    };
    if to_restore.is_none() && !rolled_back {
        if json {
            print_json(&serde_json::json!({ "netns": target.scope.netns(), "restored": false }))?;
        } else {
            crate::outln!("{}: nothing saved to restore", target.scope);
        }
        return Ok(true);
    }
    let done = restore::put_in_force(target, to_restore.as_ref())?;
    match &pending {
        Some(_) if rolled_back => target.lib.remove_pending(&target.scope)?,
        Some(p) if p.helper_pid.is_none_or(|pid| !restore::helper_alive(pid)) => {
            let pid = spawn_helper(global)?;
            target
                .lib
                .save_pending(&target.scope, &crate::state::saved::Pending { helper_pid: Some(pid), ..p.clone() })?;
        }
        _ => {}
    }
    let complete = done.failed.is_empty();
    let report = Restored {
        netns: target.scope.netns().map(str::to_owned),
        generation: done.generation,
        rolled_back,
        attached: done.attached,
        missing: done.missing,
        failed: done.failed.into_iter().map(|(interface, error)| Failed { interface, error }).collect(),
    };
    if json {
        print_json(&report)?;
        return Ok(complete);
    }
    let what = if report.rolled_back { "rolled back an unconfirmed apply: restored" } else { "restored" };
    crate::outln!("{}: {what} policy generation {}", target.scope, report.generation);
    for name in &report.attached {
        crate::outln!("  {name}: filtered");
    }
    for name in &report.missing {
        crate::outln!("  {name}: does not exist (yet); attached when it appears (`sgctl agent`, or `sgctl restore`)");
    }
    for f in &report.failed {
        crate::outln!("  {}: NOT FILTERED: {}", f.interface, f.error);
    }
    Ok(complete)
}

/// `apply --confirm-within`, before the switch: arms the rollback (see
/// `control::restore`).
pub fn arm_rollback(target: &Target, global: &Global, within: u64) -> anyhow::Result<Armed> {
    restore::arm(target, || spawn_helper(global), within)
}

/// Starts `sgctl rollback` in a session of its own, detached from this
/// process and its terminal.
fn spawn_helper(global: &Global) -> anyhow::Result<u32> {
    let mut cmd = Command::new(std::env::current_exe().context("finding the sgctl binary")?);
    cmd.arg("--state-dir").arg(&global.state_dir).arg("--lib-dir").arg(&global.lib_dir);
    if let Some(netns) = &global.netns {
        cmd.args(["-n", netns]);
    }
    cmd.arg("rollback").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches nothing of ours.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
    }
    Ok(cmd.spawn()?.id())
}

/// `sgctl rollback`: waits for the deadline of the scope's unconfirmed
/// apply, then puts the policy before it back — unless it was confirmed.
/// Takes the state lock only at the deadline.
pub fn rollback_at_deadline(global: &Global) -> anyhow::Result<()> {
    let lib = crate::state::saved::LibDir::open(&global.lib_dir)?;
    if !restore::wait_for_deadline(&lib, &global.place().scope())? {
        return Ok(()); // confirmed
    }
    let (target, _lock) = global.place().open(true)?;
    restore::roll_back_if_due(&target)?;
    Ok(())
}

/// `sgctl confirm`.
pub fn confirm(target: &Target, json: bool) -> anyhow::Result<()> {
    let pending = target.lib.pending(&target.scope)?;
    target.lib.remove_pending(&target.scope)?;
    if json {
        return print_json(&serde_json::json!({
            "netns": target.scope.netns(),
            "confirmed": pending.as_ref().map(|p| p.generation),
        }));
    }
    match pending {
        Some(p) => crate::outln!("{}: confirmed policy generation {}; no rollback", target.scope, p.generation),
        None => crate::outln!("{}: nothing awaits confirmation", target.scope),
    }
    Ok(())
}

/// The rollback armed by an apply that changed nothing or failed: back to
/// what it was.
pub fn disarm(target: &Target, armed: &Armed) -> anyhow::Result<()> {
    restore::disarm(target, armed)
}
