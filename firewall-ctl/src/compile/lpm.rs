//! Entries of an LPM trie whose values are closed under ancestors.
//!
//! The kernel's LPM trie answers a lookup with the longest matching prefix
//! only. A packet matched by a /8 rule and a /24 rule would find the /24
//! entry alone, so that entry must carry the /8 rule too: every entry's set
//! is the union of its own rules and those of every entry containing it.
//!
//! A million prefix-list CIDRs go through here, so the build sorts a flat
//! list (no tree of rule sets) and gives each entry a chain index instead of
//! its own copy of a 128-byte rule set: entries alike share a chain.

use std::collections::HashMap;

use firewall_common::policy::{addr6_from_octets, addr6_octets, Addr4, Addr6, L4Key, RuleSet};

use super::{source, Chain, LpmEntry, Trie};

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

/// One prefix named by a peer source (or one L4 key of a rule), before
/// merging: `set` indexes the rule sets passed to [`build`], `source` is a
/// [`source`] tag.
#[derive(Clone, Copy, Debug)]
pub struct RawEntry {
    pub bits: u128,
    pub len: u32,
    pub set: u32,
    pub source: u32,
}

impl RawEntry {
    /// `key/len` with its host bits cleared.
    pub fn new<K: LpmKey>(len: u32, key: K, set: u32, source: u32) -> Self {
        Self { bits: key.to_bits() & mask(len), len, set, source }
    }
}

/// Merges entries with the same key and prefix (their rule sets united,
/// their sources combined), then gives each its chain: its own rules, its
/// source, then its parent's chain (interned: entries whose own rules,
/// source and ancestry are alike share one). Also counts the intermediate
/// nodes the kernel's trie will need for these entries, leaving out those
/// of length `apart`: single addresses, which the kernel holds in a hash
/// beside the trie (firewall_common::policy). An entry of full length is
/// nobody's ancestor, so leaving it out changes no other entry's chain.
pub fn build<K: LpmKey>(mut raw: Vec<RawEntry>, sets: &[RuleSet], apart: Option<u32>) -> Trie<K> {
    // Ordered by (bits, prefix length): an ancestor always sorts before its
    // descendants, and everything between an entry and its descendant lies
    // inside that entry, so the ancestors of the current entry are exactly
    // a stack.
    raw.sort_unstable_by_key(|e| (e.bits, e.len));
    let mut owns = Owns::default();
    let mut chains: Vec<Chain> = Vec::new();
    let mut interned: HashMap<(u32, Option<u32>, u32), u32> = HashMap::new();
    // (bits, prefix length, chain) of the current entry's ancestors.
    let mut stack: Vec<(u128, u32, u32)> = Vec::new();
    let mut entries = Vec::with_capacity(raw.len());
    let mut previous: Option<(u128, u32)> = None;
    let mut intermediate = 0;
    let mut i = 0;
    while i < raw.len() {
        let (bits, len) = (raw[i].bits, raw[i].len);
        let mut j = i + 1;
        while j < raw.len() && raw[j].bits == bits && raw[j].len == len {
            j += 1;
        }
        let own = owns.of(&raw[i..j], sets);
        let tag = raw[i..j].iter().map(|e| e.source).reduce(source::combine).unwrap_or(source::STATIC);
        i = j;
        while let Some(&(b, l, _)) = stack.last() {
            if contains(b, l, bits, len) {
                break;
            }
            stack.pop();
        }
        // Where this entry leaves the path to the one before it, the kernel
        // puts an intermediate node, unless an entry is there already (see
        // `intermediate_nodes_match_the_kernels_insertion` below).
        if apart != Some(len) {
            if let Some((b, l)) = previous.filter(|&(b, l)| !contains(b, l, bits, len)) {
                let split = common_prefix(b, bits).min(l).min(len);
                if stack.last().is_none_or(|&(_, parent_len, _)| parent_len < split) {
                    intermediate += 1;
                }
            }
            previous = Some((bits, len));
        }
        let parent = stack.last().map(|(_, _, chain)| *chain);
        let chain = *interned.entry((own, parent, tag)).or_insert_with(|| {
            let mut rules = owns.sets[own as usize];
            if let Some(p) = parent {
                rules.union_with(&chains[p as usize].rules);
            }
            chains.push(Chain { own: owns.sets[own as usize], parent, rules, source: tag });
            (chains.len() - 1) as u32
        });
        stack.push((bits, len, chain));
        entries.push(LpmEntry { prefix_len: len, key: K::from_bits(bits), chain });
    }
    Trie { entries, chains, intermediate }
}

