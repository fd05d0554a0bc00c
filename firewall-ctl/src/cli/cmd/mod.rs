//! One module per verb. Each takes what it needs and prints its result,
//! as a table or (`--json`) one JSON document.
mod apply;
mod attach;
mod check;
mod completions;
mod conntrack;
mod doctor;
mod explain;
mod export;
mod flows;
mod import;
mod members;
mod publish;
mod restore;
mod stats;
mod status;
mod trace;

use std::time::Duration;

use crate::{
    cli::{Cli, Command, ConntrackAction, Global, StatsFormat},
    control::{self, Target},
    netns,
    state::Scope,
};

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let global = &cli.global;
    if let Command::Check { files } = &cli.command {
        // Needs no privilege, unless it must look into another namespace.
        if let Some(name) = &global.netns {
            netns::enter(name)?;
        }
        return check::run(files, global.max_kernel_memory, global.json);
    }
    // Verbs that work on files and text only: no privilege, no state.
    match &cli.command {
        Command::Import { from } => return import::run(from, global.json),
        Command::Completions { shell, dynamic } => return completions::completions(*shell, *dynamic),
        Command::ManPages { out_dir } => return completions::man_pages(out_dir),
        // Reads the agent's log file: whoever may read the file may run it.
        Command::Flows(args) => return flows::run(args, global.json),
        // Talks to etcd only: whoever holds the credentials may run it.
        Command::Publish { files, etcd } => return publish::run(files, etcd, global.json),
        _ => {}
    }
    if let Command::Doctor = &cli.command {
        // Reports, and probes only in a network namespace of its own: no
        // privilege needed to run it (the probes say what lacking one costs).
        if let Some(name) = &global.netns {
            netns::enter(name)?;
        }
        return doctor::run(&global.state_dir, global.json);
    }
    if let Command::Export { format } = &cli.command {
        // Reads the namespace's interface addresses (for `sg:` members) only.
        if let Some(name) = &global.netns {
            netns::enter(name)?;
        }
        return export::run(format, global.json);
    }
    super::privilege::require(verb_name(&cli.command))?;
    match &cli.command {
        // Waits for its deadline first, and takes the lock only then.
        Command::Rollback => {
            if let Some(name) = &global.netns {
                netns::enter(name)?;
            }
            return control::restore::rollback_at_deadline(&global.place());
        }
        Command::Restore { all: true } => return restore_all(global),
        // Binds its socket before entering the namespace.
        Command::Agent(args) => return crate::agent::run(&global.place(), args),
        _ => {}
    }
    if let Some(name) = &global.netns {
        netns::enter(name)?;
    }
    if attaches(&cli.command) {
        // A kernel sgctl cannot filter with is refused before anything changes.
        crate::datapath::kernel::require()?;
    }
    let (target, _lock) = global.place().open(changes_state(&cli.command))?;
    if changes_state(&cli.command) && !matches!(cli.command, Command::Restore { .. }) {
        // An unconfirmed apply past its deadline (its helper killed) is
        // rolled back before anything else changes.
        for change in control::restore::roll_back_if_due(&target)? {
            eprintln!("sgctl: {change}");
        }
    }
    let json = global.json;
    match cli.command {
        Command::Check { .. }
        | Command::Rollback
        | Command::Import { .. }
        | Command::Completions { .. }
        | Command::ManPages { .. }
        | Command::Export { .. }
        | Command::Doctor
        | Command::Agent(_)
        | Command::Publish { .. }
        | Command::Flows(_) => unreachable!("handled above"),
        Command::Trace(args) => trace::run(&target, &args, json),
        Command::Apply { files, dry_run, confirm_within, allow_missing } => {
            apply::run(&target, global, &files, apply::Options { dry_run, confirm_within, allow_missing })
        }
        Command::Confirm => restore::confirm(&target, json),
        Command::Restore { .. } => {
            let complete = restore::restore(&target, global, json)?;
            anyhow::ensure!(complete, PartialRestore(vec![target.scope.to_string()]));
            Ok(())
        }
        Command::Attach { iface, groups, mode } => attach::attach(&target, &iface, &groups, mode, json),
        Command::Detach { iface } => attach::detach(&target, &iface, json),
        Command::Members { action } => members::run(&target, &action, json),
        Command::Status => status::run(&targets_in_view(global, &target)?, json, Duration::from_secs(global.wait)),
        Command::Stats { watch, format } => {
            let format = format.unwrap_or(if json { StatsFormat::Json } else { StatsFormat::Table });
            stats::run(&targets_in_view(global, &target)?, watch, format)
        }
        Command::Conntrack { action } => conntrack::run(&targets_in_view(global, &target)?, &action, json),
        Command::Explain(args) => explain::run(&target, &args, json),
    }
}

