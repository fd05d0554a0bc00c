//! One interface's connection-tracking tables as `sgctl` reads and changes
//! them (firewall_common::conntrack): per family a confirmed and a pending
//! table, read in batches (a table of millions of flows in a few system
//! calls), and changed only in ways a racing packet cannot undo.
//!
//! Removing flows (`conntrack gc`, `flush`) races with the datapath: a
//! flow judged removable a moment ago may have been reused since (an
//! expired entry replaced by a new flow with the same key, or refreshed by
//! a late packet). Each removal therefore takes the entry out and looks at
//! what it took, in one step (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`); an entry
//! that no longer qualifies is put back at once (unless a packet re-created
//! it meanwhile, which then stands). Listing and deleting by key, as
//! before, removed such a live flow for good.
use std::os::fd::AsFd as _;

use anyhow::Context as _;
use aya::maps::{Map, MapData, PerCpuArray, PerCpuValues};
use firewall_common::{
    conntrack::{FlowEntry, FlowKey, FlowKey4, FlowKey6, Table},
    counters::CtEvent,
    map_names,
};

use super::{maps::IfaceMaps, sys};

/// A flow as one of the tables holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    pub key: FlowKey,
    pub entry: FlowEntry,
    pub table: Table,
}

/// One of an interface's four tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableId {
    pub name: &'static str,
    pub table: Table,
    pub family: u8,
}

/// The four tables, confirmed first.
pub const TABLES: [TableId; 4] = [
    TableId { name: map_names::CT4, table: Table::Confirmed, family: 4 },
    TableId { name: map_names::CT6, table: Table::Confirmed, family: 6 },
    TableId { name: map_names::CT4_PENDING, table: Table::Pending, family: 4 },
    TableId { name: map_names::CT6_PENDING, table: Table::Pending, family: 6 },
];

impl TableId {
    pub fn key_size(self) -> usize {
        if self.family == 4 {
            size_of::<FlowKey4>()
        } else {
            size_of::<FlowKey6>()
        }
    }

    /// The key of the table for `key` (of this table's family).
    fn key_bytes(self, key: &FlowKey) -> Option<Vec<u8>> {
        if self.family == 4 {
            key.v4().map(|k| bytes_of(&k).to_vec())
        } else {
            key.v6().map(|k| bytes_of(&k).to_vec())
        }
    }

    /// The flow of a key as the table has it.
    pub fn flow_key(self, bytes: &[u8]) -> FlowKey {
        if self.family == 4 {
            read::<FlowKey4>(bytes).into()
        } else {
            read::<FlowKey6>(bytes).into()
        }
    }
}

/// How many flows each table holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub confirmed: u64,
    pub pending: u64,
}

/// An interface's conntrack as `status`, `stats` and the metrics show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Flows each table holds at most (`max_entries`).
    pub capacity: u32,
    /// Flows in the confirmed tables (both families): nothing evicts them.
    pub confirmed: u64,
    /// Flows in the pending tables: evictable until confirmed.
    pub pending: u64,
    /// Flows that entered a pending table, since the interface was attached.
    pub pending_opened: u64,
    /// Pending flows moved to the confirmed table.
    pub promoted: u64,
    /// Flows that qualified for the confirmed table while it was full (each
    /// stays pending, evictable, and moves over once there is room).
    pub promotion_refused: u64,
    /// Pending flows the LRU evicted to make room for newer ones.
    pub pending_evicted: u64,
}

/// The bytes of a plain `#[repr(C)]` value.
pub fn bytes_of<T: aya::Pod>(v: &T) -> &[u8] {
    // SAFETY: `Pod` values are plain bytes with no padding holes.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }
}

/// A `T` read from the start of `bytes`.
fn read<T: aya::Pod>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: enough bytes, and any bytes are a valid `Pod`.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

