//! Counters: per-CPU arrays, summed in userspace.
use crate::Direction;

/// Value of `RULE_STATS[rule]`: traffic a rule let through.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounters {
    /// Flows opened through the rule.
    pub flows: u64,
    /// Packets and bytes of those flows, both directions.
    pub packets: u64,
    pub bytes: u64,
}

/// Value of `IFACE_STATS[reason]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReasonCounters {
    pub packets: u64,
    pub bytes: u64,
}

/// Why the datapath passed or dropped a packet: the one table of verdict
/// reasons, used by the kernel, the counters and every report.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A rule allowed the first packet of a new flow.
    PassNewFlow = 0,
    /// The packet belongs to a tracked flow.
    PassTracked = 1,
    /// An ICMP error about a tracked flow.
    PassRelated = 2,
    /// Never filtered (semantics.md item 6): non-IP frames on Ethernet, IPv6
    /// neighbour and multicast listener discovery.
    PassUnfiltered = 3,
    /// No rule of any attached group allows it (default deny).
    DropNoRule = 4,
    /// A frame the parser cannot place (semantics.md item 13): truncated or
    /// inconsistent headers, lengths beyond the packet, a third VLAN tag,
    /// unknown or too many IPv6 extension headers, a TCP flag combination no
    /// TCP sends, a non-IP packet on a device without an Ethernet header.
    DropMalformed = 5,
    /// Would open a new flow but it could not be tracked: the pending table
    /// refused it (the kernel's LRU found no entry to evict, which only
    /// memory pressure causes).
    DropConntrackFull = 6,
    /// A non-first IP fragment whose first fragment was not allowed (or not
    /// seen): it has no ports to judge, so it never passes unjudged.
    DropFragment = 7,
    /// A non-first IP fragment of a datagram whose first fragment passed.
    PassFragment = 8,
    /// A rule allowed a packet that opens no flow (semantics.md item 8): ICMP
    /// other than an echo request, an echo reply of no tracked request, a TCP
    /// RST or SYN-ACK of no tracked flow. Nothing can ride on it.
    PassUntracked = 9,
    /// A packet of a tracked TCP flow outside the flow's sequence window
    /// (semantics.md item 10): it passes, since it belongs to the flow and the
    /// host's TCP stack discards it (RFC 5961), but it changes nothing in the
    /// flow, not its state and not its idle timer.
    PassOutOfWindow = 10,
    /// The interface has no complete policy in force (a state `sgctl`
    /// never leaves behind): fail closed.
    DropNoPolicy = 11,
    /// No rule allows it, but a group attached to the interface is in audit
    /// mode (`mode: audit`): it passes, opening a flow on the audit counter
    /// slot (`policy::SLOT_AUDIT`), and is reported as `would_drop`.
    PassAudit = 12,
}

impl Reason {
    pub const COUNT: u32 = 13;
    pub const ALL: [Reason; Self::COUNT as usize] = [
        Self::PassNewFlow,
        Self::PassTracked,
        Self::PassRelated,
        Self::PassUnfiltered,
        Self::DropNoRule,
        Self::DropMalformed,
        Self::DropConntrackFull,
        Self::DropFragment,
        Self::PassFragment,
        Self::PassUntracked,
        Self::PassOutOfWindow,
        Self::DropNoPolicy,
        Self::PassAudit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::PassNewFlow => "pass_new_flow",
            Self::PassTracked => "pass_tracked",
            Self::PassRelated => "pass_related",
            Self::PassUnfiltered => "pass_unfiltered",
            Self::DropNoRule => "dropped_no_rule",
            Self::DropMalformed => "dropped_malformed",
            Self::DropConntrackFull => "dropped_conntrack_full",
            Self::DropFragment => "dropped_fragment",
            Self::PassFragment => "pass_fragment",
            Self::PassUntracked => "pass_untracked",
            Self::PassOutOfWindow => "pass_out_of_window",
            Self::DropNoPolicy => "dropped_no_policy",
            Self::PassAudit => "would_drop",
        }
    }

    /// The reason as a label value (metrics, flow logs): its name without
    /// `dropped_`.
    pub fn label(self) -> &'static str {
        let name = self.name();
        name.strip_prefix("dropped_").unwrap_or(name)
    }

    /// The reason of a value read from a map or an event.
    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }

    /// Whether the datapath drops a packet for this reason.
    pub fn is_drop(self) -> bool {
        matches!(
            self,
            Self::DropNoRule | Self::DropMalformed | Self::DropConntrackFull | Self::DropFragment | Self::DropNoPolicy
        )
    }
}

