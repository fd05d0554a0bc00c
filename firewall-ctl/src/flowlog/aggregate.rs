//! Flow events → flow-log records: one record per flow (5-tuple), interface,
//! direction and verdict in each aggregation window (default 60 s).
//!
//! What the counts mean: the datapath reports the first packet of every
//! flow it admits and every packet it drops (never the packets of a tracked
//! flow, which would cost every packet), so an ACCEPT record counts the
//! flows opened in the window (`packets` = flows opened, `bytes` their
//! first packets; `counted` = `first-packet`) — the rule counters (`sgctl
//! stats`) hold their totals — and a REJECT record every dropped packet
//! reported (`counted` = `reported`). On an interface whose policy has
//! accounting on, ACCEPT records come from the conntrack tables instead
//! (`super::accounting`), and the events of admitted flows are not
//! records. Events the kernel held back (its rate limit) make the
//! interface's window SKIPDATA, as AWS marks records it skipped.
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use firewall_common::{
    counters::Reason,
    events::{kind, FlowEvent, NO_SLOT},
    policy::{addr6_octets, SLOT_AUDIT},
    proto, Direction,
};

use super::record::{Action, Record};
use crate::compile::RuleInfo;

/// Flows one window holds at most; events of further flows are counted
/// and the window's records say SKIPDATA.
pub const MAX_FLOWS_PER_WINDOW: usize = 200_000;

/// What the records need to know about an interface (by ifindex).
#[derive(Clone, Debug, Default)]
pub struct IfaceInfo {
    pub netns: Option<String>,
    pub ifname: String,
    /// Counter slot → the rule it counts.
    pub rules: BTreeMap<u32, RuleInfo>,
    /// Groups attached in audit mode.
    pub audit_groups: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FlowId {
    ifindex: u32,
    direction: u8,
    action: Action,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    sport: u16,
    dport: u16,
    protocol: u8,
    slot: u32,
    reason: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    packets: u64,
    bytes: u64,
    /// The datapath's clock (ticks) at the first and last event.
    first: u64,
    last: u64,
    tcp_flags: u8,
}

/// The flows of one window.
#[derive(Default)]
pub struct Window {
    flows: HashMap<FlowId, Tally>,
    /// Events not aggregated (the window was full), per ifindex.
    skipped: HashMap<u32, u64>,
}

/// The addresses of an event, or `None` when the packet was not parsed.
fn addrs(e: &FlowEvent) -> (Option<IpAddr>, Option<IpAddr>) {
    let one = |a: [u32; 4]| -> Option<IpAddr> {
        match e.family {
            4 => Some(IpAddr::V4(Ipv4Addr::from(a[0].to_ne_bytes()))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(addr6_octets(a)))),
            _ => None,
        }
    };
    (one(e.src), one(e.dst))
}

impl Window {
    /// Counts one flow event (trace events are not flow events: ignored).
    pub fn add(&mut self, e: &FlowEvent) {
        let action = match e.kind {
            kind::NEW_FLOW => Action::Accept,
            kind::DROP => Action::Reject,
            kind::WOULD_DROP => Action::WouldDrop,
            _ => return,
        };
        let (src, dst) = addrs(e);
        let id = FlowId {
            ifindex: e.ifindex,
            direction: e.direction,
            action,
            src,
            dst,
            sport: e.sport,
            dport: e.dport,
            protocol: e.protocol,
            slot: e.slot,
            reason: e.reason,
        };
        if !self.flows.contains_key(&id) && self.flows.len() >= MAX_FLOWS_PER_WINDOW {
            *self.skipped.entry(e.ifindex).or_default() += 1;
            return;
        }
        let t = self.flows.entry(id).or_insert(Tally { first: e.ts, ..Tally::default() });
        t.packets += 1;
        t.bytes += u64::from(e.bytes);
        t.first = t.first.min(e.ts);
        t.last = t.last.max(e.ts);
        t.tcp_flags |= e.tcp_flags;
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty() && self.skipped.is_empty()
    }

    /// The window's records, oldest first. `unix_secs` turns an event's
    /// timestamp (the datapath's clock) into seconds since the epoch; `suppressed` is,
    /// per ifindex, how many events the kernel held back in the window;
    /// `window` the window's bounds in seconds since the epoch (for
    /// SKIPDATA records). `accounted` says which interfaces count their
    /// flows (their admitted flows' events make no record).
    pub fn records(
        self,
        iface: impl Fn(u32) -> Option<IfaceInfo>,
        unix_secs: impl Fn(u64) -> u64,
        suppressed: &HashMap<u32, u64>,
        window: (u64, u64),
        accounted: impl Fn(u32) -> bool,
    ) -> Vec<Record> {
        let mut flows: Vec<(FlowId, Tally)> =
            self.flows.into_iter().filter(|(id, _)| id.action == Action::Reject || !accounted(id.ifindex)).collect();
        flows.sort_by_key(|(id, t)| (t.first, id.ifindex, id.direction));
        let mut out = Vec::with_capacity(flows.len());
        let unknown = |ifindex: u32| IfaceInfo { ifname: format!("if{ifindex}"), ..IfaceInfo::default() };
        for (id, t) in flows {
            let info = iface(id.ifindex).unwrap_or_else(|| unknown(id.ifindex));
            out.push(flow_record(&id, &t, &info, &unix_secs));
        }
        let mut skipped: BTreeMap<u32, u64> = BTreeMap::new();
        for (ifindex, n) in suppressed.iter().chain(self.skipped.iter()) {
            *skipped.entry(*ifindex).or_default() += n;
        }
        for (ifindex, n) in skipped.into_iter().filter(|(_, n)| *n > 0) {
            let info = iface(ifindex).unwrap_or_else(|| unknown(ifindex));
            let mut r = Record::empty();
            r.set("interface-id", super::record::interface_id(info.netns.as_deref(), &info.ifname));
            r.set("start", window.0);
            r.set("end", window.1);
            r.set("log-status", "SKIPDATA");
            r.set("drop-reason", format!("events_suppressed:{n}"));
            out.push(r);
        }
        out
    }
}

