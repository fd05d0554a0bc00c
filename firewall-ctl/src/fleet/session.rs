//! The etcd side of the fleet: one session at a time with the cluster,
//! started again with backoff whenever it fails.
//!
//! A session connects, takes the host's lease (the one it had, if etcd
//! still holds it: a host that was cut off for less than its TTL never
//! leaves its groups), reads the whole prefix into the [`View`] (a full
//! resynchronisation), makes this host's keys what the scope side wants
//! published, and then follows the watch from the revision it read at.
//! Every [`Link::ttl`] / 3 it renews the lease; a renewal etcd does not
//! answer within two thirds of the TTL, a watch that ends or errs, or a
//! lease that etcd says has expired end the session. A watch that lost
//! history (its start revision was compacted, or it fell behind) reads the
//! prefix again, within the session.
//!
//! While no session runs, nothing changes: the view keeps the last
//! membership known, so enforcement stays as it was (fail static), and
//! [`Health`] says so (`sgctl status`, metrics, the log).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _};
use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, PutOptions, TlsOptions, Txn, TxnOp,
    WatchOptions, WatchStream,
};
use tokio::sync::watch;

use super::{
    layout::{self, HostStatus, Layout},
    view::{Effect, View},
};
use crate::{fleet::EtcdArgs, timings::unix_now};

/// How long connecting (and each request of a session's setup) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The first and the longest wait between two sessions.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The most operations one transaction carries (etcd's `--max-txn-ops`
/// defaults to 128).
const TXN_OPS: usize = 100;

/// Where and how to reach etcd: `--etcd` and its TLS and auth options.
#[derive(Clone)]
pub struct Connection {
    pub endpoints: Vec<String>,
    options: ConnectOptions,
    /// The endpoint the next connection tries first.
    next: Arc<AtomicUsize>,
}

