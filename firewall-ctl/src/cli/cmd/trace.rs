//! `sgctl trace [--iface I] [--proto P] [--src CIDR] [--dst CIDR] [--sport N]
//! [--dport N]`: every packet the datapath judges that matches, printed
//! live with its verdict, the rule or the reason, and the conntrack state
//! after it — `nft monitor trace` for sgctl.
//!
//! Off unless running: the programs read their interface's `TRACE` entry
//! once per packet and find it off (an inlined array read). This verb
//! writes the match into `TRACE` of the interfaces asked for with a
//! deadline three seconds ahead, pushes the deadline forward every second
//! while it runs, and clears it when it stops — a killed trace stops by
//! itself within three seconds. Events come through the scope's
//! `TRACE_EVENTS` ring; one trace per scope at a time (a lock on the
//! scope's directory).
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd as _,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{Array, Map, MapData, RingBuf};
use firewall_common::{
    conntrack::FlowState,
    counters::Reason,
    events::{FlowEvent, TraceMatch},
    policy::{addr6_from_octets, addr6_octets, SLOT_AUDIT},
    proto,
    tcp::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN},
    Direction,
};
use ipnet::IpNet;

use crate::{
    cli::TraceArgs,
    control::Target,
    datapath::{clock::clock, maps},
    state::records::IfaceRecord,
    InputError,
};

/// How far ahead the trace's deadline is set, and how often it is renewed.
const LEASE: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_secs(1);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub fn run(target: &Target, args: &TraceArgs, json: bool) -> anyhow::Result<()> {
    let mut records = target.interfaces()?;
    if let Some(iface) = &args.iface {
        records.retain(|r| &r.ifname == iface);
        if records.is_empty() {
            return Err(InputError::NotFiltered { ifname: iface.clone(), scope: target.scope.to_string() }.into());
        }
    }
    if records.is_empty() {
        return Err(InputError::NothingToTrace { scope: target.scope.to_string() }.into());
    }
    let wanted = trace_match(args)?;
    let ring_path = target.state.active_path(&target.scope).with_file_name(maps::TRACE_EVENTS);
    anyhow::ensure!(
        ring_path.exists(),
        "{} has no trace ring: its programs predate `sgctl trace` (apply again with this sgctl)",
        target.scope
    );
    // One reader per ring: a lock on the scope's directory (bpffs pins
    // cannot be opened as files; `sgctl`'s state lock is on the root).
    let scope_dir = target.state.scope_dir(&target.scope);
    let _one_at_a_time = nix::fcntl::Flock::lock(
        std::fs::File::open(&scope_dir).with_context(|| format!("opening {}", scope_dir.display()))?,
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    )
    .map_err(|_| anyhow::anyhow!("another `sgctl trace` is running in {}", target.scope))?;
    let mut ring = RingBuf::try_from(Map::RingBuf(maps::open(&ring_path)?))?;
    while ring.next().is_some() {} // what an earlier trace left unread

    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGPIPE] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let by_ifindex: HashMap<u32, IfaceRecord> = records.iter().map(|r| (r.ifindex, r.clone())).collect();
    let result = trace_loop(target, &records, &wanted, &mut ring, &by_ifindex, args, json);
    for r in &records {
        let _ = set(target, r, &TraceMatch::default());
    }
    result
}

fn trace_loop(
    target: &Target,
    records: &[IfaceRecord],
    wanted: &TraceMatch,
    ring: &mut RingBuf<MapData>,
    by_ifindex: &HashMap<u32, IfaceRecord>,
    args: &TraceArgs,
    json: bool,
) -> anyhow::Result<()> {
    let ends = args.duration.map(|s| Instant::now() + Duration::from_secs(s));
    let mut seen = 0_u64;
    let mut renew_at = Instant::now();
    let mut said = false;
    loop {
        if STOP.load(Ordering::Relaxed) || ends.is_some_and(|e| Instant::now() >= e) {
            return Ok(());
        }
        if Instant::now() >= renew_at {
            let lease = TraceMatch { until: clock().now() + clock().ticks(LEASE), ..*wanted };
            for r in records {
                set(target, r, &lease)?;
            }
            renew_at = Instant::now() + RENEW;
            if !said {
                // Said once the match is in place (tests wait for this line).
                let names: Vec<&str> = records.iter().map(|r| r.ifname.as_str()).collect();
                eprintln!("sgctl: tracing {} (Ctrl-C stops)", names.join(", "));
                said = true;
            }
        }
        {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            let mut fds = [PollFd::new(ring.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(100_u16));
        }
        while let Some(item) = ring.next() {
            if item.len() < size_of::<FlowEvent>() {
                continue;
            }
            // SAFETY: the kernel wrote a FlowEvent there (firewall-ebpf/src/events.rs).
            let e = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowEvent>()) };
            drop(item);
            print(&e, by_ifindex.get(&e.ifindex), json);
            seen += 1;
            if args.count.is_some_and(|n| seen >= n) {
                return Ok(());
            }
        }
    }
}

fn set(target: &Target, record: &IfaceRecord, value: &TraceMatch) -> anyhow::Result<()> {
    let path = target.state.iface_dir(&target.scope, &record.ifname).join(maps::TRACE);
    let mut trace: Array<MapData, TraceMatch> = Array::try_from(Map::Array(maps::open(&path)?))?;
    trace.set(0, value, 0).with_context(|| format!("setting the trace of {}", record.ifname))?;
    Ok(())
}

/// The kernel's form of the match on the command line.
fn trace_match(args: &TraceArgs) -> anyhow::Result<TraceMatch> {
    let mut m = TraceMatch::default();
    if let Some(p) = &args.proto {
        m.protocol = match proto::by_name(p) {
            Some(number) => number,
            None => p
                .parse()
                .ok()
                .filter(|n| *n != 0)
                .ok_or_else(|| InputError::InvalidProtocol { value: p.clone(), range: "1-255" })?,
        };
    }
    m.sport = args.sport.unwrap_or(0);
    m.dport = args.dport.unwrap_or(0);
    let family = |net: &IpNet| if net.addr().is_ipv4() { 4 } else { 6 };
    if let (Some(s), Some(d)) = (&args.src, &args.dst) {
        if family(s) != family(d) {
            return Err(InputError::MixedFamilies { src: *s, dst: *d }.into());
        }
    }
    if let Some(net) = &args.src {
        m.family = family(net);
        (m.src, m.src_mask) = words(net);
    }
    if let Some(net) = &args.dst {
        m.family = family(net);
        (m.dst, m.dst_mask) = words(net);
    }
    Ok(m)
}

/// A network as the datapath's address words: (network, mask).
fn words(net: &IpNet) -> ([u32; 4], [u32; 4]) {
    match net {
        IpNet::V4(n) => {
            ([u32::from_ne_bytes(n.network().octets()), 0, 0, 0], [u32::from_ne_bytes(n.netmask().octets()), 0, 0, 0])
        }
        IpNet::V6(n) => (addr6_from_octets(n.network().octets()), addr6_from_octets(n.netmask().octets())),
    }
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
