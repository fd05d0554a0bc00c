//! One generation of one interface's policy maps, exactly as the kernel
//! will hold them (firewall-ebpf/src/maps.rs): the compiled policy with
//! each rule's counter slot and the address entries' classes.
//!
//! Everything here is computed before the kernel is touched; writing an
//! image into a slot is then plain map updates (`datapath::generation`).
//! Each map's content has a digest, so a map whose content did not change
//! is shared with the generation in force instead of being rebuilt.

use std::collections::{BTreeMap, BTreeSet};

use firewall_common::policy::{
    addr6_octets, slot_flags, slot_state, Addr4, Addr6, AddrEntry, ClassRules, L4Key, RuleSet, SlotMeta, RULE_WORDS,
};
use serde::{Deserialize, Serialize};

use crate::compile::{credit_tiers, identity::fnv1a, CompiledInterface, Trie};

/// The policy maps held in map-in-map slots, by their names in the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    L4,
    Addr4,
    Addr6,
    Classes,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Self::L4, Self::Addr4, Self::Addr6, Self::Classes];

    /// The outer map's name in the object.
    pub fn map_name(self) -> &'static str {
        match self {
            Self::L4 => "L4_RULES",
            Self::Addr4 => "ADDR4",
            Self::Addr6 => "ADDR6",
            Self::Classes => "CLASSES",
        }
    }
}

/// `(prefix length, key data, value)` of one trie entry.
pub type TrieEntry<K, V> = (u32, K, V);

/// One interface's maps for one generation.
#[derive(Clone, Debug)]
pub struct Image {
    pub meta: SlotMeta,
    /// Counter slot of each rule id.
    pub rule_slots: Vec<u32>,
    pub l4: Vec<TrieEntry<L4Key, RuleSet>>,
    pub addr4: Vec<TrieEntry<Addr4, AddrEntry>>,
    pub addr6: Vec<TrieEntry<Addr6, AddrEntry>>,
    pub classes: Vec<(u64, ClassRules)>,
    pub digests: Digests,
}

/// A digest of each map's content, in [`Kind::ALL`] order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digests(pub [u64; 4]);

impl Digests {
    pub fn get(&self, kind: Kind) -> u64 {
        self.0[kind as usize]
    }
}

