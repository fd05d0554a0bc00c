//! `sgctl members add|remove GROUP ADDRESS...`: a change of a group's
//! membership put in force in the maps in force, in place, when that keeps
//! docs/semantics.md item 16 (a packet is judged entirely by the old policy
//! or entirely by the new one); a full change (a commit) otherwise.
//!
//! ## Why in place is safe, and when it is not done
//!
//! A packet's verdict reads one address entry (its peer's own, from the
//! single-address hash, else the longest prefix of the trie that contains
//! it) and the class that entry names. Adding or removing a single address
//! (a /32 or /128) that carries the group changes at most that address's
//! own entry in the hash: it has no entry below it, and the entries above
//! it, in the trie, keep their rules. One map write changes one entry
//! atomically, so a packet from that address sees the old entry or the new
//! one (a packet that misses the hash finds the nearest prefix in the trie:
//! the membership without the address), and a packet from any other
//! address sees what it saw. A generation without single addresses has no
//! hash installed: the first one added gets a new hash holding it,
//! installed with one write. The class a new entry names is written to
//! `CLASSES` before the entry; classes left unused are not deleted (a
//! packet may still be reading one), but freed by the next full change.
//! Several addresses are as many independent writes.
//!
//! What the new entry must hold is worked out from the kernel's own maps
//! and the interface's record (`MemberIndex`): the hash says whether the
//! address has an entry, a trie lookup at its full length what its nearest
//! ancestor's class is; each class's record says its chain of rules and its
//! source (`image::ClassSource`): an entry whose rules come from the
//! group's `members:` alone can be removed with it. A full change is made
//! instead when that cannot be shown: a prefix that is not a single
//! address, an address that also carries the group by another way (a CIDR
//! peer, a local interface), a class the record does not know, no room left
//! in the maps, or a record written before this index existed or before
//! single addresses had their hash.
//!
//! ## A kill at any instant
//!
//! Everything is worked out first; then a journal (the writes, the records
//! after them, the new edits) is pinned, the maps written, the records and
//! edits written, and the journal removed. A kill before the journal leaves
//! the old membership; after it, some writes may be done and the next
//! command that changes state replays the journal ([`finish_journal`]):
//! every write there is idempotent, so the new membership is completed.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    time::Instant,
};

use anyhow::Context as _;
use aya::maps::{lpm_trie::Key, HashMap as BpfHashMap, LpmTrie, Map, MapData, MapError};
use firewall_common::policy::{addr6_from_octets, Addr4, Addr6, AddrEntry, ClassRules, RuleSet, RULE_WORDS};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{commit, repair, Target};
use crate::{
    compile::image::{self, ClassInfo, ClassSource, Digests, Kind},
    datapath::generation,
    state::{
        blob,
        member_edits::{MemberEdits, MAX_EDITED_ADDRESSES},
        records::IfaceRecord,
    },
    InputError,
};

/// One `sgctl members` command.
#[derive(Clone, Debug)]
pub struct Change {
    pub group: String,
    pub add: bool,
    pub addresses: Vec<IpNet>,
}

/// What it did.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// True when the change was made in the maps in force; false when it
    /// took a full change (then `generation` is the new one).
    pub in_place: bool,
    /// Why it could not be made in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_change_because: Option<String>,
    /// The policy generation in force afterwards.
    pub generation: u64,
    /// Interfaces whose maps were written in place.
    pub interfaces: Vec<String>,
    /// Address entries written or removed in place.
    pub entries_written: usize,
    pub micros: u128,
}

/// Where a change is recorded, beside the maps.
#[derive(Clone, Copy, Debug)]
pub enum Record<'a> {
    /// As an `sgctl members` edit (`MemberEdits::record`), within
    /// [`MAX_EDITED_ADDRESSES`].
    Edit,
    /// As the fleet's layer afterwards (`MemberEdits::fleet`, `crate::fleet`),
    /// whose groups the caller knows the policy defines: a change of a group
    /// no interface's rules name writes no map, only the layer.
    Fleet(&'a BTreeMap<String, BTreeSet<IpNet>>),
}

