//! The kernel memory a policy's maps take, worked out before anything is
//! loaded, and the limit above which sgctl refuses a policy (docs/cli.md,
//! "Kernel memory").
//!
//! Every map of an interface is counted from the eBPF object's own map
//! definitions (so a map the datapath adds or resizes is counted without a
//! change here), the policy maps from the image about to be written, and
//! the records from their serialized size. Two figures per map:
//!
//! - `accounted`: what the kernel charges it, the `memlock` line of
//!   `/proc/PID/fdinfo/FD`, by the kernel's own `map_mem_usage` formulas
//!   (kernel/bpf/arraymap.c, hashtab.c, lpm_trie.c, 6.18). The tests hold
//!   this to the kernel's figure for every map of a loaded interface.
//! - `resident`: what it really holds. The same, except for LPM tries:
//!   the kernel charges a trie its entries only, while it also allocates
//!   an intermediate node wherever the paths to two entries part (the
//!   compiler counts them exactly, see `compile::lpm`), and each node comes
//!   from a slab cache of the next size up (`bpf_mem_alloc`, kmalloc size
//!   classes). For a large random prefix list that is about 3.5 times the
//!   accounted figure.
//!
//! The limit applies to the peak: while a change is put in force, the new
//! generation of the policy maps is built beside the one in force, so a
//! policy needs its steady figure plus a second copy of its policy maps.

use aya_obj::generated::bpf_map_type::{
    BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_ARRAY_OF_MAPS, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LPM_TRIE, BPF_MAP_TYPE_LRU_HASH,
    BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_RINGBUF,
};
use serde::Serialize;

use crate::{
    compile::image::{Image, Kind},
    datapath::{self, generation},
};

/// `sizeof(struct bpf_array)` on 6.18 x86-64: what an array map costs
/// besides its elements.
const ARRAY_BASE: u64 = 312;
/// `sizeof(struct bpf_htab)` and its lock counters on 6.18 x86-64.
const HTAB_BASE: u64 = 896;
/// `struct htab_elem` before the key.
const HTAB_ELEM: u64 = 48;
/// `struct bucket` (a list head and a lock).
const HTAB_BUCKET: u64 = 16;
/// `struct lpm_trie_node` before the key data.
const LPM_NODE: u64 = 24;
/// The free-list link `bpf_mem_alloc` puts before each object.
const LLIST_NODE: u64 = 8;
/// `sizeof(struct bpf_ringbuf_map)` on 6.18 x86-64.
const RINGBUF_BASE: u64 = 304;
/// A ring buffer's pages besides its data: the header, the consumer's and
/// the producer's positions.
const RINGBUF_META_PAGES: u64 = 3;
/// The maps pinned once per scope, beside the interfaces' directories.
const SCOPE_MAPS: [&str; 3] = [datapath::maps::ACTIVE, datapath::maps::EVENTS, datapath::maps::TRACE_EVENTS];
/// Bytes per element of a record map (`state::blob`).
const RECORD_CHUNK: u64 = 64 * 1024;
const BPF_F_NO_PREALLOC: u32 = 1;
const BPF_F_MMAPABLE: u32 = 1 << 10;
const PAGE: u64 = 4096;

/// Whether the object's map `name` is the scope's, one for all its
/// interfaces, rather than each interface's own.
fn scope_wide(name: &str) -> bool {
    SCOPE_MAPS.contains(&name)
}

/// What one map takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MapUse {
    /// The map's name in the object, `NAME (slot)` for a generation's inner
    /// map, or the record's name.
    pub map: String,
    /// Elements it holds: entries of a trie, slots of a preallocated map.
    pub entries: u64,
    /// What the kernel charges (fdinfo `memlock`).
    pub accounted: u64,
    /// What it holds in memory (see the module comment).
    pub resident: u64,
    /// A policy map: a change builds another beside it.
    pub per_generation: bool,
}

/// One interface's maps.
#[derive(Clone, Debug, Serialize)]
pub struct IfaceMemory {
    pub interface: String,
    pub maps: Vec<MapUse>,
}

impl IfaceMemory {
    pub fn resident(&self) -> u64 {
        self.maps.iter().map(|m| m.resident).sum()
    }

