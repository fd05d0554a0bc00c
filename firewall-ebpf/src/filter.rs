//! The verdict for one packet, shared by the XDP and tc programs.
use firewall_common::{counters::Reason, Direction};

use crate::{
    conntrack::{self, FlowRef, Lookup},
    fragments,
    frame::Frame,
    maps::{Scratch, SCRATCH},
    parse::{self, Packet, Parsed},
    policy, stats,
};

/// Judges a packet and counts the verdict; the caller passes or drops it.
#[inline(always)]
pub fn judge(frame: &impl Frame, direction: Direction) -> Reason {
    let bytes = frame.wire_len();
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Reason::DropMalformed;
    };
    // SAFETY: per-CPU scratch slot, ours for this program run.
    let Scratch { packet, flow } = unsafe { &mut *scratch };
    packet.reset();
    let reason = match parse::parse(frame, packet) {
        Parsed::NotIp | Parsed::Ipv6LinkControl => Reason::PassUnfiltered,
        Parsed::Malformed => Reason::DropMalformed,
        Parsed::LaterFragment => match fragments::rule_of(packet) {
            Some(rule) => {
                stats::count_rule(rule, bytes, false);
                Reason::PassFragment
            }
            None => Reason::DropFragment,
        },
        Parsed::Ip => {
            let (reason, rule) = judge_ip(packet, flow, direction, bytes);
            if let (true, Some(rule)) = (packet.first_fragment, rule) {
                fragments::remember(packet, rule);
            }
            reason
        }
    };
    stats::count_reason(direction, reason, bytes);
    reason
}

/// The verdict for an IP packet with its L4 header, and the rule whose
/// counters it went to when it passed.
#[inline(always)]
fn judge_ip(packet: &Packet, flow: &mut FlowRef, direction: Direction, bytes: u64) -> (Reason, Option<u32>) {
    let now = conntrack::now_ns();
    if packet.has_related {
        if let Some(rule) = conntrack::related_rule(packet, flow, now) {
            stats::count_rule(rule, bytes, false);
            return (Reason::PassRelated, Some(rule));
        }
        // Not about a tracked flow: an ICMP rule may still allow it.
    }
    let stale = match conntrack::track(flow, packet, now) {
        Lookup::Tracked { rule, reason } => {
            stats::count_rule(rule, bytes, false);
            return (reason, Some(rule));
        }
        Lookup::New { stale } => stale,
    };
    let Some(rule) = policy::allowed_rule(direction, packet) else {
        return (Reason::DropNoRule, None);
    };
    if !conntrack::opens_flow(packet) {
        stats::count_rule(rule, bytes, false);
        return (Reason::PassUntracked, Some(rule));
    }
    if conntrack::open(flow, packet, stale, rule, direction, now).is_err() {
        return (Reason::DropConntrackFull, None);
    }
    stats::count_rule(rule, bytes, true);
    (Reason::PassNewFlow, Some(rule))
}