impl IfaceMaps {
    /// Every `(key, entry)` of `table`, its keys as the table has them.
    fn raw(&self, table: TableId) -> anyhow::Result<Vec<(Vec<u8>, FlowEntry)>> {
        let map = self.data(table.name)?;
        let (keys, values) = sys::read_all(map.fd().as_fd(), table.key_size(), size_of::<FlowEntry>())
            .with_context(|| format!("reading {}", table.name))?;
        Ok(keys
            .chunks_exact(table.key_size())
            .zip(values.chunks_exact(size_of::<FlowEntry>()))
            .map(|(k, v)| (k.to_vec(), read::<FlowEntry>(v)))
            .collect())
    }

    /// Every tracked flow, confirmed first.
    pub fn flows(&self) -> anyhow::Result<Vec<Tracked>> {
        let mut out = Vec::new();
        for table in TABLES {
            for (key, entry) in self.raw(table)? {
                out.push(Tracked { key: table.flow_key(&key), entry, table: table.table });
            }
        }
        Ok(out)
    }

    /// Every tracked flow, pending first: a flow that moves to the
    /// confirmed table while the tables are read is read twice, never
    /// missed (it is inserted there before it leaves the pending one).
    /// Straight from the batch reads' buffers, with no allocation per
    /// flow (the agent reads every flow every window).
    pub fn flows_pending_first(&self) -> anyhow::Result<Vec<Tracked>> {
        let mut out = Vec::new();
        for table in TABLES.iter().rev() {
            let map = self.data(table.name)?;
            let (keys, values) = sys::read_all(map.fd().as_fd(), table.key_size(), size_of::<FlowEntry>())
                .with_context(|| format!("reading {}", table.name))?;
            out.reserve(values.len() / size_of::<FlowEntry>());
            let entries = values.chunks_exact(size_of::<FlowEntry>());
            for (key, entry) in keys.chunks_exact(table.key_size()).zip(entries) {
                out.push(Tracked { key: table.flow_key(key), entry: read::<FlowEntry>(entry), table: table.table });
            }
        }
        Ok(out)
    }

    /// How many flows each table holds (expired ones too, until removed).
    pub fn flow_counts(&self) -> anyhow::Result<Counts> {
        let mut counts = Counts::default();
        for table in TABLES {
            let n = self.raw(table)?.len() as u64;
            match table.table {
                Table::Confirmed => counts.confirmed += n,
                Table::Pending => counts.pending += n,
            }
        }
        Ok(counts)
    }

    /// Capacity of each table (they share one size: `max_entries`); of
    /// the single table for an interface an older sgctl filtered.
    pub fn conntrack_capacity(&self) -> anyhow::Result<u32> {
        let name = if self.dir().join(map_names::CT4).exists() {
            map_names::CT4
        } else {
            firewall_common::conntrack::legacy::CONNTRACK
        };
        Ok(self.data(name)?.info()?.max_entries())
    }

    /// Both tables' use and what happened to their flows.
    pub fn conntrack_usage(&self) -> anyhow::Result<Usage> {
        let counts = self.flow_counts()?;
        let events = self.ct_events()?;
        let event = |e: CtEvent| events[e as usize];
        Ok(Usage {
            capacity: self.conntrack_capacity()?,
            confirmed: counts.confirmed,
            pending: counts.pending,
            pending_opened: event(CtEvent::Opened),
            promoted: event(CtEvent::Promoted),
            promotion_refused: event(CtEvent::PromotionRefused),
            pending_evicted: firewall_common::counters::pending_evicted(&events, counts.pending),
        })
    }

