//! Rule ids: which rule the kernel credits when several allow a new flow.
//!
//! The kernel credits the lowest-numbered allowed rule; cli.md says it
//! should be "the one with the most specific address match, then the first
//! in file order". Ids are therefore ordered by the most specific peer of
//! each rule (as a fraction of the family's width, so /24 of IPv4 ranks with
//! /96 of IPv6; `sg:` peers count as fully specific), then by file order.
//!
//! This is a static approximation: a rule's rank is its *most* specific
//! peer, not the peer that matched this packet. A rule listing both
//! 10.0.0.5/32 and 0.0.0.0/0 outranks a 192.0.2.0/24 rule even for a packet
//! from 192.0.2.1. Exact per-packet crediting would need the address maps to
//! carry per-entry priorities; the verdict itself is never affected.

use std::cmp::Reverse;

use ipnet::IpNet;

use crate::policy::{PeerTarget, Policy, Rule};

/// Specificity on a 0-128 scale (128 = a single address or a group).
fn scaled(net: &IpNet) -> u32 {
    u32::from(net.prefix_len()) * 128 / u32::from(net.max_prefix_len())
}

pub fn specificity(policy: &Policy, rule: &Rule) -> u32 {
    rule.peers
        .iter()
        .map(|peer| match &peer.target {
            PeerTarget::Cidr(net) => scaled(net),
            PeerTarget::Group(_) => 128,
            PeerTarget::PrefixList(name) => policy
                .prefix_list(name)
                .and_then(|pl| pl.cidrs.iter().map(scaled).max())
                .unwrap_or(0),
        })
        .max()
        .unwrap_or(0)
}

/// Sorts rules into id order. An implicit allow-all outbound rule is in no
/// file, so it comes after the written rules of its rank. The sort is
/// stable: rules that tie (an alias repeating a rule) keep group order.
pub fn sort<T>(policy: &Policy, rules: &mut [(T, &Rule)]) {
    rules.sort_by_cached_key(|(_, r)| {
        (
            Reverse(specificity(policy, r)),
            r.implicit,
            r.at.file_index,
            r.at.line,
            r.at.col,
        )
    });
}