/// Puts `change` in force in `target`'s scope, recorded as `record` says.
pub fn change(target: &Target, change: &Change, record: Record<'_>) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    repair::repair_scope(target)?;
    let active = target.active()?.ok_or_else(|| InputError::NoPolicyApplied { scope: target.scope.to_string() })?;
    let mut edits = target.member_edits(active.slot)?;
    match record {
        Record::Edit => {
            edits.record(&change.group, change.add, &change.addresses);
            if edits.len() > MAX_EDITED_ADDRESSES {
                return Err(InputError::TooManyMemberEdits { max: MAX_EDITED_ADDRESSES }.into());
            }
        }
        Record::Fleet(fleet) => edits.fleet = fleet.clone(),
    }
    let records = target.records(active.slot)?;
    let records: Vec<IfaceRecord> =
        records.into_values().filter(|r| r.state == crate::state::records::IfaceState::Enforce).collect();
    crate::timings::mark("read the records in force");

    let plans = match plan(target, active.slot, &records, change, matches!(record, Record::Fleet(_))) {
        Ok(plans) => plans,
        Err(Fallback(why)) => return full_change(target, change, edits, started, why),
    };
    crate::timings::mark("plan");
    let journal =
        Journal { generation: active.generation, slot: active.slot, edits, interfaces: plans, hosts_apart: true };
    blob::write(&target.state.members_journal_path(&target.scope), &journal)?;
    crate::timings::mark("journal");
    let entries_written = journal.interfaces.iter().map(|p| p.entries.len()).sum();
    let interfaces = journal.interfaces.iter().filter(|p| !p.entries.is_empty()).map(|p| p.ifname.clone()).collect();
    complete(target, &journal, Some(records))?;
    Ok(Outcome {
        in_place: true,
        full_change_because: None,
        generation: active.generation,
        interfaces,
        entries_written,
        micros: started.elapsed().as_micros(),
    })
}

/// The change as a full one: the policy in force with the new edits, committed.
fn full_change(
    target: &Target,
    change: &Change,
    edits: MemberEdits,
    started: Instant,
    why: String,
) -> anyhow::Result<Outcome> {
    let (mut record, _) = target.parsed_policy()?.context("the policy in force has no record")?;
    record.member_edits = edits;
    let parsed = record.parse().context("the recorded policy no longer parses")?;
    if parsed.group(&change.group).is_none() {
        let known = parsed.groups.iter().map(|g| g.name.clone()).collect();
        return Err(InputError::GroupNotInForce { group: change.group.clone(), known }.into());
    }
    let outcome = commit::commit(target, &record, &parsed, &target.current_wanted()?)?;
    Ok(Outcome {
        in_place: false,
        full_change_because: Some(why),
        generation: outcome.generation,
        interfaces: Vec::new(),
        entries_written: 0,
        micros: started.elapsed().as_micros(),
    })
}

/// Why a change cannot be made in place.
struct Fallback(String);

/// The writes each interface needs, or why they cannot be made in place.
/// `group_checked`: the caller knows the policy defines the group, so one
/// that no interface's rules name needs no write at all.
fn plan(
    target: &Target,
    slot: u32,
    records: &[IfaceRecord],
    change: &Change,
    group_checked: bool,
) -> Result<Vec<IfacePlan>, Fallback> {
    let known = records.iter().any(|r| r.members.groups.iter().any(|(g, _)| g == &change.group));
    if !known && group_checked {
        return Ok(Vec::new());
    }
    if !known {
        // No interface's rules name the group (or an older record does not
        // say): a full change checks the group and puts the edit in force.
        return Err(Fallback(format!("no interface's record shows an sg:{} peer", change.group)));
    }
    let mut plans = Vec::new();
    for record in records {
        if !record.members.indexed {
            return Err(Fallback(format!("the record of {} predates in-place membership changes", record.ifname)));
        }
        if record.members.hosts.is_none() {
            return Err(Fallback(format!("the record of {} predates the single-address hashes", record.ifname)));
        }
        let Some((_, rules)) = record.members.groups.iter().find(|(g, _)| g == &change.group) else { continue };
        let maps = target.maps(&record.ifname);
        let plan = plan_interface(&maps, slot, record, &change.group, &set_of(rules), change)
            .map_err(|e| Fallback(format!("{}: {e:#}", record.ifname)))?
            .map_err(|why| Fallback(format!("{}: {why}", record.ifname)))?;
        plans.push(plan);
    }
    Ok(plans)
}

