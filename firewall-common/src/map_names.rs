//! The kernel maps' names, stated once: the eBPF program's statics carry
//! them (aya-ebpf names a map after its static, so the statics must be
//! spelled the same; firewall-ctl's `tests/shared_facts.rs` checks the
//! object's maps against [`ALL`]), and `sgctl` opens and pins maps by them.

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
pub const CONNTRACK: &str = "CONNTRACK";
pub const CONNTRACK_PREV: &str = "CONNTRACK_PREV";
pub const CT_SWEPT_AT: &str = "CT_SWEPT_AT";
pub const CT_TIMEOUTS: &str = "CT_TIMEOUTS";
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
pub const ALL: [&str; 21] = [
    ACTIVE,
    SLOT_META,
    RULE_SLOTS,
    L4_RULES,
    ADDR4,
    ADDR6,
    HOST4,
    HOST6,
    CLASSES,
    CONNTRACK,
    CONNTRACK_PREV,
    CT_SWEPT_AT,
    CT_TIMEOUTS,
    FRAGMENTS,
    SCRATCH,
    RULE_STATS,
    IFACE_STATS,
    EVENT_BUDGET,
    TRACE,
    EVENTS,
    TRACE_EVENTS,
];
