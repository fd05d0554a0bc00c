//! The agent's flow logs: reads each scope's `EVENTS` ring, aggregates
//! per window (`crate::flowlog::aggregate`); at the end of each window
//! reads the conntrack tables of the interfaces whose policy has
//! accounting on (`crate::flowlog::accounting`), and writes the records to
//! the rotated log file and, as JSON lines, to standard output.
use std::{
    collections::{BTreeMap, HashMap},
    os::fd::AsFd as _,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, RingBuf};
use firewall_common::{events::FlowEvent, policy::slot_flags};

use super::Shared;
use crate::{
    agent::AgentArgs,
    control::Target,
    datapath::{clock::clock, maps},
    flowlog::{
        accounting::{interface_window, Ledger, WindowTimes},
        aggregate::{IfaceInfo, Window},
        file::Writer,
        record::Record,
    },
    policy::GroupMode,
    state::Scope,
    timings::unix_now,
};

/// How often the scopes in view are looked at again for new rings.
const RESCAN: Duration = Duration::from_secs(2);

/// One scope's ring and what is aggregated from it.
struct Source {
    target: Target,
    ring: RingBuf<MapData>,
    window: Window,
    /// Suppressed events per interface (name, ifindex) at the last window's end.
    suppressed_seen: HashMap<(String, u32), u64>,
    /// Per ifindex of an interface with accounting on: what was reported
    /// of its flows.
    ledgers: HashMap<u32, Ledger>,
}

pub fn run(shared: &Shared, args: &AgentArgs) -> anyhow::Result<()> {
    let mut writer =
        (!args.no_flow_log).then(|| Writer::new(&args.flow_log, args.flow_log_max_bytes, args.flow_log_keep));
    let window = Duration::from_secs(args.window.max(1));
    let mut sources: BTreeMap<String, Source> = BTreeMap::new();
    let mut window_start = unix_now();
    let mut window_end = Instant::now() + window;
    // What the scopes' flows carried before the agent started is no
    // window's: the first look at them is a baseline.
    rescan(shared, &mut sources, true);
    let mut rescan_at = Instant::now() + RESCAN;
    if let Some(w) = &writer {
        eprintln!("sgctl agent: flow logs to {} (window {} s)", w.path().display(), args.window);
    }
    loop {
        let stopping = shared.stop.load(Ordering::Relaxed);
        if Instant::now() >= rescan_at {
            rescan(shared, &mut sources, false);
            rescan_at = Instant::now() + RESCAN;
        }
        wait_readable(&sources, Duration::from_millis(200));
        for source in sources.values_mut() {
            while let Some(item) = source.ring.next() {
                if item.len() >= size_of::<FlowEvent>() {
                    // SAFETY: the kernel wrote a FlowEvent there (events.rs); read unaligned.
                    let event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowEvent>()) };
                    source.window.add(&event);
                }
            }
        }
        if stopping || Instant::now() >= window_end {
            let bounds = (window_start, unix_now());
            let mut batch = Batch { records: Vec::new(), writer: writer.as_mut(), quiet: args.quiet };
            for source in sources.values_mut() {
                flush(source, bounds, &mut |r| batch.push(r));
            }
            batch.write();
            window_start = bounds.1;
            window_end += window;
            if window_end < Instant::now() {
                window_end = Instant::now() + window;
            }
        }
        if stopping {
            return Ok(());
        }
    }
}

/// Opens the rings of scopes not read yet; forgets scopes whose ring is
/// gone. `baseline`: at the agent's start, what the scopes' flows carried
/// so far is taken as reported (a scope that appears later is read from
/// its flows' first packets).
fn rescan(shared: &Shared, sources: &mut BTreeMap<String, Source>, baseline: bool) {
    let targets = match shared.targets() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("sgctl agent: reading the state: {e:#}");
            return;
        }
    };
    sources.retain(|_, s| s.target.state.active_path(&s.target.scope).with_file_name(maps::EVENTS).exists());
    for target in targets {
        let key = target.scope.dir_name();
        if sources.contains_key(&key) {
            continue;
        }
        let path = target.state.active_path(&target.scope).with_file_name(maps::EVENTS);
        if !path.exists() {
            continue;
        }
        match maps::open(&path).and_then(|m| Ok(RingBuf::try_from(Map::RingBuf(m))?)) {
            Ok(ring) => {
                let mut source = Source {
                    target,
                    ring,
                    window: Window::default(),
                    suppressed_seen: HashMap::new(),
                    ledgers: HashMap::new(),
                };
                // A baseline, so suppressions from before are not this window's.
                let _ = suppressed_delta(&mut source);
                if baseline {
                    let accounted = accounted_interfaces(&source.target);
                    account(&mut source, &accounted, None, (0, 0));
                }
                sources.insert(key, source);
            }
            Err(e) => eprintln!("sgctl agent: {}: {e:#}", path.display()),
        }
    }
}

fn wait_readable(sources: &BTreeMap<String, Source>, timeout: Duration) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    if sources.is_empty() {
        std::thread::sleep(timeout);
        return;
    }
    let mut fds: Vec<PollFd> = sources.values().map(|s| PollFd::new(s.ring.as_fd(), PollFlags::POLLIN)).collect();
    let _ = poll(&mut fds, PollTimeout::from(timeout.as_millis().min(u128::from(u16::MAX)) as u16));
}

