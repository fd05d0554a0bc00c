//! The kernel's verdict, computed in userspace over compiled entries: three
//! longest-prefix lookups, `l4 & (cidr | sg)`, and the credited rule found
//! by the same walk down the address tries the datapath does
//! (firewall-ebpf/src/policy.rs). The tests hold it, and so the compiled
//! maps, to [`crate::model`] (compile/tests.rs and the differential test).

use std::net::IpAddr;

use firewall_common::policy::{addr6_from_octets, L4Key, RuleSet};

use super::{
    lpm::{longest_match, longest_match_within, LpmKey},
    CompiledInterface, LpmEntry,
};
use crate::policy::RuleDirection;

fn set<K: LpmKey>(entries: &[LpmEntry<K>], key: K) -> RuleSet {
    longest_match(entries, key).map_or(RuleSet::EMPTY, |e| e.rules)
}

/// Every rule that allows the packet. `port_or_icmp` is the destination
/// port in network order, or `[type, code]` for ICMP/ICMPv6; `peer` is the
/// source of an inbound packet, the destination of an outbound one.
pub fn allowed(
    compiled: &CompiledInterface,
    direction: RuleDirection,
    protocol: u8,
    port_or_icmp: [u8; 2],
    peer: IpAddr,
) -> RuleSet {
    let l4 = set(&compiled.l4, L4Key { direction: direction.to_kernel(), protocol, port: port_or_icmp });
    let mut addr = match peer {
        IpAddr::V4(a) => set(&compiled.cidr4, a.octets()),
        IpAddr::V6(a) => set(&compiled.cidr6, addr6_from_octets(a.octets())),
    };
    let sg = match peer {
        IpAddr::V4(a) => set(&compiled.sg4, a.octets()),
        IpAddr::V6(a) => set(&compiled.sg6, addr6_from_octets(a.octets())),
    };
    addr.union_with(&sg);
    intersect(&l4, &addr)
}

/// Nested prefixes the datapath walks (its `MAX_TIERS`).
const MAX_TIERS: usize = 8;

/// The rule the kernel credits (the most specific address match, then the
/// lowest id), or `None` when the packet is dropped by default deny.
pub fn lookup(
    compiled: &CompiledInterface,
    direction: RuleDirection,
    protocol: u8,
    port_or_icmp: [u8; 2],
    peer: IpAddr,
) -> Option<u32> {
    let any = lowest(&allowed(compiled, direction, protocol, port_or_icmp, peer))?;
    let l4 = set(&compiled.l4, L4Key { direction: direction.to_kernel(), protocol, port: port_or_icmp });
    let credited = match peer {
        IpAddr::V4(a) => walk(&l4, &compiled.cidr4, &compiled.sg4, a.octets()),
        IpAddr::V6(a) => walk(&l4, &compiled.cidr6, &compiled.sg6, addr6_from_octets(a.octets())),
    };
    Some(credited.unwrap_or(any))
}

/// The datapath's walk: longest prefixes first, both tries in step.
fn walk<K: LpmKey>(l4: &RuleSet, cidr: &[LpmEntry<K>], sg: &[LpmEntry<K>], addr: K) -> Option<u32> {
    let (mut c, mut s) = (longest_match(cidr, addr), longest_match(sg, addr));
    for _ in 0..MAX_TIERS {
        let top = c.iter().chain(s.iter()).map(|e| e.prefix_len).max()?;
        let (c_top, s_top) = (c.filter(|e| e.prefix_len == top), s.filter(|e| e.prefix_len == top));
        let mut own = RuleSet::EMPTY;
        for e in c_top.iter().chain(s_top.iter()) {
            own.union_with(&e.own);
        }
        if let Some(rule) = lowest(&intersect(l4, &own)) {
            return Some(rule);
        }
        let parent = |e: &LpmEntry<K>, entries| {
            (e.parent_len != firewall_common::policy::NO_PARENT)
                .then(|| longest_match_within(entries, addr, e.parent_len))
                .flatten()
        };
        if let Some(e) = c_top {
            c = parent(e, cidr);
        }
        if let Some(e) = s_top {
            s = parent(e, sg);
        }
    }
    None
}

fn intersect(a: &RuleSet, b: &RuleSet) -> RuleSet {
    let mut out = RuleSet::EMPTY;
    for ((o, x), y) in out.words.iter_mut().zip(a.words).zip(b.words) {
        *o = x & y;
    }
    out
}

/// The lowest id in a set, as the kernel finds it (first non-zero word).
pub fn lowest(set: &RuleSet) -> Option<u32> {
    let (i, word) = set.words.iter().enumerate().find(|(_, w)| **w != 0)?;
    // i < RULE_WORDS = 16.
    Some(i as u32 * 64 + word.trailing_zeros())
}