/// `sgctl restore --all`: the initial network namespace, then every named namespace with a
/// saved policy that exists now (the others are reported).
fn restore_all(global: &Global) -> anyhow::Result<()> {
    let (target, _lock) = global.place().open(true)?;
    let home = std::fs::File::open("/proc/self/ns/net")?;
    let (mut failed, mut partial) = (Vec::new(), Vec::new());
    for scope in target.lib.scopes()? {
        if let Scope::Netns(name) = &scope {
            if netns::enter(name).is_err() {
                eprintln!(
                    "sgctl: netns {name} does not exist (yet): its policy is restored when `sgctl restore` runs again"
                );
                continue;
            }
        }
        let here = Target { scope: scope.clone(), ..target.clone() };
        match restore::restore(&here, global, global.json) {
            Ok(true) => {}
            Ok(false) => partial.push(scope.to_string()),
            Err(e) => {
                eprintln!("sgctl: restoring {scope}: {e:#}");
                failed.push(scope.to_string());
            }
        }
        nix::sched::setns(&home, nix::sched::CloneFlags::CLONE_NEWNET)?;
    }
    anyhow::ensure!(failed.is_empty(), "could not restore {}", failed.join(", "));
    anyhow::ensure!(partial.is_empty(), PartialRestore(partial));
    Ok(())
}

/// A restore that left interfaces that exist unfiltered.
#[derive(Debug)]
struct PartialRestore(Vec<String>);

impl std::fmt::Display for PartialRestore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "partial restore ({}): interfaces that exist were left unfiltered (above); `sgctl status` lists them",
            self.0.join(", ")
        )
    }
}

/// The scopes a verb covers: the one `-n` names, else all.
fn targets_in_view(global: &Global, target: &Target) -> anyhow::Result<Vec<Target>> {
    let at = |scope| Target { scope, ..target.clone() };
    if global.netns.is_some() {
        return Ok(vec![at(target.scope.clone())]);
    }
    Ok(target.state.scopes()?.into_iter().map(at).collect())
}

/// Whether the verb may put programs on hooks (and so needs the kernel to
/// have what sgctl needs): `detach` and reports never do.
fn attaches(command: &Command) -> bool {
    match command {
        Command::Apply { dry_run, .. } => !dry_run,
        Command::Attach { .. } | Command::Members { .. } | Command::Restore { .. } | Command::Rollback => true,
        _ => false,
    }
}

fn changes_state(command: &Command) -> bool {
    match command {
        Command::Apply { dry_run, .. } => !dry_run,
        Command::Conntrack { action } => !matches!(action, ConntrackAction::List),
        Command::Attach { .. }
        | Command::Detach { .. }
        | Command::Members { .. }
        | Command::Confirm
        | Command::Restore { .. }
        | Command::Rollback => true,
        Command::Agent(_) => false,
        Command::Check { .. }
        | Command::Flows(_)
        | Command::Trace(_)
        | Command::Status
        | Command::Doctor
        | Command::Stats { .. }
        | Command::Explain(_)
        | Command::Import { .. }
        | Command::Completions { .. }
        | Command::ManPages { .. }
        | Command::Export { .. }
        | Command::Publish { .. } => false,
    }
}

fn verb_name(command: &Command) -> &'static str {
    match command {
        Command::Check { .. } => "check",
        Command::Apply { .. } => "apply",
        Command::Confirm => "confirm",
        Command::Restore { .. } => "restore",
        Command::Rollback => "rollback",
        Command::Attach { .. } => "attach",
        Command::Detach { .. } => "detach",
        Command::Members { .. } => "members",
        Command::Status => "status",
        Command::Doctor => "doctor",
        Command::Agent(_) => "agent",
        Command::Flows(_) => "flows",
        Command::Trace(_) => "trace",
        Command::Stats { .. } => "stats",
        Command::Conntrack { .. } => "conntrack",
        Command::Explain(_) => "explain",
        Command::Import { .. } => "import",
        Command::Completions { .. } => "completions",
        Command::ManPages { .. } => "man-pages",
        Command::Export { .. } => "export",
        Command::Publish { .. } => "publish",
    }
}