/// What one interface's maps and record become.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct IfacePlan {
    ifname: String,
    /// Classes to write before any entry (key, value as 64-bit words).
    classes: Vec<(ClassInfo, Vec<u64>)>,
    /// Single-address entries to write (a class key) or remove (`None`).
    entries: Vec<(IpAddr, Option<u64>)>,
    /// The record's digests and single-address hash sizes afterwards.
    digests: Digests,
    sizes: [u64; 2],
}

/// The in-force address maps of one interface, both families.
struct AddressMaps {
    v4: LpmTrie<MapData, Addr4, AddrEntry>,
    v6: LpmTrie<MapData, Addr6, AddrEntry>,
    /// The single-address hashes, where the generation has them.
    hosts4: Option<BpfHashMap<MapData, Addr4, AddrEntry>>,
    hosts6: Option<BpfHashMap<MapData, Addr6, AddrEntry>>,
    /// Room in each hash: for one not there yet, the room of the hash the
    /// first single address would get.
    max: [u64; 2],
    classes_max: u64,
}

impl AddressMaps {
    fn open(maps: &crate::datapath::maps::IfaceMaps, slot: u32) -> anyhow::Result<Self> {
        let inner = |kind: Kind| -> anyhow::Result<MapData> {
            maps.outer(kind.map_name())?.get(&slot, 0).with_context(|| format!("{} of slot {slot}", kind.map_name()))
        };
        let optional = |kind: Kind| maps.outer(kind.map_name()).map(|outer| outer.get(&slot, 0).ok());
        let (v4, v6, classes) = (inner(Kind::Addr4)?, inner(Kind::Addr6)?, inner(Kind::Classes)?);
        let (hosts4, hosts6) = (optional(Kind::Host4)?, optional(Kind::Host6)?);
        let room = |map: &Option<MapData>| -> anyhow::Result<u64> {
            Ok(match map {
                Some(m) => u64::from(m.info()?.max_entries()),
                None => generation::trie_headroom(0) as u64,
            })
        };
        let max = [room(&hosts4)?, room(&hosts6)?];
        let classes_max = u64::from(classes.info()?.max_entries());
        Ok(Self {
            v4: LpmTrie::try_from(Map::LpmTrie(v4))?,
            v6: LpmTrie::try_from(Map::LpmTrie(v6))?,
            hosts4: hosts4.map(|m| BpfHashMap::try_from(Map::HashMap(m))).transpose()?,
            hosts6: hosts6.map(|m| BpfHashMap::try_from(Map::HashMap(m))).transpose()?,
            max,
            classes_max,
        })
    }

    /// The class key of `addr`'s own entry (in the single-address hash).
    fn own(&self, addr: IpAddr) -> anyhow::Result<Option<u64>> {
        let found = match addr {
            IpAddr::V4(a) => self.hosts4.as_ref().map(|h| h.get(&a.octets(), 0)),
            IpAddr::V6(a) => self.hosts6.as_ref().map(|h| h.get(&addr6_from_octets(a.octets()), 0)),
        };
        class_of(found.unwrap_or(Err(MapError::KeyNotFound)))
    }

    /// The class key of the longest prefix of the trie containing `addr`
    /// (which holds no single address).
    fn above(&self, addr: IpAddr) -> anyhow::Result<Option<u64>> {
        class_of(match addr {
            IpAddr::V4(a) => self.v4.get(&Key::new(32, a.octets()), 0),
            IpAddr::V6(a) => self.v6.get(&Key::new(128, addr6_from_octets(a.octets())), 0),
        })
    }
}

