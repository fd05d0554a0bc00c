//! The agent's flow logs: reads each scope's `EVENTS` ring, aggregates
//! per window (`crate::flowlog::aggregate`), and at the end of each window
//! writes the records to the rotated log file and, as JSON lines, to
//! standard output.
use std::{
    collections::{BTreeMap, HashMap},
    os::fd::AsFd as _,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, RingBuf};
use firewall_common::events::FlowEvent;

use super::Shared;
use crate::{
    agent::AgentArgs,
    control::Target,
    datapath::{clock::clock, maps},
    flowlog::{
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
}

pub fn run(shared: &Shared, args: &AgentArgs) -> anyhow::Result<()> {
    let mut writer =
        (!args.no_flow_log).then(|| Writer::new(&args.flow_log, args.flow_log_max_bytes, args.flow_log_keep));
    if let Some(w) = &writer {
        eprintln!("sgctl agent: flow logs to {} (window {} s)", w.path().display(), args.window);
    }
    let window = Duration::from_secs(args.window.max(1));
    let mut sources: BTreeMap<String, Source> = BTreeMap::new();
    let mut window_start = unix_now();
    let mut window_end = Instant::now() + window;
    let mut rescan_at = Instant::now();
    loop {
        let stopping = shared.stop.load(Ordering::Relaxed);
        if Instant::now() >= rescan_at {
            rescan(shared, &mut sources);
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
            let mut records = Vec::new();
            for source in sources.values_mut() {
                records.extend(flush(source, bounds));
            }
            emit(&records, writer.as_mut(), args.quiet);
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

/// Opens the rings of scopes not read yet; forgets scopes whose ring is gone.
fn rescan(shared: &Shared, sources: &mut BTreeMap<String, Source>) {
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
                let mut source = Source { target, ring, window: Window::default(), suppressed_seen: HashMap::new() };
                // A baseline, so suppressions from before the agent started are not this window's.
                let _ = suppressed_delta(&mut source);
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

/// The window's records of one scope; starts the next window.
fn flush(source: &mut Source, bounds: (u64, u64)) -> Vec<Record> {
    let window = std::mem::take(&mut source.window);
    let suppressed = suppressed_delta(source);
    if window.is_empty() && suppressed.values().all(|n| *n == 0) {
        return Vec::new();
    }
    let infos = iface_infos(&source.target).unwrap_or_default();
    let clock = clock();
    window.records(|ifindex| infos.get(&ifindex).cloned(), |ts| clock.unix_ns(ts) / 1_000_000_000, &suppressed, bounds)
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
