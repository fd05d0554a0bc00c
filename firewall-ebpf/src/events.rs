//! Flow events for `sgctl agent` and trace events for `sgctl trace`
//! (firewall_common::events), called once per packet from `filter::judge`
//! after the verdict.
//!
//! Cost: a packet of a tracked flow emits nothing; what it pays here is one
//! compare of its reason and one read of the interface's `TRACE` array entry
//! (an array lookup the verifier inlines) to see that no trace is on. Only
//! new flows, drops and audit passes reach the rate limit and the ring.
use core::ptr::addr_of_mut;

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use firewall_common::{
    counters::Reason,
    events::{kind, EventBudget, FlowEvent, TraceMatch, EVENTS_PER_SEC, NO_SLOT},
    proto, Direction,
};

use crate::{clock, parse::Packet, words};

/// Flow events of every interface of the scope (pinned at `<scope>/EVENTS`,
/// shared like `ACTIVE`): read by `sgctl agent`. 1 MiB holds ~14,000 events.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Trace events of every interface of the scope (`<scope>/TRACE_EVENTS`):
/// read by `sgctl trace`, a consumer of its own.
#[map]
pub static TRACE_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 18, 0);

/// `[0]`, per CPU: the interface's flow-event rate limit and what it held back.
#[map]
pub static EVENT_BUDGET: PerCpuArray<EventBudget> = PerCpuArray::with_max_entries(1, 0);

/// `[0]`: the packets `sgctl trace` wants from this interface (off unless
/// `until` lies ahead).
#[map]
pub static TRACE: Array<TraceMatch> = Array::with_max_entries(1, 0);

/// The interface a program runs on.
pub trait Ifindex {
    fn ifindex(&self) -> u32;
}

impl Ifindex for XdpContext {
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.ingress_ifindex() as u32
    }
}

impl Ifindex for TcContext {
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: the context's skb pointer is valid for the program run.
        unsafe { (*self.skb.skb).ifindex }
    }
}

/// What one judged packet was, for the reports below.
pub struct Judged<'a> {
    pub packet: &'a Packet,
    pub direction: Direction,
    pub reason: Reason,
    /// Counter slot credited, when it passed on one.
    pub counter: Option<u32>,
    pub bytes: u64,
    /// Whether `packet` holds the packet's addresses (false when it could
    /// not be parsed).
    pub parsed: bool,
    /// The clock (ticks) as the verdict read it, when it read it.
    pub now: Option<u64>,
}

impl Judged<'_> {
    #[inline(always)]
    fn now(&self) -> u64 {
        self.now.unwrap_or_else(clock::now)
    }
}

/// Reports a judged packet: a flow event when it opened a flow, was dropped
/// or passed by audit; a trace event when a trace wants it.
#[inline(always)]
pub fn report(frame: &impl Ifindex, j: &Judged) {
    let event_kind = match j.reason {
        Reason::PassNewFlow => Some(kind::NEW_FLOW),
        Reason::PassAudit => Some(kind::WOULD_DROP),
        r if r.is_drop() => Some(kind::DROP),
        _ => None,
    };
    if let Some(event_kind) = event_kind {
        flow_event(frame, j, event_kind);
    }
    trace(frame, j);
}

#[inline(always)]
fn flow_event(frame: &impl Ifindex, j: &Judged, event_kind: u8) {
    let Some(budget) = EVENT_BUDGET.get_ptr_mut(0) else { return };
    let now = j.now();
    // SAFETY: per-CPU slot; nothing else writes it while we run.
    let budget = unsafe { &mut *budget };
    if now.wrapping_sub(budget.window_start) >= clock::ticks_per_sec() {
        budget.window_start = now;
        budget.sent = 0;
    }
    if budget.sent >= EVENTS_PER_SEC {
        budget.suppressed += 1;
        return;
    }
    // Counted before trying: with no reader the ring stays full, and an
    // attempt per packet would put every CPU of a flood on the ring's lock
    // (a shared spinlock) for nothing.
    budget.sent += 1;
    let Some(mut entry) = EVENTS.reserve::<FlowEvent>(0) else {
        // The ring is full: nobody reads, or not fast enough.
        budget.suppressed += 1;
        return;
    };
    fill(entry.as_mut_ptr(), frame.ifindex(), j, event_kind, now, 0);
    entry.submit(0);
}

