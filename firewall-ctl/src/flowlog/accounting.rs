//! Per-flow accounting → flow-log records: with `conntrack: { accounting:
//! true }` the datapath counts each tracked flow's packets and bytes per
//! direction in its conntrack entry; at each window's end the agent reads
//! the tables and writes, for every flow that moved, one record per
//! direction that sent something, with what it sent in the window (the
//! counters now minus what earlier windows reported), and a flow's end
//! once, with why (`end-reason`).
//!
//! A [`Ledger`] per interface remembers what was reported of each flow.
//! A flow is told from a later one of the same key by when it opened
//! (`FlowEntry::opened`).
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use firewall_common::{
    conntrack::{entry_flags, tcp_seen, FlowEntry, FlowKey, FlowState, Table, TcpSeen, Timeouts},
    policy::{addr6_octets, SLOT_AUDIT},
    proto, Direction,
};

use super::{
    aggregate::{credit, IfaceInfo},
    record::{Action, Record},
};
use crate::datapath::{clock::clock, conntrack::Tracked, maps::IfaceMaps};

/// AWS's `tcp-flags` bits.
const TCP_FIN: u8 = 1;
const TCP_SYN: u8 = 2;
const TCP_RST: u8 = 4;
const TCP_SYN_ACK: u8 = 18;

/// Why a flow ended (`end-reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// A FIN inside the flow's sequence window (the flow is closing).
    Fin,
    /// An exact RST.
    Rst,
    /// Idle past its timeout (the datapath no longer knows it).
    Expired,
    /// Gone from the confirmed table before its timeout: `sgctl conntrack
    /// flush`, or the interface detached.
    Flushed,
    /// Gone from the pending table before its timeout: the LRU made room
    /// for newer flows (or `sgctl` removed it).
    Evicted,
}

impl EndReason {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fin => "fin",
            Self::Rst => "rst",
            Self::Expired => "expired",
            Self::Flushed => "flushed",
            Self::Evicted => "evicted",
        }
    }
}

/// What earlier windows reported of one flow, and of the flow as last
/// seen what its end record needs if it vanishes: 64 bytes a flow, not a
/// whole entry (the ledger is the agent's memory that grows with flows).
#[derive(Clone, Copy, Debug)]
struct Reported {
    opened: u64,
    last_seen: u64,
    packets: [u64; 2],
    bytes: [u64; 2],
    slot: u32,
    state: u8,
    flags: u8,
    opened_by_lo: u8,
    direction: u8,
    pending: bool,
    ended: bool,
    /// The last [`Ledger::records`] pass that saw it in the tables.
    seen: u32,
}

impl Reported {
    fn new(e: &FlowEntry, table: Table, ended: bool, seen: u32) -> Self {
        Self {
            opened: e.opened,
            last_seen: e.last_seen,
            packets: e.packets,
            bytes: e.bytes,
            slot: e.slot,
            state: e.state,
            flags: e.flags,
            opened_by_lo: e.opened_by_lo,
            direction: e.direction,
            pending: table == Table::Pending,
            ended,
            seen,
        }
    }

    fn total(&self) -> u64 {
        self.packets[0] + self.packets[1]
    }

    /// The flow as last seen (without its TCP windows, which no record needs).
    fn entry(&self) -> FlowEntry {
        FlowEntry {
            last_seen: self.last_seen,
            slot: self.slot,
            state: self.state,
            opened_by_lo: self.opened_by_lo,
            direction: self.direction,
            flags: self.flags,
            tcp: [TcpSeen::default(); 2],
            opened: self.opened,
            packets: self.packets,
            bytes: self.bytes,
        }
    }
}

/// One interface's tables at a window's end, and how to read them.
pub struct Snapshot<'a> {
    pub info: &'a IfaceInfo,
    /// Every flow of the interface's four tables, pending first (a flow
    /// read twice, as it moved from pending to confirmed meanwhile, is
    /// counted once: its second copy adds only what the first did not).
    pub flows: Vec<Tracked>,
    /// The datapath's clock when the tables were read, and the timeouts in
    /// force, in its ticks.
    pub now: u64,
    pub timeouts: Timeouts,
    /// How far `now` may be off, in ticks (a flow is called expired only
    /// past its timeout by more).
    pub margin: u64,
}