    /// What a second generation of its policy maps adds while a change is
    /// put in force.
    pub fn transient(&self) -> u64 {
        self.maps.iter().filter(|m| m.per_generation).map(|m| m.resident).sum()
    }

    /// The map taking the most.
    pub fn largest(&self) -> Option<&MapUse> {
        self.maps.iter().max_by_key(|m| m.resident)
    }
}

/// A scope's maps: its interfaces', and the scope's own (`ACTIVE`, the
/// policy records).
#[derive(Clone, Debug, Serialize)]
pub struct Estimate {
    pub interfaces: Vec<IfaceMemory>,
    pub scope: Vec<MapUse>,
    /// Bytes once in force.
    pub resident: u64,
    /// Bytes the kernel charges once in force (the sum of `memlock`).
    pub accounted: u64,
    /// Bytes while a change is put in force: `resident` plus a second
    /// generation of every policy map.
    pub peak: u64,
}

impl Estimate {
    pub fn new(interfaces: Vec<IfaceMemory>, scope: Vec<MapUse>) -> Self {
        let all = || interfaces.iter().flat_map(|i| &i.maps).chain(&scope);
        let resident = all().map(|m| m.resident).sum();
        let accounted = all().map(|m| m.accounted).sum();
        let peak = resident + interfaces.iter().map(IfaceMemory::transient).sum::<u64>();
        Self { interfaces, scope, resident, accounted, peak }
    }
}

/// The maps of [`datapath::OBJECT`] (one list, shared with the loader).
fn object_maps() -> &'static [datapath::MapDef] {
    datapath::object_maps()
}

/// CPUs the kernel sizes per-CPU maps for (possible CPUs, not online ones).
pub fn possible_cpus() -> u64 {
    aya::util::nr_cpus().map_or(1, |n| n as u64)
}

/// The maps of one interface carrying `image`, with conntrack tables of
/// `conntrack_capacity` flows each and interface records of `record_bytes`
/// JSON bytes.
pub fn interface(interface: &str, image: &Image, conntrack_capacity: u32, record_bytes: usize) -> IfaceMemory {
    let cpus = possible_cpus();
    let mut maps = Vec::new();
    for m in object_maps() {
        if scope_wide(&m.name) {
            continue;
        }
        let conntrack = datapath::conntrack::TABLES.iter().any(|t| t.name == m.name);
        let max_entries = if conntrack { conntrack_capacity } else { m.max_entries };
        let mut use_ = of_map(m.map_type, m.key_size, m.value_size, max_entries, m.flags, cpus);
        if conntrack && m.flags & BPF_F_NO_PREALLOC != 0 {
            // A confirmed table is allocated as flows arrive: the kernel
            // charges it empty at first; what it holds at worst (full) is
            // what the limit is held to.
            let full = of_map(m.map_type, m.key_size, m.value_size, max_entries, m.flags & !BPF_F_NO_PREALLOC, cpus);
            use_.resident = full.resident;
        }
        use_.map.clone_from(&m.name);
        maps.push(use_);
        // The generation in force of each policy map.
        let Some(kind) = Kind::ALL.into_iter().find(|k| k.map_name() == m.name) else { continue };
        let Some((key_size, value_size)) = m.inner.as_deref().map(|i| (i.key_size, i.value_size)) else { continue };
        let entries = image.len(kind) as u64;
        if kind.optional() && entries == 0 {
            // Not installed (generation.rs).
            continue;
        }
        let mut inner = match kind {
            Kind::Classes => {
                let slots = image.len(kind) + generation::CLASS_HEADROOM;
                of_map(BPF_MAP_TYPE_HASH as u32, key_size, value_size, slots as u32, 0, cpus)
            }
            Kind::Host4 | Kind::Host6 => hosts(key_size, value_size, entries),
            Kind::L4 | Kind::Addr4 | Kind::Addr6 => {
                trie(key_size, value_size, entries, image.intermediate[kind as usize] as u64)
            }
        };
        inner.map = format!("{} (in force)", m.name);
        inner.per_generation = true;
        maps.push(inner);
    }
    for slot in 0..2 {
        maps.push(record(&format!("record-{slot}"), record_bytes));
    }
    IfaceMemory { interface: interface.to_owned(), maps }
}