/// The own rule sets of merged entries, interned. Most entries come from
/// one source alone, so a set is looked up by its index first and hashed
/// only when several sources name the same prefix.
#[derive(Default)]
struct Owns {
    sets: Vec<RuleSet>,
    by_set_index: HashMap<u32, u32>,
    by_value: HashMap<RuleSet, u32>,
}

impl Owns {
    fn of(&mut self, group: &[RawEntry], sets: &[RuleSet]) -> u32 {
        if let [one] = group {
            if let Some(own) = self.by_set_index.get(&one.set) {
                return *own;
            }
            let own = self.intern(sets[one.set as usize]);
            self.by_set_index.insert(one.set, own);
            return own;
        }
        let mut union = RuleSet::EMPTY;
        for e in group {
            union.union_with(&sets[e.set as usize]);
        }
        self.intern(union)
    }

    fn intern(&mut self, set: RuleSet) -> u32 {
        let next = self.sets.len() as u32;
        let own = *self.by_value.entry(set).or_insert(next);
        if own == next {
            self.sets.push(set);
        }
        own
    }
}

/// Leading bits `a` and `b` have in common.
fn common_prefix(a: u128, b: u128) -> u32 {
    (a ^ b).leading_zeros()
}

/// The entry the kernel's trie returns for `key`: the longest match.
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

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// `n` pseudo-random prefixes with few distinct high bits, so they nest
    /// and share paths often; each names rule `i % 50`.
    fn nested(n: u32, seed: u64) -> Vec<(u32, Addr4, u32)> {
        let mut rng = Rng(seed);
        (0..n)
            .map(|i| {
                let len = (rng.next() % 33) as u32;
                let addr = ((rng.next() % 4) as u32) << 30 | (rng.next() as u32 & 0x00ff_00ff);
                (len, addr.to_be_bytes(), i % 50)
            })
            .collect()
    }

    fn build_rules(raw: &[(u32, Addr4, u32)]) -> Trie<Addr4> {
        build_apart(raw, None)
    }

    fn build_apart(raw: &[(u32, Addr4, u32)], apart: Option<u32>) -> Trie<Addr4> {
        let sets: Vec<RuleSet> = (0..50)
            .map(|r| {
                let mut s = RuleSet::EMPTY;
                s.insert(r);
                s
            })
            .collect();
        let raw = raw.iter().map(|(len, key, rule)| RawEntry::new(*len, *key, *rule, source::STATIC)).collect();
        build(raw, &sets, apart)
    }

    /// Every entry holds its own rules and every containing entry's, for a
    /// dense pseudo-random set of nested prefixes, checked by brute force.
    #[test]
    fn ancestors_are_folded_in() {
        let raw = nested(300, 0x9e37_79b9);
        let built = build_rules(&raw);
        for e in &built.entries {
            let mut want = RuleSet::EMPTY;
            for (len, key, rule) in &raw {
                if contains(key.to_bits() & mask(*len), *len, e.key.to_bits(), e.prefix_len) {
                    want.insert(*rule);
                }
            }
            assert_eq!(built.rules(e), &want, "{:?}/{}", e.key, e.prefix_len);
            // The chain holds the same rules, tier by tier, longest prefix first.
            let mut union = RuleSet::EMPTY;
            for tier in built.tiers(e.chain) {
                union.union_with(&tier);
            }
            assert_eq!(union, want);
        }
    }

    /// The kernel's `trie_update_elem` (kernel/bpf/lpm_trie.c), reduced to
    /// the shape of the trie: a node is a prefix, intermediate or not.
    #[derive(Default)]
    struct KernelTrie {
        nodes: Vec<(u128, u32, bool, [Option<usize>; 2])>,
        root: Option<usize>,
    }

    impl KernelTrie {
        fn bit(bits: u128, index: u32) -> usize {
            usize::from(bits & (1 << (127 - index)) != 0)
        }

        fn insert(&mut self, bits: u128, len: u32, max: u32) {
            let mut slot: Option<(usize, usize)> = None; // (parent, child index); None = root
            let mut node = self.root;
            let mut matchlen = 0;
            while let Some(n) = node {
                let (nb, nl, _, children) = self.nodes[n];
                matchlen = common_prefix(nb, bits).min(nl).min(len);
                if nl != matchlen || nl == len || nl == max {
                    break;
                }
                let next = Self::bit(bits, nl);
                slot = Some((n, next));
                node = children[next];
            }
            let new = self.nodes.len();
            self.nodes.push((bits, len, false, [None, None]));
            let Some(n) = node else { return self.set(slot, new) };
            let (nb, nl, _, children) = self.nodes[n];
            if nl == matchlen {
                // Same prefix: replaced in place.
                self.nodes[new].3 = children;
                self.nodes.pop();
                self.nodes[n].2 = false;
                return;
            }
            if matchlen == len {
                self.nodes[new].3[Self::bit(nb, matchlen)] = Some(n);
                return self.set(slot, new);
            }
            let im = self.nodes.len();
            let mut kids = [Some(n), Some(new)];
            if Self::bit(bits, matchlen) == 0 {
                kids.swap(0, 1);
            }
            self.nodes.push((nb & mask(matchlen), matchlen, true, kids));
            self.set(slot, im);
        }

        fn set(&mut self, slot: Option<(usize, usize)>, node: usize) {
            match slot {
                None => self.root = Some(node),
                Some((parent, i)) => self.nodes[parent].3[i] = Some(node),
            }
        }

        fn intermediate(&self) -> usize {
            self.nodes.iter().filter(|n| n.2).count()
        }
    }

    /// The count of intermediate nodes (for `sgctl check`'s memory figure)
    /// is the one the kernel's own insertion produces, whatever the order
    /// the entries are inserted in.
    #[test]
    fn intermediate_nodes_match_the_kernels_insertion() {
        for seed in 1..40 {
            let raw = nested(10 + seed as u32 * 7, seed * 0x1234_5678_9abc);
            let built = build_rules(&raw);
            let mut kernel = KernelTrie::default();
            // In the opposite order of the build's sort, to show order does not matter.
            for e in built.entries.iter().rev() {
                kernel.insert(e.key.to_bits(), e.prefix_len, 32);
            }
            assert_eq!(kernel.nodes.len(), built.entries.len() + kernel.intermediate());
            assert_eq!(built.intermediate, kernel.intermediate(), "seed {seed}");
        }
    }

    /// With single addresses kept apart (in the kernel's hash), the count
    /// is that of the trie holding only the other entries, and every
    /// entry, single addresses too, keeps the chain it had.
    #[test]
    fn single_addresses_apart_leave_the_trie_and_keep_their_chains() {
        for seed in 1..40 {
            let mut raw = nested(10 + seed as u32 * 7, seed * 0x9abc_def0_1234);
            // Hosts under the other prefixes, and the first addresses again as hosts.
            let hosts: Vec<(u32, Addr4, u32)> = raw.iter().take(12).map(|(_, a, r)| (32, *a, (r + 1) % 50)).collect();
            raw.extend(hosts);
            let all = build_rules(&raw);
            let apart = build_apart(&raw, Some(32));
            assert_eq!(all.entries, apart.entries, "seed {seed}");
            for e in &all.entries {
                assert_eq!(all.tiers(e.chain), apart.tiers(e.chain), "seed {seed}");
            }
            let mut kernel = KernelTrie::default();
            let in_trie: Vec<_> = apart.entries.iter().filter(|e| e.prefix_len < 32).collect();
            for e in in_trie.iter().rev() {
                kernel.insert(e.key.to_bits(), e.prefix_len, 32);
            }
            assert_eq!(kernel.nodes.len(), in_trie.len() + kernel.intermediate());
            assert_eq!(apart.intermediate, kernel.intermediate(), "seed {seed}");
        }
    }
}
