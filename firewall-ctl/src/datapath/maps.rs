//! Typed access to one interface's maps, pinned under its state directory.
use std::{
    collections::HashSet,
    hash::Hash,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, PerCpuArray},
    Pod,
};
use firewall_common::{
    conntrack::{FlowEntry, FlowKey, FlowState, Timeouts},
    counters::{Reason, ReasonCounters, RuleCounters},
    policy::{Addr4, Addr6, L4Key},
};

use crate::compile::{CompiledInterface, LpmEntry};

pub const L4_RULES: &str = "L4_RULES";
pub const CIDR_RULES4: &str = "CIDR_RULES4";
pub const CIDR_RULES6: &str = "CIDR_RULES6";
pub const SG_RULES4: &str = "SG_RULES4";
pub const SG_RULES6: &str = "SG_RULES6";
pub const CONNTRACK: &str = "CONNTRACK";
pub const CT_CONFIG: &str = "CT_CONFIG";
pub const RULE_STATS: &str = "RULE_STATS";
pub const IFACE_STATS: &str = "IFACE_STATS";

/// Every map `sgctl` pins (SCRATCH is the programs' own).
pub const PINNED: [&str; 9] =
    [L4_RULES, CIDR_RULES4, CIDR_RULES6, SG_RULES4, SG_RULES6, CONNTRACK, CT_CONFIG, RULE_STATS, IFACE_STATS];

/// One interface's pinned maps.
pub struct IfaceMaps {
    dir: PathBuf,
}

impl IfaceMaps {
    pub fn at(dir: &Path) -> Self {
        Self { dir: dir.to_owned() }
    }

    fn data(&self, name: &str) -> anyhow::Result<MapData> {
        let path = self.dir.join(name);
        MapData::from_pin(&path).with_context(|| format!("opening pinned map {}", path.display()))
    }

    fn lpm<K: Pod, V: Pod>(&self, name: &str) -> anyhow::Result<LpmTrie<MapData, K, V>> {
        Ok(LpmTrie::try_from(Map::LpmTrie(self.data(name)?))?)
    }

    fn conntrack(&self) -> anyhow::Result<HashMap<MapData, FlowKey, FlowEntry>> {
        Ok(HashMap::try_from(Map::HashMap(self.data(CONNTRACK)?))?)
    }

    /// Makes the policy maps hold exactly `compiled`: new and changed entries
    /// first, stale ones last, so no entry both versions share goes missing.
    /// (A packet may still see a mix of the two versions while this runs.)
    pub fn write_policy(&self, compiled: &CompiledInterface) -> anyhow::Result<()> {
        sync_lpm::<L4Key, _>(&mut self.lpm(L4_RULES)?, &compiled.l4, |e| e.rules).context(L4_RULES)?;
        sync_lpm::<Addr4, _>(&mut self.lpm(CIDR_RULES4)?, &compiled.cidr4, LpmEntry::addr_rules)
            .context(CIDR_RULES4)?;
        sync_lpm::<Addr6, _>(&mut self.lpm(CIDR_RULES6)?, &compiled.cidr6, LpmEntry::addr_rules)
            .context(CIDR_RULES6)?;
        sync_lpm::<Addr4, _>(&mut self.lpm(SG_RULES4)?, &compiled.sg4, LpmEntry::addr_rules).context(SG_RULES4)?;
        sync_lpm::<Addr6, _>(&mut self.lpm(SG_RULES6)?, &compiled.sg6, LpmEntry::addr_rules).context(SG_RULES6)?;
        let mut config: Array<MapData, Timeouts> = Array::try_from(Map::Array(self.data(CT_CONFIG)?))?;
        config.set(0, compiled.timeouts, 0).context(CT_CONFIG)?;
        Ok(())
    }

