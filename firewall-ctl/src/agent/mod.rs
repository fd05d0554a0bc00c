//! `sgctl agent`: the one long-running part of sgctl, never needed for
//! enforcement (docs/cli.md, "The agent"). Its three duties run apart, so
//! that none can stop another:
//!
//! - [`hotplug`]: brings the scope to what its policy wants, on every link
//!   notification (rtnetlink) and every few seconds besides — interfaces
//!   that appeared attached, vanished ones forgotten, links detached or
//!   replaced behind sgctl's back put back — through the normal commit
//!   path, holding the state lock only for that commit;
//! - [`flows`]: reads the datapath's flow events and writes flow logs;
//! - [`http`]: serves Prometheus metrics on `/metrics` (default
//!   `127.0.0.1:9617`, loopback only), read from the kernel on each scrape.
//!   A port it cannot bind is reported and tried again; the server caps its
//!   connections and drops idle ones, so no local user can take the
//!   agent's descriptors.
//!
//! Each runs on threads of its own; one that fails is reported and started
//! again. The agent tells systemd it is ready (`Type=notify`) once the first
//! reconcile is done, so units ordered after it find the interfaces filtered.
//!
//! It keeps nothing the kernel needs: killed, enforcement carries on, the
//! counters are the kernel's, and a restarted agent picks up where they
//! are; what is lost is the flow-log window being aggregated.
pub mod flows;
pub mod hotplug;
pub mod http;
pub mod metrics;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    control::{Place, Target},
    netns,
    state::{saved::LibDir, StateDir},
};

/// What every part of the agent shares.
pub struct Shared {
    pub place: Place,
    pub stop: AtomicBool,
    /// Repairs made since the agent started, by (interface, what was done).
    pub repairs: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Shared {
    /// The scopes in view: the one `-n` names, else every scope with state.
    pub fn targets(&self) -> anyhow::Result<Vec<Target>> {
        let state = StateDir::open_read_only(&self.place.state_dir)?;
        let lib = LibDir::open(&self.place.lib_dir)?;
        let scopes = match &self.place.netns {
            Some(_) => vec![self.place.scope()],
            None => state.scopes()?,
        };
        Ok(scopes
            .into_iter()
            .map(|scope| Target {
                state: state.clone(),
                lib: lib.clone(),
                scope,
                memory_limit: self.place.memory_limit,
            })
            .collect())
    }

    /// Counts one repair of `interface` (`kind`: what was done).
    pub fn count_repair(&self, interface: &str, kind: &'static str) {
        let mut repairs = self.repairs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *repairs.entry((interface.to_owned(), kind)).or_default() += 1;
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// `sgctl agent`'s options (docs/cli.md).
#[derive(Clone, Debug, clap::Args)]
pub struct AgentArgs {
    /// Address of the metrics endpoint (GET /metrics); loopback only unless you say otherwise.
    #[arg(long, default_value = "127.0.0.1:9617", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// Flow-log file (custom format, rotated by size).
    #[arg(long, default_value = crate::flowlog::DEFAULT_FLOW_LOG, value_name = "FILE")]
    pub flow_log: std::path::PathBuf,
    /// Write no flow-log file (standard output only, unless --quiet).
    #[arg(long)]
    pub no_flow_log: bool,
    /// Aggregation window of flow-log records, in seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub window: u64,
    /// Rotate the flow log when it reaches this many bytes.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    pub flow_log_max_bytes: u64,
    /// Rotated flow logs kept (FILE.1 … FILE.N).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub flow_log_keep: u32,
    /// Do not print flow-log records on standard output (JSON lines).
    #[arg(long)]
    pub quiet: bool,
    /// Do not watch for interfaces that appear or vanish.
    #[arg(long)]
    pub no_hotplug: bool,
    /// The fleet: membership and policy through etcd (docs/fleet.md).
    #[command(flatten)]
    pub fleet: crate::fleet::FleetArgs,
}

/// How long a duty that failed waits before it starts again.
const RESTART_AFTER: Duration = Duration::from_secs(2);

pub fn run(place: &Place, args: &AgentArgs) -> anyhow::Result<()> {
    raise_descriptor_limit();
    // The metrics socket lives where sgctl was started (the initial namespace's
    // loopback), also when the agent works on a named namespace: its
    // namespace is kept to bind in, again and again if need be.
    // The fleet's etcd session also lives there (docs/fleet.md).
    let home = std::fs::File::open("/proc/self/ns/net").context("opening this process's network namespace")?;
    if let Some(name) = &place.netns {
        netns::enter(name)?;
    }
    let shared = Arc::new(Shared {
        place: Place::clone(place),
        stop: AtomicBool::new(false),
        repairs: Mutex::new(BTreeMap::new()),
    });

    let mut threads = Vec::new();
    {
        let (shared, args) = (shared.clone(), args.clone());
        threads.push(supervise("flows", shared.clone(), move || flows::run(&shared, &args))?);
    }
    if args.no_hotplug {
        notify_ready();
    } else {
        let shared = shared.clone();
        let mut ready = Some(notify_ready as fn());
        supervise("hotplug", shared.clone(), move || hotplug::run(&shared, &mut ready))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let _fleet =
        args.fleet.enabled().then(|| crate::fleet::start(place, &args.fleet, &home, stop.clone())).transpose()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        tokio::select! {
            () = http::serve_forever(args.listen, home, shared.clone()) => {}
            () = stop_signal() => {}
        }
    });
    shared.stop.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Runs `duty` on a thread of its own, starting it again (after
/// [`RESTART_AFTER`]) whenever it fails, until the agent stops.
fn supervise(
    name: &'static str,
    shared: Arc<Shared>,
    mut duty: impl FnMut() -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let handle = std::thread::Builder::new().name(name.into()).spawn(move || {
        while !shared.stopping() {
            match duty() {
                Ok(()) => return,
                Err(e) => eprintln!("sgctl agent: {name} failed: {e:#}; starting it again in {RESTART_AFTER:?}"),
            }
            std::thread::sleep(RESTART_AFTER);
        }
    })?;
    Ok(handle)
}

/// Tells systemd the agent is ready (nothing when not started by it).
fn notify_ready() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    eprintln!("sgctl agent: ready");
}

/// The soft descriptor limit up to the hard one: the endpoint's connection
/// cap leaves the rest to hotplug, which opens a descriptor per map.
fn raise_descriptor_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("sgctl agent: stopping");
}
