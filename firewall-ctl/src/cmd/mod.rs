//! One module per verb. Each takes what it needs and prints its result,
//! as a table or (`--json`) one JSON document.
mod apply;
mod attach;
mod check;
mod conntrack;
mod explain;
mod export;
mod stats;
mod status;

use crate::{
    cli::{Cli, Command, ConntrackAction, Global},
    control::Host,
    netns, privilege,
    state::{Scope, StateDir},
};

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let global = &cli.global;
    if let Command::Check { files } = &cli.command {
        // Needs no privilege, unless it must look into another namespace.
        if let Some(name) = &global.netns {
            netns::enter(name)?;
        }
        return check::run(files, global.json);
    }
    if let Command::Export { format } = &cli.command {
        // Reads the namespace's interface addresses (for `sg:` members) only.
        if let Some(name) = &global.netns {
            netns::enter(name)?;
        }
        return export::run(format, global.json);
    }
    privilege::require(verb_name(&cli.command))?;
    if let Some(name) = &global.netns {
        netns::enter(name)?;
    }
    let state = StateDir::open(&global.state_dir)?;
    // Verbs that change state take the directory for themselves; reports
    // read maps and records that are replaced whole, so they need no lock.
    let _lock = if changes_state(&cli.command) { Some(state.lock()?) } else { None };
    let scope = global.netns.clone().map_or(Scope::Host, Scope::Netns);
    let host = Host { state, scope };
    let json = global.json;
    match cli.command {
        Command::Check { .. } | Command::Export { .. } => unreachable!("handled above"),
        Command::Apply { files, dry_run } => apply::run(&host, &files, dry_run, json),
        Command::Attach { iface, groups, mode } => attach::attach(&host, &iface, &groups, mode, json),
        Command::Detach { iface } => attach::detach(&host, &iface, json),
        Command::Status => status::run(&hosts_in_view(global, &host)?, json),
        Command::Stats { watch } => stats::run(&hosts_in_view(global, &host)?, watch, json),
        Command::Conntrack { action } => conntrack::run(&hosts_in_view(global, &host)?, &action, json),
        Command::Explain(args) => explain::run(&host, &args, json),
    }
}

/// The scopes a reporting verb covers: the one `-n` names, else all (after
/// dropping the state of namespaces that were deleted).
fn hosts_in_view(global: &Global, host: &Host) -> anyhow::Result<Vec<Host>> {
    if global.netns.is_some() {
        return Ok(vec![Host { state: host.state.clone(), scope: host.scope.clone() }]);
    }
    for scope in host.state.prune_vanished_scopes()? {
        eprintln!("sgctl: removed the state of {scope}: the namespace no longer exists");
    }
    Ok(host.state.scopes()?.into_iter().map(|scope| Host { state: host.state.clone(), scope }).collect())
}

fn changes_state(command: &Command) -> bool {
    match command {
        Command::Apply { dry_run, .. } => !dry_run,
        Command::Conntrack { action } => !matches!(action, ConntrackAction::List),
        Command::Attach { .. } | Command::Detach { .. } => true,
        Command::Check { .. }
        | Command::Status
        | Command::Stats { .. }
        | Command::Explain(_)
        | Command::Export { .. } => false,
    }
}

fn verb_name(command: &Command) -> &'static str {
    match command {
        Command::Check { .. } => "check",
        Command::Apply { .. } => "apply",
        Command::Attach { .. } => "attach",
        Command::Detach { .. } => "detach",
        Command::Status => "status",
        Command::Stats { .. } => "stats",
        Command::Conntrack { .. } => "conntrack",
        Command::Explain(_) => "explain",
        Command::Export { .. } => "export",
    }
}
