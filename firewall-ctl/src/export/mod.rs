//! A validated [`Policy`](crate::policy::Policy) written out for another
//! enforcer. Each format is a pure function of the policy, the interfaces
//! that carry groups, and the addresses of local interfaces (which join
//! `sg:` memberships, as `sgctl apply` does), so it is unit-tested without
//! root; `sgctl export` (`cli/cmd/export.rs`) gathers those inputs.

pub mod nftables;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;

use crate::policy::Policy;

/// An interface and the groups it carries, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub groups: Vec<String>,
}

/// Why a policy cannot be exported (all of them are the user's input).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("interface {interface}: unknown group \"{group}\": it is not defined in the policy")]
    UnknownGroup { interface: String, group: String },
    #[error("interface name {0:?} cannot be written in an nftables ruleset: it holds a quote, backslash, space or control character")]
    InterfaceName(String),
}

/// The interfaces a policy's `interfaces:` section names, then `extra`
/// (from the command line); an interface named again keeps the groups it
/// was named with last.
pub fn interfaces(policy: &Policy, extra: &[Interface]) -> Vec<Interface> {
    let mut out: Vec<Interface> = Vec::new();
    let named = policy.interfaces.iter().map(|a| Interface { name: a.interface.clone(), groups: a.groups.clone() });
    for iface in named.chain(extra.iter().cloned()) {
        out.retain(|o| o.name != iface.name);
        out.push(iface);
    }
    out
}

/// Group → addresses of the local interfaces that carry it, from the
/// addresses of every interface of the namespace (`netns::addresses`).
pub fn local_members(
    interfaces: &[Interface],
    addresses: &BTreeMap<String, Vec<IpNet>>,
) -> BTreeMap<String, Vec<IpNet>> {
    let mut members: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
    for iface in interfaces {
        let Some(addrs) = addresses.get(&iface.name) else { continue };
        for group in &iface.groups {
            members.entry(group.clone()).or_default().extend(addrs.iter().copied());
        }
    }
    members
}

/// Addresses carrying `group`: its `members:` plus local interface
/// addresses, each once, in that order.
fn members(policy: &Policy, local_members: &BTreeMap<String, Vec<IpNet>>, group: &str) -> Vec<IpNet> {
    let mut seen = BTreeSet::new();
    policy
        .members_of(group)
        .chain(local_members.get(group).into_iter().flatten().copied())
        .filter(|net| seen.insert(*net))
        .collect()
}

/// True for an IPv4 network.
fn is_v4(net: &IpNet) -> bool {
    matches!(net.addr(), IpAddr::V4(_))
}