/// The scope's own maps: `ACTIVE`, the event rings, and the policy
/// records and their summaries (one per generation slot, each
/// `policy_bytes` and `summary_bytes` of JSON).
pub fn scope(policy_bytes: usize, summary_bytes: usize) -> Vec<MapUse> {
    let cpus = possible_cpus();
    let mut maps = Vec::new();
    for m in object_maps().iter().filter(|m| scope_wide(&m.name)) {
        let mut map = of_map(m.map_type, m.key_size, m.value_size, m.max_entries, m.flags, cpus);
        map.map.clone_from(&m.name);
        maps.push(map);
    }
    for slot in 0..2 {
        maps.push(record(&format!("policy-{slot}"), policy_bytes));
        maps.push(record(&format!("summary-{slot}"), summary_bytes));
    }
    maps
}

/// A map of `map_type` with this definition, as the kernel charges it.
fn of_map(map_type: u32, key_size: u32, value_size: u32, max_entries: u32, flags: u32, cpus: u64) -> MapUse {
    let (k, v, n) = (round8(key_size), round8(value_size), u64::from(max_entries));
    let bytes = match map_type {
        // An mmap-able array (an object's .rodata or .bss) is in whole pages.
        t if t == BPF_MAP_TYPE_ARRAY as u32 && flags & BPF_F_MMAPABLE != 0 => {
            ARRAY_BASE.next_multiple_of(PAGE) + (n * v).next_multiple_of(PAGE)
        }
        t if t == BPF_MAP_TYPE_ARRAY as u32 || t == BPF_MAP_TYPE_ARRAY_OF_MAPS as u32 => ARRAY_BASE + n * v,
        t if t == BPF_MAP_TYPE_PERCPU_ARRAY as u32 => ARRAY_BASE + n * 8 + n * v * cpus,
        t if t == BPF_MAP_TYPE_HASH as u32 || t == BPF_MAP_TYPE_LRU_HASH as u32 => {
            let lru = t == BPF_MAP_TYPE_LRU_HASH as u32;
            let buckets = HTAB_BUCKET * n.next_power_of_two();
            if flags & BPF_F_NO_PREALLOC != 0 {
                // Nothing of ours: elements would be allocated as they come.
                HTAB_BASE + buckets
            } else {
                // A plain hash keeps one spare element per CPU, and a pointer to it.
                let spare = if lru { 0 } else { cpus };
                HTAB_BASE + buckets + (HTAB_ELEM + k + v) * (n + spare) + if lru { 0 } else { 8 * cpus }
            }
        }
        // Data pages are mapped twice (a wrapped record reads as one), so
        // two page pointers each (kernel/bpf/ringbuf.c, ringbuf_map_mem_usage).
        t if t == BPF_MAP_TYPE_RINGBUF as u32 => {
            let data_pages = n / PAGE;
            RINGBUF_BASE + (RINGBUF_META_PAGES + data_pages) * PAGE + (RINGBUF_META_PAGES + 2 * data_pages) * 8
        }
        // A trie with no entries yet (an object's template).
        t if t == BPF_MAP_TYPE_LPM_TRIE as u32 => 0,
        _ => ARRAY_BASE + n * (k + v),
    };
    MapUse { map: String::new(), entries: n, accounted: bytes, resident: bytes, per_generation: false }
}

/// An LPM trie of `entries` entries and `intermediate` intermediate nodes,
/// with keys of `key_size` bytes (4 of them the prefix length).
fn trie(key_size: u32, value_size: u32, entries: u64, intermediate: u64) -> MapUse {
    let node = LPM_NODE + u64::from(key_size.saturating_sub(4)) + u64::from(value_size);
    MapUse {
        map: String::new(),
        entries,
        accounted: node * entries,
        resident: kmalloc_size(node + LLIST_NODE) * (entries + intermediate),
        per_generation: false,
    }
}