impl Connection {
    /// Checks the options and reads the TLS files (once: a file that
    /// changes later needs a restart, as with etcdctl).
    pub fn new(args: &EtcdArgs) -> anyhow::Result<Self> {
        let usage = |why: String| anyhow::Error::from(crate::InputError::EtcdOptions(why));
        if args.endpoints.is_empty() {
            return Err(usage("--etcd names no endpoint".into()));
        }
        // A dead endpoint is seen within a few seconds: HTTP/2 pings on an
        // idle connection, and a watch on a member without a leader fails
        // (so the session moves to a member that has one).
        let mut options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let tls = args.etcd_cacert.is_some() || args.etcd_cert.is_some();
        if tls {
            let mut config = TlsOptions::new();
            if let Some(ca) = &args.etcd_cacert {
                let pem = read(ca)?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            if let (Some(cert), Some(key)) = (&args.etcd_cert, &args.etcd_key) {
                let cert_pem =
                    std::fs::read(cert).with_context(|| format!("reading --etcd-cert {}", cert.display()))?;
                let key_pem = std::fs::read(key).with_context(|| format!("reading --etcd-key {}", key.display()))?;
                config = config.identity(Identity::from_pem(cert_pem, key_pem));
            }
            options = options.with_tls(config);
        }
        if let Some((user, password)) = args.credentials()? {
            options = options.with_user(user, password).with_auto_token_refresh(true);
        }
        let endpoints = args
            .endpoints
            .iter()
            .map(|e| {
                let https = e.starts_with("https://");
                match (https, tls) {
                    (true, false) => Err(usage(format!(
                        "{e}: an https endpoint needs --etcd-cacert (and --etcd-cert/--etcd-key for client \
                         certificates)"
                    ))),
                    (false, true) if e.starts_with("http://") => {
                        Err(usage(format!("{e}: the TLS options need https:// endpoints")))
                    }
                    _ => Ok(e.clone()),
                }
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { endpoints, options, next: Arc::default() })
    }

    /// A client of one member: the first endpoint that answers a read of
    /// `probe` (a key the caller may read), starting after the one the
    /// previous connection used, so a session that ended on a dead member
    /// goes on with the next. One member, not all: etcd-client balances
    /// requests over every endpoint it is given and keeps routing some to
    /// a dead one, so a session through all of them fails on whichever of
    /// its requests lands there (a cluster with a member down would look
    /// down).
    pub async fn connect(&self, probe: &str) -> anyhow::Result<Client> {
        let count = self.endpoints.len();
        let first = self.next.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for at in (first..first + count).map(|i| i % count) {
            let endpoint = &self.endpoints[at];
            match self.connect_one(endpoint, probe).await {
                Ok(client) => {
                    self.next.store((at + 1) % count, Ordering::Relaxed);
                    return Ok(client);
                }
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        bail!("{}", failures.join("; "))
    }

    async fn connect_one(&self, endpoint: &str, probe: &str) -> anyhow::Result<Client> {
        let connect = Client::connect([endpoint], Some(self.options.clone()));
        let mut client = tokio::time::timeout(REQUEST_TIMEOUT, connect)
            .await
            .with_context(|| format!("connecting to {endpoint}: no answer within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("connecting to {endpoint}"))?;
        let read = client.get(probe, Some(GetOptions::new().with_count_only()));
        timed(&format!("reading from {endpoint}"), read).await?;
        Ok(client)
    }
}

/// A TLS file named on the command line (unreadable: invalid input).
fn read(path: &std::path::Path) -> Result<Vec<u8>, crate::InputError> {
    std::fs::read(path).map_err(|error| crate::InputError::Unreadable { path: path.to_owned(), error })
}

/// Runs `request` with the session's request timeout.
pub async fn timed<T>(
    what: &str,
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .with_context(|| format!("{what}: no answer within {REQUEST_TIMEOUT:?}"))?
        .with_context(|| what.to_owned())
}

/// What this host publishes: group → addresses, and its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Publication {
    pub members: BTreeMap<String, BTreeSet<IpAddr>>,
    pub status: HostStatus,
}

/// Whether the fleet is in reach, as `status`, metrics and the log say.
#[derive(Clone, Debug, Default)]
pub struct Health {
    pub connected: bool,
    /// When the view last matched etcd (a full read or a watch event),
    /// seconds since the Unix epoch.
    pub last_sync: Option<u64>,
    /// Full reads of the prefix since the agent started.
    pub resyncs: u64,
    /// Why the last session ended.
    pub last_error: Option<String>,
    /// The lease this host's keys are bound to.
    pub lease: Option<i64>,
}

/// What the session and the scope side share.
pub struct Link {
    pub layout: Layout,
    pub host: String,
    pub ttl: Duration,
    pub view: Mutex<View>,
    /// Counts changes of the view (members, statuses, policy, refusals).
    pub version: Mutex<u64>,
    pub health: Mutex<Health>,
    /// Wakes the scope side.
    pub wake: Mutex<mpsc::Sender<()>>,
}

impl Link {
    fn changed(&self) {
        *lock(&self.version) += 1;
        let _ = lock(&self.wake).send(());
    }

    fn synced(&self) {
        lock(&self.health).last_sync = Some(unix_now());
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sessions, one after another, until the process ends. `lease`: one a
/// previous agent of this host held, tried first.
pub async fn run(
    connection: Connection,
    link: Arc<Link>,
    mut wanted: watch::Receiver<Option<Publication>>,
    lease: Option<i64>,
) {
    let mut lease = lease;
    let mut backoff = BACKOFF_MIN;
    let mut jitter = Jitter::new();
    loop {
        let started = Instant::now();
        let e = session(&connection, &link, &mut wanted, &mut lease).await;
        let was = {
            let mut health = lock(&link.health);
            let was = health.connected;
            health.connected = false;
            health.lease = lease;
            let message = format!("{e:#}");
            let repeated = health.last_error.as_deref() == Some(message.as_str());
            health.last_error = Some(message);
            (was, repeated)
        };
        link.changed();
        match was {
            (true, _) => eprintln!(
                "sgctl agent: fleet: lost etcd ({e:#}); the last membership known stays enforced; trying again"
            ),
            (false, false) => eprintln!("sgctl agent: fleet: etcd unreachable ({e:#}); trying again, backing off"),
            (false, true) => {}
        }
        // A session that lasted a while starts the backoff afresh.
        if started.elapsed() > BACKOFF_MAX * 2 {
            backoff = BACKOFF_MIN;
        }
        tokio::time::sleep(jitter.around(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One session; returns why it ended.
async fn session(
    connection: &Connection,
    link: &Link,
    wanted: &mut watch::Receiver<Option<Publication>>,
    lease: &mut Option<i64>,
) -> anyhow::Error {
    match session_inner(connection, link, wanted, lease).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn session_inner(
    connection: &Connection,
    link: &Link,
    wanted: &mut watch::Receiver<Option<Publication>>,
    lease: &mut Option<i64>,
) -> anyhow::Result<std::convert::Infallible> {
    let ttl_secs = i64::try_from(link.ttl.as_secs()).unwrap_or(i64::MAX);
    let mut client = connection.connect(link.layout.root()).await?;
    // The lease: the one this host had while etcd still holds it, else a new one.
    let kept = match *lease {
        Some(id) => {
            let left = timed("reading the lease", client.lease_time_to_live(id, None)).await?;
            (left.ttl() > 0).then_some(id)
        }
        None => None,
    };
    let id = match kept {
        Some(id) => id,
        None => {
            let granted = timed("granting a lease", client.lease_grant(ttl_secs, None)).await?;
            eprintln!("sgctl agent: fleet: lease {:x} of {} s granted", granted.id(), granted.ttl());
            granted.id()
        }
    };
    *lease = Some(id);
    lock(&link.health).lease = Some(id);
    let (mut keeper, mut beats) = timed("renewing the lease", client.lease_keep_alive(id)).await?;
    let mut watch = resync(link, &mut client).await?;
    let publication = wanted.borrow_and_update().clone();
    publish(link, &mut client, publication.as_ref(), id).await?;
    {
        let mut health = lock(&link.health);
        health.connected = true;
        health.last_error = None;
    }
    link.changed();
    eprintln!(
        "sgctl agent: fleet: connected to {}, in sync at revision {}",
        connection.endpoints.join(","),
        lock(&link.view).revision
    );

    let renew_every = link.ttl / 3;
    let mut renew = tokio::time::interval(renew_every);
    let mut answered = Instant::now();
    loop {
        tokio::select! {
            _ = renew.tick() => {
                if answered.elapsed() > renew_every * 2 {
                    bail!("etcd did not renew the lease within {:?}", renew_every * 2);
                }
                keeper.keep_alive().await.context("renewing the lease")?;
            }
            beat = beats.message() => {
                let beat = beat.context("renewing the lease")?.context("the lease's renewal stream ended")?;
                if beat.ttl() <= 0 {
                    *lease = None;
                    bail!("lease {id:x} expired: this host's keys were deleted; publishing them again");
                }
                answered = Instant::now();
            }
            changed = wanted.changed() => {
                if changed.is_err() {
                    // The scope side is gone: the agent is stopping.
                    std::future::pending::<()>().await;
                }
                let publication = wanted.borrow_and_update().clone();
                publish(link, &mut client, publication.as_ref(), id).await?;
            }
            message = watch.message() => {
                let response = message.context("watching the prefix")?.context("the watch ended")?;
                if response.compact_revision() > 0 || response.canceled() {
                    eprintln!(
                        "sgctl agent: fleet: the watch lost history ({}compacted at revision {}); reading the prefix again",
                        if response.cancel_reason().is_empty() { String::new() } else { format!("{}; ", response.cancel_reason()) },
                        response.compact_revision()
                    );
                    watch = resync(link, &mut client).await?;
                    let publication = wanted.borrow().clone();
                    publish(link, &mut client, publication.as_ref(), id).await?;
                    continue;
                }
                let (changed, own) = apply_events(link, &response);
                if changed {
                    link.changed();
                } else {
                    link.synced();
                }
                if own {
                    // Someone else wrote or deleted a key of this host's: put it back.
                    let publication = wanted.borrow().clone();
                    publish(link, &mut client, publication.as_ref(), id).await?;
                }
            }
        }
    }
}

/// Applies a watch response's events to the view: (whether anything the
/// scope side acts on changed, whether this host's own keys changed).
fn apply_events(link: &Link, response: &etcd_client::WatchResponse) -> (bool, bool) {
    let (mut changed, mut own) = (false, false);
    let mut view = lock(&link.view);
    for event in response.events() {
        let Some(kv) = event.kv() else { continue };
        let effect = match event.event_type() {
            EventType::Put => view.put(&link.layout, &link.host, kv.key(), kv.value(), kv.lease()),
            EventType::Delete => view.delete(&link.layout, &link.host, kv.key()),
        };
        match effect {
            Effect::None => {}
            Effect::Changed => changed = true,
            Effect::Own => own = true,
            Effect::Refused(why) => {
                eprintln!(
                    "sgctl agent: fleet: refused {}: {why}; what it held before stays",
                    String::from_utf8_lossy(kv.key())
                );
                changed = true;
            }
        }
    }
    if let Some(header) = response.header() {
        view.revision = view.revision.max(header.revision());
    }
    drop(view);
    if changed {
        lock(&link.health).last_sync = Some(unix_now());
    }
    (changed, own)
}

/// Reads the whole prefix into the view and starts watching after it.
async fn resync(link: &Link, client: &mut Client) -> anyhow::Result<WatchStream> {
    let root = link.layout.root().to_owned();
    let read = timed("reading the prefix", client.get(root.clone(), Some(GetOptions::new().with_prefix()))).await?;
    let revision = read.header().map_or(0, etcd_client::ResponseHeader::revision);
    let kvs: Vec<(Vec<u8>, Vec<u8>, i64)> =
        read.kvs().iter().map(|kv| (kv.key().to_vec(), kv.value().to_vec(), kv.lease())).collect();
    {
        let mut view = lock(&link.view);
        let next = view.after_read(&link.layout, &link.host, &kvs, revision);
        for (key, why) in &next.refused {
            if view.refused.get(key) != Some(why) {
                eprintln!("sgctl agent: fleet: refused {key}: {why}; what it held before stays");
            }
        }
        *view = next;
    }
    {
        let mut health = lock(&link.health);
        health.resyncs += 1;
        health.last_sync = Some(unix_now());
    }
    link.changed();
    let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
    timed("watching the prefix", client.watch(root, Some(options))).await
}

/// Makes this host's keys in etcd what `publication` says, bound to
/// `lease`: puts what differs, deletes what is no longer published.
/// Nothing before the scope side has said what to publish (a restarted
/// agent must not delete what its predecessor published).
async fn publish(
    link: &Link,
    client: &mut Client,
    publication: Option<&Publication>,
    lease: i64,
) -> anyhow::Result<()> {
    let Some(publication) = publication else { return Ok(()) };
    let mut wanted: BTreeMap<String, Vec<u8>> = publication
        .members
        .iter()
        .filter(|(_, addresses)| !addresses.is_empty())
        .map(|(group, addresses)| (link.layout.members(&link.host, group), layout::members_value(addresses)))
        .collect();
    wanted.insert(link.layout.status(&link.host), serde_json::to_vec(&publication.status)?);
    let held = lock(&link.view).own.clone();
    let mut ops = Vec::new();
    for (key, value) in &wanted {
        if held.get(key) != Some(&(value.clone(), lease)) {
            ops.push(TxnOp::put(key.clone(), value.clone(), Some(PutOptions::new().with_lease(lease))));
        }
    }
    for key in held.keys().filter(|k| !wanted.contains_key(*k)) {
        ops.push(TxnOp::delete(key.clone(), None));
    }
    if ops.is_empty() {
        return Ok(());
    }
    for chunk in ops.chunks(TXN_OPS) {
        timed("publishing this host's members", client.txn(Txn::new().and_then(chunk.to_vec()))).await?;
    }
    // What etcd now holds (the watch will say so too).
    let mut view = lock(&link.view);
    view.own = wanted.into_iter().map(|(k, v)| (k, (v, lease))).collect();
    drop(view);
    let groups: Vec<String> = publication
        .members
        .iter()
        .map(|(g, a)| format!("{g}: {}", a.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")))
        .collect();
    eprintln!(
        "sgctl agent: fleet: published {}",
        if groups.is_empty() { "no member".to_owned() } else { groups.join("; ") }
    );
    Ok(())
}

/// A small jitter for backoffs, so that hosts cut off together do not
/// come back in step.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        Self(seed ^ u64::from(std::process::id()) | 1)
    }

    /// `d` ± 25%.
    fn around(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let quarter = d.as_millis() as u64 / 4;
        let spread = if quarter == 0 { 0 } else { self.0 % (2 * quarter) };
        Duration::from_millis(d.as_millis() as u64 - quarter + spread)
    }
}
