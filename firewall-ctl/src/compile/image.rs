//! One generation of one interface's policy maps, exactly as the kernel
//! will hold them (firewall-ebpf/src/maps.rs): the compiled policy with
//! each rule's counter slot and the address entries' classes.
//!
//! Everything here is computed before the kernel is touched; writing an
//! image into a slot is then plain map updates (`datapath::generation`).
//! Each map's content has a digest, so a map whose content did not change
//! is shared with the generation in force instead of being rebuilt.

use std::collections::{BTreeMap, BTreeSet};

use firewall_common::{
    map_names,
    policy::{
        addr6_octets, slot_flags, slot_state, Addr4, Addr6, AddrEntry, ClassRules, L4Key, RuleSet, SlotMeta, RULE_WORDS,
    },
};
use serde::{Deserialize, Serialize};

use crate::compile::{credit_tiers, identity::fnv1a, source, CompiledInterface, Trie};

/// The policy maps held in map-in-map slots, by their names in the object.
/// (The single-address hashes come last: records of an older sgctl hold
/// digests of the first four only.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    L4,
    Addr4,
    Addr6,
    Classes,
    Host4,
    Host6,
}

impl Kind {
    pub const ALL: [Kind; 6] = [Self::L4, Self::Addr4, Self::Addr6, Self::Classes, Self::Host4, Self::Host6];

    /// The outer map's name in the object.
    pub fn map_name(self) -> &'static str {
        match self {
            Self::L4 => map_names::L4_RULES,
            Self::Addr4 => map_names::ADDR4,
            Self::Addr6 => map_names::ADDR6,
            Self::Classes => map_names::CLASSES,
            Self::Host4 => map_names::HOST4,
            Self::Host6 => map_names::HOST6,
        }
    }

    /// Whether a generation installs no map of this kind when it has no
    /// entries for it (the datapath then skips the lookup): the
    /// single-address hashes. Every other kind is always installed.
    pub fn optional(self) -> bool {
        matches!(self, Self::Host4 | Self::Host6)
    }

    /// The single-address hash of a family (4 or 6).
    pub fn hosts(family: u8) -> Self {
        if family == 4 {
            Self::Host4
        } else {
            Self::Host6
        }
    }
}

/// `(prefix length, key data, value)` of one trie entry.
pub type TrieEntry<K, V> = (u32, K, V);

/// `(address, value)` of one single-address hash entry.
pub type HostEntry<K> = (K, AddrEntry);

/// One interface's maps for one generation.
#[derive(Clone, Debug)]
pub struct Image {
    pub meta: SlotMeta,
    /// Counter slot of each rule id.
    pub rule_slots: Vec<u32>,
    pub l4: Vec<TrieEntry<L4Key, RuleSet>>,
    /// The address tries: every prefix but single addresses.
    pub addr4: Vec<TrieEntry<Addr4, AddrEntry>>,
    pub addr6: Vec<TrieEntry<Addr6, AddrEntry>>,
    /// Single addresses (/32, /128), each with the entry the trie would
    /// have held for it.
    pub host4: Vec<HostEntry<Addr4>>,
    pub host6: Vec<HostEntry<Addr6>>,
    pub classes: Vec<(u64, ClassRules)>,
    pub digests: Digests,
    /// What each class is made of, for `sgctl members` (kept in the
    /// interface's record).
    pub class_table: Vec<ClassInfo>,
    /// Intermediate nodes the kernel adds to each trie (`Kind::ALL` order;
    /// 0 for the hashes), for the memory estimate.
    pub intermediate: [usize; Kind::ALL.len()],
}

/// A digest of each map's content, in [`Kind::ALL`] order: the wrapping sum
/// of a hash of each entry, so that changing entries in place changes it by
/// their hashes alone (see [`entry_hash`]). A record of an older sgctl has
/// fewer: the missing ones read as 0, an empty map's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Digests(pub [u64; Kind::ALL.len()]);

impl<'de> Deserialize<'de> for Digests {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let read = Vec::<u64>::deserialize(d)?;
        let mut digests = [0; Kind::ALL.len()];
        if read.len() > digests.len() {
            return Err(serde::de::Error::invalid_length(read.len(), &"at most one digest per policy map"));
        }
        digests[..read.len()].copy_from_slice(&read);
        Ok(Self(digests))
    }
}

impl Digests {
    pub fn get(&self, kind: Kind) -> u64 {
        self.0[kind as usize]
    }