/// What was reported of each flow of one interface.
#[derive(Default)]
pub struct Ledger {
    flows: HashMap<FlowKey, Reported>,
    /// Counts [`Ledger::records`] calls.
    pass: u32,
}

/// The window's bounds in seconds since the epoch, and how to turn the
/// datapath's clock into them.
pub struct WindowTimes<'a> {
    pub bounds: (u64, u64),
    pub unix_secs: &'a dyn Fn(u64) -> u64,
}

impl Ledger {
    /// How many flows it remembers.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The window's records of the flows in `snap`, and the end records of
    /// the flows that left the tables since the last call.
    /// Each record goes to `emit` as it is made: a window of a million
    /// flows is never held as records all at once.
    pub fn records(&mut self, mut snap: Snapshot<'_>, times: &WindowTimes<'_>, emit: &mut dyn FnMut(Record)) {
        self.pass = self.pass.wrapping_add(1);
        for flow in std::mem::take(&mut snap.flows) {
            let (key, e) = (flow.key, &flow.entry);
            let before = match self.flows.get(&key) {
                // Read in both tables as it moved from one to the other
                // meanwhile: the copy that counts more is the later one.
                Some(r) if r.seen == self.pass && (r.opened != e.opened || total(e) <= r.total()) => continue,
                Some(r) if r.opened == e.opened => Some(*r),
                Some(r) => {
                    // A new flow took the key of one the datapath no
                    // longer knew (expired, or closed and reopened).
                    if !r.ended {
                        let reason = ended_why(&r.entry(), key.protocol, &snap).unwrap_or(EndReason::Expired);
                        flow_records(&key, &r.entry(), NOTHING, Some(reason), snap.info, times, emit);
                    }
                    None
                }
                None => None,
            };
            let (was_packets, was_bytes, was_ended) =
                before.map_or(([0; 2], [0; 2], false), |r| (r.packets, r.bytes, r.ended));
            let packets = [e.packets[0].saturating_sub(was_packets[0]), e.packets[1].saturating_sub(was_packets[1])];
            let bytes = [e.bytes[0].saturating_sub(was_bytes[0]), e.bytes[1].saturating_sub(was_bytes[1])];
            let end = if was_ended { None } else { ended_why(e, key.protocol, &snap) };
            if packets != [0; 2] || end.is_some() {
                flow_records(&key, e, (packets, bytes), end, snap.info, times, emit);
            }
            self.flows.insert(key, Reported::new(e, flow.table, was_ended || end.is_some(), self.pass));
        }
        // Flows gone since the last window: their end, once.
        let pass = self.pass;
        self.flows.retain(|key, r| {
            if r.seen == pass {
                return true;
            }
            if !r.ended {
                let reason = if expired(&r.entry(), key.protocol, &snap) {
                    EndReason::Expired
                } else if r.pending {
                    EndReason::Evicted
                } else {
                    EndReason::Flushed
                };
                flow_records(key, &r.entry(), NOTHING, Some(reason), snap.info, times, emit);
            }
            false
        });
    }
}

/// The window's records of one interface with accounting on, each to
/// `emit`: reads its conntrack tables (in batches; the datapath never
/// waits for the reads) and reports what moved since `ledger` last saw them.
pub fn interface_window(
    maps: &IfaceMaps,
    ledger: &mut Ledger,
    info: &IfaceInfo,
    times: &WindowTimes<'_>,
    emit: &mut dyn FnMut(Record),
) -> anyhow::Result<()> {
    let flows = maps.flows_pending_first()?;
    let timeouts = maps.timeouts()?;
    let clock = clock();
    ledger.records(Snapshot { info, flows, now: clock.now(), timeouts, margin: clock.margin() }, times, emit);
    Ok(())
}

fn total(e: &FlowEntry) -> u64 {
    e.packets[0] + e.packets[1]
}

