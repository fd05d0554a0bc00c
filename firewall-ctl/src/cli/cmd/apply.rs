//! `sgctl apply FILE... [--dry-run]`.
use std::{collections::BTreeMap, path::PathBuf};

use serde::Serialize;

use super::check::MemorySummary;
use crate::{
    cli::output::{print_json, table},
    control::{self, commit, IfaceChange, Target, Wanted},
    netns,
    policy::{self, Policy},
    state::records::{Origin, PolicyRecord, PolicySummary, Source},
};

#[derive(Serialize)]
struct Report {
    netns: Option<String>,
    generation: u64,
    dry_run: bool,
    /// False when the files and interfaces are exactly what is in force:
    /// nothing was written (same generation, counters and flows untouched).
    changed: bool,
    groups: Vec<GroupChange>,
    interfaces: Vec<IfaceChange>,
    /// Microseconds the switch took (the `ACTIVE` write and one grace period).
    switch_micros: u128,
    /// With `--confirm-within`: the deadline (seconds since the Unix epoch)
    /// for `sgctl confirm`, after which the previous policy comes back.
    #[serde(skip_serializing_if = "Option::is_none")]
    confirm_by: Option<u64>,
    /// Without `--confirm-within` while an earlier apply awaits
    /// confirmation: that apply's generation, whose rollback (to the policy
    /// before it) is still armed.
    #[serde(skip_serializing_if = "Option::is_none")]
    still_armed: Option<u64>,
    /// What the policy's maps take in the kernel (absent when nothing changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel_memory: Option<MemorySummary>,
    /// With `--allow-missing`: interfaces the files name that do not exist;
    /// saved with the policy and attached when they appear.
    missing: Vec<String>,
}

#[derive(Serialize)]
struct GroupChange {
    group: String,
    rules_added: usize,
    rules_removed: usize,
}

/// The flags of `sgctl apply`.
pub struct Options {
    pub dry_run: bool,
    pub confirm_within: Option<u64>,
    /// Interfaces named but missing are saved, not refused.
    pub allow_missing: bool,
}

pub fn run(target: &Target, global: &crate::cli::Global, files: &[PathBuf], options: Options) -> anyhow::Result<()> {
    let Options { dry_run, confirm_within, allow_missing } = options;
    let json = global.json;
    // Paths as absolute ones, so that the record names the files wherever
    // the next command runs from.
    let absolute: Vec<PathBuf> = files.iter().map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone())).collect();
    let texts = policy::read_files(&absolute)?;
    crate::timings::mark("read files");
    let parsed = policy::parse_sources(&texts)?;
    if !allow_missing {
        policy::check_interfaces(&parsed, |name| netns::ifindex(name).is_some())?;
    }
    let missing: Vec<String> =
        parsed.interfaces.iter().map(|a| a.interface.clone()).filter(|name| netns::ifindex(name).is_none()).collect();
    crate::timings::mark("parse");
    let mut record = PolicyRecord::of(texts.into_iter().map(|(path, text)| Source { path, text }).collect());
    // The fleet's members (`sgctl agent --etcd`) outlive an apply of files:
    // the agent owns them, and the files never named them.
    if let Some(active) = target.active()? {
        record.member_edits.fleet = target.member_edits(active.slot)?.fleet;
    }
    // What is in force, from its summary (its text is not read again).
    let old = match target.summary()? {
        Some(summary) => Some(summary),
        None => target.parsed_policy()?.map(|(record, parsed)| PolicySummary::of(&record, &parsed)),
    };
    let mut wanted = wanted_after(target, &parsed)?;
    wanted.retain(|w| !missing.contains(&w.ifname));
    let groups = rule_changes(old.as_ref(), &PolicySummary::of(&record, &parsed));
    crate::timings::mark("the policy in force, and what changes");

    let report = if dry_run {
        // Everything short of the kernel: input errors surface here too.
        let estimate = commit::dry_run(&record, &parsed, &wanted, target.memory_limit)?;
        let generation = old.as_ref().map_or(1, |s| s.generation + 1);
        Report {
            netns: target.scope.netns().map(str::to_owned),
            generation,
            dry_run,
            changed: true,
            groups,
            interfaces: Vec::new(),
            switch_micros: 0,
            confirm_by: None,
            still_armed: None,
            kernel_memory: Some(MemorySummary::new(estimate, target.memory_limit)),
            missing: missing.clone(),
        }
    } else {
        // The rollback is armed before the switch: a kill right after it
        // still rolls back.
        let armed = confirm_within.map(|secs| control::restore::arm(target, &global.place(), secs)).transpose()?;
        let outcome = match commit::commit(target, &record, &parsed, &wanted) {
            Ok(outcome) => outcome,
            Err(e) => {
                if let Some(armed) = &armed {
                    control::restore::disarm(target, armed)?;
                }
                return Err(e);
            }
        };
        if let Some(armed) = armed.as_ref().filter(|_| !outcome.changed) {
            // Nothing changed: nothing (new) to confirm.
            control::restore::disarm(target, armed)?;
        }
        // Only `sgctl confirm` disarms an apply awaiting confirmation:
        // this one does not (docs/cli.md).
        let still_armed = armed.is_none().then(|| target.lib.pending(&target.scope)).transpose()?.flatten();
        Report {
            netns: target.scope.netns().map(str::to_owned),
            generation: outcome.generation,
            dry_run,
            changed: outcome.changed,
            groups,
            interfaces: outcome.interfaces,
            switch_micros: outcome.switch_micros,
            confirm_by: armed.filter(|_| outcome.changed).map(|a| a.pending.deadline),
            still_armed: still_armed.map(|p| p.generation),
            kernel_memory: outcome.kernel_memory.map(|e| MemorySummary::new(e, target.memory_limit)),
            missing,
        }
    };
    if json {
        return print_json(&report);
    }
    print_report(&report);
    Ok(())
}