fn class_of(found: Result<AddrEntry, MapError>) -> anyhow::Result<Option<u64>> {
    match found {
        Ok(entry) => Ok(Some(entry.class_key())),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn set_of(ids: &[u32]) -> RuleSet {
    let mut set = RuleSet::EMPTY;
    for id in ids {
        set.insert(*id);
    }
    set
}

fn family_of(addr: IpAddr) -> (u8, usize, u32) {
    match addr {
        IpAddr::V4(_) => (4, 0, 32),
        IpAddr::V6(_) => (6, 1, 128),
    }
}

/// The key bytes of an address entry, as `image::entry_hash` takes them.
fn key_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The writes `change` needs on one interface whose rules `group_rules`
/// name the group; `Ok(Err(why))` when they cannot be made in place.
fn plan_interface(
    maps: &crate::datapath::maps::IfaceMaps,
    slot: u32,
    record: &IfaceRecord,
    group: &str,
    group_rules: &RuleSet,
    change: &Change,
) -> anyhow::Result<Result<IfacePlan, String>> {
    let maps_in_force = AddressMaps::open(maps, slot)?;
    let index = &record.members;
    let mut classes: HashMap<u64, ClassInfo> = index.classes.iter().map(|c| (c.key, c.clone())).collect();
    let rule_slots = record.rule_slots();
    let any = [set_of(&index.any4), set_of(&index.any6)];
    let mut plan = IfacePlan {
        ifname: record.ifname.clone(),
        classes: Vec::new(),
        entries: Vec::new(),
        digests: record.digests,
        sizes: index.hosts.unwrap_or_default(),
    };
    let mut seen = std::collections::HashSet::new();
    for net in &change.addresses {
        if net.prefix_len() != net.max_prefix_len() {
            return Ok(Err(format!("{net} is a network, not a single address")));
        }
        let addr = net.addr();
        if !seen.insert(addr) {
            continue;
        }
        let (family, f, full) = family_of(addr);
        let exact = maps_in_force.own(addr)?;
        let above = maps_in_force.above(addr)?;
        let known = |key: Option<u64>| -> Result<Option<ClassInfo>, String> {
            key.map(|k| {
                classes
                    .get(&k)
                    .cloned()
                    .ok_or_else(|| format!("its address entry has class {k:#x}, which its record does not know"))
            })
            .transpose()
        };
        let own_entry = match known(exact) {
            Ok(c) => c,
            Err(why) => return Ok(Err(why)),
        };
        let members_of_group = ClassSource::Members(group.to_owned());
        // The chain of rule sets the address's entry holds afterwards
        // (own first), and its source; `None`: no entry of its own.
        let after: Option<(Vec<RuleSet>, ClassSource)> = match (&own_entry, change.add) {
            (Some(class), true) if class.source == members_of_group => continue,
            (Some(class), true) => {
                let mut tiers: Vec<RuleSet> = class.tiers.iter().map(|t| set_of(t)).collect();
                let Some(own) = tiers.first_mut() else {
                    return Ok(Err(format!("class {:#x} has no rules", class.key)));
                };
                own.union_with(group_rules);
                Some((tiers, ClassSource::Shared))
            }
            (None, true) => {
                let parent = match known(above) {
                    Ok(p) => p,
                    Err(why) => return Ok(Err(why)),
                };
                let mut tiers = vec![*group_rules];
                tiers.extend(parent.iter().flat_map(|p| p.tiers.iter().map(|t| set_of(t))));
                Some((tiers, members_of_group))
            }
            (Some(class), false) if class.source == members_of_group => None,
            (Some(class), false) if class.source == ClassSource::Shared => {
                return Ok(Err(format!("{addr} has rules from other peers besides the members of {group}")));
            }
            // Not a member here: nothing to remove.
            (_, false) => continue,
        };
        let kind = Kind::hosts(family);
        let bytes = key_bytes(addr);
        let old = exact;
        if let Some((tiers, source)) = &after {
            let slots: Vec<Vec<u32>> = tiers.iter().map(|t| image::slots_of(&rule_slots, t)).collect();
            if old == Some(image::class_key(family, &slots, source)) {
                // Already what it must be.
                continue;
            }
        }
        if let Some(old) = old {
            plan.digests.replace(kind, Some(image::entry_hash(full, &bytes, &AddrEntry::new(old))), None);
        }
        let key = match after {
            None => {
                plan.sizes[f] -= 1;
                None
            }
            Some((tiers, source)) => {
                let slots: Vec<Vec<u32>> = tiers.iter().map(|t| image::slots_of(&rule_slots, t)).collect();
                let key = image::class_key(family, &slots, &source);
                match classes.get(&key) {
                    Some(c) if c.family == family && c.source == source && c.tiers == ids(&tiers) => {}
                    Some(_) => return Ok(Err(format!("two classes share the hash {key:#x}"))),
                    None => {
                        let value = image::class_value(&tiers, &any[f]);
                        plan.digests.replace(Kind::Classes, None, Some(image::class_hash(key, &value)));
                        let info = ClassInfo { family, key, tiers: ids(&tiers), source };
                        classes.insert(key, info.clone());
                        plan.classes.push((info, words_of(&value)));
                    }
                }
                if own_entry.is_none() {
                    plan.sizes[f] += 1;
                }
                plan.digests.replace(kind, None, Some(image::entry_hash(full, &bytes, &AddrEntry::new(key))));
                Some(key)
            }
        };
        plan.entries.push((addr, key));
    }
    if plan.sizes[0] > maps_in_force.max[0] || plan.sizes[1] > maps_in_force.max[1] {
        return Ok(Err("its single-address map is full".to_owned()));
    }
    if (index.classes.len() + plan.classes.len()) as u64 > maps_in_force.classes_max {
        return Ok(Err("its CLASSES map is full".to_owned()));
    }
    Ok(Ok(plan))
}

fn ids(tiers: &[RuleSet]) -> Vec<Vec<u32>> {
    tiers.iter().map(|t| t.iter().collect()).collect()
}

/// A class value as 64-bit words (the journal's form).
fn words_of(v: &ClassRules) -> Vec<u64> {
    let mut words = v.rules.words.to_vec();
    for tier in &v.tiers {
        words.extend_from_slice(&tier.words);
    }
    words
}

fn class_of_words(words: &[u64]) -> Option<ClassRules> {
    let set = |i: usize| -> Option<RuleSet> {
        Some(RuleSet { words: words.get(i * RULE_WORDS..(i + 1) * RULE_WORDS)?.try_into().ok()? })
    };
    let mut value = ClassRules { rules: set(0)?, tiers: [RuleSet::EMPTY; firewall_common::policy::MAX_TIERS] };
    for (i, tier) in value.tiers.iter_mut().enumerate() {
        *tier = set(i + 1)?;
    }
    Some(value)
}

/// A membership change being put in force in place: everything the next
/// command needs to finish it.
#[derive(Serialize, Deserialize)]
struct Journal {
    /// The generation (and its slot) whose maps are written in place.
    generation: u64,
    slot: u32,
    /// The membership edits afterwards.
    edits: MemberEdits,
    interfaces: Vec<IfacePlan>,
    /// The entries go to the single-address hashes; false in the journal
    /// of an sgctl that kept them in the tries (replayed there).
    #[serde(default)]
    hosts_apart: bool,
}

/// Makes every write of `journal` (again: each is idempotent), then the
/// records and edits, and removes the journal. `records` are the
/// interfaces' records in force, if already read.
fn complete(target: &Target, journal: &Journal, records: Option<Vec<IfaceRecord>>) -> anyhow::Result<()> {
    for plan in &journal.interfaces {
        let maps = target.maps(&plan.ifname);
        let inner = |kind: Kind| -> anyhow::Result<MapData> { Ok(maps.outer(kind.map_name())?.get(&journal.slot, 0)?) };
        // Classes before the entries that name them.
        let mut classes: BpfHashMap<MapData, u64, ClassRules> =
            BpfHashMap::try_from(Map::HashMap(inner(Kind::Classes)?))?;
        for (info, words) in &plan.classes {
            let value = class_of_words(words).context("a class value of the journal is cut short")?;
            classes.insert(info.key, value, 0).context("writing a class")?;
        }
        let written = if journal.hosts_apart {
            write_hosts(&maps, journal.slot, &plan.entries)
        } else {
            write_in_tries(&inner, &plan.entries)
        };
        written.with_context(|| format!("writing address entries on {}", plan.ifname))?;
    }
    crate::timings::mark("maps");
    let mut records = records.unwrap_or_default();
    for plan in &journal.interfaces {
        let path = target.state.iface_record_path(&target.scope, &plan.ifname, journal.slot);
        let known = records.iter().position(|r| r.ifname == plan.ifname).map(|i| records.swap_remove(i));
        let Some(mut record) = known.map_or_else(|| blob::read::<IfaceRecord>(&path), |r| Ok(Some(r)))? else {
            continue;
        };
        record.digests = plan.digests;
        record.members.hosts = Some(plan.sizes);
        for (info, _) in &plan.classes {
            if !record.members.classes.iter().any(|c| c.key == info.key) {
                record.members.classes.push(info.clone());
            }
        }
        blob::write(&path, &record)?;
    }
    let edits_path = target.state.members_path(&target.scope, journal.slot);
    if journal.edits.is_empty() {
        blob::remove(&edits_path)?;
    } else {
        blob::write(&edits_path, &journal.edits)?;
    }
    crate::timings::mark("records");
    target.lib.save_members(&target.scope, journal.generation, &journal.edits)?;
    crate::timings::mark("saved on disk");
    blob::remove(&target.state.members_journal_path(&target.scope))
}

/// Writes `entries` into the single-address hashes of slot `slot`.
fn write_hosts(
    maps: &crate::datapath::maps::IfaceMaps,
    slot: u32,
    entries: &[(IpAddr, Option<u64>)],
) -> anyhow::Result<()> {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (addr, class) in entries {
        match addr {
            IpAddr::V4(a) => v4.push((a.octets(), *class)),
            IpAddr::V6(a) => v6.push((addr6_from_octets(a.octets()), *class)),
        }
    }
    write_family(maps, slot, Kind::Host4, &v4)?;
    write_family(maps, slot, Kind::Host6, &v6)
}

/// Writes `entries` into slot `slot`'s hash of `kind`. A hash the slot has
/// none of yet is made, filled and then installed with one write (packets
/// see no hash, or all of it).
fn write_family<K: aya::Pod>(
    maps: &crate::datapath::maps::IfaceMaps,
    slot: u32,
    kind: Kind,
    entries: &[(K, Option<u64>)],
) -> anyhow::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut outer = maps.outer(kind.map_name())?;
    let (map, new) = match outer.get(&slot, 0) {
        Ok(map) => (map, false),
        Err(_) => (generation::new_hosts::<K>(kind, 0)?, true),
    };
    let map = write_entries(map, entries)?;
    if new {
        // Waits one RCU grace period inside the kernel.
        outer.set(slot, &map, 0).with_context(|| format!("installing {} in slot {slot}", kind.map_name()))?;
    }
    Ok(())
}

/// Writes (a class key) or removes (`None`) each entry of a single-address hash.
fn write_entries<K: aya::Pod>(map: MapData, entries: &[(K, Option<u64>)]) -> anyhow::Result<MapData> {
    let mut map = Map::HashMap(map);
    let mut hash: BpfHashMap<&mut MapData, K, AddrEntry> = BpfHashMap::try_from(&mut map)?;
    for (key, class) in entries {
        match class {
            Some(k) => hash.insert(key, AddrEntry::new(*k), 0)?,
            None => match hash.remove(key) {
                // A removal a killed sgctl already made.
                Err(e) if is_not_found(&e) => {}
                done => done?,
            },
        }
    }
    match map {
        Map::HashMap(map) => Ok(map),
        _ => unreachable!("made as a hash map above"),
    }
}

/// Replays the entries of a journal written by an sgctl that kept single
/// addresses in the tries (and whose programs look for them there).
fn write_in_tries(
    inner: &dyn Fn(Kind) -> anyhow::Result<MapData>,
    entries: &[(IpAddr, Option<u64>)],
) -> anyhow::Result<()> {
    let mut v4: LpmTrie<MapData, Addr4, AddrEntry> = LpmTrie::try_from(Map::LpmTrie(inner(Kind::Addr4)?))?;
    let mut v6: LpmTrie<MapData, Addr6, AddrEntry> = LpmTrie::try_from(Map::LpmTrie(inner(Kind::Addr6)?))?;
    for (addr, class) in entries {
        let done = match (addr, class) {
            (IpAddr::V4(a), Some(k)) => v4.insert(&Key::new(32, a.octets()), AddrEntry::new(*k), 0),
            (IpAddr::V6(a), Some(k)) => v6.insert(&Key::new(128, addr6_from_octets(a.octets())), AddrEntry::new(*k), 0),
            (IpAddr::V4(a), None) => v4.remove(&Key::new(32, a.octets())),
            (IpAddr::V6(a), None) => v6.remove(&Key::new(128, addr6_from_octets(a.octets()))),
        };
        match done {
            // A removal a killed sgctl already made.
            Err(e) if class.is_none() && is_not_found(&e) => {}
            done => done.with_context(|| format!("writing the entry of {addr}"))?,
        }
    }
    Ok(())
}

/// Whether a map call failed for want of the key.
fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Finishes a membership change a killed `sgctl` left (see the module
/// comment); a journal of a generation no longer in force is dropped.
pub fn finish_journal(target: &Target) -> anyhow::Result<()> {
    let path = target.state.members_journal_path(&target.scope);
    let Some(journal) = blob::read::<Journal>(&path)? else { return Ok(()) };
    match target.active()? {
        Some(a) if a.generation == journal.generation && a.slot == journal.slot => {
            complete(target, &journal, None).context("finishing an interrupted sgctl members")
        }
        _ => blob::remove(&path),
    }
}
