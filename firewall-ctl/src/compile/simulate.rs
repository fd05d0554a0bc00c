//! The kernel's verdict, computed in userspace over compiled entries: three
//! longest-prefix lookups, `l4 & (cidr | sg)`, lowest rule id. It serves
//! `sgctl explain` and the tests that hold the compiler to the reference
//! matcher.

use std::net::IpAddr;

use firewall_common::policy::{addr6_from_octets, L4Key, RuleSet};

use super::{
    lpm::{longest_match, LpmKey},
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
    let l4 = set(
        &compiled.l4,
        L4Key {
            direction: direction.to_kernel(),
            protocol,
            port: port_or_icmp,
        },
    );
    let mut addr = match peer {
        IpAddr::V4(a) => set(&compiled.cidr4, a.octets()),
        IpAddr::V6(a) => set(&compiled.cidr6, addr6_from_octets(a.octets())),
    };
    let sg = match peer {
        IpAddr::V4(a) => set(&compiled.sg4, a.octets()),
        IpAddr::V6(a) => set(&compiled.sg6, addr6_from_octets(a.octets())),
    };
    addr.union_with(&sg);
    let mut out = RuleSet::EMPTY;
    for ((o, a), b) in out.words.iter_mut().zip(l4.words).zip(addr.words) {
        *o = a & b;
    }
    out
}

/// The rule the kernel credits (the lowest id that allows the packet), or
/// `None` when the packet is dropped by default deny.
pub fn lookup(
    compiled: &CompiledInterface,
    direction: RuleDirection,
    protocol: u8,
    port_or_icmp: [u8; 2],
    peer: IpAddr,
) -> Option<u32> {
    lowest(&allowed(compiled, direction, protocol, port_or_icmp, peer))
}

/// The lowest id in a set, as the kernel finds it (first non-zero word).
pub fn lowest(set: &RuleSet) -> Option<u32> {
    let (i, word) = set.words.iter().enumerate().find(|(_, w)| **w != 0)?;
    // i < RULE_WORDS = 16.
    Some(i as u32 * 64 + word.trailing_zeros())
}