fn print_report(r: &Report) {
    let scope = r.netns.as_deref().map_or("host".into(), |n| format!("netns {n}"));
    if !r.dry_run && !r.changed {
        crate::outln!("unchanged: policy generation {} is already in force ({scope})", r.generation);
        return;
    }
    let verb = if r.dry_run { "would apply" } else { "applied" };
    crate::outln!("{verb} policy generation {} ({scope})", r.generation);
    let rows: Vec<Vec<String>> = r
        .groups
        .iter()
        .map(|g| vec![g.group.clone(), format!("+{}", g.rules_added), format!("-{}", g.rules_removed)])
        .collect();
    crate::out!("{}", table(&["GROUP", "ADDED", "REMOVED"], &rows));
    for change in &r.interfaces {
        crate::outln!("{change}");
    }
    if let Some(m) = &r.kernel_memory {
        crate::outln!("{}", m.line());
    }
    for name in &r.missing {
        crate::outln!("{name}: does not exist (yet); attached when it appears (`sgctl agent`, or `sgctl restore`)");
    }
    if let Some(deadline) = r.confirm_by {
        let left = deadline.saturating_sub(crate::timings::unix_now());
        crate::outln!("run `sgctl confirm` within {left} s, or the previous policy comes back by itself");
    }
    if let Some(generation) = r.still_armed {
        crate::outln!(
            "note: generation {generation} still awaits `sgctl confirm`: at its deadline the policy before it comes \
             back, undoing this apply too"
        );
    }
}

/// The interfaces the new policy names, plus those `sgctl attach` added
/// (which keep their groups); interfaces only the old policy named go.
fn wanted_after(target: &Target, policy: &Policy) -> anyhow::Result<Vec<Wanted>> {
    let mut wanted = Wanted::from_policy(policy);
    for current in target.current_wanted()? {
        match wanted.iter_mut().find(|w| w.ifname == current.ifname) {
            // Keep the hook the interface was attached with.
            Some(w) => w.mode = current.mode,
            None if current.origin == Origin::Command => wanted.push(current),
            None => {}
        }
    }
    Ok(wanted)
}

/// Rules added and removed per group, comparing rule content (not position).
fn rule_changes(old: Option<&PolicySummary>, new: &PolicySummary) -> Vec<GroupChange> {
    let signatures = |p: Option<&PolicySummary>| -> BTreeMap<String, Vec<u64>> {
        p.map(|p| p.groups.iter().cloned().collect()).unwrap_or_default()
    };
    let (old, new) = (signatures(old), signatures(Some(new)));
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let before = old.get(name).cloned().unwrap_or_default();
            let after = new.get(name).cloned().unwrap_or_default();
            GroupChange {
                group: name.clone(),
                rules_added: multiset_minus(&after, &before),
                rules_removed: multiset_minus(&before, &after),
            }
        })
        .collect()
}

fn multiset_minus(a: &[u64], b: &[u64]) -> usize {
    let mut rest = b.to_vec();
    a.iter()
        .filter(|x| match rest.iter().position(|y| y == *x) {
            Some(i) => {
                rest.swap_remove(i);
                false
            }
            None => true,
        })
        .count()
}