/// Writes an event in place (the ring's memory, never the 512-byte stack).
#[inline(always)]
fn fill(e: *mut FlowEvent, ifindex: u32, j: &Judged, event_kind: u8, now: u64, ct_state: u8) {
    let t = &j.packet.tuple;
    // SAFETY: `e` points at a reserved ring entry of the right size.
    unsafe {
        (*e).ts = now;
        if j.parsed {
            words::copy(addr_of_mut!((*e).src), &t.src);
            words::copy(addr_of_mut!((*e).dst), &t.dst);
            (*e).sport = t.sport;
            (*e).dport = t.dport;
            (*e).protocol = t.protocol;
            (*e).family = t.family;
            (*e).tcp_flags = if t.protocol == proto::TCP { j.packet.tcp.flags } else { 0 };
            let icmp = t.protocol == proto::ICMP || t.protocol == proto::ICMPV6;
            (*e).icmp = if icmp { j.packet.rule_port } else { [0; 2] };
        } else {
            words::zero(addr_of_mut!((*e).src));
            words::zero(addr_of_mut!((*e).dst));
            (*e).sport = 0;
            (*e).dport = 0;
            (*e).protocol = 0;
            (*e).family = 0;
            (*e).tcp_flags = 0;
            (*e).icmp = [0; 2];
        }
        (*e).ifindex = ifindex;
        (*e).reason = j.reason as u32;
        (*e).slot = j.counter.unwrap_or(NO_SLOT);
        (*e).bytes = j.bytes as u32;
        (*e).direction = j.direction as u8;
        (*e).kind = event_kind;
        (*e).ct_state = ct_state;
        (*e)._pad = [0; 4];
    }
}

/// A trace event, when `sgctl trace` set a match on this interface and the
/// packet fits it.
#[inline(always)]
fn trace(frame: &impl Ifindex, j: &Judged) {
    let Some(cfg) = TRACE.get(0) else { return };
    if cfg.until == 0 {
        return;
    }
    let now = j.now();
    if now > cfg.until || !matches(cfg, j) {
        return;
    }
    let ct_state = match j.reason {
        Reason::PassTracked | Reason::PassNewFlow | Reason::PassAudit => crate::conntrack::sg_ct_state() as u8,
        _ => 0,
    };
    let Some(mut entry) = TRACE_EVENTS.reserve::<FlowEvent>(0) else { return };
    fill(entry.as_mut_ptr(), frame.ifindex(), j, kind::TRACE, now, ct_state);
    entry.submit(0);
}

#[inline(always)]
fn matches(cfg: &TraceMatch, j: &Judged) -> bool {
    let t = &j.packet.tuple;
    if !j.parsed {
        // Unparsed packets have no addresses: only a match-anything trace shows them.
        return cfg.family == 0 && cfg.protocol == 0 && cfg.sport == 0 && cfg.dport == 0 && masks_empty(cfg);
    }
    if (cfg.family != 0 && cfg.family != t.family)
        || (cfg.protocol != 0 && cfg.protocol != t.protocol)
        || (cfg.sport != 0 && cfg.sport != t.sport)
        || (cfg.dport != 0 && cfg.dport != t.dport)
    {
        return false;
    }
    let mut differ = 0;
    for w in 0..4 {
        differ |= (t.src[w] & cfg.src_mask[w]) ^ cfg.src[w];
        differ |= (t.dst[w] & cfg.dst_mask[w]) ^ cfg.dst[w];
    }
    differ == 0
}

#[inline(always)]
fn masks_empty(cfg: &TraceMatch) -> bool {
    let mut any = 0;
    for w in 0..4 {
        any |= cfg.src_mask[w] | cfg.dst_mask[w];
    }
    any == 0
}
