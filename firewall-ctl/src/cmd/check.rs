//! `sgctl check FILE...`: everything `apply` does short of the kernel.
use std::path::PathBuf;

use serde::Serialize;

use crate::{
    compile,
    control::{self, Wanted},
    netns, policy,
};

#[derive(Serialize)]
struct Summary {
    files: Vec<String>,
    groups: usize,
    rules: usize,
    map_entries: usize,
    interfaces: Vec<IfaceSummary>,
}

#[derive(Serialize)]
struct IfaceSummary {
    interface: String,
    groups: Vec<String>,
    rules: usize,
    map_entries: usize,
}

pub fn run(files: &[PathBuf], json: bool) -> anyhow::Result<()> {
    let policy = policy::load_files(files)?;
    policy::check_interfaces(&policy, |name| netns::ifindex(name).is_some())?;
    let wanted = Wanted::from_policy(&policy);
    // Each interface compiled once, with the addresses of the local
    // interfaces its groups are attached to; errors located at its entry.
    let local = control::local_members(&wanted)?;
    let compiled = wanted
        .iter()
        .map(|w| {
            compile::compile_interface(&policy, &w.groups, &local)
                .map_err(|e| compile::locate(&policy, e.on_interface(&w.ifname)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let summary = Summary {
        files: files.iter().map(|f| f.display().to_string()).collect(),
        groups: policy.groups.len(),
        rules: policy.groups.iter().map(|g| g.inbound.len() + g.outbound.len()).sum(),
        map_entries: compiled.iter().map(compile::CompiledInterface::map_entries).sum(),
        interfaces: wanted
            .iter()
            .zip(&compiled)
            .map(|(w, c)| IfaceSummary {
                interface: w.ifname.clone(),
                groups: w.groups.clone(),
                rules: c.rules.len(),
                map_entries: c.map_entries(),
            })
            .collect(),
    };
    if json {
        return crate::output::print_json(&summary);
    }
    crate::outln!(
        "ok: {} groups, {} rules, {} map entries ({})",
        summary.groups,
        summary.rules,
        summary.map_entries,
        summary.files.join(", ")
    );
    for i in &summary.interfaces {
        crate::outln!("  {}: {} → {} rules, {} map entries", i.interface, i.groups.join(","), i.rules, i.map_entries);
    }
    Ok(())
}
