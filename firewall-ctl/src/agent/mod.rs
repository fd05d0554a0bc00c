//! `sgctl agent`: the one long-running part of sgctl, never needed for
//! enforcement (docs/cli.md, "The agent"). It
//!
//! - serves Prometheus metrics on `/metrics` ([`http`], default
//!   `127.0.0.1:9617`, loopback only), read from the kernel on each scrape;
//! - reads the datapath's flow events and writes flow logs ([`flows`]);
//! - watches netlink for interfaces that come and go ([`hotplug`]) and
//!   attaches those the applied (or saved) policy names, through the normal
//!   commit path, holding the state lock only for that commit.
//!
//! It keeps nothing the kernel needs: killed, enforcement carries on, the
//! counters are the kernel's, and a restarted agent picks up where they
//! are; what is lost is the flow-log window being aggregated.
pub mod flows;
pub mod hotplug;
pub mod http;

use std::{
    net::TcpListener,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    cli::{AgentArgs, Global},
    control::Target,
    netns,
    saved::LibDir,
    state::StateDir,
};

/// What every part of the agent shares.
pub struct Shared {
    pub global: Global,
    pub stop: AtomicBool,
}

impl Shared {
    /// The scopes in view: the one `-n` names, else every scope with state.
    pub fn targets(&self) -> anyhow::Result<Vec<Target>> {
        let state = StateDir::open_read_only(&self.global.state_dir)?;
        let lib = LibDir::new(&self.global.lib_dir);
        let scopes = match &self.global.netns {
            Some(_) => vec![crate::cmd::scope_of(&self.global)],
            None => state.scopes()?,
        };
        Ok(scopes
            .into_iter()
            .map(|scope| Target {
                state: state.clone(),
                lib: lib.clone(),
                scope,
                memory_limit: self.global.max_kernel_memory,
            })
            .collect())
    }
}

pub fn run(global: &Global, args: &AgentArgs) -> anyhow::Result<()> {
    // The metrics socket lives where sgctl was started (the initial namespace's
    // loopback), also when the agent works on a named namespace.
    let listener = TcpListener::bind(args.listen).with_context(|| format!("listening on {}", args.listen))?;
    listener.set_nonblocking(true)?;
    // The fleet's etcd session also lives there (docs/fleet.md).
    let home = std::fs::File::open("/proc/self/ns/net").context("opening this process's network namespace")?;
    if let Some(name) = &global.netns {
        netns::enter(name)?;
    }
    eprintln!("sgctl agent: metrics on http://{}/metrics", listener.local_addr()?);
    let shared = Arc::new(Shared { global: Global::clone(global), stop: AtomicBool::new(false) });

    let mut threads = Vec::new();
    {
        let (shared, args) = (shared.clone(), args.clone());
        threads.push(std::thread::Builder::new().name("flows".into()).spawn(move || {
            if let Err(e) = flows::run(&shared, &args) {
                eprintln!("sgctl agent: flow logs stopped: {e:#}");
            }
        })?);
    }
    if !args.no_hotplug {
        hotplug::start(shared.clone())?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let _fleet =
        args.fleet.enabled().then(|| crate::fleet::start(global, &args.fleet, &home, stop.clone())).transpose()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let served = runtime.block_on(http::serve(listener, shared.clone()));
    shared.stop.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    served
}
