//! Writing one generation of an interface's policy into one slot of its
//! maps (firewall-ebpf/src/maps.rs). Only the slot not in force is ever
//! written, so the programs never see a half-written policy; the switch is
//! the scope's `ACTIVE` write, made by `control` once every interface's
//! slot is complete.
//!
//! A policy map whose content did not change is not rebuilt: the slot gets
//! the very map the slot in force has. A map that changed is built fresh,
//! sized to its content, filled completely, and only then installed. An
//! installed map is never written again, so a kill at any point leaves
//! nothing half-written where a program could see it; a map built but not
//! installed is freed when `sgctl` exits.
use std::time::Instant;

use anyhow::Context as _;
use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData};
use aya_obj::generated::bpf_map_type::{BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LPM_TRIE};
use firewall_common::policy::{ClassRules, SlotMeta, MAX_RULES};

use super::maps::{IfaceMaps, RULE_SLOTS, SLOT_META};
use crate::image::{Image, Kind, TrieEntry};

const BPF_F_NO_PREALLOC: u32 = 1;

/// What writing a slot did, for reports and benchmarks.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Written {
    /// Maps built and filled for this generation, with their entry counts.
    pub rebuilt: Vec<(Kind, usize)>,
    /// Maps shared with the generation in force.
    pub shared: Vec<Kind>,
    pub micros: u128,
}

/// Writes `image` into generation slot `slot` of the interface's maps.
/// `in_force` is the slot in force and the digests of its maps, when the
/// interface has one: maps with the same digest are shared with it.
pub fn write(
    maps: &IfaceMaps,
    slot: u32,
    image: &Image,
    in_force: Option<(u32, &crate::image::Digests)>,
) -> anyhow::Result<Written> {
    let started = Instant::now();
    let mut written = Written::default();
    for kind in Kind::ALL {
        let mut outer = maps.outer(kind.map_name())?;
        let shared = match in_force {
            Some((active, digests)) if digests.get(kind) == image.digests.get(kind) => outer.get(&active, 0).ok(),
            _ => None,
        };
        let map = match shared {
            Some(map) => {
                written.shared.push(kind);
                map
            }
            None => {
                written.rebuilt.push((kind, image.len(kind)));
                build(kind, image).with_context(|| format!("building {} for slot {slot}", kind.map_name()))?
            }
        };
        let installed = outer.get(&slot, 0).ok().and_then(|m| m.info().ok()).map(|i| i.id());
        if installed != Some(map.info()?.id()) {
            // Waits one RCU grace period inside the kernel (map-in-map update).
            outer.set(slot, &map, 0).with_context(|| format!("installing {} in slot {slot}", kind.map_name()))?;
        }
    }
    write_meta(maps, slot, &image.meta, &image.rule_slots)?;
    written.micros = started.elapsed().as_micros();
    Ok(written)
}

/// Writes slot `slot`'s `SLOT_META` and `RULE_SLOTS`.
pub fn write_meta(maps: &IfaceMaps, slot: u32, meta: &SlotMeta, rule_slots: &[u32]) -> anyhow::Result<()> {
    let mut ids: Array<MapData, u32> = Array::try_from(Map::Array(maps.data(RULE_SLOTS)?))?;
    for (id, counter) in rule_slots.iter().enumerate() {
        ids.set(slot * MAX_RULES as u32 + id as u32, counter, 0).context(RULE_SLOTS)?;
    }
    let mut metas: Array<MapData, SlotMeta> = Array::try_from(Map::Array(maps.data(SLOT_META)?))?;
    metas.set(slot, meta, 0).context(SLOT_META)?;
    Ok(())
}

/// Maps of an old generation bigger than this (in entries) are freed right
/// after a switch; smaller ones stay in the slot out of force until the next
/// change replaces them, which saves the grace period each replacement
/// costs (about 15 ms here) for a few kilobytes.
const FREE_ABOVE: u32 = 16_384;

/// Frees the large policy maps of slot `to` that slot `from` does not use,
/// by giving slot `to` slot `from`'s (after a switch to `from`).
pub fn free_old(maps: &IfaceMaps, from: u32, to: u32) -> anyhow::Result<()> {
    for kind in Kind::ALL {
        let mut outer = maps.outer(kind.map_name())?;
        let Ok(map) = outer.get(&from, 0) else { continue };
        let Ok(old) = outer.get(&to, 0) else { continue };
        let (old, new) = (old.info()?, map.info()?);
        if old.id() != new.id() && old.max_entries() > FREE_ABOVE {
            outer.set(to, &map, 0).with_context(|| format!("freeing the old {}", kind.map_name()))?;
        }
    }
    Ok(())
}

/// A new map of `kind` holding exactly the image's entries.
fn build(kind: Kind, image: &Image) -> anyhow::Result<MapData> {
    match kind {
        Kind::L4 => fill_trie(kind, &image.l4),
        Kind::Addr4 => fill_trie(kind, &image.addr4),
        Kind::Addr6 => fill_trie(kind, &image.addr6),
        Kind::Classes => {
            let mut map =
                Map::HashMap(create::<u64, ClassRules>(BPF_MAP_TYPE_HASH as u32, image.classes.len(), 0, kind)?);
            let mut classes: HashMap<&mut MapData, u64, ClassRules> = HashMap::try_from(&mut map)?;
            for (key, value) in &image.classes {
                classes.insert(key, value, 0)?;
            }
            Ok(into_data(map))
        }
    }
}

fn fill_trie<K: aya::Pod, V: aya::Pod>(kind: Kind, entries: &[TrieEntry<K, V>]) -> anyhow::Result<MapData> {
    let mut map =
        Map::LpmTrie(create::<Key<K>, V>(BPF_MAP_TYPE_LPM_TRIE as u32, entries.len(), BPF_F_NO_PREALLOC, kind)?);
    let mut trie: LpmTrie<&mut MapData, K, V> = LpmTrie::try_from(&mut map)?;
    for (len, key, value) in entries {
        trie.insert(&Key::new(*len, *key), value, 0)?;
    }
    Ok(into_data(map))
}

/// A new, empty map for `kind` with room for `entries` (at least one).
fn create<K, V>(map_type: u32, entries: usize, flags: u32, kind: Kind) -> anyhow::Result<MapData> {
    let capacity = u32::try_from(entries.max(1)).context("too many entries")?;
    let obj = aya_obj::Map::new_from_params(map_type, size_of::<K>() as u32, size_of::<V>() as u32, capacity, flags);
    // The kernel keeps 15 characters of a map's name.
    Ok(MapData::create(obj, &format!("sg_{}", kind.map_name().to_ascii_lowercase()), None)?)
}

fn into_data(map: Map) -> MapData {
    match map {
        Map::LpmTrie(data) | Map::HashMap(data) => data,
        _ => unreachable!("built as a trie or a hash"),
    }
}
