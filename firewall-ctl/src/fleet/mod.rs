//! Security groups across a fleet, through etcd (docs/fleet.md):
//! `sgctl agent --etcd` publishes which groups this host carries and with
//! which addresses, and puts every other host's into `sg:` membership here;
//! `sgctl publish` puts one policy for every host.
//!
//! - [`layout`]: the keys under the prefix and what their values may hold
//!   (every value read passes there first; a bad one is refused);
//! - [`view`]: what this agent knows of the prefix, kept from a full read
//!   and the watch, fail static key by key;
//! - [`session`]: the etcd side — connection, lease, full reads, the watch,
//!   backoff — on a thread in the namespace sgctl was started in, so a lab
//!   of namespaced hosts reaches one etcd on the machine's loopback;
//! - [`scope`]: the scope side — what this host publishes, and the fleet's
//!   members and policy put in force, through `control::members` (in place)
//!   and `control::commit` — on a thread in the scope's namespace;
//! - [`publish`]: `sgctl publish`; [`report`]: the fleet in `sgctl status`.
//!
//! The two sides share a [`session::Link`] (the view, the session's health,
//! a wake-up channel) and a `tokio::sync::watch` of what to publish.
pub mod layout;
pub mod publish;
pub mod report;
pub mod scope;
pub mod session;
pub mod view;

use std::{
    fs::File,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::Duration,
};

use anyhow::Context as _;

pub use self::scope::FleetRecord;
use self::{
    layout::Layout,
    session::{Connection, Link},
};
use crate::{
    cli::{FleetArgs, Global},
    state::saved::LibDir,
    InputError,
};

/// Starts the fleet duty of `sgctl agent --etcd`: the etcd session on a
/// thread that enters `home` (the namespace sgctl was started in) and the
/// scope side on a thread in the caller's namespace (the scope's). Both run
/// until the process ends (the scope side stops when `stop` is set).
pub fn start(global: &Global, args: &FleetArgs, home: &File, stop: Arc<AtomicBool>) -> anyhow::Result<Arc<Link>> {
    let host = args.host_id.clone().ok_or_else(|| InputError::EtcdOptions("--etcd needs --host-id NAME".into()))?;
    if !layout::valid_host_id(&host) {
        return Err(InputError::EtcdOptions(format!(
            "--host-id {host:?}: a host name of a-z 0-9 . _ - (at most 63, starting with a letter or digit)"
        ))
        .into());
    }
    let layout = Layout::new(&args.etcd.etcd_prefix).map_err(InputError::EtcdOptions)?;
    let connection = Connection::new(&args.etcd)?;
    let scope = crate::cli::cmd::scope_of(global);
    let lib = LibDir::new(&global.lib_dir);
    // What the previous agent of this host kept: its lease (still alive if
    // it stopped less than a TTL ago) and the last generation applied.
    let previous: Option<FleetRecord> = lib.fleet(&scope).unwrap_or_default();
    let previous = previous.filter(|p| p.host_id == host && p.prefix == layout.root());
    let record = FleetRecord {
        host_id: host.clone(),
        prefix: layout.root().to_owned(),
        endpoints: connection.endpoints.clone(),
        agent_pid: std::process::id(),
        lease_ttl: args.lease_ttl,
        applied_generation: previous.as_ref().and_then(|p| p.applied_generation),
        ..FleetRecord::default()
    };
    let lease = previous.and_then(|p| p.lease);
    let (wake, woken) = mpsc::channel();
    let link = Arc::new(Link {
        layout,
        host,
        ttl: Duration::from_secs(args.lease_ttl),
        view: Mutex::default(),
        version: Mutex::default(),
        health: Mutex::default(),
        wake: Mutex::new(wake),
    });
    let (wanted, wanted_rx) = tokio::sync::watch::channel(None);

    let home = home.try_clone().context("duplicating the namespace descriptor")?;
    let session_link = link.clone();
    std::thread::Builder::new().name("fleet-etcd".into()).spawn(move || {
        // Sockets belong to the namespace of the thread that opens them:
        // this thread, and the runtime's, stay where sgctl was started.
        if let Err(e) = nix::sched::setns(home, nix::sched::CloneFlags::CLONE_NEWNET) {
            eprintln!("sgctl agent: fleet: cannot enter the namespace sgctl was started in: {e}");
            return;
        }
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sgctl agent: fleet: cannot start the etcd session's runtime: {e}");
                return;
            }
        };
        runtime.block_on(session::run(connection, session_link, wanted_rx, lease));
    })?;

    let mut side = scope::Scope::new(global, link.clone(), wanted, record);
    std::thread::Builder::new().name("fleet".into()).spawn(move || {
        side.run(&woken, &|| stop.load(Ordering::Relaxed));
    })?;
    Ok(link)
}