/// Whether the flow is idle past its timeout (by more than the clock's
/// margin), as the datapath judges it.
fn expired(e: &FlowEntry, protocol: u8, snap: &Snapshot<'_>) -> bool {
    let idle = snap.now.saturating_sub(e.last_seen);
    idle > snap.timeouts.for_flow(protocol, FlowState::from_u8(e.state)).saturating_add(snap.margin)
}

/// Whether the flow has ended, and why: closed (FIN or RST seen) or
/// expired.
fn ended_why(e: &FlowEntry, protocol: u8, snap: &Snapshot<'_>) -> Option<EndReason> {
    if FlowState::from_u8(e.state) == FlowState::Closing {
        return Some(if e.flags & entry_flags::CLOSED_BY_RST != 0 { EndReason::Rst } else { EndReason::Fin });
    }
    expired(e, protocol, snap).then_some(EndReason::Expired)
}

/// The flow's two endpoints as `(opener, other side)`, with ports.
fn endpoints(key: &FlowKey, e: &FlowEntry) -> ((IpAddr, u16), (IpAddr, u16)) {
    let addr = |a: [u32; 4]| -> IpAddr {
        if key.family == 4 {
            IpAddr::V4(Ipv4Addr::from(a[0].to_ne_bytes()))
        } else {
            IpAddr::V6(Ipv6Addr::from(addr6_octets(a)))
        }
    };
    let lo = (addr(key.addr_lo), key.port_lo);
    let hi = (addr(key.addr_hi), key.port_hi);
    if e.opened_by_lo != 0 {
        (lo, hi)
    } else {
        (hi, lo)
    }
}

/// No packets nor bytes, each way: an end record's counts when the flow
/// sent nothing in the window.
const NOTHING: ([u64; 2], [u64; 2]) = ([0; 2], [0; 2]);

/// The window's records of one flow: one per direction that sent
/// something; the end, when given, on the opener's direction's record
/// (written with zero counts if the opener sent nothing).
fn flow_records(
    key: &FlowKey,
    e: &FlowEntry,
    (packets, bytes): ([u64; 2], [u64; 2]),
    end: Option<EndReason>,
    info: &IfaceInfo,
    times: &WindowTimes<'_>,
    emit: &mut dyn FnMut(Record),
) {
    let (opener, other) = endpoints(key, e);
    let (w_start, w_end) = times.bounds;
    let opened = (times.unix_secs)(e.opened);
    let start = opened.max(w_start).min(w_end);
    let end_at = (times.unix_secs)(e.last_seen).clamp(start, w_end.max(start));
    let opened_here = opened >= w_start;
    for side in 0..2 {
        let ends_here = side == 0 && end.is_some();
        if packets[side] == 0 && !ends_here {
            continue;
        }
        let (src, dst) = if side == 0 { (opener, other) } else { (other, opener) };
        let direction = if (e.direction == Direction::Outbound as u8) == (side == 0) { "egress" } else { "ingress" };
        let mut r = Record::empty();
        r.set("interface-id", super::record::interface_id(info.netns.as_deref(), &info.ifname));
        r.set("srcaddr", src.0);
        r.set("dstaddr", dst.0);
        r.set("protocol", key.protocol);
        r.set("type", if src.0.is_ipv4() { "IPv4" } else { "IPv6" });
        if key.protocol == proto::TCP || key.protocol == proto::UDP {
            r.set("srcport", src.1);
            r.set("dstport", dst.1);
        }
        if key.protocol == proto::TCP {
            r.set("tcp-flags", tcp_flags(e, side, opened_here, if ends_here { end } else { None }));
        }
        r.set("packets", packets[side]);
        r.set("bytes", bytes[side]);
        r.set("start", start);
        r.set("end", end_at);
        let action = if e.slot == SLOT_AUDIT { Action::WouldDrop } else { Action::Accept };
        r.set("action", action.field());
        r.set("log-status", "OK");
        r.set("flow-direction", direction);
        credit(&mut r, action, e.slot, None, info);
        if ends_here {
            r.set("end-reason", end.map_or("-", EndReason::name));
        }
        r.set("counted", "flow");
        emit(r);
    }
}

