//! Entries of an LPM trie whose values are closed under ancestors.
//!
//! The kernel's LPM trie answers a lookup with the longest matching prefix
//! only. A packet matched by a /8 rule and a /24 rule would find the /24
//! entry alone, so that entry must carry the /8 rule too: every entry's set
//! is the union of its own rules and those of every entry containing it.

use std::collections::{BTreeMap, HashMap};

use firewall_common::policy::{addr6_from_octets, addr6_octets, Addr4, Addr6, L4Key, RuleSet};

use super::{Chain, LpmEntry, Trie};

/// A trie key as a bit string, left-aligned in a u128 so prefix masks are
/// the same for every key width.
pub trait LpmKey: Copy {
    const BITS: u32;
    fn to_bits(self) -> u128;
    fn from_bits(bits: u128) -> Self;
}

impl LpmKey for Addr4 {
    const BITS: u32 = 32;
    fn to_bits(self) -> u128 {
        u128::from(u32::from_be_bytes(self)) << 96
    }
    fn from_bits(bits: u128) -> Self {
        // The shift leaves exactly 32 bits.
        ((bits >> 96) as u32).to_be_bytes()
    }
}

impl LpmKey for Addr6 {
    const BITS: u32 = 128;
    fn to_bits(self) -> u128 {
        u128::from_be_bytes(addr6_octets(self))
    }
    fn from_bits(bits: u128) -> Self {
        addr6_from_octets(bits.to_be_bytes())
    }
}

impl LpmKey for L4Key {
    const BITS: u32 = 32;
    fn to_bits(self) -> u128 {
        let [a, b] = self.port;
        u128::from(u32::from_be_bytes([self.direction, self.protocol, a, b])) << 96
    }
    fn from_bits(bits: u128) -> Self {
        let [direction, protocol, a, b] = ((bits >> 96) as u32).to_be_bytes();
        Self::new(direction, protocol, [a, b])
    }
}

/// The first `prefix_len` bits set.
pub fn mask(prefix_len: u32) -> u128 {
    if prefix_len == 0 {
        0
    } else {
        u128::MAX << (128 - prefix_len)
    }
}

/// Whether `(bits, len)` contains `(other, other_len)`.
fn contains(bits: u128, len: u32, other: u128, other_len: u32) -> bool {
    len <= other_len && other & mask(len) == bits
}

/// Merges entries with the same key and prefix (host bits are cleared
/// first), then adds to each the rules of its ancestors, and gives each its
/// chain: its own rules, then its parent's chain (interned: entries whose
/// own rules and ancestry are alike share one).
pub fn build<K: LpmKey>(raw: impl IntoIterator<Item = (u32, K, u32)>) -> Trie<K> {
    // Ordered by (bits, prefix length): an ancestor always sorts before its
    // descendants, and everything between an entry and its descendant lies
    // inside that entry, so the ancestors of the current entry are exactly
    // a stack.
    let mut merged: BTreeMap<(u128, u32), RuleSet> = BTreeMap::new();
    for (prefix_len, key, rule) in raw {
        let bits = key.to_bits() & mask(prefix_len);
        merged.entry((bits, prefix_len)).or_insert(RuleSet::EMPTY).insert(rule);
    }
    let mut chains: Vec<Chain> = Vec::new();
    let mut interned: HashMap<(RuleSet, Option<u32>), u32> = HashMap::new();
    // (bits, prefix length, chain) of the current entry's ancestors.
    let mut stack: Vec<(u128, u32, u32)> = Vec::new();
    let mut entries = Vec::with_capacity(merged.len());
    for ((bits, len), own) in merged {
        while let Some(&(b, l, _)) = stack.last() {
            if contains(b, l, bits, len) {
                break;
            }
            stack.pop();
        }
        let parent = stack.last().map(|(_, _, chain)| *chain);
        let chain = *interned.entry((own, parent)).or_insert_with(|| {
            let mut rules = own;
            if let Some(p) = parent {
                rules.union_with(&chains[p as usize].rules);
            }
            chains.push(Chain { own, parent, rules });
            (chains.len() - 1) as u32
        });
        stack.push((bits, len, chain));
        entries.push(LpmEntry { prefix_len: len, key: K::from_bits(bits), rules: chains[chain as usize].rules, chain });
    }
    Trie { entries, chains }
}

/// The value the kernel's trie returns for `key`: the longest match.
pub fn longest_match<K: LpmKey>(entries: &[LpmEntry<K>], key: K) -> Option<&LpmEntry<K>> {
    longest_match_within(entries, key, K::BITS)
}

/// What the kernel's trie returns for `key` looked up with prefix length
/// `max_len`: the longest match no longer than that.
fn longest_match_within<K: LpmKey>(entries: &[LpmEntry<K>], key: K, max_len: u32) -> Option<&LpmEntry<K>> {
    let bits = key.to_bits();
    entries
        .iter()
        .filter(|e| e.prefix_len <= max_len && contains(e.key.to_bits(), e.prefix_len, bits, K::BITS))
        .max_by_key(|e| e.prefix_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry holds its own rules and every containing entry's, for a
    /// dense pseudo-random set of nested prefixes, checked by brute force.
    #[test]
    fn ancestors_are_folded_in() {
        let mut seed = 0x9e37_79b9_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let raw: Vec<(u32, Addr4, u32)> = (0..300)
            .map(|i| {
                let len = (next() % 33) as u32;
                // Few distinct high bits, so prefixes nest often.
                let addr = ((next() % 4) as u32) << 30 | (next() as u32 & 0x00ff_00ff);
                (len, addr.to_be_bytes(), i % 50)
            })
            .collect();
        let built = build(raw.clone());
        for e in &built.entries {
            let mut want = RuleSet::EMPTY;
            for (len, key, rule) in &raw {
                if contains(key.to_bits() & mask(*len), *len, e.key.to_bits(), e.prefix_len) {
                    want.insert(*rule);
                }
            }
            assert_eq!(e.rules, want, "{:?}/{}", e.key, e.prefix_len);
            // The chain holds the same rules, tier by tier, longest prefix first.
            let mut union = RuleSet::EMPTY;
            for tier in built.tiers(e.chain) {
                union.union_with(&tier);
            }
            assert_eq!(union, want);
        }
    }
}
