//! What the datapath reports beyond its counters, through BPF ring buffers
//! pinned once per scope (`<scope>/EVENTS`, `<scope>/TRACE_EVENTS`):
//!
//! - flow events for `sgctl agent` (flow logs): a new flow admitted, with
//!   the counter slot of the rule credited; a packet dropped, with its
//!   reason; a packet an audit group let through (`would_drop`). Never one
//!   per packet of a tracked flow. Rate-limited per interface and CPU in the
//!   kernel ([`EVENTS_PER_SEC`]); what the limit or a full ring holds back
//!   is counted in `EVENT_BUDGET` (`sgctl_flow_events_suppressed_total`).
//! - trace events for `sgctl trace`: every judged packet that matches the
//!   interface's `TRACE` config, while one is set.

/// Flow events one CPU may emit per interface and second; the rest are
/// counted as suppressed. A flood of a million packets a second costs the
/// agent at most this many events a second per CPU.
pub const EVENTS_PER_SEC: u64 = 2000;

/// [`FlowEvent::kind`].
pub mod kind {
    /// The first packet of a flow a rule allowed (`slot` names the rule).
    pub const NEW_FLOW: u8 = 0;
    /// A dropped packet (`reason` says why).
    pub const DROP: u8 = 1;
    /// A packet no rule allows that passed because of audit mode.
    pub const WOULD_DROP: u8 = 2;
    /// A packet matching `sgctl trace` (any verdict).
    pub const TRACE: u8 = 3;
}

/// No counter slot (drops).
pub const NO_SLOT: u32 = u32::MAX;

/// One event. Addresses as in `FlowKey` (an IPv4 address is the first
/// word); `family` 0 when the packet could not be parsed (malformed).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEvent {
    /// The datapath's clock (`bpf_jiffies64`, ticks); `sgctl` converts.
    pub ts: u64,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Host order; for ICMP echo the identifier, else 0 where no ports.
    pub sport: u16,
    pub dport: u16,
    /// The interface the program runs on.
    pub ifindex: u32,
    /// `counters::Reason`.
    pub reason: u32,
    /// Counter slot credited, or [`NO_SLOT`].
    pub slot: u32,
    /// Length of the packet as the hook saw it.
    pub bytes: u32,
    pub protocol: u8,
    pub family: u8,
    /// `Direction`.
    pub direction: u8,
    /// One of [`kind`].
    pub kind: u8,
    /// TCP flags of the packet (0 for other protocols).
    pub tcp_flags: u8,
    /// Trace only: 0 no tracked flow, else `FlowState` + 1 after the packet.
    pub ct_state: u8,
    /// For ICMP: type and code (the rule port); zero otherwise.
    pub icmp: [u8; 2],
    pub _pad: [u8; 4],
}

/// Value of `EVENT_BUDGET[0]` (per CPU, per interface): the rate limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBudget {
    /// Start of the current one-second window (the datapath's clock, ticks).
    pub window_start: u64,
    /// Events emitted in the window, or tried when the ring was full.
    pub sent: u64,
    /// Events held back since the interface was attached (rate limit or
    /// ring full): summed over CPUs, `sgctl_flow_events_suppressed_total`.
    pub suppressed: u64,
}

/// Value of `TRACE[0]` (per interface): which packets `sgctl trace` wants.
/// Off unless `until` is in the future; `sgctl trace` pushes it forward
/// every second, so a killed trace stops by itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceMatch {
    /// The datapath's clock (ticks) after which the trace is off; 0 off.
    pub until: u64,
    /// A packet matches when `src & src_mask == src` and likewise for dst.
    pub src: [u32; 4],
    pub src_mask: [u32; 4],
    pub dst: [u32; 4],
    pub dst_mask: [u32; 4],
    /// Host order; 0 any.
    pub sport: u16,
    pub dport: u16,
    /// 0 any (protocol 0 cannot be asked for).
    pub protocol: u8,
    /// 0 any, 4 or 6.
    pub family: u8,
    pub _pad: [u8; 2],
}
