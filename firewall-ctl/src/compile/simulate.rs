//! The kernel's verdict, computed in userspace over compiled entries: two
//! longest-prefix lookups, `l4 & (addr | any)`, and the credited rule found
//! by the same tiers the datapath walks (firewall-ebpf/src/policy.rs). The
//! tests hold it, and so the compiled maps, to [`crate::model`]
//! (compile/tests.rs and the differential test).

use std::net::IpAddr;

use firewall_common::policy::{addr6_from_octets, L4Key, RuleSet};

use super::{
    credit_tiers,
    lpm::{longest_match, LpmKey},
    CompiledInterface, Trie,
};
use crate::policy::RuleDirection;

fn l4_set(compiled: &CompiledInterface, direction: RuleDirection, protocol: u8, port_or_icmp: [u8; 2]) -> RuleSet {
    let key = L4Key::new(direction.to_kernel(), protocol, port_or_icmp);
    longest_match(&compiled.l4.entries, key).map_or(RuleSet::EMPTY, |e| *compiled.l4.rules(e))
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
    let l4 = l4_set(compiled, direction, protocol, port_or_icmp);
    let (mut addr, any) = match peer {
        IpAddr::V4(a) => (rules_of(&compiled.addr4, a.octets()), &compiled.any4),
        IpAddr::V6(a) => (rules_of(&compiled.addr6, addr6_from_octets(a.octets())), &compiled.any6),
    };
    addr.union_with(any);
    intersect(&l4, &addr)
}

fn rules_of<K: LpmKey>(trie: &Trie<K>, key: K) -> RuleSet {
    longest_match(&trie.entries, key).map_or(RuleSet::EMPTY, |e| *trie.rules(e))
}

/// The rule the kernel credits (the most specific address match, then the
/// lowest id), or `None` when the packet is dropped by default deny.
pub fn lookup(
    compiled: &CompiledInterface,
    direction: RuleDirection,
    protocol: u8,
    port_or_icmp: [u8; 2],
    peer: IpAddr,
) -> Option<u32> {
    let l4 = l4_set(compiled, direction, protocol, port_or_icmp);
    match peer {
        IpAddr::V4(a) => credited(&l4, &compiled.addr4, &compiled.any4, a.octets()),
        IpAddr::V6(a) => credited(&l4, &compiled.addr6, &compiled.any6, addr6_from_octets(a.octets())),
    }
}

/// The datapath's choice: the first credit tier of the longest match that
/// holds an allowed rule, its lowest id.
fn credited<K: LpmKey>(l4: &RuleSet, trie: &Trie<K>, any: &RuleSet, addr: K) -> Option<u32> {
    let Some(entry) = longest_match(&trie.entries, addr) else {
        return lowest(&intersect(l4, any));
    };
    credit_tiers(&trie.tiers(entry.chain), any).iter().find_map(|tier| lowest(&intersect(l4, tier)))
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
    set.iter().next()
}
