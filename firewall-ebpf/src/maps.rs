//! Every map of one filtered interface. `sgctl` loads one copy of this
//! object per interface, so the ingress and egress programs of an interface
//! share these maps and no key needs an interface index.
//!
//! ## Two generations, switched with one write (docs/semantics.md item 16)
//!
//! The policy maps are map-in-map slots: each of `L4_RULES`, `ADDR4`,
//! `ADDR6`, `HOST4`, `HOST6` and `CLASSES` is an array of two inner maps, and
//! `SLOT_META` and `RULE_SLOTS` have one part per slot. `ACTIVE` (one value,
//! shared by every interface of a host) says which slot is in force; a
//! packet reads it once and then looks only at that slot, so it is judged
//! entirely by one generation. `sgctl apply` fills the other slot
//! completely — installing freshly built inner maps, or the same maps as
//! the slot in force where their content did not change — then flips
//! `ACTIVE` with one array write, and waits one RCU grace period (an update
//! of a map-in-map returns only after every program that could still see
//! the old value has finished) before it touches the old slot again.
//! The switch itself costs one array write; the inner maps are sized to the
//! compiled policy, so a policy of any size that fits in memory loads.
use aya_ebpf::{
    btf_maps::{ArrayOfMaps, HashMap as BtfHashMap, LpmTrie as BtfLpmTrie, LruHashMap as BtfLruHashMap},
    macros::{btf_map, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use firewall_common::{
    conntrack::{legacy, FlowEntry, FlowKey, FlowKey4, FlowKey6, Timeouts, DEFAULT_CAPACITY},
    counters::{CtEvent, ReasonCounters, RuleCounters, REASON_SLOTS},
    policy::{
        template, Active, Addr4, Addr6, AddrEntry, ClassRules, L4Key, RuleSet, SlotMeta, COUNTER_SLOTS, MAX_RULES,
    },
};

use crate::{conntrack::FlowRef, parse::Packet};

/// Policy generations: slot 0 and slot 1.
pub const SLOTS: usize = 2;

// ---- Which generation is in force.

/// `[0]`: the slot in force, for every interface of the host (the map is
/// pinned once per host and reused by each interface's copy of the object).
#[map]
pub static ACTIVE: Array<Active> = Array::with_max_entries(1, 0);

/// `[slot]`: whether the interface enforces, or passes everything, in that
/// generation, and its rules whose peer is every address. An unset slot
/// drops everything.
#[map]
pub static SLOT_META: Array<SlotMeta> = Array::with_max_entries(SLOTS as u32, 0);

/// `[slot * MAX_RULES + rule id]`: the counter slot of each rule of the
/// generation (rule ids are bit positions, in file order; counter slots are
/// stable across generations, see `firewall_common::policy::COUNTER_SLOTS`).
#[map]
pub static RULE_SLOTS: Array<u32> = Array::with_max_entries((SLOTS * MAX_RULES) as u32, 0);

// ---- Policy (read for the first packet of a flow). Each entry already
// holds the rules of every entry that contains it, see
// firewall_common::policy.

/// `(direction, protocol, port | icmp type/code)` → rules whose protocol and
/// ports match. Prefix lengths: see `L4Key`.
#[btf_map]
pub static L4_RULES: ArrayOfMaps<BtfLpmTrie<L4Key, RuleSet, { template::L4 as usize }>, SLOTS> = ArrayOfMaps::new();

/// Peer address → class of the rules whose peer contains it: CIDR and
/// `pl:` prefix-list peers, and the addresses carrying the groups of `sg:`
/// peers (their `members` and the addresses of local interfaces they are
/// attached to).
#[btf_map]
pub static ADDR4: ArrayOfMaps<BtfLpmTrie<Addr4, AddrEntry, { template::ADDRS as usize }>, SLOTS> = ArrayOfMaps::new();
#[btf_map]
pub static ADDR6: ArrayOfMaps<BtfLpmTrie<Addr6, AddrEntry, { template::ADDRS as usize }>, SLOTS> = ArrayOfMaps::new();

/// Single peer addresses (IPv4 /32, IPv6 /128) → their class, asked before
/// the trie: what the trie would answer for them, which then holds none of
/// them (firewall_common::policy). A slot with no single address has no map
/// installed, and the lookup goes straight to the trie.
#[btf_map]
pub static HOST4: ArrayOfMaps<
    BtfHashMap<Addr4, AddrEntry, { template::HOSTS as usize }, { template::HOST_FLAGS as usize }>,
    SLOTS,
> = ArrayOfMaps::new();
#[btf_map]
pub static HOST6: ArrayOfMaps<
    BtfHashMap<Addr6, AddrEntry, { template::HOSTS as usize }, { template::HOST_FLAGS as usize }>,
    SLOTS,
> = ArrayOfMaps::new();

/// Class key (`AddrEntry::class`) → the rules of the address entries of
/// that class.
#[btf_map]
pub static CLASSES: ArrayOfMaps<BtfHashMap<u64, ClassRules, { template::CLASSES as usize }>, SLOTS> =
    ArrayOfMaps::new();

// ---- Connection tracking (firewall_common::conntrack): per family, a
// confirmed and a pending table, each `sgctl`-sized at load (`max_entries`).

/// Confirmed flows. A plain hash, allocated as flows arrive
/// (`BPF_F_NO_PREALLOC`: most hosts use a fraction of it, and a deleted
/// entry is freed after an RCU grace period instead of being handed to the
/// next insert at once). Nothing evicts an entry: when it is full, flows
/// that would be confirmed stay pending (docs/semantics.md item 12).
#[map]
pub static CT4: HashMap<FlowKey4, FlowEntry> = HashMap::with_max_entries(DEFAULT_CAPACITY, BPF_F_NO_PREALLOC);
#[map]
pub static CT6: HashMap<FlowKey6, FlowEntry> = HashMap::with_max_entries(DEFAULT_CAPACITY, BPF_F_NO_PREALLOC);

/// Flows not confirmed yet. A BPF LRU hash: a new flow always finds room,
/// evicting the least recently used pending flows.
#[map]
pub static CT4_PENDING: LruHashMap<FlowKey4, FlowEntry> = LruHashMap::with_max_entries(DEFAULT_CAPACITY, PENDING_FLAGS);
#[map]
pub static CT6_PENDING: LruHashMap<FlowKey6, FlowEntry> = LruHashMap::with_max_entries(DEFAULT_CAPACITY, PENDING_FLAGS);

/// Flags of the pending tables: one LRU list for all CPUs (see BENCHMARKS.md,
/// B5, for per-CPU lists measured against it).
const PENDING_FLAGS: u32 = 0;
const BPF_F_NO_PREALLOC: u32 = 1;

/// `[0]`, while `sgctl` moves the tracked flows into tables of another
/// capacity: the previous confirmed and pending tables. A packet that finds
/// no flow in the tables in force looks there and takes its flow over, so
/// no flow is lost while the old and new programs swap places. Empty
/// otherwise.
#[btf_map]
pub static CT4_PREV: ArrayOfMaps<
    BtfHashMap<FlowKey4, FlowEntry, { template::CONNTRACK as usize }, { BPF_F_NO_PREALLOC as usize }>,
    1,
> = ArrayOfMaps::new();
#[btf_map]
pub static CT6_PREV: ArrayOfMaps<
    BtfHashMap<FlowKey6, FlowEntry, { template::CONNTRACK as usize }, { BPF_F_NO_PREALLOC as usize }>,
    1,
> = ArrayOfMaps::new();
#[btf_map]
pub static CT4_PEND_PREV: ArrayOfMaps<
    BtfLruHashMap<FlowKey4, FlowEntry, { template::CONNTRACK as usize }, { PENDING_FLAGS as usize }>,
    1,
> = ArrayOfMaps::new();
#[btf_map]
pub static CT6_PEND_PREV: ArrayOfMaps<
    BtfLruHashMap<FlowKey6, FlowEntry, { template::CONNTRACK as usize }, { PENDING_FLAGS as usize }>,
    1,
> = ArrayOfMaps::new();

/// `[0]`, while `sgctl` moves an interface filtered by an older sgctl to
/// these tables: its single table (`conntrack::legacy`), which the
/// programs take flows over from, converting them, as from the tables above.
#[btf_map]
pub static CONNTRACK_PREV: ArrayOfMaps<BtfHashMap<FlowKey, legacy::FlowEntry, { template::CONNTRACK as usize }>, 1> =
    ArrayOfMaps::new();

/// `[counters::CtEvent]`, per CPU: what happened to tracked flows.
#[map]
pub static CT_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(CtEvent::COUNT, 0);

/// `[0]`: idle timeouts in clock ticks (see `clock`). Missing or zero
/// means the AWS defaults.
#[map]
pub static CT_TIMEOUTS: Array<Timeouts> = Array::with_max_entries(1, 0);

/// Fragmented datagrams whose first fragment passed (docs/semantics.md item 14):
/// later fragments carry no ports, so they pass if and only if their
/// datagram is here, and count on the same counter slot. LRU: an entry only
/// matters for the moment a datagram is in flight, and losing one costs that
/// datagram, never a tracked flow.
#[map]
pub static FRAGMENTS: LruHashMap<FragmentKey, u32> = LruHashMap::with_max_entries(8192, 0);

/// A datagram: addresses, IP identification, protocol.
#[repr(C)]
pub struct FragmentKey {
    pub src: Addr6,
    pub dst: Addr6,
    pub id: u32,
    pub protocol: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

// ---- Scratch space.

/// `[0]`: the packet being judged and its flow key. The BPF stack is 512
/// bytes; keeping these here (as Cilium does) leaves it for the helpers.
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

pub struct Scratch {
    pub packet: Packet,
    pub flow: FlowRef,
}

// ---- Counters (per CPU, summed by `sgctl stats`).

/// `[counter slot]`: flows opened through the rule, and their packets and bytes.
#[map]
pub static RULE_STATS: PerCpuArray<RuleCounters> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// `[counters::reason_slot(direction, reason)]`: packets and bytes per verdict reason.
#[map]
pub static IFACE_STATS: PerCpuArray<ReasonCounters> = PerCpuArray::with_max_entries(REASON_SLOTS, 0);
