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
//! installed is freed when `sgctl` exits. A single-address hash with no
//! entries is not installed at all (the slot is emptied), so the datapath
//! skips its lookup.
use std::{os::fd::AsFd as _, time::Instant};

use anyhow::Context as _;
use aya::maps::{lpm_trie::Key, Array, Map, MapData};
use aya_obj::generated::bpf_map_type::{BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LPM_TRIE};
use firewall_common::policy::{template, AddrEntry, ClassRules, SlotMeta, MAX_RULES};

use super::{
    maps::{IfaceMaps, RULE_SLOTS, SLOT_META},
    sys,
};
use crate::compile::image::{HostEntry, Image, Kind, TrieEntry};

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
    in_force: Option<(u32, &crate::compile::image::Digests)>,
) -> anyhow::Result<Written> {
    let started = Instant::now();
    let mut written = Written::default();
    // The interface may run programs of an older sgctl, without some of
    // these maps: they are made now, and the new programs take them.
    super::create_missing_outer_maps(maps.dir())?;
    let mut chosen = Vec::new();
    let mut emptied = Vec::new();
    for kind in Kind::ALL {
        let outer = maps.outer(kind.map_name())?;
        if kind.optional() && image.len(kind) == 0 {
            emptied.push((kind, outer));
            continue;
        }
        let shared = match in_force {
            Some((active, digests)) if digests.get(kind) == image.digests.get(kind) => outer.get(&active, 0).ok(),
            _ => None,
        };
        match &shared {
            Some(_) => written.shared.push(kind),
            None => written.rebuilt.push((kind, image.len(kind))),
        }
        chosen.push((kind, outer, shared));
    }
    // The maps to build are independent (each its own kernel lock): built
    // side by side, the largest two (the address tries) take one core each.
    let built: Vec<anyhow::Result<MapData>> = std::thread::scope(|s| {
        let jobs: Vec<_> = chosen
            .iter()
            .filter(|(_, _, shared)| shared.is_none())
            .map(|(kind, _, _)| {
                let kind = *kind;
                s.spawn(move || {
                    build(kind, image).with_context(|| format!("building {} for slot {slot}", kind.map_name()))
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a map builder panicked")))).collect()
    });
    crate::timings::mark(&format!("build and fill {:?}", written.rebuilt));
    let mut built = built.into_iter();
    for (kind, mut outer, shared) in chosen {
        let map = match shared {
            Some(map) => map,
            None => built.next().unwrap_or_else(|| Err(anyhow::anyhow!("a map was not built")))?,
        };
        let installed = outer.get(&slot, 0).ok().and_then(|m| m.info().ok()).map(|i| i.id());
        if installed != Some(map.info()?.id()) {
            // Waits one RCU grace period inside the kernel (map-in-map update).
            outer.set(slot, &map, 0).with_context(|| format!("installing {} in slot {slot}", kind.map_name()))?;
        }
    }
    for (kind, outer) in emptied {
        if outer.get(&slot, 0).is_ok() {
            empty_slot(maps, kind, slot)?;
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
/// by giving slot `to` slot `from`'s (after a switch to `from`), or none
/// where `from` has none.
pub fn free_old(maps: &IfaceMaps, from: u32, to: u32) -> anyhow::Result<()> {
    for kind in Kind::ALL {
        if !maps.dir().join(kind.map_name()).exists() {
            // Programs of an older sgctl, whose object had no such map:
            // nothing of it to free (the next write creates it).
            continue;
        }
        let mut outer = maps.outer(kind.map_name())?;
        let Ok(old) = outer.get(&to, 0) else { continue };
        let old = old.info()?;
        if old.max_entries() <= FREE_ABOVE {
            continue;
        }
        match outer.get(&from, 0) {
            Ok(map) if map.info()?.id() != old.id() => {
                outer.set(to, &map, 0).with_context(|| format!("freeing the old {}", kind.map_name()))?;
            }
            Ok(_) => {}
            Err(_) => empty_slot(maps, kind, to)?,
        }
    }
    Ok(())
}

/// Removes the map of `kind` from slot `slot` (waits one RCU grace period
/// inside the kernel, as an install does).
fn empty_slot(maps: &IfaceMaps, kind: Kind, slot: u32) -> anyhow::Result<()> {
    // aya 0.14 cannot delete from a map-in-map: the raw syscall.
    let outer = sys::obj_get(&maps.dir().join(kind.map_name()))?;
    sys::map_delete_u32(&outer, slot).with_context(|| format!("emptying slot {slot} of {}", kind.map_name()))
}

/// A new map of `kind` holding exactly the image's entries.
fn build(kind: Kind, image: &Image) -> anyhow::Result<MapData> {
    match kind {
        Kind::L4 => fill_trie(kind, &image.l4),
        Kind::Addr4 => fill_trie(kind, &image.addr4),
        Kind::Addr6 => fill_trie(kind, &image.addr6),
        Kind::Host4 => fill_hosts(kind, &image.host4),
        Kind::Host6 => fill_hosts(kind, &image.host6),
        Kind::Classes => {
            let capacity = image.classes.len() + CLASS_HEADROOM;
            let map = create::<u64, ClassRules>(BPF_MAP_TYPE_HASH as u32, capacity, 0, kind)?;
            let (keys, values): (Vec<u64>, Vec<ClassRules>) = image.classes.iter().copied().unzip();
            fill(&map, &keys, &values)?;
            Ok(map)
        }
    }
}

/// Free entries a new `CLASSES` map gets beyond the image's: room for the
/// classes `sgctl members` adds in place (a full apply sizes it again).
/// Each costs its preallocated 1.2 KiB.
pub const CLASS_HEADROOM: usize = 64;

/// Room a new address trie gets beyond the image's entries, for addresses
/// `sgctl members` adds in place: an LPM trie allocates per entry, so the
/// room costs nothing until used.
pub fn trie_headroom(entries: usize) -> usize {
    (entries / 4).max(1024)
}

/// A new single-address hash holding `entries`, with the same room as a
/// trie's for `sgctl members` (elements are allocated as they come, so the
/// room costs only its share of the bucket array).
fn fill_hosts<K: aya::Pod>(kind: Kind, entries: &[HostEntry<K>]) -> anyhow::Result<MapData> {
    let map = new_hosts::<K>(kind, entries.len())?;
    let (keys, values): (Vec<K>, Vec<AddrEntry>) = entries.iter().copied().unzip();
    fill(&map, &keys, &values)?;
    Ok(map)
}

/// A new, empty single-address hash of `kind` with room for `entries` and
/// the room `sgctl members` may use.
pub fn new_hosts<K>(kind: Kind, entries: usize) -> anyhow::Result<MapData> {
    let capacity = entries + trie_headroom(entries);
    create::<K, AddrEntry>(BPF_MAP_TYPE_HASH as u32, capacity, template::HOST_FLAGS, kind)
}

fn fill_trie<K: aya::Pod, V: aya::Pod>(kind: Kind, entries: &[TrieEntry<K, V>]) -> anyhow::Result<MapData> {
    let room = if kind == Kind::L4 { 0 } else { trie_headroom(entries.len()) };
    let map = create::<Key<K>, V>(BPF_MAP_TYPE_LPM_TRIE as u32, entries.len() + room, BPF_F_NO_PREALLOC, kind)?;
    let keys: Vec<Key<K>> = entries.iter().map(|(len, key, _)| Key::new(*len, *key)).collect();
    let values: Vec<V> = entries.iter().map(|(_, _, value)| *value).collect();
    fill(&map, &keys, &values)?;
    Ok(map)
}

/// Elements per `BPF_MAP_UPDATE_BATCH` call: bounds the copy the kernel
/// makes of each batch, and how long one call holds the CPU.
const BATCH: usize = 16_384;

/// Writes `keys[i] → values[i]` into `map`, in batches (one system call per
/// [`BATCH`] elements; one per element where the kernel has no batch
/// update for the map type).
fn fill<K, V>(map: &MapData, keys: &[K], values: &[V]) -> anyhow::Result<()> {
    debug_assert_eq!(keys.len(), values.len());
    let fd = map.fd().as_fd();
    for (keys, values) in keys.chunks(BATCH).zip(values.chunks(BATCH)) {
        let (done, result) = sys::update_batch(fd, as_bytes(keys), as_bytes(values), keys.len() as u32);
        match result {
            Ok(()) if done as usize == keys.len() => {}
            // No batch update for this map type: the kernel's ENOTSUPP (524) on 6.x, EINVAL or
            // EOPNOTSUPP elsewhere.
            Err(e) if done == 0 && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | 524)) => {
                for (key, value) in keys.iter().zip(values) {
                    sys::update(fd, as_bytes(std::slice::from_ref(key)), as_bytes(std::slice::from_ref(value)))
                        .context("writing a map element")?;
                }
            }
            Ok(()) => anyhow::bail!("the kernel wrote {done} of {} elements", keys.len()),
            Err(e) => return Err(e).context(format!("writing element {done} of a batch of {}", keys.len())),
        }
    }
    Ok(())
}

/// The bytes of map keys or values, as the kernel reads them.
fn as_bytes<T>(items: &[T]) -> &[u8] {
    // SAFETY: every T here is a map key or value (`aya::Pod`: plain data,
    // padding written out as fields, or `Key`, which is packed), so all of
    // its bytes are initialised; the slice covers exactly `items`.
    unsafe { std::slice::from_raw_parts(items.as_ptr().cast::<u8>(), size_of_val(items)) }
}

/// A new, empty map for `kind` with room for `entries` (at least one).
fn create<K, V>(map_type: u32, entries: usize, flags: u32, kind: Kind) -> anyhow::Result<MapData> {
    let capacity = u32::try_from(entries.max(1)).context("too many entries")?;
    let obj = aya_obj::Map::new_from_params(map_type, size_of::<K>() as u32, size_of::<V>() as u32, capacity, flags);
    // The kernel keeps 15 characters of a map's name.
    Ok(MapData::create(obj, &format!("sg_{}", kind.map_name().to_ascii_lowercase()), None)?)
}