/// A single-address hash of `entries` entries (`generation::new_hosts`: no
/// preallocation, room for `sgctl members`): the kernel charges its bucket
/// array and each element with its free-list link; each element comes from
/// a slab cache of the next size up.
fn hosts(key_size: u32, value_size: u32, entries: u64) -> MapUse {
    let capacity = entries + generation::trie_headroom(entries as usize) as u64;
    let base = HTAB_BASE + HTAB_BUCKET * capacity.next_power_of_two();
    let element = HTAB_ELEM + round8(key_size) + round8(value_size) + LLIST_NODE;
    MapUse {
        map: String::new(),
        entries,
        accounted: base + element * entries,
        resident: base + kmalloc_size(element) * entries,
        per_generation: false,
    }
}

/// A record of `json_bytes` (`state::blob`: a length word, then the JSON,
/// in elements of up to 64 KiB).
fn record(name: &str, json_bytes: usize) -> MapUse {
    let bytes = json_bytes as u64 + 8;
    let chunk = round8_64(bytes).min(RECORD_CHUNK);
    let elements = bytes.div_ceil(chunk);
    let total = ARRAY_BASE + elements * chunk;
    MapUse { map: name.to_owned(), entries: elements, accounted: total, resident: total, per_generation: false }
}

/// The slab object a `kmalloc(size)` gets (the kmalloc size classes).
fn kmalloc_size(size: u64) -> u64 {
    const CLASSES: [u64; 13] = [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192];
    CLASSES.into_iter().find(|c| *c >= size).unwrap_or_else(|| size.next_power_of_two())
}

fn round8(v: u32) -> u64 {
    round8_64(u64::from(v))
}

fn round8_64(v: u64) -> u64 {
    v.next_multiple_of(8)
}

/// How many bytes `value` serializes to as JSON, without building the text.
pub fn json_len<T: Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// The most kernel memory a scope's policy may take at its peak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Bytes(u64),
    /// A percentage of the host's memory (`MemTotal`).
    OfMemory(u8),
}

impl Default for Limit {
    /// A quarter of the host's memory.
    fn default() -> Self {
        Self::OfMemory(25)
    }
}

impl std::str::FromStr for Limit {
    type Err = String;

    /// `25%`, `512M`, `2G`, `1048576` (K, M, G, T: binary multiples).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid memory limit {s:?}: expected a size (4096, 512M, 2G) or a share of memory (25%)");
        if let Some(percent) = s.strip_suffix('%') {
            return match percent.parse::<u8>() {
                Ok(p) if (1..=100).contains(&p) => Ok(Self::OfMemory(p)),
                _ => Err(bad()),
            };
        }
        let (digits, shift) = match s.char_indices().last() {
            Some((i, 'K' | 'k')) => (&s[..i], 10),
            Some((i, 'M' | 'm')) => (&s[..i], 20),
            Some((i, 'G' | 'g')) => (&s[..i], 30),
            Some((i, 'T' | 't')) => (&s[..i], 40),
            _ => (s, 0),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        n.checked_mul(1 << shift).filter(|b| *b > 0).map(Self::Bytes).ok_or_else(bad)
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(b) => write!(f, "{}", human(*b)),
            Self::OfMemory(p) => write!(f, "{p}% of the host's memory"),
        }
    }
}

impl Limit {
    /// The limit in bytes on this host.
    pub fn bytes(self) -> u64 {
        match self {
            Self::Bytes(b) => b,
            Self::OfMemory(p) => mem_total() / 100 * u64::from(p),
        }
    }
}

/// `MemTotal` of /proc/meminfo, in bytes (a gibibyte if unreadable).
pub fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(1 << 30)
}

/// A policy over the kernel memory limit: how much it needs, and the
/// interface and map that take the most.
#[derive(Debug, thiserror::Error)]
#[error(
    "the policy needs {} of kernel memory while it is put in force ({} once in force), over the limit of {} \
     ({limit}){}: raise it with --max-kernel-memory, or make the policy smaller",
    human(*peak),
    human(*resident),
    human(*max),
    largest.as_ref().map(Largest::to_string).unwrap_or_default()
)]
pub struct OverLimit {
    pub peak: u64,
    pub resident: u64,
    /// `limit` in bytes.
    pub max: u64,
    pub limit: Limit,
    pub largest: Option<Largest>,
}