    /// `CT_STATS`, summed over CPUs, index `CtEvent`.
    pub fn ct_events(&self) -> anyhow::Result<Vec<u64>> {
        let stats: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(self.data(map_names::CT_STATS)?))?;
        CtEvent::ALL.iter().map(|e| Ok(stats.get(&(*e as u32), 0)?.iter().sum())).collect()
    }

    /// Adds `n` to one of sgctl's own `CT_STATS` entries (CPU 0's value;
    /// the datapath never writes these). Under the state lock.
    fn count_ct(&self, event: CtEvent, n: u64) -> anyhow::Result<()> {
        if n == 0 {
            return Ok(());
        }
        let mut stats: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(self.data(map_names::CT_STATS)?))?;
        let mut values: Vec<u64> = stats.get(&(event as u32), 0)?.to_vec();
        values[0] += n;
        stats.set(event as u32, PerCpuValues::try_from(values)?, 0).context(map_names::CT_STATS)?;
        Ok(())
    }

    /// Removes the flows `doomed` selects; returns how many. Each entry is
    /// taken out and checked as it was at that instant, and put back when
    /// it no longer qualifies (see the module comment).
    pub fn remove_flows(&self, doomed: impl Fn(&FlowKey, &FlowEntry) -> bool) -> anyhow::Result<usize> {
        self.remove_flows_with(doomed, || {})
    }

    /// [`IfaceMaps::remove_flows`], calling `between` after the tables are
    /// read and before anything is removed (where a racing packet changes
    /// what was read; the tests make one happen there).
    pub fn remove_flows_with(
        &self,
        doomed: impl Fn(&FlowKey, &FlowEntry) -> bool,
        between: impl FnOnce(),
    ) -> anyhow::Result<usize> {
        let mut candidates = Vec::new();
        for table in TABLES {
            for (key, entry) in self.raw(table)? {
                if doomed(&table.flow_key(&key), &entry) {
                    candidates.push((table, key));
                }
            }
        }
        between();
        let mut removed = 0;
        let mut pending_removed = 0;
        let mut value = vec![0u8; size_of::<FlowEntry>()];
        for (table, key) in candidates {
            let map = self.data(table.name)?;
            if !sys::lookup_and_delete(map.fd().as_fd(), &key, &mut value)
                .with_context(|| format!("removing a flow from {}", table.name))?
            {
                continue; // gone already
            }
            let entry = read::<FlowEntry>(&value);
            if doomed(&table.flow_key(&key), &entry) {
                removed += 1;
                pending_removed += u64::from(table.table == Table::Pending);
            } else {
                // Reused since it was read: put back, unless a packet has
                // re-created it meanwhile.
                let _ = sys::update_with(map.fd().as_fd(), &key, &value, sys::NOEXIST);
            }
        }
        self.count_ct(CtEvent::RemovedBySgctl, pending_removed)?;
        Ok(removed)
    }

    /// Makes every flow that credits one of `slots` credit `to` instead.
    pub fn move_flows(&self, slots: &[u32], to: u32) -> anyhow::Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        for table in TABLES {
            let map = self.data(table.name)?;
            for (key, mut entry) in self.raw(table)? {
                if slots.contains(&entry.slot) {
                    entry.slot = to;
                    // Only if still there: never resurrect a flow.
                    let _ = sys::update_with(map.fd().as_fd(), &key, bytes_of(&entry), sys::EXIST);
                }
            }
        }
        Ok(())
    }

    /// Puts `flows` into the tables in force (into the table each names,
    /// or pending when its confirmed table is full), never over a flow
    /// they hold already; for flows moved from tables of another size or
    /// layout. Returns how many went in.
    pub fn add_flows(&self, flows: impl IntoIterator<Item = Tracked>) -> anyhow::Result<usize> {
        let maps: Vec<(TableId, MapData)> =
            TABLES.iter().map(|t| Ok((*t, self.data(t.name)?))).collect::<anyhow::Result<_>>()?;
        let table_of = |family: u8, table: Table| maps.iter().find(|(t, _)| t.family == family && t.table == table);
        let (mut added, mut pending_added) = (0, 0);
        for flow in flows {
            let mut placed = None;
            for table in [flow.table, Table::Pending] {
                let Some((id, map)) = table_of(flow.key.family, table) else { continue };
                let Some(key) = id.key_bytes(&flow.key) else { continue };
                match sys::update_with(map.fd().as_fd(), &key, bytes_of(&flow.entry), sys::NOEXIST) {
                    Ok(()) => {
                        placed = Some(table);
                        break;
                    }
                    // There already (the programs took it over first).
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => break,
                    // Full: a confirmed flow waits pending.
                    Err(_) => {}
                }
            }
            added += usize::from(placed.is_some());
            pending_added += u64::from(placed == Some(Table::Pending));
        }
        self.count_ct(CtEvent::AddedBySgctl, pending_added)?;
        Ok(added)
    }
}
