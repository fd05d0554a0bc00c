//! A naive matcher over the policy model, written straight from
//! semantics.md items 3-5 with no tries and no bit sets: the yardstick the
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
    let known: Vec<String> = groups
        .iter()
        .filter(|g| policy.group(g).is_some())
        .cloned()
        .collect();
    let Ok(groups) = attached(policy, &known) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for group in groups {
        for (index, rule) in group.rules(direction).iter().enumerate() {
            if l4_matches(rule, protocol, port_or_icmp)
                && peer_matches(policy, local_members, rule, peer)
            {
                out.push((
                    group.name.clone(),
                    direction,
                    u32::try_from(index).unwrap_or(u32::MAX),
                ));
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

fn peer_matches(
    policy: &Policy,
    local_members: &BTreeMap<String, Vec<IpNet>>,
    rule: &Rule,
    peer: IpAddr,
) -> bool {
    rule.peers.iter().any(|p| match &p.target {
        PeerTarget::Cidr(net) => net.contains(&peer),
        PeerTarget::PrefixList(name) => policy
            .prefix_list(name)
            .is_some_and(|pl| pl.cidrs.iter().any(|n| n.contains(&peer))),
        PeerTarget::Group(name) => members(policy, local_members, name)
            .iter()
            .any(|n| n.contains(&peer)),
    })
}