/// `tcp-flags` of one direction's record, as far as the tracker knows
/// them: SYN (or SYN-ACK) in the window the flow opened with a handshake,
/// FIN or RST in the window it closed.
fn tcp_flags(e: &FlowEntry, side: usize, opened_here: bool, end: Option<EndReason>) -> u8 {
    let mut flags = 0;
    if opened_here && e.tcp[side].flags & tcp_seen::SYN != 0 {
        flags |= if side == 0 { TCP_SYN } else { TCP_SYN_ACK };
    }
    match end {
        Some(EndReason::Fin) => flags |= TCP_FIN,
        Some(EndReason::Rst) => flags |= TCP_RST,
        _ => {}
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile::RuleInfo, policy::RuleDirection};

    const HZ: u64 = 100;
    /// The clock reads 0 at this Unix second.
    const EPOCH: u64 = 1_700_000_000;

    fn info() -> IfaceInfo {
        let rule = RuleInfo {
            group: "db".into(),
            direction: RuleDirection::Inbound,
            index: 0,
            description: None,
            identity: 1,
        };
        IfaceInfo { netns: None, ifname: "eth0".into(), rules: [(3, rule)].into_iter().collect(), audit_groups: vec![] }
    }

    fn key() -> FlowKey {
        FlowKey {
            addr_lo: [u32::from_ne_bytes([10, 0, 0, 1]), 0, 0, 0],
            addr_hi: [u32::from_ne_bytes([10, 0, 0, 2]), 0, 0, 0],
            port_lo: 3306,
            port_hi: 40000,
            protocol: proto::UDP,
            family: 4,
            _pad: [0; 2],
        }
    }

    /// A UDP flow from 10.0.0.2:40000 to 10.0.0.1:3306, opened at second 1.
    fn entry(last_seen_s: u64, packets: [u64; 2], bytes: [u64; 2]) -> FlowEntry {
        FlowEntry {
            last_seen: last_seen_s * HZ,
            slot: 3,
            state: FlowState::Established as u8,
            opened_by_lo: 0,
            direction: Direction::Inbound as u8,
            flags: 0,
            tcp: [TcpSeen::default(); 2],
            opened: HZ,
            packets,
            bytes,
        }
    }

    fn snap(info: &IfaceInfo, now_s: u64, flows: Vec<FlowEntry>) -> Snapshot<'_> {
        Snapshot {
            info,
            flows: flows.into_iter().map(|entry| Tracked { key: key(), entry, table: Table::Pending }).collect(),
            now: now_s * HZ,
            timeouts: Timeouts::AWS_DEFAULT.in_ticks(HZ),
            margin: 2,
        }
    }

    fn window(ledger: &mut Ledger, info: &IfaceInfo, at: u64, flows: Vec<FlowEntry>) -> Vec<String> {
        let unix = |t: u64| EPOCH + t / HZ;
        let times = WindowTimes { bounds: (EPOCH + at - 10, EPOCH + at), unix_secs: &unix };
        let mut lines = Vec::new();
        ledger.records(snap(info, at, flows), &times, &mut |r| lines.push(r.custom_line()));
        lines
    }

    #[test]
    fn each_window_reports_what_moved_in_it_per_direction_and_the_end_once() {
        let (info, mut ledger) = (info(), Ledger::default());
        assert_eq!(
            window(&mut ledger, &info, 10, vec![entry(9, [5, 2], [500, 300])]),
            [
                "2 - eth0 10.0.0.2 10.0.0.1 40000 3306 17 5 500 1700000001 1700000009 ACCEPT OK ingress - IPv4 \
                 db/inbound/0 db - - flow",
                "2 - eth0 10.0.0.1 10.0.0.2 3306 40000 17 2 300 1700000001 1700000009 ACCEPT OK egress - IPv4 \
                 db/inbound/0 db - - flow",
            ]
        );
        // Only the opener sent in the second window.
        assert_eq!(
            window(&mut ledger, &info, 20, vec![entry(19, [8, 2], [800, 300])]),
            ["2 - eth0 10.0.0.2 10.0.0.1 40000 3306 17 3 300 1700000010 1700000019 ACCEPT OK ingress - IPv4 \
              db/inbound/0 db - - flow"]
        );
        // Nothing moved: no record.
        assert!(window(&mut ledger, &info, 30, vec![entry(19, [8, 2], [800, 300])]).is_empty());
        // Idle past the UDP stream timeout (180 s): its end, once, no counts.
        let end = window(&mut ledger, &info, 220, vec![entry(19, [8, 2], [800, 300])]);
        assert_eq!(
            end,
            ["2 - eth0 10.0.0.2 10.0.0.1 40000 3306 17 0 0 1700000210 1700000210 ACCEPT OK ingress - IPv4 \
              db/inbound/0 db - expired flow"]
        );
        assert!(window(&mut ledger, &info, 230, vec![entry(19, [8, 2], [800, 300])]).is_empty(), "once");
        assert!(window(&mut ledger, &info, 240, vec![]).is_empty(), "removed after its end: nothing more");
        assert!(ledger.is_empty());
    }

    #[test]
    fn a_flow_that_leaves_the_table_early_or_is_replaced_ends_once() {
        let (info, mut ledger) = (info(), Ledger::default());
        assert_eq!(window(&mut ledger, &info, 10, vec![entry(9, [1, 0], [100, 0])]).len(), 1);
        let gone = window(&mut ledger, &info, 20, vec![]);
        assert_eq!(gone.len(), 1);
        assert!(gone[0].ends_with(" evicted flow"), "{gone:?}");
        // A new flow of the same key: counted from zero, not as a delta.
        assert_eq!(window(&mut ledger, &info, 30, vec![entry(29, [1, 0], [100, 0])]).len(), 1);
        let mut reopened = entry(39, [4, 0], [400, 0]);
        reopened.opened = 35 * HZ;
        let lines = window(&mut ledger, &info, 40, vec![reopened]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains(" 0 0 ") && lines[0].ends_with(" expired flow"), "{lines:?}");
        assert!(lines[1].contains(" 17 4 400 1700000035 1700000039 "), "{lines:?}");
    }

    #[test]
    fn a_flow_read_in_both_tables_as_it_moved_is_counted_once() {
        let (info, mut ledger) = (info(), Ledger::default());
        let (older, newer) = (entry(9, [3, 0], [300, 0]), entry(9, [5, 0], [500, 0]));
        let lines = window(&mut ledger, &info, 10, vec![older, newer]);
        let packets: u64 =
            lines.iter().map(|l| l.split(' ').nth(8).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0)).sum();
        assert_eq!(packets, 5, "{lines:?}");
        // The older copy read after the newer adds nothing, takes nothing back.
        let lines = window(&mut ledger, &info, 20, vec![entry(19, [7, 0], [700, 0]), entry(19, [6, 0], [600, 0])]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains(" 17 2 200 "), "{lines:?}");
        assert!(window(&mut ledger, &info, 30, vec![entry(19, [7, 0], [700, 0])]).is_empty());
    }

    #[test]
    fn a_tcp_flow_closed_by_fin_says_so_with_its_flags() {
        let (info, mut ledger) = (info(), Ledger::default());
        let mut e = entry(9, [3, 0], [180, 0]);
        e.state = FlowState::Closing as u8;
        e.flags = entry_flags::CLOSED_BY_FIN;
        e.tcp[0].flags = tcp_seen::SYN;
        let mut snap = snap(&info, 10, vec![e]);
        snap.flows[0].key.protocol = proto::TCP;
        let unix = |t: u64| EPOCH + t / HZ;
        let times = WindowTimes { bounds: (EPOCH, EPOCH + 10), unix_secs: &unix };
        let mut records = Vec::new();
        ledger.records(snap, &times, &mut |r| records.push(r));
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].get("tcp-flags"), "3", "SYN and FIN");
        assert_eq!(records[0].get("end-reason"), "fin");
    }
}
