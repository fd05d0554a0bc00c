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
    let whole = compile::summarize_located(&policy)?;
    let wanted = Wanted::from_policy(&policy);
    let compiled = control::compile_all(&policy, &wanted)?;
    let summary = Summary {
        files: files.iter().map(|f| f.display().to_string()).collect(),
        groups: whole.groups,
        rules: whole.rules,
        map_entries: whole.map_entries,
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
