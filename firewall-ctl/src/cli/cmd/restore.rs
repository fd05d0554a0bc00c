//! `sgctl restore` and `sgctl confirm` (the protocol, and the rollback
//! helper `sgctl rollback`: `control::restore`).
use serde::Serialize;

use crate::{
    cli::{output::print_json, Global},
    control::{
        restore::{self, Restore},
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
    let Restore::Done { rolled_back, restored: done } = restore::restore(target, &global.place())? else {
        if json {
            print_json(&serde_json::json!({ "netns": target.scope.netns(), "restored": false }))?;
        } else {
            crate::outln!("{}: nothing saved to restore", target.scope);
        }
        return Ok(true);
    };
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

/// `sgctl confirm`.
pub fn confirm(target: &Target, json: bool) -> anyhow::Result<()> {
    let confirmed = restore::confirm(target)?;
    if json {
        return print_json(&serde_json::json!({ "netns": target.scope.netns(), "confirmed": confirmed }));
    }
    match confirmed {
        Some(generation) => {
            crate::outln!("{}: confirmed policy generation {generation}; no rollback", target.scope)
        }
        None => crate::outln!("{}: nothing awaits confirmation", target.scope),
    }
    Ok(())
}
