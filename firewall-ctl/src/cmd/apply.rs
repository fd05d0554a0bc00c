//! `sgctl apply FILE... [--dry-run]`.
use std::{collections::BTreeMap, path::PathBuf};

use serde::Serialize;

use crate::{
    control::{self, Host, IfaceChange, Wanted},
    netns,
    output::{print_json, table},
    policy::{self, Policy, Rule, RuleDirection},
    state::records::{Origin, PolicyRecord},
};

#[derive(Serialize)]
struct Report {
    netns: Option<String>,
    generation: u64,
    dry_run: bool,
    groups: Vec<GroupChange>,
    interfaces: Vec<IfaceChange>,
}

#[derive(Serialize)]
struct GroupChange {
    group: String,
    rules_added: usize,
    rules_removed: usize,
}

pub fn run(host: &Host, files: &[PathBuf], dry_run: bool, json: bool) -> anyhow::Result<()> {
    let policy = policy::load_files(files)?;
    policy::check_interfaces(&policy, |name| netns::ifindex(name).is_some())?;
    let old = host.policy()?;
    let record = PolicyRecord {
        generation: old.as_ref().map_or(1, |o| o.generation + 1),
        sources: files
            .iter()
            .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()).display().to_string())
            .collect(),
        policy,
    };
    let wanted = wanted_after(host, &record.policy)?;
    let groups = rule_changes(old.as_ref().map(|o| &o.policy), &record.policy);

    let interfaces = if dry_run {
        // Everything short of the kernel: input errors surface here too.
        control::compile_all(&record, &wanted)?;
        Vec::new()
    } else {
        let changes = host.reconcile(&record, &wanted)?;
        host.save_policy(&record)?;
        changes
    };
    let report = Report {
        netns: host.scope.netns().map(str::to_owned),
        generation: record.generation,
        dry_run,
        groups,
        interfaces,
    };
    if json {
        return print_json(&report);
    }
    print_report(&report);
    Ok(())
}

fn print_report(r: &Report) {
    let verb = if r.dry_run { "would apply" } else { "applied" };
    crate::outln!(
        "{verb} policy generation {} ({})",
        r.generation,
        r.netns.as_deref().map_or("host".into(), |n| format!("netns {n}"))
    );
    let rows: Vec<Vec<String>> = r
        .groups
        .iter()
        .map(|g| vec![g.group.clone(), format!("+{}", g.rules_added), format!("-{}", g.rules_removed)])
        .collect();
    crate::out!("{}", table(&["GROUP", "ADDED", "REMOVED"], &rows));
    for change in &r.interfaces {
        crate::outln!("{change}");
    }
}

/// The interfaces the new policy names, plus those `sgctl attach` added
/// (which keep their groups); interfaces only the old policy named go.
fn wanted_after(host: &Host, policy: &Policy) -> anyhow::Result<Vec<Wanted>> {
    let mut wanted = Wanted::from_policy(policy);
    for current in host.current_wanted()? {
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
fn rule_changes(old: Option<&Policy>, new: &Policy) -> Vec<GroupChange> {
    let signatures = |p: Option<&Policy>| -> BTreeMap<String, Vec<String>> {
        let mut m = BTreeMap::new();
        for g in p.map(|p| p.groups.as_slice()).unwrap_or_default() {
            let sigs: Vec<String> =
                RuleDirection::BOTH.iter().flat_map(|d| g.rules(*d).iter().map(move |r| signature(*d, r))).collect();
            m.insert(g.name.clone(), sigs);
        }
        m
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

fn signature(direction: RuleDirection, r: &Rule) -> String {
    let peers: Vec<_> = r.peers.iter().map(|p| format!("{:?}", p.target)).collect();
    format!(
        "{direction} {:?} {:?} {:?} {:?} {peers:?} {:?}",
        r.protocol, r.ports, r.icmp_type, r.icmp_code, r.description
    )
}

fn multiset_minus(a: &[String], b: &[String]) -> usize {
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
