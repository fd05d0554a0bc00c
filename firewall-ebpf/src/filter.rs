//! The verdict for one packet, shared by the XDP and tc programs.
use firewall_common::{
    counters::Reason,
    policy::{slot_flags, slot_state, SlotMeta, MAX_RULES, SLOT_AUDIT},
    Direction,
};

use crate::{
    clock,
    conntrack::{self, FlowRef, Lookup},
    events::{self, Ifindex, Judged},
    fragments,
    frame::Frame,
    maps::{Scratch, ACTIVE, RULE_SLOTS, SCRATCH, SLOT_META},
    parse::{self, Packet, Parsed},
    policy, stats,
};

/// The generation in force (maps.rs): its slot and what it says about this
/// interface. `None` when the maps say nothing usable.
#[inline(always)]
fn generation() -> Option<(u32, &'static SlotMeta)> {
    let slot = ACTIVE.get(0)?.slot;
    Some((slot, SLOT_META.get(slot)?))
}

/// Judges a packet and counts the verdict; the caller passes or drops it.
#[inline(always)]
pub fn judge(frame: &(impl Frame + Ifindex), direction: Direction) -> Reason {
    let bytes = frame.wire_len();
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Reason::DropMalformed;
    };
    // SAFETY: per-CPU scratch slot, ours for this program run.
    let Scratch { packet, flow } = unsafe { &mut *scratch };
    packet.reset();
    // Read once: everything below is judged by this one generation.
    let Some((slot, meta)) = generation() else {
        stats::count_reason(direction, Reason::DropNoPolicy, bytes);
        return Reason::DropNoPolicy;
    };
    if meta.state != slot_state::ENFORCE {
        let reason = if meta.state == slot_state::UNFILTERED { Reason::PassUnfiltered } else { Reason::DropNoPolicy };
        stats::count_reason(direction, reason, bytes);
        return reason;
    }
    // The clock is read once, and only for IP packets; the reports below
    // reuse it.
    let mut now = None;
    let (reason, counter, parsed) = match parse::parse(frame, packet) {
        Parsed::NotIp | Parsed::Ipv6LinkControl => (Reason::PassUnfiltered, None, false),
        Parsed::Malformed => (Reason::DropMalformed, None, false),
        Parsed::LaterFragment => match fragments::counter_of(packet) {
            Some(counter) => {
                stats::count_rule(counter, bytes, false);
                (Reason::PassFragment, Some(counter), true)
            }
            None => (Reason::DropFragment, None, true),
        },
        Parsed::Ip => {
            let at = clock::now();
            now = Some(at);
            let (reason, counter) = judge_ip(packet, flow, direction, bytes, slot, meta, at);
            if let (true, Some(counter)) = (packet.first_fragment, counter) {
                fragments::remember(packet, counter);
            }
            (reason, counter, true)
        }
    };
    stats::count_reason(direction, reason, bytes);
    let judged = Judged { packet, direction, reason, counter, bytes, parsed, now };
    events::report(frame, &judged);
    reason
}

/// The verdict for an IP packet with its L4 header, and the counter slot of
/// the rule it was credited to when it passed.
#[inline(always)]
fn judge_ip(
    packet: &Packet,
    flow: &mut FlowRef,
    direction: Direction,
    bytes: u64,
    slot: u32,
    meta: &SlotMeta,
    now: u64,
) -> (Reason, Option<u32>) {
    if packet.has_related {
        if let Some(counter) = conntrack::related_counter(packet, flow, now) {
            stats::count_rule(counter, bytes, false);
            return (Reason::PassRelated, Some(counter));
        }
        // Not about a tracked flow: an ICMP rule may still allow it.
    }
    // With accounting on, tracked flows count this packet's bytes.
    let counted = if meta.flags & slot_flags::ACCOUNTING != 0 { bytes } else { 0 };
    let stale = match conntrack::track(flow, packet, now, counted) {
        Lookup::Tracked { slot: counter, reason } => {
            stats::count_rule(counter, bytes, false);
            return (reason, Some(counter));
        }
        Lookup::New { stale } => stale,
    };
    let Some(counter) = policy::allowed_rule(slot, meta, direction, packet).and_then(|id| counter_slot(slot, id))
    else {
        if meta.flags & slot_flags::AUDIT == 0 {
            return (Reason::DropNoRule, None);
        }
        // Audit mode (policy-format.md): what no rule allows passes and is
        // tracked on the audit slot, so its replies pass too; reported as
        // `would_drop`. A full table still passes it (the policy would have
        // dropped it, not the table). What would not open a flow under a
        // rule (a stray SYN-ACK or RST, ICMP errors) passes untracked.
        if conntrack::opens_flow(packet) {
            let _ = conntrack::open(flow, packet, stale, SLOT_AUDIT, direction, now, counted);
        }
        stats::count_rule(SLOT_AUDIT, bytes, true);
        return (Reason::PassAudit, Some(SLOT_AUDIT));
    };
    if !conntrack::opens_flow(packet) {
        stats::count_rule(counter, bytes, false);
        return (Reason::PassUntracked, Some(counter));
    }
    if conntrack::open(flow, packet, stale, counter, direction, now, counted).is_err() {
        return (Reason::DropConntrackFull, None);
    }
    stats::count_rule(counter, bytes, true);
    (Reason::PassNewFlow, Some(counter))
}

/// The counter slot of rule `id` of generation `slot`.
#[inline(always)]
fn counter_slot(slot: u32, id: u32) -> Option<u32> {
    RULE_SLOTS.get(slot * MAX_RULES as u32 + id).copied()
}
