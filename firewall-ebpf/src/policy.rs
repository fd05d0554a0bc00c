//! The policy decision for a packet that opens a new flow: three lookups
//! (`L4_RULES`, the peer's address entry, its class) and an AND of
//! fixed-width rule sets decide it. No loop over rules. The address entry
//! comes from the single-address hash when it holds the peer, else from the
//! trie (firewall_common::policy).
//!
//! Every lookup is in the maps of one generation (`slot`, read once per
//! packet from `ACTIVE`, see maps.rs), so a packet is judged entirely by
//! the old policy or entirely by the new one.
//!
//! When several rules allow the flow, the one credited with it (docs/cli.md) is
//! the one with the most specific address match, then the first in file
//! order (rule ids are in file order): the class holds the rules tier by
//! tier, longest prefix first, computed in userspace, and the first tier
//! with an allowed rule gives its lowest id.
use aya_ebpf::btf_maps::lpm_trie::Key;
use firewall_common::{
    policy::{l4_prefix, AddrEntry, ClassRules, L4Key, RuleSet, SlotMeta, MAX_TIERS, RULE_WORDS},
    Direction,
};

use crate::{
    maps::{ADDR4, ADDR6, CLASSES, HOST4, HOST6, L4_RULES},
    parse::Packet,
};

/// The rule id that allows `packet` in `direction` under generation `slot`,
/// or `None` (default deny).
#[inline(always)]
pub fn allowed_rule(slot: u32, meta: &SlotMeta, direction: Direction, packet: &Packet) -> Option<u32> {
    let tuple = &packet.tuple;
    let l4_key = Key::new(l4_prefix::FULL, L4Key::new(direction as u8, tuple.protocol, packet.rule_port));
    let l4 = L4_RULES.get(slot)?.get(&l4_key)?;
    // Inbound rules name the source, outbound rules the destination.
    let peer = match direction {
        Direction::Inbound => &tuple.src,
        Direction::Outbound => &tuple.dst,
    };
    // A generation always has both tries (fail closed without them); the
    // hash only where it has single addresses.
    let (class_key, any) = if tuple.family == 4 {
        let addr = peer[0].to_ne_bytes();
        let trie = ADDR4.get(slot)?;
        // SAFETY: the entry is copied out at once; `sgctl members` replaces
        // or deletes an element of a hash in force, and the kernel frees
        // the old one only after every program reading it has finished
        // (BPF_F_NO_PREALLOC).
        let host = HOST4.get(slot).and_then(|hosts| unsafe { hosts.get(&addr) }).map(AddrEntry::class_key);
        (host.or_else(|| trie.get(&Key::new(32, addr)).map(AddrEntry::class_key)), &meta.any4)
    } else {
        let trie = ADDR6.get(slot)?;
        // SAFETY: as above.
        let host = HOST6.get(slot).and_then(|hosts| unsafe { hosts.get(peer) }).map(AddrEntry::class_key);
        (host.or_else(|| trie.get(&Key::new(128, *peer)).map(AddrEntry::class_key)), &meta.any6)
    };
    let Some(class_key) = class_key else {
        // No prefix contains the peer: only the rules for every address.
        return first_common(l4, any);
    };
    // SAFETY: read within this program run; userspace never rewrites the
    // classes of a generation in force (it installs new maps).
    let class = unsafe { CLASSES.get(slot)?.get(class_key)? };
    credited(l4, class)
}

/// The credited rule among `l4 & class.rules`, if any.
#[inline(always)]
fn credited(l4: &RuleSet, class: &ClassRules) -> Option<u32> {
    // The verdict: does any rule allow it at all?
    if !any_set(|w| word(l4, w) & class.rules.words[w]) {
        return None;
    }
    // The first tier holding an allowed rule; the first one usually does.
    for tier in &class.tiers[..MAX_TIERS] {
        if any_set(|w| word(l4, w) & tier.words[w]) {
            return first_common(l4, tier);
        }
    }
    None
}

/// Word `w` of `set`, read from the map value each time it is used: kept
/// in registers across the tiers instead, the 16 words spilled to the
/// stack (128 bytes of the 512 every call below the program shares).
#[inline(always)]
fn word(set: &RuleSet, w: usize) -> u64 {
    // SAFETY: an element of the array behind the reference.
    unsafe { core::ptr::read_volatile(&raw const set.words[w]) }
}

/// Lowest rule id in `l4 & set`.
#[inline(always)]
fn first_common(l4: &RuleSet, set: &RuleSet) -> Option<u32> {
    for w in 0..RULE_WORDS {
        let bits = word(l4, w) & set.words[w];
        if bits != 0 {
            return Some(w as u32 * 64 + lowest_bit(bits));
        }
    }
    None
}

/// Whether any bit is set over the words: one OR per word and a single
/// test, so the verifier follows one path, not one per word.
#[inline(always)]
fn any_set(word: impl Fn(usize) -> u64) -> bool {
    let mut acc = 0;
    for w in 0..RULE_WORDS {
        acc |= word(w);
    }
    acc != 0
}

/// Index of the lowest set bit of a non-zero word: the population count of
/// the bits below it (SWAR). BPF has no count-trailing-zeros, and a
/// bisection would branch six times, giving the verifier 64 paths per scan.
#[inline(always)]
fn lowest_bit(w: u64) -> u32 {
    let mut x = (w & w.wrapping_neg()).wrapping_sub(1);
    x -= (x >> 1) & 0x5555_5555_5555_5555;
    x = (x & 0x3333_3333_3333_3333) + ((x >> 2) & 0x3333_3333_3333_3333);
    x = (x + (x >> 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    (x.wrapping_mul(0x0101_0101_0101_0101) >> 56) as u32
}
