//! `sgctl attach IFACE --groups A,B [--mode]` and `sgctl detach IFACE`.
use crate::{
    control::{commit, IfaceChange, Target, Wanted},
    netns,
    output::print_json,
    state::records::{Mode, Origin},
    InputError,
};

pub fn attach(target: &Target, iface: &str, groups: &[String], mode: Mode, json: bool) -> anyhow::Result<()> {
    let (record, policy) = target
        .parsed_policy()?
        .ok_or_else(|| InputError(format!("no policy applied in {}: run `sgctl apply FILE...` first", target.scope)))?;
    if netns::ifindex(iface).is_none() {
        return Err(InputError(format!("interface {iface:?} does not exist in {}", target.scope)).into());
    }
    if let Some(unknown) = groups.iter().find(|g| policy.group(g).is_none()) {
        let known: Vec<&str> = policy.groups.iter().map(|g| g.name.as_str()).collect();
        return Err(InputError(format!("unknown group {unknown:?}: expected one of {}", known.join(", "))).into());
    }
    let mut wanted = target.current_wanted()?;
    wanted.retain(|w| w.ifname != iface);
    wanted.push(Wanted { ifname: iface.to_owned(), groups: groups.to_vec(), origin: Origin::Command, mode });
    report(commit::commit(target, &record, &policy, &wanted)?.interfaces, json)
}

pub fn detach(target: &Target, iface: &str, json: bool) -> anyhow::Result<()> {
    if !target.interfaces()?.iter().any(|r| r.ifname == iface) {
        return Err(InputError(format!("interface {iface:?} is not filtered in {}", target.scope)).into());
    }
    let (record, policy) =
        target.parsed_policy()?.ok_or_else(|| InputError(format!("no policy applied in {}", target.scope)))?;
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