    /// Accounts for `removed` leaving the map of `kind` and `added` joining it.
    pub fn replace(&mut self, kind: Kind, removed: Option<u64>, added: Option<u64>) {
        let d = &mut self.0[kind as usize];
        *d = d.wrapping_sub(removed.unwrap_or(0)).wrapping_add(added.unwrap_or(0));
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
            Kind::Host4 => self.host4.len(),
            Kind::Host6 => self.host6.len(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("two address classes share the hash {0:#x}; change any rule to get another")]
    ClassCollision(u64),
}

/// Where a class's entries get their own rules (`compile::source`), by
/// name, so that it means the same in every generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassSource {
    /// CIDR or prefix-list peers, local interface addresses: changed by an apply only.
    Static,
    /// The `members:` of this group alone.
    Members(String),
    /// Several sources at once.
    Shared,
}

impl ClassSource {
    fn key_text(&self) -> &str {
        match self {
            Self::Static => "",
            Self::Shared => "*",
            Self::Members(group) => group,
        }
    }
}

/// A class of one generation: what its key and value are made of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassInfo {
    /// 4 or 6.
    pub family: u8,
    pub key: u64,
    /// Rule ids of each tier of the chain, the entry's own first.
    pub tiers: Vec<Vec<u32>>,
    pub source: ClassSource,
}

/// The image of `compiled`, whose rule `i` counts on `rule_slots[i]`.
pub fn build(compiled: &CompiledInterface, rule_slots: &[u32]) -> Result<Image, ImageError> {
    debug_assert_eq!(compiled.rules.len(), rule_slots.len());
    let mut classes = Classes { rule_slots, by_key: BTreeMap::new(), table: Vec::new() };
    let (addr4, host4) = hosts_apart(classes.entries(4, &compiled.addr4, &compiled.any4, &compiled.member_groups)?, 32);
    let (addr6, host6) =
        hosts_apart(classes.entries(6, &compiled.addr6, &compiled.any6, &compiled.member_groups)?, 128);
    let class_table = std::mem::take(&mut classes.table);
    let classes: Vec<(u64, ClassRules)> = classes.by_key.into_iter().map(|(k, (_, v))| (k, v)).collect();
    let l4: Vec<TrieEntry<L4Key, RuleSet>> =
        compiled.l4.entries.iter().map(|e| (e.prefix_len, e.key, *compiled.l4.rules(e))).collect();
    let digests = Digests([
        digest(l4.iter().map(|(len, k, v)| l4_hash(*len, k, v))),
        digest(addr4.iter().map(|(len, k, v)| entry_hash(*len, k, v))),
        digest(addr6.iter().map(|(len, k, v)| entry_hash(*len, &addr6_octets(*k), v))),
        digest(classes.iter().map(|(k, v)| class_hash(*k, v))),
        digest(host4.iter().map(|(k, v)| entry_hash(32, k, v))),
        digest(host6.iter().map(|(k, v)| entry_hash(128, &addr6_octets(*k), v))),
    ]);
    Ok(Image {
        meta: SlotMeta {
            state: slot_state::ENFORCE,
            flags: if compiled.audit_groups.is_empty() { 0 } else { slot_flags::AUDIT }
                | if compiled.accounting { slot_flags::ACCOUNTING } else { 0 },
            any4: compiled.any4,
            any6: compiled.any6,
        },
        rule_slots: rule_slots.to_vec(),
        l4,
        addr4,
        addr6,
        host4,
        host6,
        classes,
        digests,
        class_table,
        intermediate: [compiled.l4.intermediate, compiled.addr4.intermediate, compiled.addr6.intermediate, 0, 0, 0],
    })
}

/// The entries of an address trie split into those the kernel's trie
/// holds and the single addresses (prefix length `full`), which go to the
/// family's hash with the very entry the trie would have held.
fn hosts_apart<K>(
    entries: Vec<TrieEntry<K, AddrEntry>>,
    full: u32,
) -> (Vec<TrieEntry<K, AddrEntry>>, Vec<HostEntry<K>>) {
    let (hosts, trie): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(len, _, _)| *len == full);
    (trie, hosts.into_iter().map(|(_, key, value)| (key, value)).collect())
}

/// The key of the class whose chain has tiers counting on `tier_slots`
/// (counter slots, stable across generations), of `family`, for entries of
/// `source`. Counter slots, not rule ids, so that inserting a rule before
/// others rewrites `CLASSES` and `L4_RULES` but no address entry.
pub fn class_key(family: u8, tier_slots: &[Vec<u32>], source: &ClassSource) -> u64 {
    let mut text = vec![family];
    for tier in tier_slots {
        for s in tier {
            push_u32(&mut text, *s);
        }
        text.push(b'|');
    }
    text.extend_from_slice(source.key_text().as_bytes());
    fnv1a(&text)
}

/// The value of the class whose chain is `chain` (own rules first), with
/// `any` the rules for every address of the family.
pub fn class_value(chain: &[RuleSet], any: &RuleSet) -> ClassRules {
    let tiers = credit_tiers(chain, any);
    let mut rules = RuleSet::EMPTY;
    for tier in &tiers {
        rules.union_with(tier);
    }
    ClassRules { rules, tiers }
}

