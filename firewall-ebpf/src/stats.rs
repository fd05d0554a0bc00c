//! Per-CPU counters; `sgctl stats` sums the CPUs.
use firewall_common::{
    counters::{reason_slot, CtEvent, Reason},
    Direction,
};

use crate::maps::{CT_STATS, IFACE_STATS, RULE_STATS};

#[inline(always)]
pub fn count_reason(direction: Direction, reason: Reason, bytes: u64) {
    if let Some(c) = IFACE_STATS.get_ptr_mut(reason_slot(direction, reason)) {
        // SAFETY: per-CPU slot; nothing else writes it while we run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// A packet of a flow that the rule of counter slot `counter` let through;
/// `new_flow` for its first.
#[inline(always)]
pub fn count_rule(counter: u32, bytes: u64, new_flow: bool) {
    if let Some(c) = RULE_STATS.get_ptr_mut(counter) {
        // SAFETY: per-CPU slot; nothing else writes it while we run.
        unsafe {
            (*c).flows += u64::from(new_flow);
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// One conntrack event (`CtEvent`).
#[inline(always)]
pub fn count_ct(event: CtEvent) {
    if let Some(c) = CT_STATS.get_ptr_mut(event as u32) {
        // SAFETY: per-CPU slot; nothing else writes it while we run.
        unsafe { *c += 1 };
    }
}