fn flow_record(id: &FlowId, t: &Tally, info: &IfaceInfo, unix_secs: &impl Fn(u64) -> u64) -> Record {
    let mut r = Record::empty();
    r.set("interface-id", super::record::interface_id(info.netns.as_deref(), &info.ifname));
    if let (Some(src), Some(dst)) = (id.src, id.dst) {
        r.set("srcaddr", src);
        r.set("dstaddr", dst);
        r.set("protocol", id.protocol);
        r.set("type", if src.is_ipv4() { "IPv4" } else { "IPv6" });
        if id.protocol == proto::TCP || id.protocol == proto::UDP {
            r.set("srcport", id.sport);
            r.set("dstport", id.dport);
        }
        if id.protocol == proto::TCP {
            r.set("tcp-flags", t.tcp_flags);
        }
    }
    r.set("packets", t.packets);
    r.set("bytes", t.bytes);
    r.set("start", unix_secs(t.first));
    r.set("end", unix_secs(t.last));
    r.set("action", id.action.field());
    r.set("log-status", "OK");
    r.set("flow-direction", if id.direction == Direction::Inbound as u8 { "ingress" } else { "egress" });
    credit(&mut r, id.action, id.slot, Some(id.reason), info);
    r.set("counted", if id.action == Action::Reject { "reported" } else { "first-packet" });
    r
}

/// Sets what a record credits: the rule (`rule-id`, `group`) of an
/// admitted flow's counter slot, the audit groups of a `would_drop`, the
/// reason of a drop (`reason`, the datapath's, of an event).
pub fn credit(r: &mut Record, action: Action, slot: u32, reason: Option<u32>, info: &IfaceInfo) {
    match action {
        Action::Accept => {
            if let Some(rule) = info.rules.get(&slot).filter(|_| slot != NO_SLOT) {
                r.set("rule-id", rule);
                r.set("group", &rule.group);
            } else {
                r.set("rule-id", "(removed)");
            }
        }
        Action::WouldDrop => {
            if !info.audit_groups.is_empty() && slot == SLOT_AUDIT {
                r.set("group", info.audit_groups.join(","));
            }
            r.set("drop-reason", Reason::PassAudit.name());
        }
        Action::Reject => {
            let reason = reason.and_then(Reason::from_u32).unwrap_or(Reason::DropNoRule);
            r.set("drop-reason", reason.label());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RuleDirection;

    fn event(kind: u8, src: [u8; 4], dport: u16, reason: Reason, slot: u32, ts: u64) -> FlowEvent {
        FlowEvent {
            ts,
            src: [u32::from_ne_bytes(src), 0, 0, 0],
            dst: [u32::from_ne_bytes([203, 0, 113, 1]), 0, 0, 0],
            sport: 40000,
            dport,
            ifindex: 7,
            reason: reason as u32,
            slot,
            bytes: 60,
            protocol: proto::TCP,
            family: 4,
            direction: 0,
            kind,
            tcp_flags: firewall_common::tcp::TCP_SYN,
            ct_state: 0,
            icmp: [0; 2],
            _pad: [0; 4],
        }
    }

    fn info() -> IfaceInfo {
        let rule = RuleInfo {
            group: "web-server".into(),
            direction: RuleDirection::Inbound,
            index: 1,
            description: None,
            identity: 1,
        };
        IfaceInfo {
            netns: None,
            ifname: "eth0".into(),
            rules: [(3, rule)].into_iter().collect(),
            audit_groups: vec!["trial".into()],
        }
    }

    #[test]
    fn accepted_flows_name_their_rule_and_drops_their_reason() {
        let mut w = Window::default();
        w.add(&event(kind::NEW_FLOW, [203, 0, 113, 10], 80, Reason::PassNewFlow, 3, 1_000_000_000));
        for i in 0..3 {
            w.add(&event(kind::DROP, [203, 0, 113, 20], 22, Reason::DropNoRule, NO_SLOT, 2_000_000_000 + i));
        }
        w.add(&event(kind::WOULD_DROP, [203, 0, 113, 30], 8080, Reason::PassAudit, SLOT_AUDIT, 3_000_000_000));
        let suppressed: HashMap<u32, u64> = [(7, 5)].into_iter().collect();
        let records =
            w.records(|_| Some(info()), |ns| 1_700_000_000 + ns / 1_000_000_000, &suppressed, (1, 2), |_| false);
        let lines: Vec<String> = records.iter().map(Record::custom_line).collect();
        assert_eq!(
            lines,
            [
                "2 - eth0 203.0.113.10 203.0.113.1 40000 80 6 1 60 1700000001 1700000001 ACCEPT OK ingress 2 IPv4 \
                 web-server/inbound/1 web-server - - first-packet",
                "2 - eth0 203.0.113.20 203.0.113.1 40000 22 6 3 180 1700000002 1700000002 REJECT OK ingress 2 IPv4 \
                 - - no_rule - reported",
                "2 - eth0 203.0.113.30 203.0.113.1 40000 8080 6 1 60 1700000003 1700000003 ACCEPT OK ingress 2 IPv4 \
                 - trial would_drop - first-packet",
                "2 - eth0 - - - - - - - 1 2 - SKIPDATA - - - - - events_suppressed:5 - -",
            ]
        );
        assert!(records.iter().all(|r| r.v2_line().split(' ').count() == 14));
    }
}