/// What happened to tracked flows beyond the packets' verdicts: the
/// entries of `CT_STATS` (per CPU, summed by `sgctl`), shown by `status`,
/// `stats` and the metrics. The datapath counts its own events; the entries
/// marked *sgctl* are written by `sgctl` alone (CPU 0's value), for what it
/// adds to or removes from the pending tables, so the flows the kernel's
/// LRU evicted can be worked out: BPF LRU maps evict without telling
/// anyone ([`pending_evicted`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtEvent {
    /// A new flow entered a pending table.
    Opened = 0,
    /// A pending flow moved to the confirmed table.
    Promoted = 1,
    /// A flow qualified for the confirmed table while it was full: it
    /// stays pending, evictable (counted once per flow).
    PromotionRefused = 2,
    /// *sgctl*: flows it put into the pending tables (moved from a table of
    /// another size or layout).
    AddedBySgctl = 3,
    /// *sgctl*: pending flows it removed (`conntrack flush`, `gc`, audit
    /// mode ending).
    RemovedBySgctl = 4,
}

impl CtEvent {
    pub const COUNT: u32 = 5;
    pub const ALL: [CtEvent; Self::COUNT as usize] =
        [Self::Opened, Self::Promoted, Self::PromotionRefused, Self::AddedBySgctl, Self::RemovedBySgctl];

    pub fn name(self) -> &'static str {
        match self {
            Self::Opened => "pending_opened",
            Self::Promoted => "promoted",
            Self::PromotionRefused => "promotion_refused",
            Self::AddedBySgctl => "pending_added_by_sgctl",
            Self::RemovedBySgctl => "pending_removed_by_sgctl",
        }
    }
}

/// Pending flows the LRU evicted to make room, given `CT_STATS` summed over
/// CPUs (index [`CtEvent`]) and the pending entries present now: every flow
/// that entered a pending table and is neither there, nor promoted, nor
/// removed by sgctl. Read at one moment while packets flow, the parts may
/// disagree by the flows of that moment; never below zero.
pub fn pending_evicted(events: &[u64], pending_now: u64) -> u64 {
    let get = |e: CtEvent| events.get(e as usize).copied().unwrap_or(0);
    (get(CtEvent::Opened) + get(CtEvent::AddedBySgctl))
        .saturating_sub(get(CtEvent::Promoted) + get(CtEvent::RemovedBySgctl) + pending_now)
}

/// Entries of `IFACE_STATS`: one per (direction, reason).
pub const REASON_SLOTS: u32 = 2 * Reason::COUNT;

/// The `IFACE_STATS` entry that counts `reason` in `direction`: the one
/// place that lays the table out, for the kernel and every reader.
#[inline(always)]
pub const fn reason_slot(direction: Direction, reason: Reason) -> u32 {
    direction as u32 * Reason::COUNT + reason as u32
}

/// What the `IFACE_STATS` entry `slot` counts ([`reason_slot`] undone).
pub fn of_reason_slot(slot: u32) -> Option<(Direction, Reason)> {
    let direction = match slot / Reason::COUNT {
        0 => Direction::Inbound,
        1 => Direction::Outbound,
        _ => return None,
    };
    Some((direction, Reason::from_u32(slot % Reason::COUNT)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_direction_and_reason_has_its_own_slot_and_back() {
        let mut seen = [false; REASON_SLOTS as usize];
        for direction in [Direction::Inbound, Direction::Outbound] {
            for reason in Reason::ALL {
                let slot = reason_slot(direction, reason);
                assert!(!seen[slot as usize], "{direction:?} {reason:?} shares slot {slot}");
                seen[slot as usize] = true;
                assert_eq!(of_reason_slot(slot), Some((direction, reason)));
            }
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(of_reason_slot(REASON_SLOTS), None);
    }
}
