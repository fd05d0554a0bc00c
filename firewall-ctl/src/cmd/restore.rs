//! `sgctl restore`, `sgctl confirm`, and the rollback of an unconfirmed
//! apply: everything that puts a policy saved on disk back in force.
//!
//! `apply --confirm-within SECS` saves what was in force before, then
//! starts a detached `sgctl rollback` (its own session, so neither a kill
//! of the applying `sgctl` nor a closed terminal stops it) before it
//! switches. At the deadline the helper puts the saved policy back, unless
//! `sgctl confirm` removed the pending record first. If the machine
//! reboots meanwhile, `sgctl restore` rolls back instead of restoring.
use std::{
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    cli::Global,
    control::{commit, Target, Wanted},
    netns,
    output::print_json,
    saved::{Pending, Saved},
    state::records::PolicyRecord,
};

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[derive(Serialize)]
struct Restored {
    netns: Option<String>,
    generation: u64,
    /// The policy put back was the one before an unconfirmed apply.
    rolled_back: bool,
    attached: Vec<String>,
    /// Interfaces the saved policy names that do not exist (yet): `sgctl
    /// restore` attaches them when run again.
    missing: Vec<String>,
}

/// Puts `saved` in force in `target`'s scope (the process is in its
/// namespace), leaving out interfaces that do not exist.
fn put_in_force(target: &Target, saved: Option<&Saved>) -> anyhow::Result<(u64, Vec<String>, Vec<String>)> {
    let sources = saved.map(|t| t.sources.clone()).unwrap_or_default();
    let record = PolicyRecord {
        member_edits: saved.map(|t| t.members.clone()).unwrap_or_default(),
        ..PolicyRecord::of(sources)
    };
    let parsed = record.parse()?;
    let (present, missing): (Vec<Wanted>, Vec<Wanted>) = saved
        .map(|t| t.interfaces.iter().map(Wanted::from).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .partition(|w| netns::ifindex(&w.ifname).is_some());
    let outcome = commit::commit(target, &record, &parsed, &present)?;
    Ok((
        outcome.generation,
        present.into_iter().map(|w| w.ifname).collect(),
        missing.into_iter().map(|w| w.ifname).collect(),
    ))
}

/// `sgctl restore`: the saved policy of `target`'s scope, or, when an apply
/// was left unconfirmed, the policy before it.
pub fn restore(target: &Target, json: bool) -> anyhow::Result<()> {
    let pending = target.lib.pending(&target.scope)?;
    let applied = target.lib.applied(&target.scope)?;
    let (to_restore, rolled_back) = match &pending {
        Some(p) => (p.previous.as_ref(), true),
        None => (applied.as_ref(), false),
    };
    if to_restore.is_none() && !rolled_back {
        if json {
            return print_json(&serde_json::json!({ "netns": target.scope.netns(), "restored": false }));
        }
        crate::outln!("{}: nothing saved to restore", target.scope);
        return Ok(());
    }
    let (generation, attached, missing) = put_in_force(target, to_restore)?;
    if rolled_back {
        target.lib.remove_pending(&target.scope)?;
    }
    // Keep the interfaces that are missing now in the saved state, so the
    // next `restore` attaches them.
    if let (Some(saved), Some(mut now)) = (to_restore, target.in_force()?) {
        for i in saved.interfaces.iter().filter(|i| missing.contains(&i.ifname)) {
            now.interfaces.push(i.clone());
        }
        target.lib.save_applied(&target.scope, &now)?;
    }
    let report =
        Restored { netns: target.scope.netns().map(str::to_owned), generation, rolled_back, attached, missing };
    if json {
        return print_json(&report);
    }
    let what = if report.rolled_back { "rolled back an unconfirmed apply: restored" } else { "restored" };
    crate::outln!("{}: {what} policy generation {}", target.scope, report.generation);
    for name in &report.attached {
        crate::outln!("  {name}: filtered");
    }
    for name in &report.missing {
        crate::outln!("  {name}: does not exist (yet); `sgctl restore` again attaches it");
    }
    Ok(())
}

/// `apply --confirm-within`, before the switch: saves the rollback point
/// and starts the helper that rolls back at the deadline. An apply while
/// another awaits confirmation keeps the older rollback point (the last
/// policy known to be good).
pub fn arm_rollback(target: &Target, global: &Global, within: u64) -> anyhow::Result<Pending> {
    let generation = target.active()?.map_or(0, |a| a.generation) + 1;
    let previous = match target.lib.pending(&target.scope)? {
        Some(older) => older.previous,
        None => target.in_force()?,
    };
    let mut pending = Pending { generation, deadline: unix_now() + within, previous, helper_pid: None };
    target.lib.save_pending(&target.scope, &pending)?;
    let helper = spawn_helper(global, generation, pending.deadline).context("starting the rollback helper")?;
    pending.helper_pid = Some(helper);
    target.lib.save_pending(&target.scope, &pending)?;
    Ok(pending)
}

/// Starts `sgctl rollback` in a session of its own, detached from this
/// process and its terminal.
fn spawn_helper(global: &Global, generation: u64, deadline: u64) -> anyhow::Result<u32> {
    let mut cmd = Command::new(std::env::current_exe().context("finding the sgctl binary")?);
    cmd.arg("--state-dir").arg(&global.state_dir).arg("--lib-dir").arg(&global.lib_dir);
    if let Some(netns) = &global.netns {
        cmd.args(["-n", netns]);
    }
    cmd.args(["rollback", "--generation", &generation.to_string(), "--deadline", &deadline.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches nothing of ours.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
    }
    Ok(cmd.spawn()?.id())
}

/// `sgctl rollback`: waits for the deadline, then puts the policy before
/// the unconfirmed apply back — unless it was confirmed, or never switched.
/// Takes the state lock only at the deadline.
pub fn rollback_at_deadline(global: &Global, generation: u64, deadline: u64) -> anyhow::Result<()> {
    let lib = crate::saved::LibDir::new(&global.lib_dir);
    let scope = super::scope_of(global);
    while unix_now() < deadline {
        if lib.pending(&scope)?.is_none_or(|p| p.generation != generation) {
            return Ok(()); // confirmed, or superseded
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (target, _lock) = super::open_target(global, true)?;
    let Some(pending) = target.lib.pending(&target.scope)?.filter(|p| p.generation == generation) else {
        return Ok(());
    };
    if target.active()?.map_or(0, |a| a.generation) == generation {
        put_in_force(&target, pending.previous.as_ref())?;
    }
    // Else the apply never switched (it was killed first): nothing to undo.
    target.lib.remove_pending(&target.scope)
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

/// The rollback point recorded when an unconfirmed apply changed nothing
/// or failed: forget it (the helper sees it gone and exits).
pub fn disarm(target: &Target, generation: u64) -> anyhow::Result<()> {
    if target.lib.pending(&target.scope)?.is_some_and(|p| p.generation == generation) {
        target.lib.remove_pending(&target.scope)?;
    }
    Ok(())
}
