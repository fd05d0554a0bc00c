//! `sgctl check FILE...`: everything `apply` does short of the kernel,
//! and the kernel memory the policy would take.
use std::path::PathBuf;

use serde::Serialize;

use crate::{
    compile,
    control::{self, Wanted},
    datapath::memory::{self, human, Estimate, Limit},
    netns, policy,
};

#[derive(Serialize)]
struct Summary {
    files: Vec<String>,
    groups: usize,
    rules: usize,
    map_entries: usize,
    interfaces: Vec<IfaceSummary>,
    kernel_memory: MemorySummary,
}

#[derive(Serialize)]
struct IfaceSummary {
    interface: String,
    groups: Vec<String>,
    rules: usize,
    map_entries: usize,
    /// Bytes of kernel memory its maps take once in force.
    kernel_memory: u64,
}

/// The kernel memory of the policy's maps (docs/cli.md, "Kernel memory").
#[derive(Serialize)]
pub struct MemorySummary {
    /// Bytes once in force.
    pub resident: u64,
    /// Bytes while a change to it is put in force (a second generation of its policy maps).
    pub peak: u64,
    /// Bytes the kernel accounts (the sum of the maps' `memlock`).
    pub accounted: u64,
    /// The limit `peak` is held to, in bytes.
    pub limit: u64,
    /// Every map, per interface and for the scope.
    pub detail: Estimate,
}

impl MemorySummary {
    pub fn new(detail: Estimate, limit: Limit) -> Self {
        Self { resident: detail.resident, peak: detail.peak, accounted: detail.accounted, limit: limit.bytes(), detail }
    }

    /// `kernel memory: 1.2 MiB once in force, 2.0 MiB while put in force (limit 6.0 GiB)`.
    pub fn line(&self) -> String {
        format!(
            "kernel memory: {} once in force, {} while put in force (limit {})",
            human(self.resident),
            human(self.peak),
            human(self.limit)
        )
    }
}

pub fn run(files: &[PathBuf], limit: Limit, json: bool) -> anyhow::Result<()> {
    let sources = policy::read_files(files)?;
    let policy = policy::parse_sources(&sources)?;
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
    let texts: Vec<(&str, &str)> = sources.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    let estimate = control::estimate_fresh(&texts, &policy, &wanted, &compiled)?;
    memory::check(&estimate, limit)?;
    let summary = Summary {
        files: files.iter().map(|f| f.display().to_string()).collect(),
        groups: policy.groups.len(),
        rules: policy.groups.iter().map(|g| g.inbound.len() + g.outbound.len()).sum(),
        map_entries: compiled.iter().map(compile::CompiledInterface::map_entries).sum(),
        interfaces: wanted
            .iter()
            .zip(&compiled)
            .zip(&estimate.interfaces)
            .map(|((w, c), m)| IfaceSummary {
                interface: w.ifname.clone(),
                groups: w.groups.clone(),
                rules: c.rules.len(),
                map_entries: c.map_entries(),
                kernel_memory: m.resident(),
            })
            .collect(),
        kernel_memory: MemorySummary::new(estimate, limit),
    };
    if json {
        return crate::cli::output::print_json(&summary);
    }
    crate::outln!(
        "ok: {} groups, {} rules, {} map entries ({})",
        summary.groups,
        summary.rules,
        summary.map_entries,
        summary.files.join(", ")
    );
    for i in &summary.interfaces {
        crate::outln!(
            "  {}: {} → {} rules, {} map entries, {} of kernel memory",
            i.interface,
            i.groups.join(","),
            i.rules,
            i.map_entries,
            human(i.kernel_memory)
        );
    }
    crate::outln!("{}", summary.kernel_memory.line());
    Ok(())
}
