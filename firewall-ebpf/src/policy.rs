//! The policy decision for a packet that opens a new flow: three LPM lookups
//! and an AND of fixed-width rule sets decide it. No loop over rules.
//!
//! When several rules allow the flow, the one credited with it (docs/cli.md) is
//! the one with the most specific address match, then the first in file
//! order (rule ids are in file order): a walk down the prefixes that
//! contain the peer address, longest first, one lookup each, at most
//! [`MAX_TIERS`] deep.
use aya_ebpf::maps::{lpm_trie::Key, LpmTrie};
use firewall_common::{
    policy::{l4_prefix, AddrRules, L4Key, RuleSet, NO_PARENT, RULE_WORDS},
    Direction,
};

use crate::{
    maps::{CIDR_RULES4, CIDR_RULES6, L4_RULES, SG_RULES4, SG_RULES6},
    parse::Packet,
};

/// Nested prefixes walked to find the most specific match. Deeper nesting
/// than this (rare in security groups) credits the lowest allowed rule id.
const MAX_TIERS: usize = 8;

/// The rule that allows `packet` in `direction`, or `None` (default deny).
#[inline(always)]
pub fn allowed_rule(direction: Direction, packet: &Packet) -> Option<u32> {
    let tuple = &packet.tuple;
    let l4 = L4_RULES.get(Key::new(
        l4_prefix::FULL,
        L4Key { direction: direction as u8, protocol: tuple.protocol, port: packet.rule_port },
    ))?;
    // Inbound rules name the source, outbound rules the destination.
    let peer = match direction {
        Direction::Inbound => &tuple.src,
        Direction::Outbound => &tuple.dst,
    };
    if tuple.family == 4 {
        credited(l4, &CIDR_RULES4, &SG_RULES4, peer[0].to_ne_bytes(), 32)
    } else {
        credited(l4, &CIDR_RULES6, &SG_RULES6, *peer, 128)
    }
}

#[inline(always)]
fn credited<K: Copy>(
    l4: &RuleSet,
    cidr_map: &LpmTrie<K, AddrRules>,
    sg_map: &LpmTrie<K, AddrRules>,
    addr: K,
    full_len: u32,
) -> Option<u32> {
    let mut cidr = cidr_map.get(Key::new(full_len, addr));
    let mut sg = sg_map.get(Key::new(full_len, addr));
    // The verdict: does any rule allow it at all? Usually exactly one does.
    let allowed = match (cidr, sg) {
        (Some(c), Some(s)) => any_set(|w| l4.words[w] & (c.rules.words[w] | s.rules.words[w])),
        (Some(c), None) => any_set(|w| l4.words[w] & c.rules.words[w]),
        (None, Some(s)) => any_set(|w| l4.words[w] & s.rules.words[w]),
        (None, None) => false,
    };
    if !allowed {
        return None;
    }
    // Walk the tiers, most specific first; the first tier usually decides.
    // Every pointer is tested right where it is used, as the verifier needs.
    for _ in 0..MAX_TIERS {
        let c_len = cidr.map_or(-1, |c| i64::from(c.prefix_len));
        let s_len = sg.map_or(-1, |s| i64::from(s.prefix_len));
        if c_len > s_len {
            let Some(c) = cidr else { break };
            if let Some(rule) = first_common(l4, &c.own) {
                return Some(rule);
            }
            cidr = parent(cidr_map, c, addr);
        } else if s_len > c_len {
            let Some(s) = sg else { break };
            if let Some(rule) = first_common(l4, &s.own) {
                return Some(rule);
            }
            sg = parent(sg_map, s, addr);
        } else {
            let (Some(c), Some(s)) = (cidr, sg) else { break };
            if let Some(rule) = first_common2(l4, &c.own, &s.own) {
                return Some(rule);
            }
            cidr = parent(cidr_map, c, addr);
            sg = parent(sg_map, s, addr);
        }
    }
    // Nested deeper than MAX_TIERS: the lowest allowed id.
    let (cidr, sg) = (cidr_map.get(Key::new(full_len, addr)), sg_map.get(Key::new(full_len, addr)));
    match (cidr, sg) {
        (Some(c), Some(s)) => first_common2(l4, &c.rules, &s.rules),
        (Some(c), None) => first_common(l4, &c.rules),
        (None, Some(s)) => first_common(l4, &s.rules),
        (None, None) => None,
    }
}

/// The next less specific entry containing `addr`: a lookup capped at the
/// parent's prefix length returns exactly it.
#[inline(always)]
fn parent<'a, K: Copy>(map: &'a LpmTrie<K, AddrRules>, entry: &AddrRules, addr: K) -> Option<&'a AddrRules> {
    if entry.parent_len == NO_PARENT {
        return None;
    }
    map.get(Key::new(entry.parent_len, addr))
}

/// Lowest rule id in `l4 & set`.
#[inline(always)]
fn first_common(l4: &RuleSet, set: &RuleSet) -> Option<u32> {
    first_set(|w| l4.words[w] & set.words[w])
}

/// Lowest rule id in `l4 & (a | b)`.
#[inline(always)]
fn first_common2(l4: &RuleSet, a: &RuleSet, b: &RuleSet) -> Option<u32> {
    first_set(|w| l4.words[w] & (a.words[w] | b.words[w]))
}

/// Lowest set bit over the words `word(0..RULE_WORDS)`.
#[inline(always)]
fn first_set(word: impl Fn(usize) -> u64) -> Option<u32> {
    for w in 0..RULE_WORDS {
        let bits = word(w);
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