/// The interface whose maps take the most, and its largest map.
#[derive(Debug, thiserror::Error)]
#[error("; {interface} takes {}, most of it {map} ({entries} entries)", human(*resident))]
pub struct Largest {
    pub interface: String,
    pub resident: u64,
    pub map: String,
    pub entries: u64,
}

/// Refuses an estimate whose peak is over `limit`, naming the interface
/// and map that take the most.
pub fn check(estimate: &Estimate, limit: Limit) -> Result<(), OverLimit> {
    let max = limit.bytes();
    if estimate.peak <= max {
        return Ok(());
    }
    let biggest = estimate.interfaces.iter().max_by_key(|i| i.resident());
    let largest = biggest.and_then(|i| Some((i, i.largest()?))).map(|(i, m)| Largest {
        interface: i.interface.clone(),
        resident: i.resident(),
        map: m.map.clone(),
        entries: m.entries,
    });
    Err(OverLimit { peak: estimate.peak, resident: estimate.resident, max, limit, largest })
}

/// `1.5 MiB`, `312 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_match_the_kernels_figures() {
        // Figures read from fdinfo on 6.18 with 2 possible CPUs.
        let at = |t, k, v, n, flags| of_map(t as u32, k, v, n, flags, 2).accounted;
        assert_eq!(at(BPF_MAP_TYPE_HASH, 40, 16, 65536, 0), 7_865_440);
        assert_eq!(at(BPF_MAP_TYPE_HASH, 8, 1152, 10, 0), 15_664);
        assert_eq!(at(BPF_MAP_TYPE_LRU_HASH, 40, 4, 8192, 0), 918_400);
        assert_eq!(at(BPF_MAP_TYPE_PERCPU_ARRAY, 4, 16, 20, 0), 1112);
        assert_eq!(at(BPF_MAP_TYPE_PERCPU_ARRAY, 4, 24, 2048, 0), 115_000);
        assert_eq!(at(BPF_MAP_TYPE_ARRAY, 4, 264, 2, 0), 840);
        assert_eq!(at(BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, 2, 0), 328);
        assert_eq!(record("r", 3_670_000 - 8).accounted, 3_670_328);
        // IPv4 trie: 24 + 4 + 8 = 36 bytes charged per entry; nodes come from kmalloc-64.
        let t = trie(8, 8, 1000, 999);
        assert_eq!((t.accounted, t.resident), (36_000, 64 * 1999));
        // The L4 trie's 128-byte rule sets: 168 charged, kmalloc-192.
        assert_eq!(trie(12, 128, 10, 0).resident, 1920);
        // IPv4 single addresses: 48 + 8 + 8 + 8 = 72 bytes charged per
        // element, kmalloc-96; 1000 entries and 1024 of room, 2048 buckets.
        let h = hosts(4, 8, 1000);
        assert_eq!((h.accounted, h.resident), (896 + 16 * 2048 + 72_000, 896 + 16 * 2048 + 96_000));
    }

    #[test]
    fn limits_parse_as_documented() {
        assert_eq!("25%".parse(), Ok(Limit::OfMemory(25)));
        assert_eq!("512M".parse(), Ok(Limit::Bytes(512 << 20)));
        assert_eq!("2G".parse(), Ok(Limit::Bytes(2 << 30)));
        assert_eq!("4096".parse(), Ok(Limit::Bytes(4096)));
        for bad in ["", "0", "0%", "101%", "12X", "-1G", "G", "1.5G", "99999999999T"] {
            assert!(bad.parse::<Limit>().is_err(), "{bad}");
        }
        assert!(Limit::default().bytes() > 0);
    }

    #[test]
    fn every_map_of_the_object_is_counted() {
        let maps = object_maps();
        assert!(maps.len() >= 13, "{maps:?}");
        for name in ["CT4", "CT6_PENDING", "ADDR4", "CLASSES", "RULE_STATS", "FRAGMENTS"] {
            assert!(maps.iter().any(|m| m.name == name), "{name} missing from {maps:?}");
        }
    }

    /// aya-ebpf names a map after its static: the object's maps must be
    /// exactly firewall-common's `map_names`, which sgctl opens and pins by.
    #[test]
    fn the_object_declares_the_maps_firewall_common_names() {
        let mut declared: Vec<&str> =
            object_maps().iter().map(|m| m.name.as_str()).filter(|n| !n.starts_with('.')).collect();
        let mut named = firewall_common::map_names::ALL.to_vec();
        declared.sort_unstable();
        named.sort_unstable();
        assert_eq!(declared, named);
    }

    /// The kernel side's key and value sizes are the shared types' sizes.
    #[test]
    fn the_object_maps_have_the_shared_types_sizes() {
        use std::mem::size_of;

        use firewall_common::{
            conntrack::{legacy, FlowEntry, FlowKey, FlowKey4, FlowKey6, Timeouts},
            counters::{ReasonCounters, RuleCounters},
            events::{EventBudget, TraceMatch},
            map_names as n,
            policy::{Active, Addr4, Addr6, AddrEntry, ClassRules, L4Key, RuleSet, SlotMeta},
        };
        let size = |t: usize| u32::try_from(t).expect("small type");
        let expected = [
            (n::ACTIVE, size(size_of::<u32>()), size(size_of::<Active>())),
            (n::SLOT_META, size(size_of::<u32>()), size(size_of::<SlotMeta>())),
            (n::CT4, size(size_of::<FlowKey4>()), size(size_of::<FlowEntry>())),
            (n::CT6, size(size_of::<FlowKey6>()), size(size_of::<FlowEntry>())),
            (n::CT4_PENDING, size(size_of::<FlowKey4>()), size(size_of::<FlowEntry>())),
            (n::CT6_PENDING, size(size_of::<FlowKey6>()), size(size_of::<FlowEntry>())),
            (n::CT_STATS, size(size_of::<u32>()), size(size_of::<u64>())),
            (n::CT_TIMEOUTS, size(size_of::<u32>()), size(size_of::<Timeouts>())),
            (n::RULE_STATS, size(size_of::<u32>()), size(size_of::<RuleCounters>())),
            (n::IFACE_STATS, size(size_of::<u32>()), size(size_of::<ReasonCounters>())),
            (n::EVENT_BUDGET, size(size_of::<u32>()), size(size_of::<EventBudget>())),
            (n::TRACE, size(size_of::<u32>()), size(size_of::<TraceMatch>())),
        ];
        let maps = object_maps();
        let find = |name: &str| maps.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("{name} missing"));
        for (name, key, value) in expected {
            let m = find(name);
            assert_eq!((m.key_size, m.value_size), (key, value), "{name}");
        }
        // Map-in-map: the inner maps' key and value.
        let inner = [
            (n::L4_RULES, size(size_of::<L4Key>()) + 4, size(size_of::<RuleSet>())),
            (n::HOST4, size(size_of::<Addr4>()), size(size_of::<AddrEntry>())),
            (n::HOST6, size(size_of::<Addr6>()), size(size_of::<AddrEntry>())),
            (n::CLASSES, size(size_of::<u64>()), size(size_of::<ClassRules>())),
            (n::CONNTRACK_PREV, size(size_of::<FlowKey>()), size(size_of::<legacy::FlowEntry>())),
            (n::CT4_PREV, size(size_of::<FlowKey4>()), size(size_of::<FlowEntry>())),
            (n::CT6_PREV, size(size_of::<FlowKey6>()), size(size_of::<FlowEntry>())),
            (n::CT4_PEND_PREV, size(size_of::<FlowKey4>()), size(size_of::<FlowEntry>())),
            (n::CT6_PEND_PREV, size(size_of::<FlowKey6>()), size(size_of::<FlowEntry>())),
        ];
        for (name, key, value) in inner {
            assert_eq!(find(name).inner.as_deref().map(|i| (i.key_size, i.value_size)), Some((key, value)), "{name}");
        }
        assert_eq!(find(n::ADDR4).inner.as_deref().map(|i| i.value_size), Some(size(size_of::<AddrEntry>())), "ADDR4");
    }
}
