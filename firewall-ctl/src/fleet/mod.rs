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
//!   members and policy put in force, through `control::member_change` (in place)
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
use crate::{control::Place, state::saved::LibDir, InputError};

/// `sgctl agent`'s fleet options: with `--etcd`, it publishes this host's
/// groups and addresses and takes every other host's into `sg:` membership.
#[derive(Clone, Debug, clap::Args)]
pub struct FleetArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// This host's name in the fleet (its keys are PREFIX/v1/hosts/NAME/…): a-z 0-9 . _ -, unique in the fleet.
    #[arg(long, value_name = "NAME", requires = "endpoints")]
    pub host_id: Option<String>,
    /// Seconds this host's keys outlive its agent (the etcd lease, renewed every third of it).
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub lease_ttl: u64,
}

impl FleetArgs {
    /// Whether the agent takes part in a fleet.
    pub fn enabled(&self) -> bool {
        !self.etcd.endpoints.is_empty()
    }
}

/// How to reach etcd: endpoints, prefix, TLS and auth, as etcdctl names them.
#[derive(Clone, Debug, clap::Args)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated: http://127.0.0.1:2379, or https://… with the TLS options below.
    #[arg(long = "etcd", value_delimiter = ',', value_name = "URL[,URL...]")]
    pub endpoints: Vec<String>,
    /// The key prefix the fleet shares.
    #[arg(long, default_value = "/sgctl", value_name = "PREFIX")]
    pub etcd_prefix: String,
    /// The CA certificate (PEM) that signed etcd's server certificates.
    #[arg(long, value_name = "FILE")]
    pub etcd_cacert: Option<std::path::PathBuf>,
    /// This client's certificate (PEM), for etcd's client certificate authentication.
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    pub etcd_cert: Option<std::path::PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<std::path::PathBuf>,
    /// etcd user, as etcdctl's --user: USER or USER:PASSWORD.
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub etcd_user: Option<String>,
    /// The etcd user's password (better from the environment than on the command line).
    #[arg(long, env = "SGCTL_ETCD_PASSWORD", hide_env_values = true, value_name = "PASSWORD")]
    pub etcd_password: Option<String>,
}

impl EtcdArgs {
    /// (user, password) when a user is given.
    pub fn credentials(&self) -> Result<Option<(String, String)>, InputError> {
        let Some(user) = &self.etcd_user else { return Ok(None) };
        let (name, inline) = match user.split_once(':') {
            Some((name, password)) => (name, Some(password)),
            None => (user.as_str(), None),
        };
        let password = inline.map(str::to_owned).or_else(|| self.etcd_password.clone()).ok_or_else(|| {
            InputError::EtcdOptions(format!(
                "--etcd-user {name}: no password (USER:PASSWORD, --etcd-password or SGCTL_ETCD_PASSWORD)"
            ))
        })?;
        Ok(Some((name.to_owned(), password)))
    }
}

/// Starts the fleet duty of `sgctl agent --etcd`: the etcd session on a
/// thread that enters `home` (the namespace sgctl was started in) and the
/// scope side on a thread in the caller's namespace (the scope's). Both run
/// until the process ends (the scope side stops when `stop` is set).
pub fn start(place: &Place, args: &FleetArgs, home: &File, stop: Arc<AtomicBool>) -> anyhow::Result<Arc<Link>> {
    let host = args.host_id.clone().ok_or_else(|| InputError::EtcdOptions("--etcd needs --host-id NAME".into()))?;
    if !layout::valid_host_id(&host) {
        return Err(InputError::EtcdOptions(format!(
            "--host-id {host:?}: a host name of a-z 0-9 . _ - (at most 63, starting with a letter or digit)"
        ))
        .into());
    }
    let layout = Layout::new(&args.etcd.etcd_prefix).map_err(InputError::EtcdOptions)?;
    let connection = Connection::new(&args.etcd)?;
    let scope = place.scope();
    let lib = LibDir::new(&place.lib_dir);
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

    let mut side = scope::Scope::new(place, link.clone(), wanted, record);
    std::thread::Builder::new().name("fleet".into()).spawn(move || {
        side.run(&woken, &|| stop.load(Ordering::Relaxed));
    })?;
    Ok(link)
}
