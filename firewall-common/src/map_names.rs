//! The kernel maps' names, stated once: the eBPF program's statics carry
//! them (aya-ebpf names a map after its static, so the statics must be
//! spelled the same; the test `the_object_declares_the_maps_firewall_common_names`
//! in firewall-ctl/src/datapath/memory.rs checks the object's maps against [`ALL`]), and
//! `sgctl` opens and pins maps by them.

/// Which generation slot is in force (one per scope, beside the interfaces).
pub const ACTIVE: &str = "ACTIVE";
pub const SLOT_META: &str = "SLOT_META";
pub const RULE_SLOTS: &str = "RULE_SLOTS";
pub const L4_RULES: &str = "L4_RULES";
pub const ADDR4: &str = "ADDR4";
pub const ADDR6: &str = "ADDR6";
pub const HOST4: &str = "HOST4";
pub const HOST6: &str = "HOST6";
pub const CLASSES: &str = "CLASSES";
/// Confirmed flows, IPv4 and IPv6 (firewall_common::conntrack).
pub const CT4: &str = "CT4";
pub const CT6: &str = "CT6";
/// Flows not confirmed yet, evictable.
pub const CT4_PENDING: &str = "CT4_PENDING";
pub const CT6_PENDING: &str = "CT6_PENDING";
/// While `sgctl` moves flows into tables of another size: the previous
/// confirmed tables (and pending ones).
pub const CT4_PREV: &str = "CT4_PREV";
pub const CT6_PREV: &str = "CT6_PREV";
pub const CT4_PEND_PREV: &str = "CT4_PEND_PREV";
pub const CT6_PEND_PREV: &str = "CT6_PEND_PREV";
/// While `sgctl` moves an interface an older sgctl filtered to these
/// tables: its single table (`conntrack::legacy`).
pub const CONNTRACK_PREV: &str = "CONNTRACK_PREV";
pub const CT_TIMEOUTS: &str = "CT_TIMEOUTS";
/// Per CPU: `counters::CtEvent`.
pub const CT_STATS: &str = "CT_STATS";
pub const FRAGMENTS: &str = "FRAGMENTS";
/// Per-CPU working memory of one program copy; never pinned.
pub const SCRATCH: &str = "SCRATCH";
pub const RULE_STATS: &str = "RULE_STATS";
pub const IFACE_STATS: &str = "IFACE_STATS";
pub const EVENT_BUDGET: &str = "EVENT_BUDGET";
pub const TRACE: &str = "TRACE";
/// Ring buffers shared by every interface of a scope, pinned beside `ACTIVE`.
pub const EVENTS: &str = "EVENTS";
pub const TRACE_EVENTS: &str = "TRACE_EVENTS";

/// Every map the eBPF object declares.
pub const ALL: [&str; 28] = [
    ACTIVE,
    SLOT_META,
    RULE_SLOTS,
    L4_RULES,
    ADDR4,
    ADDR6,
    HOST4,
    HOST6,
    CLASSES,
    CT4,
    CT6,
    CT4_PENDING,
    CT6_PENDING,
    CT4_PREV,
    CT6_PREV,
    CT4_PEND_PREV,
    CT6_PEND_PREV,
    CONNTRACK_PREV,
    CT_TIMEOUTS,
    CT_STATS,
    FRAGMENTS,
    SCRATCH,
    RULE_STATS,
    IFACE_STATS,
    EVENT_BUDGET,
    TRACE,
    EVENTS,
    TRACE_EVENTS,
];
