//! Putting a policy saved on disk back in force (`sgctl restore`, at boot),
//! and the rollback of an unconfirmed apply (`apply --confirm-within`).
//!
//! **Restore never leaves an interface unfiltered for the sake of another.**
//! Every saved interface that exists is attached; one whose ingress hook is
//! taken (another XDP program on it) gets tc instead and says so; one that
//! still cannot be attached is left out and reported, and the others are
//! filtered all the same ([`put_in_force`]).
//!
//! **The rollback is kept until `sgctl confirm`.** `apply --confirm-within`
//! records what was in force before it (`Pending::previous`) and a deadline
//! on `CLOCK_BOOTTIME` (monotonic, counting suspend; a step of the wall
//! clock does not move it), then starts a detached helper (`sgctl
//! rollback`, in a session of its own). Other changes before the deadline —
//! `attach`, `detach`, `members`, another `apply`, interfaces the agent
//! attaches — leave it armed. At the deadline the scope goes back to
//! exactly what was in force before the unconfirmed apply: its policy files,
//! its membership changes and its interfaces (those that exist; ones it
//! names that appeared since are attached); everything done in between is
//! undone with it. The helper does it; so does any `sgctl` that changes
//! state, and the agent, should they find the deadline passed first (the
//! helper was killed). After a reboot (another boot id) `restore` rolls
//! back instead of restoring.
use std::{
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;

use super::{commit, IfaceChange, Place, Target, Wanted};
use crate::{
    netns,
    state::{
        records::PolicyRecord,
        saved::{Pending, Saved},
    },
    timings::{unix_now, unix_now_ms},
};

/// The wall-clock second by which `left` from now has passed (rounded up:
/// a deadline shown is never earlier than the real one).
pub fn wall_deadline(left: Duration) -> u64 {
    (unix_now_ms() + left.as_millis() as u64).div_ceil(1000)
}

/// Milliseconds of `CLOCK_BOOTTIME`: since boot, suspend included.
pub fn boottime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map_or(0, |t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// How long until `pending` rolls back (zero once due).
pub fn time_left(pending: &Pending) -> Duration {
    if pending.boot_id.is_empty() {
        // Written by an sgctl before boot ids: the wall clock is all there is.
        return Duration::from_secs(pending.deadline.saturating_sub(unix_now()));
    }
    if pending.boot_id != boot_id() {
        return Duration::ZERO;
    }
    Duration::from_millis(pending.deadline_boottime_ms.saturating_sub(boottime_ms()))
}

/// Whether an unconfirmed apply of `target`'s scope is past its deadline.
pub fn is_due(target: &Target) -> anyhow::Result<bool> {
    Ok(target.lib.pending(&target.scope)?.is_some_and(|p| time_left(&p).is_zero()))
}

/// Under the state lock: rolls back an unconfirmed apply past its deadline
/// (see the module comment); returns what changed.
pub fn roll_back_if_due(target: &Target) -> anyhow::Result<Vec<IfaceChange>> {
    let Some(pending) = target.lib.pending(&target.scope)?.filter(|p| time_left(p).is_zero()) else {
        return Ok(Vec::new());
    };
    let restored = put_in_force(target, pending.previous.as_ref())?;
    target.lib.remove_pending(&target.scope)?;
    eprintln!(
        "sgctl: {}: generation {} was not confirmed by its deadline: the policy before it is back (generation {})",
        target.scope, pending.generation, restored.generation
    );
    Ok(restored.changes)
}

/// What [`put_in_force`] did.
pub struct Restored {
    pub generation: u64,
    pub changes: Vec<IfaceChange>,
    /// Saved interfaces now filtered.
    pub attached: Vec<String>,
    /// Saved interfaces that do not exist (yet).
    pub missing: Vec<String>,
    /// Saved interfaces that exist but could not be filtered, and why.
    pub failed: Vec<(String, String)>,
}

/// Puts `saved` in force in `target`'s scope (the process is in its
/// namespace): every saved interface that exists, each on the other hook if
/// its own is taken, those that still fail left out (and reported); keeps
/// the missing and failed ones in the saved state, so the next `restore`
/// (or the agent) attaches them.
pub fn put_in_force(target: &Target, saved: Option<&Saved>) -> anyhow::Result<Restored> {
    let sources = saved.map(|t| t.sources.clone()).unwrap_or_default();
    let record = PolicyRecord {
        member_edits: saved.map(|t| t.members.clone()).unwrap_or_default(),
        ..PolicyRecord::of(sources)
    };
    let parsed = record.parse()?;
    let (mut present, missing): (Vec<Wanted>, Vec<Wanted>) = saved
        .map(|t| t.interfaces.iter().map(Wanted::from).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .partition(|w| netns::ifindex(&w.ifname).is_some());
    let options = commit::Options { hook_fallback: true };
    let mut failed = Vec::new();
    let outcome = loop {
        match commit::commit_with(target, &record, &parsed, &present, options) {
            Ok(outcome) => break outcome,
            Err(e) => {
                let Some(ifname) = commit::failed_interface(&e).filter(|i| present.iter().any(|w| &w.ifname == i))
                else {
                    return Err(e);
                };
                eprintln!("sgctl: {}: {ifname} left unfiltered: {e:#}", target.scope);
                failed.push((ifname.clone(), format!("{e:#}")));
                present.retain(|w| w.ifname != ifname);
            }
        }
    };
    // The interfaces missing or failed now stay saved, for the next try.
    if let (Some(saved), Some(mut now)) = (saved, target.in_force()?) {
        let keep = |name: &str| missing.iter().any(|w| w.ifname == name) || failed.iter().any(|(f, _)| f == name);
        for i in saved.interfaces.iter().filter(|i| keep(&i.ifname)) {
            now.interfaces.push(i.clone());
        }
        target.lib.save_applied(&target.scope, &now)?;
    }
    Ok(Restored {
        generation: outcome.generation,
        changes: outcome.interfaces,
        attached: present.into_iter().map(|w| w.ifname).collect(),
        missing: missing.into_iter().map(|w| w.ifname).collect(),
        failed,
    })
}

/// What [`restore`] of one scope came to.
pub enum Restore {
    /// Nothing was saved, and nothing awaited a rollback.
    NothingSaved,
    /// What was put back: the policy saved, or (`rolled_back`) the one
    /// before an unconfirmed apply.
    Done { rolled_back: bool, restored: Restored },
}

/// `sgctl restore` of `target`'s scope: the policy saved on disk back in
/// force. An apply awaiting confirmation in this boot stays in force (and
/// armed: its helper may be gone, so one is started); one of an earlier
/// boot, or past its deadline, is rolled back.
pub fn restore(target: &Target, place: &Place) -> anyhow::Result<Restore> {
    let pending = target.lib.pending(&target.scope)?;
    let rolled_back = pending.as_ref().is_some_and(|p| time_left(p).is_zero());
    let to_restore = match &pending {
        Some(p) if rolled_back => p.previous.clone(),
        _ => target.lib.applied(&target.scope)?,
    };
    if to_restore.is_none() && !rolled_back {
        return Ok(Restore::NothingSaved);
    }
    let restored = put_in_force(target, to_restore.as_ref())?;
    match &pending {
        Some(_) if rolled_back => target.lib.remove_pending(&target.scope)?,
        Some(p) if p.helper_pid.is_none_or(|pid| !helper_alive(pid)) => {
            let pid = spawn_helper(place)?;
            target.lib.save_pending(&target.scope, &Pending { helper_pid: Some(pid), ..p.clone() })?;
        }
        _ => {}
    }
    Ok(Restore::Done { rolled_back, restored })
}

/// `sgctl confirm`: the unconfirmed apply stays; its rollback is dropped.
/// Returns the generation confirmed, if one awaited confirmation.
pub fn confirm(target: &Target) -> anyhow::Result<Option<u64>> {
    let pending = target.lib.pending(&target.scope)?;
    target.lib.remove_pending(&target.scope)?;
    Ok(pending.map(|p| p.generation))
}

/// `sgctl rollback`, the helper: waits for the deadline of the scope's
/// unconfirmed apply, then puts the policy before it back — unless it was
/// confirmed. Takes the state lock only at the deadline.
pub fn rollback_at_deadline(place: &Place) -> anyhow::Result<()> {
    let lib = crate::state::saved::LibDir::open(&place.lib_dir)?;
    if !wait_for_deadline(&lib, &place.scope())? {
        return Ok(()); // confirmed
    }
    let (target, _lock) = place.open(true)?;
    roll_back_if_due(&target)?;
    Ok(())
}

/// Starts the helper (`sgctl rollback`) for `place`'s scope in a session of
/// its own, detached from this process and its terminal.
fn spawn_helper(place: &Place) -> anyhow::Result<u32> {
    let mut cmd = Command::new(std::env::current_exe().context("finding the sgctl binary")?);
    cmd.arg("--state-dir").arg(&place.state_dir).arg("--lib-dir").arg(&place.lib_dir);
    if let Some(netns) = &place.netns {
        cmd.args(["-n", netns]);
    }
    cmd.arg("rollback").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches nothing of ours.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
    }
    Ok(cmd.spawn()?.id())
}

/// What is in force in `target`'s scope as the rollback point: the
/// interfaces filtered, and those saved that do not exist now.
fn snapshot(target: &Target) -> anyhow::Result<Option<Saved>> {
    let Some(mut now) = target.in_force()? else { return Ok(None) };
    if let Some(saved) = target.lib.applied_head(&target.scope)? {
        for i in saved.interfaces {
            if netns::ifindex(&i.ifname).is_none() && !now.interfaces.iter().any(|n| n.ifname == i.ifname) {
                now.interfaces.push(i);
            }
        }
    }
    Ok(Some(now))
}

/// `apply --confirm-within`, before the switch: records the rollback point
/// and makes sure a helper waits for the deadline. An apply while another
/// awaits confirmation keeps the older rollback point (the last policy
/// known to be good) and takes the new deadline. Returns the record made
/// and the one it replaced (for [`disarm`]).
pub fn arm(target: &Target, place: &Place, within: u64) -> anyhow::Result<Armed> {
    let older = target.lib.pending(&target.scope)?;
    let previous = match &older {
        Some(older) => older.previous.clone(),
        None => snapshot(target)?,
    };
    let mut pending = Pending {
        generation: target.active()?.map_or(0, |a| a.generation) + 1,
        deadline: wall_deadline(Duration::from_secs(within)),
        deadline_boottime_ms: boottime_ms() + within * 1000,
        boot_id: boot_id(),
        previous,
        helper_pid: older.as_ref().and_then(|o| o.helper_pid).filter(|pid| helper_alive(*pid)),
    };
    target.lib.save_pending(&target.scope, &pending)?;
    if pending.helper_pid.is_none() {
        pending.helper_pid = Some(spawn_helper(place).context("starting the rollback helper")?);
        target.lib.save_pending(&target.scope, &pending)?;
    }
    Ok(Armed { pending, older })
}

/// A rollback armed by [`arm`].
pub struct Armed {
    pub pending: Pending,
    /// The unconfirmed apply it took over from, if any.
    pub older: Option<Pending>,
}

/// An apply that armed a rollback failed or changed nothing: the record
/// goes back to what it was (the helper, which follows the record, exits
/// when there is none).
pub fn disarm(target: &Target, armed: &Armed) -> anyhow::Result<()> {
    match &armed.older {
        Some(older) => {
            let helper_pid = armed.pending.helper_pid.or(older.helper_pid);
            target.lib.save_pending(&target.scope, &Pending { helper_pid, ..older.clone() })
        }
        None => target.lib.remove_pending(&target.scope),
    }
}

/// Whether `pid` is a live `sgctl rollback` helper.
pub fn helper_alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == b"rollback"))
}

/// The helper: waits until the scope's unconfirmed apply is confirmed (its
/// record gone: returns) or due (returns `true`: the caller takes the lock
/// and rolls back). Looks at the record every 100 ms, and at
/// `CLOCK_BOOTTIME`, so neither a clock step nor a suspend moves the deadline.
pub fn wait_for_deadline(lib: &crate::state::saved::LibDir, scope: &crate::state::Scope) -> anyhow::Result<bool> {
    loop {
        let Some(pending) = lib.pending(scope)? else { return Ok(false) };
        let left = time_left(&pending);
        if left.is_zero() {
            return Ok(true);
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}