/// The window's records of one scope, each to `emit`; starts the next window.
fn flush(source: &mut Source, bounds: (u64, u64), emit: &mut dyn FnMut(Record)) {
    let window = std::mem::take(&mut source.window);
    let suppressed = suppressed_delta(source);
    let accounted = accounted_interfaces(&source.target);
    if window.is_empty() && suppressed.values().all(|n| *n == 0) && accounted.is_empty() && source.ledgers.is_empty() {
        return;
    }
    let infos = iface_infos(&source.target).unwrap_or_default();
    let clock = clock();
    let records = window.records(
        |ifindex| infos.get(&ifindex).cloned(),
        |ts| clock.unix_ns(ts) / 1_000_000_000,
        &suppressed,
        bounds,
        |ifindex| accounted.contains_key(&ifindex),
    );
    records.into_iter().for_each(&mut *emit);
    account(source, &accounted, Some((&infos, emit)), bounds);
}

/// The interfaces of the scope whose generation in force counts its flows
/// (`conntrack: { accounting: true }`): ifindex → name.
fn accounted_interfaces(target: &Target) -> HashMap<u32, String> {
    let (Ok(Some(active)), Ok(records)) = (target.active(), target.interfaces()) else { return HashMap::new() };
    records
        .into_iter()
        .filter(|r| target.maps(&r.ifname).slot_meta(active.slot).is_ok_and(|m| m.flags & slot_flags::ACCOUNTING != 0))
        .map(|r| (r.ifindex, r.ifname))
        .collect()
}

/// Where a window's records go: what the records say of each interface,
/// and what takes them.
type Sink<'a> = (&'a HashMap<u32, IfaceInfo>, &'a mut dyn FnMut(Record));

/// The records of the flows that moved or ended in the window on each
/// interface with accounting on, from its conntrack tables, to `emit`.
/// Without it (the baseline when a scope is first read), no record: what
/// the flows carried before is taken as reported.
fn account(source: &mut Source, accounted: &HashMap<u32, String>, mut to: Option<Sink<'_>>, bounds: (u64, u64)) {
    source.ledgers.retain(|ifindex, _| accounted.contains_key(ifindex));
    let clock = clock();
    let unix_secs = |ts: u64| clock.unix_ns(ts) / 1_000_000_000;
    let times = WindowTimes { bounds, unix_secs: &unix_secs };
    for (ifindex, ifname) in accounted {
        let fallback = IfaceInfo { ifname: ifname.clone(), ..IfaceInfo::default() };
        let info = to.as_ref().and_then(|(i, _)| i.get(ifindex)).unwrap_or(&fallback);
        let ledger = source.ledgers.entry(*ifindex).or_default();
        let mut discard = |_: Record| {};
        let emit: &mut dyn FnMut(Record) = match &mut to {
            Some((_, emit)) => *emit,
            None => &mut discard,
        };
        if let Err(e) = interface_window(&source.target.maps(ifname), ledger, info, &times, emit) {
            eprintln!("sgctl agent: {ifname}: reading its flows: {e:#}");
        }
    }
}

/// Per ifindex, the events held back since the last call.
fn suppressed_delta(source: &mut Source) -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    let Ok(records) = source.target.interfaces() else { return out };
    for r in records {
        let Ok(total) = source.target.maps(&r.ifname).events_suppressed() else { continue };
        let seen = source.suppressed_seen.insert((r.ifname.clone(), r.ifindex), total);
        out.insert(r.ifindex, total.saturating_sub(seen.unwrap_or(total)));
    }
    out
}

/// What the records say about each filtered interface of the scope.
fn iface_infos(target: &Target) -> anyhow::Result<HashMap<u32, IfaceInfo>> {
    let policy = target.parsed_policy()?.map(|(_, p)| p);
    let netns = match &target.scope {
        Scope::InitNetns => None,
        Scope::Netns(n) => Some(n.clone()),
    };
    let mut out = HashMap::new();
    for r in target.interfaces()? {
        let audit_groups = r
            .groups
            .iter()
            .filter(|g| policy.as_ref().and_then(|p| p.group(g)).is_some_and(|g| g.mode == GroupMode::Audit))
            .cloned()
            .collect();
        let rules = r.slots.0.iter().map(|(slot, e)| (*slot, e.rule.clone())).collect();
        out.insert(r.ifindex, IfaceInfo { netns: netns.clone(), ifname: r.ifname.clone(), rules, audit_groups });
    }
    Ok(out)
}

/// A window's records on their way out, written a few thousand at a time:
/// a window of a million flows is never held whole.
struct Batch<'a> {
    records: Vec<Record>,
    writer: Option<&'a mut Writer>,
    quiet: bool,
}

impl Batch<'_> {
    const SIZE: usize = 4096;

    fn push(&mut self, r: Record) {
        self.records.push(r);
        if self.records.len() >= Self::SIZE {
            self.write();
        }
    }

    fn write(&mut self) {
        emit(&self.records, self.writer.as_deref_mut(), self.quiet);
        self.records.clear();
    }
}

fn emit(records: &[Record], writer: Option<&mut Writer>, quiet: bool) {
    if records.is_empty() {
        return;
    }
    if let Some(w) = writer {
        if let Err(e) = w.write(records) {
            eprintln!("sgctl agent: {e:#}");
        }
    }
    if !quiet {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        for r in records {
            let _ = writeln!(out, "{}", r.json());
        }
        let _ = out.flush();
    }
}