/// The counter slots of the rules in `set`, sorted.
pub fn slots_of(rule_slots: &[u32], set: &RuleSet) -> Vec<u32> {
    let slots: BTreeSet<u32> = set.iter().filter_map(|id| rule_slots.get(id as usize).copied()).collect();
    slots.into_iter().collect()
}

/// What a class key is computed from: the family, the counter slots of
/// each tier of the chain, and the source.
type ClassOrigin = (u8, Vec<Vec<u32>>, ClassSource);

/// Gives each chain of a trie its class: the key is a hash of the counter
/// slots (stable across generations) of the chain's tiers and of the
/// entries' source, the value the credit tiers themselves (rule ids of
/// this generation, and the rules for every address, which are the same
/// for every entry of a family: keeping them out of the key means a rule
/// for `0.0.0.0/0` rewrites `CLASSES`, never an address entry).
struct Classes<'a> {
    rule_slots: &'a [u32],
    /// key → (what it was made from, value), to catch collisions.
    by_key: BTreeMap<u64, (ClassOrigin, ClassRules)>,
    table: Vec<ClassInfo>,
}

impl Classes<'_> {
    fn entries<K: Copy>(
        &mut self,
        family: u8,
        trie: &Trie<K>,
        any: &RuleSet,
        member_groups: &[(String, RuleSet)],
    ) -> Result<Vec<TrieEntry<K, AddrEntry>>, ImageError> {
        let keys: Vec<u64> = (0..trie.chains.len() as u32)
            .map(|c| {
                let source = match trie.chains[c as usize].source {
                    source::STATIC => ClassSource::Static,
                    source::SHARED => ClassSource::Shared,
                    tag => member_groups
                        .get(tag as usize - 1)
                        .map_or(ClassSource::Shared, |(name, _)| ClassSource::Members(name.clone())),
                };
                self.class_of(family, &trie.tiers(c), any, source)
            })
            .collect::<Result<_, _>>()?;
        Ok(trie.entries.iter().map(|e| (e.prefix_len, e.key, AddrEntry::new(keys[e.chain as usize]))).collect())
    }

    fn class_of(
        &mut self,
        family: u8,
        chain: &[RuleSet],
        any: &RuleSet,
        source: ClassSource,
    ) -> Result<u64, ImageError> {
        let slots: Vec<Vec<u32>> = chain.iter().map(|t| slots_of(self.rule_slots, t)).collect();
        let key = class_key(family, &slots, &source);
        match self.by_key.get(&key) {
            Some((made_of, _)) if made_of.0 != family || made_of.1 != slots || made_of.2 != source => {
                Err(ImageError::ClassCollision(key))
            }
            Some(_) => Ok(key),
            None => {
                let tiers = chain.iter().map(|t| t.iter().collect()).collect();
                self.table.push(ClassInfo { family, key, tiers, source: source.clone() });
                self.by_key.insert(key, ((family, slots, source), class_value(chain, any)));
                Ok(key)
            }
        }
    }
}

/// A map's digest: the wrapping sum of its entries' hashes.
fn digest(hashes: impl Iterator<Item = u64>) -> u64 {
    hashes.fold(0, u64::wrapping_add)
}

/// The hash of an address entry (`key` is its network-order bytes).
pub fn entry_hash(len: u32, key: &[u8], v: &AddrEntry) -> u64 {
    let mut bytes = Vec::with_capacity(28);
    push_u32(&mut bytes, len);
    bytes.extend_from_slice(key);
    push_u32(&mut bytes, v.class[0]);
    push_u32(&mut bytes, v.class[1]);
    mix(fnv1a(&bytes))
}

/// The hash of a `CLASSES` entry.
pub fn class_hash(key: u64, v: &ClassRules) -> u64 {
    let mut bytes = key.to_le_bytes().to_vec();
    push_set(&mut bytes, &v.rules);
    for tier in &v.tiers {
        push_set(&mut bytes, tier);
    }
    mix(fnv1a(&bytes))
}

fn l4_hash(len: u32, k: &L4Key, v: &RuleSet) -> u64 {
    let mut bytes = Vec::with_capacity(8 + 8 * RULE_WORDS);
    push_u32(&mut bytes, len);
    bytes.extend_from_slice(&[k.direction, k.protocol, k.port[0], k.port[1]]);
    push_set(&mut bytes, v);
    mix(fnv1a(&bytes))
}

/// A finaliser (MurmurHash3's), so that the sum of entry hashes does not
/// inherit FNV's weak high bits.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn push_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn push_set(out: &mut Vec<u8>, set: &RuleSet) {
    for w in 0..RULE_WORDS {
        out.extend_from_slice(&set.words[w].to_le_bytes());
    }
}
