//! What the dynamic shell completions (`sgctl completions SHELL --dynamic`)
//! offer beyond the command line's own words: interface names, and the group
//! names of the applied policies. Each completer is cheap and never fails:
//! what it cannot read (no privilege to open pinned state, nothing applied)
//! it simply does not offer, and it changes nothing.

use std::{ffi::OsStr, path::Path};

use clap_complete::CompletionCandidate;

use crate::{
    control::Target,
    state::{StateDir, DEFAULT_STATE_DIR},
};

/// The environment variable that turns a run of `sgctl` into a completion
/// request. Not clap's default `COMPLETE`, which other programs' settings
/// could leave in the environment of a script that runs `sgctl`.
pub const ENV_VAR: &str = "SGCTL_COMPLETE";

/// Interfaces of the current network namespace starting with `current`.
pub fn interface(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(current.as_ref()))
        .collect();
    names.sort();
    names.into_iter().map(CompletionCandidate::new).collect()
}

/// Group names of the applied policies starting with `current`. For
/// `--groups A,B,…` clap_complete splits at the commas itself and passes
/// only the last name.
pub fn group(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    applied_groups().into_iter().filter(|g| g.starts_with(current.as_ref())).map(CompletionCandidate::new).collect()
}

/// Group names of every applied policy in the state directory (all scopes).
fn applied_groups() -> Vec<String> {
    let root = std::env::var_os("SGCTL_STATE_DIR").unwrap_or_else(|| DEFAULT_STATE_DIR.into());
    // Read-only: completing never creates or mounts anything.
    let Ok(state) = StateDir::open_read_only(Path::new(&root)) else { return Vec::new() };
    let mut names: Vec<String> = state
        .scopes()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|scope| {
            let lib = crate::state::saved::LibDir::new(Path::new(crate::state::saved::DEFAULT_LIB_DIR));
            Target { state: state.clone(), lib, scope, memory_limit: Default::default() }.parsed_policy().ok().flatten()
        })
        .flat_map(|(_, policy)| policy.groups.into_iter().map(|g| g.name))
        .collect();
    names.sort();
    names.dedup();
    names
}