impl Image {
    /// Entries of `kind`.
    pub fn len(&self, kind: Kind) -> usize {
        match kind {
            Kind::L4 => self.l4.len(),
            Kind::Addr4 => self.addr4.len(),
            Kind::Addr6 => self.addr6.len(),
            Kind::Classes => self.classes.len(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("two address classes share the hash {0:#x}; change any rule to get another")]
    ClassCollision(u64),
}

/// The image of `compiled`, whose rule `i` counts on `rule_slots[i]`.
pub fn build(compiled: &CompiledInterface, rule_slots: &[u32]) -> Result<Image, ImageError> {
    debug_assert_eq!(compiled.rules.len(), rule_slots.len());
    let mut classes = Classes { rule_slots, by_key: BTreeMap::new() };
    let addr4 = classes.entries(4, &compiled.addr4, &compiled.any4)?;
    let addr6 = classes.entries(6, &compiled.addr6, &compiled.any6)?;
    let classes: Vec<(u64, ClassRules)> = classes.by_key.into_iter().map(|(k, (_, v))| (k, v)).collect();
    let l4: Vec<TrieEntry<L4Key, RuleSet>> = compiled.l4.iter().map(|e| (e.prefix_len, e.key, e.rules)).collect();
    let digests = Digests([
        digest(&l4, |(len, k, v), out| {
            push_u32(out, *len);
            out.extend_from_slice(&[k.direction, k.protocol, k.port[0], k.port[1]]);
            push_set(out, v);
        }),
        digest(&addr4, |(len, k, v), out| push_addr_entry(out, *len, k, v)),
        digest(&addr6, |(len, k, v), out| push_addr_entry(out, *len, &addr6_octets(*k), v)),
        digest(&classes, |(k, v), out| {
            out.extend_from_slice(&k.to_le_bytes());
            push_set(out, &v.rules);
            for tier in &v.tiers {
                push_set(out, tier);
            }
        }),
    ]);
    Ok(Image {
        meta: SlotMeta {
            state: slot_state::ENFORCE,
            flags: if compiled.audit_groups.is_empty() { 0 } else { slot_flags::AUDIT },
            any4: compiled.any4,
            any6: compiled.any6,
        },
        rule_slots: rule_slots.to_vec(),
        l4,
        addr4,
        addr6,
        classes,
        digests,
    })
}

/// What a class key is computed from: the family and the counter slots of
/// each tier of the chain.
type ClassOrigin = (u8, Vec<Vec<u32>>);

/// Gives each chain of a trie its class: the key is a hash of the counter
/// slots (stable across generations) of the chain's tiers, the value the
/// credit tiers themselves (rule ids of this generation, and the rules for
/// every address, which are the same for every entry of a family: keeping
/// them out of the key means a rule for `0.0.0.0/0` rewrites `CLASSES`,
/// never an address entry).
struct Classes<'a> {
    rule_slots: &'a [u32],
    /// key → (what it was made from, value), to catch collisions.
    by_key: BTreeMap<u64, (ClassOrigin, ClassRules)>,
}

impl Classes<'_> {
    fn entries<K: Copy>(
        &mut self,
        family: u8,
        trie: &Trie<K>,
        any: &RuleSet,
    ) -> Result<Vec<TrieEntry<K, AddrEntry>>, ImageError> {
        let keys: Vec<u64> = (0..trie.chains.len() as u32)
            .map(|c| self.class_of(family, &trie.tiers(c), any))
            .collect::<Result<_, _>>()?;
        Ok(trie.entries.iter().map(|e| (e.prefix_len, e.key, AddrEntry::new(keys[e.chain as usize]))).collect())
    }

    fn class_of(&mut self, family: u8, chain: &[RuleSet], any: &RuleSet) -> Result<u64, ImageError> {
        let tiers = credit_tiers(chain, any);
        let slots: Vec<Vec<u32>> = chain.iter().map(|t| self.slots_of(t)).collect();
        let mut text = vec![family];
        for tier in &slots {
            for s in tier {
                push_u32(&mut text, *s);
            }
            text.push(b'|');
        }
        let key = fnv1a(&text);
        match self.by_key.get(&key) {
            Some((made_of, _)) if made_of.0 != family || made_of.1 != slots => Err(ImageError::ClassCollision(key)),
            Some(_) => Ok(key),
            None => {
                let mut rules = RuleSet::EMPTY;
                for tier in &tiers {
                    rules.union_with(tier);
                }
                self.by_key.insert(key, ((family, slots), ClassRules { rules, tiers }));
                Ok(key)
            }
        }
    }

    fn slots_of(&self, set: &RuleSet) -> Vec<u32> {
        let slots: BTreeSet<u32> = set.iter().filter_map(|id| self.rule_slots.get(id as usize).copied()).collect();
        slots.into_iter().collect()
    }
}

fn digest<T>(items: &[T], mut encode: impl FnMut(&T, &mut Vec<u8>)) -> u64 {
    let mut bytes = Vec::new();
    for item in items {
        encode(item, &mut bytes);
    }
    // The entry count too, so that no two contents collide by concatenation.
    push_u32(&mut bytes, items.len() as u32);
    fnv1a(&bytes)
}

fn push_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn push_set(out: &mut Vec<u8>, set: &RuleSet) {
    for w in 0..RULE_WORDS {
        out.extend_from_slice(&set.words[w].to_le_bytes());
    }
}

fn push_addr_entry(out: &mut Vec<u8>, len: u32, key: &[u8], v: &AddrEntry) {
    push_u32(out, len);
    out.extend_from_slice(key);
    push_u32(out, v.class[0]);
    push_u32(out, v.class[1]);
}