    /// Counters of rule ids `0..count`, summed over CPUs.
    pub fn rule_counters(&self, count: usize) -> anyhow::Result<Vec<RuleCounters>> {
        let stats: PerCpuArray<MapData, RuleCounters> =
            PerCpuArray::try_from(Map::PerCpuArray(self.data(RULE_STATS)?))?;
        (0..count as u32)
            .map(|rule| {
                let per_cpu = stats.get(&rule, 0)?;
                Ok(per_cpu.iter().fold(RuleCounters::default(), |mut sum, c| {
                    sum.flows += c.flows;
                    sum.packets += c.packets;
                    sum.bytes += c.bytes;
                    sum
                }))
            })
            .collect()
    }

    /// Packets and bytes per `(direction, reason)`, summed over CPUs;
    /// index `direction * Reason::COUNT + reason`.
    pub fn reason_counters(&self) -> anyhow::Result<Vec<ReasonCounters>> {
        let stats: PerCpuArray<MapData, ReasonCounters> =
            PerCpuArray::try_from(Map::PerCpuArray(self.data(IFACE_STATS)?))?;
        (0..2 * Reason::COUNT)
            .map(|i| {
                let per_cpu = stats.get(&i, 0)?;
                Ok(per_cpu.iter().fold(ReasonCounters::default(), |mut sum, c| {
                    sum.packets += c.packets;
                    sum.bytes += c.bytes;
                    sum
                }))
            })
            .collect()
    }

    /// Every tracked flow.
    pub fn flows(&self) -> anyhow::Result<Vec<(FlowKey, FlowEntry)>> {
        let table = self.conntrack()?;
        let flows = table.iter().collect::<Result<Vec<_>, _>>()?;
        Ok(flows)
    }

    /// Deletes the flows `doomed` selects; returns how many.
    pub fn remove_flows(&self, doomed: impl Fn(&FlowKey, &FlowEntry) -> bool) -> anyhow::Result<usize> {
        let mut table = self.conntrack()?;
        let keys: Vec<FlowKey> =
            table.iter().filter_map(Result::ok).filter(|(k, e)| doomed(k, e)).map(|(k, _)| k).collect();
        let mut removed = 0;
        for key in &keys {
            // A flow may expire and be reused between listing and removal; a
            // key that is gone is fine.
            if table.remove(key).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Deletes flows idle past their timeout (the datapath ignores them
    /// already; this frees their slots).
    pub fn expire_flows(&self, timeouts: &Timeouts) -> anyhow::Result<usize> {
        let now = monotonic_ns();
        self.remove_flows(|k, e| idle_ns(e, now) > timeouts.for_flow(k.protocol, FlowState::from_u8(e.state)))
    }

    pub fn timeouts(&self) -> anyhow::Result<Timeouts> {
        let config: Array<MapData, Timeouts> = Array::try_from(Map::Array(self.data(CT_CONFIG)?))?;
        let t = config.get(&0, 0)?;
        Ok(if t.tcp_established_ns == 0 { Timeouts::AWS_DEFAULT } else { t })
    }

    pub fn conntrack_capacity(&self) -> anyhow::Result<u32> {
        Ok(self.data(CONNTRACK)?.info()?.max_entries())
    }
}

/// Nanoseconds since `e` last saw a packet.
pub fn idle_ns(e: &FlowEntry, now: u64) -> u64 {
    now.saturating_sub(e.last_seen_ns)
}

/// CLOCK_MONOTONIC_COARSE, the clock of `bpf_ktime_get_coarse_ns` that the
/// datapath stamps flows with.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map_or(0, |t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

fn sync_lpm<K: Pod + Eq + Hash, V: Pod>(
    map: &mut LpmTrie<MapData, K, V>,
    entries: &[LpmEntry<K>],
    value: impl Fn(&LpmEntry<K>) -> V,
) -> anyhow::Result<()> {
    let wanted: HashSet<(u32, K)> = entries.iter().map(|e| (e.prefix_len, e.key)).collect();
    let stale: Vec<Key<K>> =
        map.keys().filter_map(Result::ok).filter(|k| !wanted.contains(&(k.prefix_len(), k.data()))).collect();
    for e in entries {
        map.insert(&Key::new(e.prefix_len, e.key), value(e), 0)?;
    }
    for key in &stale {
        map.remove(key)?;
    }
    Ok(())
}
