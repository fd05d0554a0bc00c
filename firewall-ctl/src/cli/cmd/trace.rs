//! `sgctl trace [--iface I] [--proto P] [--src CIDR] [--dst CIDR] [--sport N]
//! [--dport N]`: every packet the datapath judges that matches, printed
//! live with its verdict, the rule or the reason, and the conntrack state
//! after it — `nft monitor trace` for sgctl (the protocol: `control::trace`).
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use firewall_common::{
    conntrack::FlowState,
    counters::Reason,
    events::FlowEvent,
    policy::{addr6_octets, SLOT_AUDIT},
    proto,
    tcp::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN},
    Direction,
};

use crate::{
    cli::TraceArgs,
    control::{trace, Target},
    state::records::IfaceRecord,
};

pub fn run(target: &Target, args: &TraceArgs, json: bool) -> anyhow::Result<()> {
    let filter = trace::Filter {
        iface: args.iface.clone(),
        proto: args.proto.clone(),
        src: args.src,
        dst: args.dst,
        sport: args.sport,
        dport: args.dport,
        count: args.count,
        duration: args.duration.map(Duration::from_secs),
    };
    let ready = |records: &[IfaceRecord]| {
        // Said once the match is in place (tests wait for this line).
        let names: Vec<&str> = records.iter().map(|r| r.ifname.as_str()).collect();
        eprintln!("sgctl: tracing {} (Ctrl-C stops)", names.join(", "));
    };
    trace::run(target, &filter, ready, |e, record| print(e, record, json))
}

fn addr(family: u8, words: [u32; 4]) -> Option<IpAddr> {
    match family {
        4 => Some(IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(addr6_octets(words)))),
        _ => None,
    }
}

fn print(e: &FlowEvent, record: Option<&IfaceRecord>, json: bool) {
    let reason = Reason::from_u32(e.reason);
    let verdict = match reason {
        Some(Reason::PassAudit) => "would-drop (passed: audit)",
        Some(r) if r.is_drop() => "dropped",
        Some(_) => "passed",
        None => "?",
    };
    let rule =
        (e.slot != firewall_common::events::NO_SLOT).then(|| match record.and_then(|r| r.rule_of_slot(e.slot)) {
            Some((rule, false)) => rule.to_string(),
            Some((rule, true)) => format!("{rule} (removed)"),
            None if e.slot == SLOT_AUDIT => "(audit)".to_owned(),
            None => "(removed rule)".to_owned(),
        });
    // 0: no flow; else the flow's state after this packet, plus one.
    let ct = match e.ct_state {
        0 => "none",
        s => FlowState::from_u8(s - 1).name(),
    };
    let direction = if e.direction == Direction::Inbound as u8 { "in" } else { "out" };
    let ifname = record.map_or_else(|| format!("if{}", e.ifindex), |r| r.ifname.clone());
    let (src, dst) = (addr(e.family, e.src), addr(e.family, e.dst));
    let endpoint = |a: Option<IpAddr>, port: u16| match a {
        Some(a) if e.protocol == proto::TCP || e.protocol == proto::UDP => {
            format!("{}", std::net::SocketAddr::new(a, port))
        }
        Some(a) => a.to_string(),
        None => "?".to_owned(),
    };
    let reason_name = reason.map_or("?", Reason::name);
    if json {
        let line = serde_json::json!({
            "interface": ifname,
            "direction": if e.direction == Direction::Inbound as u8 { "inbound" } else { "outbound" },
            "protocol": e.protocol,
            "src": src.map(|a| a.to_string()),
            "dst": dst.map(|a| a.to_string()),
            "sport": e.sport,
            "dport": e.dport,
            "tcp_flags": e.tcp_flags,
            "icmp_type": e.icmp[0],
            "icmp_code": e.icmp[1],
            "bytes": e.bytes,
            "verdict": verdict,
            "reason": reason_name,
            "rule": rule,
            "conntrack": ct,
        });
        crate::outln!("{line}");
        return;
    }
    let detail = match e.protocol {
        proto::TCP => format!(" flags {}", tcp_flags(e.tcp_flags)),
        proto::ICMP | proto::ICMPV6 => format!(" type {} code {}", e.icmp[0], e.icmp[1]),
        _ => String::new(),
    };
    let why = rule.map_or_else(|| reason_name.to_owned(), |r| format!("{reason_name} {r}"));
    crate::outln!(
        "{ifname} {direction} {} {} -> {}{detail} len {}: {verdict} ({why}), conntrack {ct}",
        protocol_name(e.protocol),
        endpoint(src, e.sport),
        endpoint(dst, e.dport),
        e.bytes
    );
}

fn protocol_name(p: u8) -> String {
    proto::name(p).map_or_else(|| format!("proto {p}"), str::to_owned)
}

fn tcp_flags(f: u8) -> String {
    let names = [(TCP_SYN, 'S'), (TCP_ACK, '.'), (TCP_FIN, 'F'), (TCP_RST, 'R'), (TCP_PSH, 'P')];
    let s: String = names.iter().filter(|(bit, _)| f & bit != 0).map(|(_, c)| *c).collect();
    if s.is_empty() {
        "none".into()
    } else {
        format!("[{s}]")
    }
}
