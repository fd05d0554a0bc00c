//! `sgctl trace`'s protocol: every packet the datapath judges that
//! matches, handed over live with its verdict, the rule or the reason, and
//! the conntrack state after it (`cli/cmd/trace.rs` prints them).
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
    os::fd::AsFd as _,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{Array, Map, MapData, RingBuf};
use firewall_common::{
    events::{FlowEvent, TraceMatch},
    policy::addr6_from_octets,
    proto,
};
use ipnet::IpNet;

use crate::{
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

/// What to trace, and when to stop (`sgctl trace`'s options, docs/cli.md).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// One filtered interface (default: every filtered interface of the scope).
    pub iface: Option<String>,
    /// A protocol name or number.
    pub proto: Option<String>,
    pub src: Option<IpNet>,
    pub dst: Option<IpNet>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// Stop after this many packets.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// Traces `target`'s scope until `filter` says to stop or a signal
/// (SIGINT, SIGTERM, SIGPIPE) comes: `ready` is called once the match is
/// in force on the interfaces traced, `each` with every event and the
/// record of its interface. The match is cleared on the way out.
pub fn run(
    target: &Target,
    filter: &Filter,
    ready: impl FnOnce(&[IfaceRecord]),
    each: impl FnMut(&FlowEvent, Option<&IfaceRecord>),
) -> anyhow::Result<()> {
    let mut records = target.interfaces()?;
    if let Some(iface) = &filter.iface {
        records.retain(|r| &r.ifname == iface);
        if records.is_empty() {
            return Err(InputError::NotFiltered { ifname: iface.clone(), scope: target.scope.to_string() }.into());
        }
    }
    if records.is_empty() {
        return Err(InputError::NothingToTrace { scope: target.scope.to_string() }.into());
    }
    let wanted = trace_match(filter)?;
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
    let result = trace_loop(target, &records, &wanted, &mut ring, filter, ready, each);
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
    filter: &Filter,
    ready: impl FnOnce(&[IfaceRecord]),
    mut each: impl FnMut(&FlowEvent, Option<&IfaceRecord>),
) -> anyhow::Result<()> {
    let by_ifindex: HashMap<u32, IfaceRecord> = records.iter().map(|r| (r.ifindex, r.clone())).collect();
    let ends = filter.duration.map(|d| Instant::now() + d);
    let mut ready = Some(ready);
    let mut seen = 0_u64;
    let mut renew_at = Instant::now();
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
            if let Some(ready) = ready.take() {
                ready(records);
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
            each(&e, by_ifindex.get(&e.ifindex));
            seen += 1;
            if filter.count.is_some_and(|n| seen >= n) {
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

/// The kernel's form of the match.
fn trace_match(args: &Filter) -> anyhow::Result<TraceMatch> {
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
