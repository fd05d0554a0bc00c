//! Every map of one filtered interface. `sgctl` loads one copy of this
//! object per interface, so the ingress and egress programs of an interface
//! share these maps and no key needs an interface index.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use firewall_common::{
    conntrack::{FlowEntry, FlowKey, Timeouts, DEFAULT_CAPACITY},
    counters::{Reason, ReasonCounters, RuleCounters},
    policy::{capacity, Addr4, Addr6, AddrRules, L4Key, RuleSet, MAX_RULES},
};

use crate::{conntrack::FlowRef, parse::Packet};

// ---- Policy (written by `sgctl apply`, read for the first packet of a flow).
// Values are rule sets; each entry already holds the rules of every entry
// that contains it, see firewall_common::policy.

/// `(direction, protocol, port | icmp type/code)` → rules whose protocol and
/// ports match. Prefix lengths: see `L4Key`.
#[map]
pub static L4_RULES: LpmTrie<L4Key, RuleSet> = LpmTrie::with_max_entries(capacity::L4, 0);

/// Peer address → rules with a CIDR (or `pl:` prefix-list) peer containing it.
#[map]
pub static CIDR_RULES4: LpmTrie<Addr4, AddrRules> = LpmTrie::with_max_entries(capacity::ADDRS, 0);
#[map]
pub static CIDR_RULES6: LpmTrie<Addr6, AddrRules> = LpmTrie::with_max_entries(capacity::ADDRS, 0);

/// Peer address → rules with an `sg:NAME` peer where the address carries
/// NAME (the group's `members` and the addresses of local interfaces it is
/// attached to). Group membership lives only here: a membership change
/// rewrites these entries and no rule.
#[map]
pub static SG_RULES4: LpmTrie<Addr4, AddrRules> = LpmTrie::with_max_entries(capacity::ADDRS, 0);
#[map]
pub static SG_RULES6: LpmTrie<Addr6, AddrRules> = LpmTrie::with_max_entries(capacity::ADDRS, 0);

// ---- Connection tracking.

/// Tracked flows, see `FlowKey`. A plain (not LRU) hash: when it is full, new
/// flows are dropped and counted, and nothing an outsider sends can evict a
/// tracked flow (docs/semantics.md item 12). `sgctl` sets the capacity at load.
#[map]
pub static CONNTRACK: HashMap<FlowKey, FlowEntry> = HashMap::with_max_entries(DEFAULT_CAPACITY, 0);

/// `[0]`: `bpf_ktime_get_coarse_ns` of the datapath's last sweep of expired flows
/// (see `conntrack::sweep_expired`), which runs at most once per second.
#[map]
pub static CT_SWEPT_AT: Array<u64> = Array::with_max_entries(1, 0);

/// `[0]`: idle timeouts. Missing or zero means the AWS defaults.
#[map]
pub static CT_CONFIG: Array<Timeouts> = Array::with_max_entries(1, 0);

/// Fragmented datagrams whose first fragment passed (docs/semantics.md item 14):
/// later fragments carry no ports, so they pass if and only if their
/// datagram is here, and count on the same rule. LRU: an entry only matters
/// for the moment a datagram is in flight, and losing one costs that
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

/// `[rule id]`: flows opened through the rule, and their packets and bytes.
#[map]
pub static RULE_STATS: PerCpuArray<RuleCounters> = PerCpuArray::with_max_entries(MAX_RULES as u32, 0);

/// `[direction * Reason::COUNT + reason]`: packets and bytes per verdict reason.
#[map]
pub static IFACE_STATS: PerCpuArray<ReasonCounters> = PerCpuArray::with_max_entries(2 * Reason::COUNT, 0);
