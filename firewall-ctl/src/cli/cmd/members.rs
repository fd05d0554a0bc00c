//! `sgctl members add|remove GROUP ADDRESS...`.
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    cli::{output::print_json, MembersAction},
    control::{
        member_change::{self, Change, Outcome},
        Target,
    },
    policy::{parse_cidr, CidrError},
    InputError,
};

#[derive(Serialize)]
struct Report {
    netns: Option<String>,
    group: String,
    added: Vec<IpNet>,
    removed: Vec<IpNet>,
    #[serde(flatten)]
    outcome: Outcome,
}

pub fn run(target: &Target, action: &MembersAction, json: bool) -> anyhow::Result<()> {
    let (group, add, texts) = match action {
        MembersAction::Add { group, addresses } => (group, true, addresses),
        MembersAction::Remove { group, addresses } => (group, false, addresses),
    };
    let addresses = texts.iter().map(|t| address(t)).collect::<Result<Vec<_>, _>>()?;
    let change = Change { group: group.clone(), add, addresses: addresses.clone() };
    let outcome = member_change::change(target, &change, member_change::Record::Edit)?;
    crate::timings::mark("done");
    let (added, removed) = if add { (addresses, Vec::new()) } else { (Vec::new(), addresses) };
    let report =
        Report { netns: target.scope.netns().map(str::to_owned), group: group.clone(), added, removed, outcome };
    if json {
        return print_json(&report);
    }
    let verb = if add { "added to" } else { "removed from" };
    let n = report.added.len() + report.removed.len();
    let what = if n == 1 { "1 address".to_owned() } else { format!("{n} addresses") };
    let o = &report.outcome;
    if o.in_place {
        let on = if o.interfaces.is_empty() { "no map needed a change".to_owned() } else { o.interfaces.join(", ") };
        crate::outln!(
            "{what} {verb} {}: in place, {} address entries written ({on}), {:.1} ms",
            report.group,
            o.entries_written,
            o.micros as f64 / 1000.0
        );
    } else {
        crate::outln!(
            "{what} {verb} {}: applied as policy generation {} ({}), {:.1} ms",
            report.group,
            o.generation,
            o.full_change_because.as_deref().unwrap_or("a full change"),
            o.micros as f64 / 1000.0
        );
    }
    Ok(())
}

/// An address or network as the policy's `members:` takes it.
fn address(text: &str) -> Result<IpNet, InputError> {
    parse_cidr(text).map_err(|e| {
        let text = text.to_owned();
        match e {
            CidrError::NotCidr(why) => InputError::InvalidAddress { text, why },
            CidrError::HostBits(network) => InputError::AddressHostBits { text, network },
        }
    })
}
