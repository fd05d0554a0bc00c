//! A naive matcher over the policy model, written straight from
//! docs/semantics.md items 3-5 with no tries and no bit sets: the yardstick the
//! compiler and `simulate` are tested against.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;

use super::{attached, members};
use crate::policy::{PeerTarget, Policy, Ports, Protocol, Rule, RuleDirection};

/// Every rule of the attached `groups` that allows the packet, as
/// `(group, direction, index)`, in group and file order. Unknown groups are
/// ignored (the compiler refuses them).
pub fn reference_match(
    policy: &Policy,
    groups: &[String],
    local_members: &BTreeMap<String, Vec<IpNet>>,
    direction: RuleDirection,
    protocol: u8,
    port_or_icmp: [u8; 2],
    peer: IpAddr,
) -> Vec<(String, RuleDirection, u32)> {
    let known: Vec<String> = groups.iter().filter(|g| policy.group(g).is_some()).cloned().collect();
    let Ok(groups) = attached(policy, &known) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for group in groups {
        for (index, rule) in group.rules(direction).iter().enumerate() {
            if l4_matches(rule, protocol, port_or_icmp) && peer_matches(policy, local_members, rule, peer) {
                out.push((group.name.clone(), direction, u32::try_from(index).unwrap_or(u32::MAX)));
            }
        }
    }
    out
}

fn l4_matches(rule: &Rule, protocol: u8, [a, b]: [u8; 2]) -> bool {
    if rule.protocol == Protocol::All {
        return true;
    }
    if rule.protocol.number() != Some(protocol) {
        return false;
    }
    if rule.protocol.has_ports() {
        let port = u16::from_be_bytes([a, b]);
        return match &rule.ports {
            Ports::Any => true,
            Ports::Ranges(ranges) => ranges.iter().any(|r| r.contains(port)),
        };
    }
    if rule.protocol.is_icmp() {
        return rule.icmp_type.is_none_or(|t| t == a) && rule.icmp_code.is_none_or(|c| c == b);
    }
    true
}

fn peer_matches(policy: &Policy, local_members: &BTreeMap<String, Vec<IpNet>>, rule: &Rule, peer: IpAddr) -> bool {
    match_len(policy, local_members, rule, peer).is_some()
}

/// The longest prefix among the rule's peers (CIDRs, prefix-list entries,
/// member addresses of `sg:` groups) that contains `peer`.
fn match_len(policy: &Policy, local_members: &BTreeMap<String, Vec<IpNet>>, rule: &Rule, peer: IpAddr) -> Option<u8> {
    let nets: Vec<IpNet> = rule
        .peers
        .iter()
        .flat_map(|p| match &p.target {
            PeerTarget::Cidr(net) => vec![*net],
            PeerTarget::PrefixList(name) => policy.prefix_list(name).map(|pl| pl.cidrs.clone()).unwrap_or_default(),
            PeerTarget::Group(name) => members(policy, local_members, name),
        })
        .collect();
    nets.iter().filter(|n| n.contains(&peer)).map(IpNet::prefix_len).max()
}

/// The rule docs/cli.md says gets the flow when several allow it: the most
/// specific address match, then the first in file order (an implicit
/// default outbound rule, in no file, after the written ones).
pub fn reference_credit(
    policy: &Policy,
    groups: &[String],
    local_members: &BTreeMap<String, Vec<IpNet>>,
    direction: RuleDirection,
    protocol: u8,
    port_or_icmp: [u8; 2],
    peer: IpAddr,
) -> Option<(String, RuleDirection, u32)> {
    let matches = reference_match(policy, groups, local_members, direction, protocol, port_or_icmp, peer);
    matches.into_iter().min_by_key(|(group, direction, index)| {
        let rule = &policy.group(group).expect("matched group exists").rules(*direction)[*index as usize];
        let specificity = match_len(policy, local_members, rule, peer).unwrap_or(0);
        (std::cmp::Reverse(specificity), rule.implicit, rule.at.file_index, rule.at.line, rule.at.col)
    })
}
