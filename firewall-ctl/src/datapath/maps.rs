//! Typed access to one interface's maps, pinned under its state directory
//! (see firewall-ebpf/src/maps.rs for what each holds).
use std::{
    collections::HashSet,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::maps::{Array, ArrayOfMaps, HashMap, Map, MapData, PerCpuArray, PerCpuValues};
// The names are firewall-common's, shared with the eBPF program's statics.
pub use firewall_common::map_names::{
    ACTIVE, CONNTRACK_PREV, CT4, CT4_PENDING, CT4_PEND_PREV, CT4_PREV, CT6, CT6_PENDING, CT6_PEND_PREV, CT6_PREV,
    CT_STATS, CT_TIMEOUTS, EVENTS, EVENT_BUDGET, FRAGMENTS, IFACE_STATS, RULE_SLOTS, RULE_STATS, SLOT_META, TRACE,
    TRACE_EVENTS,
};

/// The map-in-maps that hold tables being moved out of (a resize, or the
/// layout of an older sgctl).
pub const PREVIOUS_TABLES: [&str; 5] = [CT4_PREV, CT6_PREV, CT4_PEND_PREV, CT6_PEND_PREV, CONNTRACK_PREV];
use firewall_common::{
    conntrack::{FlowEntry, FlowState, Timeouts},
    counters::{ReasonCounters, RuleCounters, REASON_SLOTS},
    events::EventBudget,
    policy::{Active, SlotMeta},
};

use super::clock;

/// Opens the pinned map at `path`.
pub fn open(path: &Path) -> anyhow::Result<MapData> {
    MapData::from_pin(path).with_context(|| format!("opening pinned map {}", path.display()))
}

/// The scope's `ACTIVE` map at `path`: which generation slot is in force.
pub fn read_active(path: &Path) -> anyhow::Result<Option<Active>> {
    if !path.exists() {
        return Ok(None);
    }
    let map: Array<MapData, Active> = Array::try_from(Map::Array(open(path)?))?;
    Ok(Some(map.get(&0, 0)?))
}

/// Writes the scope's `ACTIVE`: the switch from one generation to the other.
pub fn write_active(path: &Path, active: Active) -> anyhow::Result<()> {
    let mut map: Array<MapData, Active> = Array::try_from(Map::Array(open(path)?))?;
    map.set(0, active, 0).context("switching ACTIVE")?;
    Ok(())
}

/// Creates and pins the scope's `ACTIVE` map (generation slot 0, nothing
/// in force yet) unless it exists.
pub fn create_active(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let mut map = Array::<MapData, Active>::create(1, 0).context("creating ACTIVE")?;
    map.set(0, Active { slot: 0, settled: 1, generation: 0 }, 0)?;
    // Pin beside and rename, so a crash never leaves a half-made pin.
    let tmp = path.with_file_name("ACTIVE_new");
    let _ = std::fs::remove_file(&tmp);
    map.pin(&tmp).with_context(|| format!("pinning {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))?;
    Ok(())
}

/// One interface's pinned maps.
pub struct IfaceMaps {
    dir: PathBuf,
}

impl IfaceMaps {
    pub fn at(dir: &Path) -> Self {
        Self { dir: dir.to_owned() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data(&self, name: &str) -> anyhow::Result<MapData> {
        open(&self.dir.join(name))
    }

    /// The map-in-map `name` (one of `image::Kind`'s maps, or `CONNTRACK_PREV`).
    pub fn outer(&self, name: &str) -> anyhow::Result<ArrayOfMaps<MapData, MapData>> {
        Ok(ArrayOfMaps::try_from(Map::ArrayOfMaps(self.data(name)?))?)
    }

    /// Counters of each counter slot in `slots`, summed over CPUs.
    pub fn rule_counters(&self, slots: &[u32]) -> anyhow::Result<Vec<RuleCounters>> {
        let stats: PerCpuArray<MapData, RuleCounters> =
            PerCpuArray::try_from(Map::PerCpuArray(self.data(RULE_STATS)?))?;
        slots
            .iter()
            .map(|slot| {
                let per_cpu = stats.get(slot, 0)?;
                Ok(per_cpu.iter().fold(RuleCounters::default(), |mut sum, c| {
                    sum.flows += c.flows;
                    sum.packets += c.packets;
                    sum.bytes += c.bytes;
                    sum
                }))
            })
            .collect()
    }

    /// Zeroes the counters of `slots` (slots given to a new rule).
    pub fn reset_rule_counters(&self, slots: &[u32]) -> anyhow::Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        let mut stats: PerCpuArray<MapData, RuleCounters> =
            PerCpuArray::try_from(Map::PerCpuArray(self.data(RULE_STATS)?))?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        for slot in slots {
            let zeros = PerCpuValues::try_from(vec![RuleCounters::default(); cpus])?;
            stats.set(*slot, zeros, 0).with_context(|| format!("resetting counter slot {slot}"))?;
        }
        Ok(())
    }

    /// Packets and bytes per `(direction, reason)`, summed over CPUs;
    /// index `counters::reason_slot(direction, reason)`.
    pub fn reason_counters(&self) -> anyhow::Result<Vec<ReasonCounters>> {
        let data = self.data(IFACE_STATS)?;
        // Programs of an older sgctl may have fewer reasons: theirs count 0.
        let size = data.info()?.max_entries();
        let stats: PerCpuArray<MapData, ReasonCounters> = PerCpuArray::try_from(Map::PerCpuArray(data))?;
        (0..REASON_SLOTS)
            .map(|i| {
                // Index `reason_slot(direction, reason)`, over the table this object declares.
                if i >= size {
                    return Ok(ReasonCounters::default());
                }
                let per_cpu = stats.get(&i, 0)?;
                Ok(per_cpu.iter().fold(ReasonCounters::default(), |mut sum, c| {
                    sum.packets += c.packets;
                    sum.bytes += c.bytes;
                    sum
                }))
            })
            .collect()
    }

    /// `SLOT_META[slot]`: what the interface does in that generation.
    pub fn slot_meta(&self, slot: u32) -> anyhow::Result<SlotMeta> {
        let metas: Array<MapData, SlotMeta> = Array::try_from(Map::Array(self.data(SLOT_META)?))?;
        Ok(metas.get(&slot, 0)?)
    }

    /// Flow events the datapath held back (rate limit or full ring), summed
    /// over CPUs; 0 for programs of an sgctl before flow events.
    pub fn events_suppressed(&self) -> anyhow::Result<u64> {
        let path = self.dir.join(EVENT_BUDGET);
        if !path.exists() {
            return Ok(0);
        }
        let budget: PerCpuArray<MapData, EventBudget> = PerCpuArray::try_from(Map::PerCpuArray(open(&path)?))?;
        Ok(budget.get(&0, 0)?.iter().map(|b| b.suppressed).sum())
    }

    /// Counter slots that tracked flows credit.
    pub fn slots_in_use(&self) -> anyhow::Result<HashSet<u32>> {
        Ok(self.flows()?.into_iter().map(|f| f.entry.slot).collect())
    }

    /// Forgets the datagrams whose first fragment passed crediting a
    /// counter slot `doomed` selects: their later fragments are dropped from
    /// now on, as the flows of those slots are cut (a flush, the end of audit
    /// mode). Returns how many.
    pub fn remove_fragments(&self, doomed: impl Fn(u32) -> bool) -> anyhow::Result<usize> {
        // The key (`FragmentKey` of the eBPF crate: two 16-byte addresses,
        // the IP identification, protocol, family, padding) as bytes: aya
        // checks its size against the map's.
        let mut map: HashMap<MapData, [u8; 40], u32> = HashMap::try_from(Map::LruHashMap(self.data(FRAGMENTS)?))?;
        let keys: Vec<[u8; 40]> =
            map.iter().filter_map(Result::ok).filter(|(_, slot)| doomed(*slot)).map(|(k, _)| k).collect();
        Ok(keys.iter().filter(|k| map.remove(k).is_ok()).count())
    }

    /// Deletes flows idle past their timeout by more than the clock's
    /// margin of error (the datapath ignores them already; this frees
    /// their slots).
    pub fn expire_flows(&self) -> anyhow::Result<usize> {
        self.expire_flows_with(|| {})
    }

    /// [`IfaceMaps::expire_flows`], calling `between` where a racing packet
    /// changes what was read (see `remove_flows_with`).
    pub fn expire_flows_with(&self, between: impl FnOnce()) -> anyhow::Result<usize> {
        let timeouts = self.timeouts()?;
        let clock = clock::clock();
        let (now, margin) = (clock.now(), clock.margin());
        self.remove_flows_with(
            |k, e| idle(e, now) > timeouts.for_flow(k.protocol, FlowState::from_u8(e.state)).saturating_add(margin),
            between,
        )
    }

    /// Sets the idle timeouts (`timeouts` in nanoseconds; the datapath
    /// keeps them in its clock's ticks).
    pub fn set_timeouts(&self, timeouts: Timeouts) -> anyhow::Result<()> {
        let ticks = timeouts.in_ticks(clock::clock().hz());
        let mut config: Array<MapData, Timeouts> = Array::try_from(Map::Array(self.data(CT_TIMEOUTS)?))?;
        if config.get(&0, 0)? != ticks {
            config.set(0, ticks, 0).context(CT_TIMEOUTS)?;
        }
        Ok(())
    }

    /// The idle timeouts in force, in ticks of the datapath's clock.
    pub fn timeouts(&self) -> anyhow::Result<Timeouts> {
        let config: Array<MapData, Timeouts> = Array::try_from(Map::Array(self.data(CT_TIMEOUTS)?))?;
        Ok(Timeouts::in_force(Some(config.get(&0, 0)?), clock::clock().hz()))
    }

    /// What the kernel charges for every map of the interface (the
    /// `memlock` of each): those pinned in its directory, its records, and
    /// the policy maps installed in either generation slot, each once.
    pub fn kernel_memory(&self) -> anyhow::Result<u64> {
        let mut total = pinned_memory(&self.dir)?;
        let mut seen = HashSet::new();
        for name in crate::compile::image::Kind::ALL
            .map(crate::compile::image::Kind::map_name)
            .into_iter()
            .chain(PREVIOUS_TABLES)
        {
            if !self.dir.join(name).exists() {
                // Programs of an older sgctl, which had no such map.
                continue;
            }
            let outer = self.outer(name)?;
            for slot in 0..2 {
                let Ok(inner) = outer.get(&slot, 0) else { continue };
                if seen.insert(inner.info()?.id()) {
                    total += memlock(inner.fd().as_fd()).unwrap_or(0);
                }
            }
        }
        Ok(total)
    }
}

/// The summed `memlock` of the maps pinned directly in `dir` (links and
/// directories have none).
pub fn pinned_memory(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if let Ok(fd) = super::sys::obj_get(&path) {
            total += memlock(fd.as_fd()).unwrap_or(0);
        }
    }
    Ok(total)
}

/// The kernel's charge for the map open as `fd` (`memlock` in fdinfo);
/// `None` for other objects.
pub fn memlock(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    use std::os::fd::AsRawFd as _;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse().ok())
}

/// Ticks of the datapath's clock since `e` last saw a packet, at `now`.
pub fn idle(e: &FlowEntry, now: u64) -> u64 {
    now.saturating_sub(e.last_seen)
}
