//! `sgctl attach IFACE --groups A,B [--mode]` and `sgctl detach IFACE`.
use crate::{
    cli::output::print_json,
    control::{commit, IfaceChange, Target, Wanted},
    netns,
    state::records::{Mode, Origin},
    InputError,
};

pub fn attach(target: &Target, iface: &str, groups: &[String], mode: Mode, json: bool) -> anyhow::Result<()> {
    let (record, policy) =
        target.parsed_policy()?.ok_or_else(|| InputError::NoPolicyApplied { scope: target.scope.to_string() })?;
    if netns::ifindex(iface).is_none() {
        return Err(InputError::NoSuchInterface { ifname: iface.to_owned(), scope: target.scope.to_string() }.into());
    }
    if let Some(unknown) = groups.iter().find(|g| policy.group(g).is_none()) {
        let known = policy.groups.iter().map(|g| g.name.clone()).collect();
        return Err(InputError::UnknownGroup { group: unknown.clone(), known }.into());
    }
    let mut wanted = target.current_wanted()?;
    wanted.retain(|w| w.ifname != iface);
    wanted.push(Wanted { ifname: iface.to_owned(), groups: groups.to_vec(), origin: Origin::Command, mode });
    report(commit::commit(target, &record, &policy, &wanted)?.interfaces, json)
}

pub fn detach(target: &Target, iface: &str, json: bool) -> anyhow::Result<()> {
    if !target.interfaces()?.iter().any(|r| r.ifname == iface) {
        return Err(InputError::NotFiltered { ifname: iface.to_owned(), scope: target.scope.to_string() }.into());
    }
    let (record, policy) =
        target.parsed_policy()?.ok_or_else(|| InputError::NoPolicyInForce { scope: target.scope.to_string() })?;
    let mut wanted = target.current_wanted()?;
    wanted.retain(|w| w.ifname != iface);
    // Other interfaces' rules may reference groups this one carried.
    report(commit::commit(target, &record, &policy, &wanted)?.interfaces, json)
}

fn report(changes: Vec<IfaceChange>, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&changes);
    }
    for change in changes {
        crate::outln!("{change}");
    }
    Ok(())
}
