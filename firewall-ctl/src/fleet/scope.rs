//! The scope side of the fleet: what this host publishes, and the fleet's
//! members and published policy put in force here. Runs on a thread in the
//! scope's network namespace (interfaces, addresses, commits), apart from
//! the etcd session, which runs in the namespace sgctl was started in.
//!
//! Level-triggered, like the agent's hotplug: each round compares what
//! should be with what is, and acts only on a difference —
//! - what this host publishes: for each group attached to an interface of
//!   the scope, that interface's host addresses, read every [`POLL`] (a
//!   changed attachment shows as a new generation, an address as a new
//!   `getifaddrs`), so a change is republished within that;
//! - the fleet's layer of `sg:` membership (`MemberEdits::fleet`): the
//!   members other hosts publish, for groups the policy in force defines,
//!   changed in the maps in force through `control::member_change` (in place,
//!   address by address; a full change where that cannot be shown), as soon
//!   as the session wakes this side;
//! - the published policy: a generation newer than the last one applied
//!   here is committed with the scope's attachments as they are.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{
    layout::{self, HostStatus, PublishedPolicy, Refusal},
    session::{lock, Link, Publication},
};
use crate::{
    control::{
        commit,
        member_change::{self, Change, Record},
        Place, Target,
    },
    netns,
    state::{
        member_edits::MemberEdits,
        records::{PolicyRecord, Source},
        saved::LibDir,
        StateDir,
    },
    timings::unix_now,
};

/// How often the scope is looked at without a wake-up.
pub const POLL: Duration = Duration::from_millis(250);
/// How often membership and policy are compared with the view although
/// neither changed (what a rollback or an `apply` did behind our back).
const RECHECK: Duration = Duration::from_secs(5);
/// How often `fleet.json` is rewritten when nothing changed (its
/// `updated_at` tells `sgctl status` the agent is alive).
const HEARTBEAT: Duration = Duration::from_secs(5);
/// The most refused keys `fleet.json` lists.
const MAX_LISTED_REFUSALS: usize = 64;

/// What `sgctl agent --etcd` keeps of the fleet, in `fleet.json` of the
/// scope's directory under `--lib-dir`: read by `sgctl status`, and by the
/// next agent (its lease, the last generation applied).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetRecord {
    pub host_id: String,
    pub prefix: String,
    pub endpoints: Vec<String>,
    pub agent_pid: u32,
    /// Seconds since the Unix epoch.
    pub updated_at: u64,
    pub connected: bool,
    pub last_sync: Option<u64>,
    pub last_error: Option<String>,
    pub lease: Option<i64>,
    pub lease_ttl: u64,
    pub resyncs: u64,
    /// The latest published generation the agent saw.
    pub published_generation: Option<u64>,
    /// The published generation last applied here (a local `apply` since
    /// keeps its files until the next generation is published).
    pub applied_generation: Option<u64>,
    /// A published generation refused here, and why.
    pub refused_generation: Option<(u64, String)>,
    /// What this host publishes, by group.
    pub publishing: BTreeMap<String, Vec<IpAddr>>,
    /// Members from other hosts in force here, by group.
    pub members: BTreeMap<String, usize>,
    /// Other hosts, with the published generation each runs and the groups it publishes.
    pub hosts: Vec<HostRecord>,
    /// Keys under the prefix whose value is refused, and why.
    pub refused: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub host: String,
    pub policy_generation: Option<u64>,
    pub groups: Vec<String>,
}

/// The published generation a policy record came from, if it did: its
/// sources are named `PREFIX/v1/policy@GENERATION:PATH` (see [`record_of`]).
pub fn published_generation(record: &PolicyRecord) -> Option<u64> {
    let path = &record.sources.first()?.path;
    let (_, rest) = path.split_once("/policy@")?;
    rest.split_once(':')?.0.parse().ok()
}

/// The policy record of a published generation.
fn record_of(link: &Link, published: &PublishedPolicy) -> PolicyRecord {
    let sources = published
        .sources
        .iter()
        .map(|s| Source {
            path: format!("{}@{}:{}", link.layout.policy(), published.generation, s.path),
            text: s.text.clone(),
        })
        .collect();
    PolicyRecord::of(sources)
}

/// The scope side's state between rounds.
pub struct Scope {
    place: Place,
    link: Arc<Link>,
    wanted: watch::Sender<Option<Publication>>,
    record: FleetRecord,
    /// The attachments of the generation last read.
    attachments: Option<Attachments>,
    /// The policy in force as far as membership needs it, by generation
    /// and `sgctl members` edits.
    policy: Option<PolicyFacts>,
    /// The view version and generation last reconciled, and when.
    reconciled: Option<(u64, u64, Instant)>,
    written: Option<(FleetRecord, Instant)>,
    /// Groups reported as undefined here (logged once each).
    unknown: BTreeSet<String>,
    /// A published generation whose commit failed for a runtime reason
    /// (retried), and when it was last tried.
    retry: Option<(u64, Instant)>,
}

/// Each filtered interface's groups, in generation `.0`.
type Attachments = (u64, Vec<(String, Vec<String>)>);

/// What membership needs of the policy in force.
struct PolicyFacts {
    generation: u64,
    edits: MemberEdits,
    /// Defined groups, each with its members from the files and `sgctl members`.
    groups: BTreeMap<String, BTreeSet<IpNet>>,
    published: Option<u64>,
}

impl Scope {
    pub fn new(
        place: &Place,
        link: Arc<Link>,
        wanted: watch::Sender<Option<Publication>>,
        record: FleetRecord,
    ) -> Self {
        Self {
            place: place.clone(),
            link,
            wanted,
            record,
            attachments: None,
            policy: None,
            reconciled: None,
            written: None,
            unknown: BTreeSet::new(),
            retry: None,
        }
    }

    /// Rounds until `stopping` says so.
    pub fn run(&mut self, wake: &mpsc::Receiver<()>, stopping: &dyn Fn() -> bool) {
        loop {
            match wake.recv_timeout(POLL) {
                Ok(()) => while wake.try_recv().is_ok() {},
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if stopping() {
                return;
            }
            if let Err(e) = self.round() {
                eprintln!("sgctl agent: fleet: {e:#}");
            }
        }
    }

    fn read_target(&self) -> anyhow::Result<Target> {
        Ok(Target {
            state: StateDir::open_read_only(&self.place.state_dir)?,
            lib: LibDir::new(&self.place.lib_dir),
            scope: self.place.scope(),
            memory_limit: self.place.memory_limit,
        })
    }

    /// One round: publish, reconcile, report.
    pub fn round(&mut self) -> anyhow::Result<()> {
        let target = self.read_target()?;
        let generation = target.active()?.map_or(0, |a| a.generation);
        self.publish(&target, generation)?;
        let version = *lock(&self.link.version);
        let due = match self.reconciled {
            Some((v, g, at)) => v != version || g != generation || at.elapsed() > RECHECK,
            None => true,
        };
        if due {
            let outcome = self.reconcile(&target, generation);
            let generation = target.active()?.map_or(0, |a| a.generation);
            self.reconciled = Some((version, generation, Instant::now()));
            outcome?;
        }
        self.report()
    }

    /// Sends what this host should publish to the session (which puts it
    /// only when it differs from what etcd holds).
    fn publish(&mut self, target: &Target, generation: u64) -> anyhow::Result<()> {
        if self.attachments.as_ref().is_none_or(|(g, _)| *g != generation) {
            let interfaces = target.interfaces()?.into_iter().map(|r| (r.ifname, r.groups)).collect();
            self.attachments = Some((generation, interfaces));
        }
        let addresses = netns::addresses()?;
        let mut members: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        for (ifname, groups) in self.attachments.iter().flat_map(|(_, a)| a) {
            let Some(addrs) = addresses.get(ifname) else { continue };
            let hosts: Vec<IpAddr> = addrs.iter().map(IpNet::addr).filter(|a| layout::is_host_address(*a)).collect();
            for group in groups {
                members.entry(group.clone()).or_default().extend(&hosts);
            }
        }
        let status = HostStatus {
            policy_generation: self.policy.as_ref().and_then(|p| p.published),
            sgctl: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let publication = Publication { members, status };
        self.record.publishing =
            publication.members.iter().map(|(g, a)| (g.clone(), a.iter().copied().collect())).collect();
        self.wanted.send_if_modified(|old| {
            let changed = old.as_ref() != Some(&publication);
            *old = Some(publication);
            changed
        });
        Ok(())
    }

    /// Puts the published policy (if newer) and the fleet's members in force.
    fn reconcile(&mut self, target: &Target, generation: u64) -> anyhow::Result<()> {
        let (published, membership) = {
            let view = lock(&self.link.view);
            (view.policy.clone(), view.membership())
        };
        self.record.published_generation = published.as_ref().map(|p| p.generation);
        // Also on a host with nothing applied yet: its `sgctl attach`
        // then attaches the fleet's groups.
        if let Some(published) = published {
            self.put_policy_in_force(&published)?;
        }
        if generation == 0 && target.active()?.is_none() {
            // Nothing applied here: there is no policy to hold members.
            return Ok(());
        }
        if lock(&self.link.health).resyncs == 0 {
            // Not read etcd yet (since this agent started): the membership
            // in force is the last known, and stays (fail static).
            return Ok(());
        }
        self.put_members_in_force(target, &membership)
    }

    /// The facts of the policy in force, read again only when its
    /// generation or `sgctl members` edits changed.
    fn facts(&mut self, target: &Target) -> anyhow::Result<bool> {
        let Some(active) = target.active()? else { return Ok(false) };
        let edits = target.member_edits(active.slot)?.without_fleet();
        let fresh = self.policy.as_ref().is_some_and(|p| p.generation == active.generation && p.edits == edits);
        if !fresh {
            let Some(mut record) = target.policy()? else { return Ok(false) };
            record.member_edits = edits.clone();
            let parsed = record.parse().context("the recorded policy no longer parses")?;
            let groups = parsed
                .groups
                .iter()
                .map(|g| (g.name.clone(), parsed.members_of(&g.name).collect::<BTreeSet<IpNet>>()))
                .collect();
            let published = published_generation(&record);
            self.policy = Some(PolicyFacts { generation: active.generation, edits, groups, published });
        }
        Ok(true)
    }

    /// Changes the fleet's layer of membership to what the view says, group
    /// by group, under the state lock.
    fn put_members_in_force(
        &mut self,
        target: &Target,
        membership: &BTreeMap<String, BTreeSet<IpAddr>>,
    ) -> anyhow::Result<()> {
        if !self.facts(target)? {
            return Ok(());
        }
        let facts = self.policy.take().context("policy facts")?;
        let outcome = self.put_layer_in_force(&facts, membership);
        self.policy = Some(facts);
        outcome
    }

    fn put_layer_in_force(
        &mut self,
        facts: &PolicyFacts,
        membership: &BTreeMap<String, BTreeSet<IpAddr>>,
    ) -> anyhow::Result<()> {
        let mut wanted: BTreeMap<String, BTreeSet<IpNet>> = BTreeMap::new();
        let mut unknown = BTreeSet::new();
        for (group, addresses) in membership {
            if facts.groups.contains_key(group) {
                wanted.insert(group.clone(), addresses.iter().copied().map(IpNet::from).collect());
            } else {
                unknown.insert(group.clone());
            }
        }
        for group in unknown.difference(&self.unknown) {
            eprintln!("sgctl agent: fleet: refused members of {group}: {}", Refusal::UnknownGroup(group.clone()));
        }
        self.unknown = unknown;
        self.record.members = wanted.iter().map(|(g, a)| (g.clone(), a.len())).collect();
        let target = self.read_target()?;
        let active = target.active()?.context("the policy in force went away")?;
        if target.member_edits(active.slot)?.fleet == wanted {
            return Ok(());
        }
        // Under the lock, from what is in force then.
        let (target, _lock) = self.place.open(true)?;
        let Some(active) = target.active()? else { return Ok(()) };
        let mut layer = target.member_edits(active.slot)?.fleet;
        let statics = &facts.groups;
        let groups: BTreeSet<String> = layer.keys().chain(wanted.keys()).cloned().collect();
        for group in groups {
            let old = layer.get(&group).cloned().unwrap_or_default();
            let new = wanted.get(&group).cloned().unwrap_or_default();
            if old == new {
                continue;
            }
            // Addresses the files or `sgctl members` give the group keep it;
            // those `sgctl members remove` took out stay out (`MemberEdits::apply`).
            let own = statics.get(&group).cloned().unwrap_or_default();
            let out = facts.edits.removed.get(&group).cloned().unwrap_or_default();
            let added: Vec<IpNet> =
                new.difference(&old).filter(|a| !own.contains(a) && !out.contains(a)).copied().collect();
            let removed: Vec<IpNet> = old.difference(&new).filter(|a| !own.contains(a)).copied().collect();
            if !added.is_empty() {
                let mut after = if removed.is_empty() { new.clone() } else { old.union(&new).copied().collect() };
                set(&mut layer, &group, std::mem::take(&mut after));
                let change = Change { group: group.clone(), add: true, addresses: added.clone() };
                log_outcome(&group, &added, true, &member_change::change(&target, &change, Record::Fleet(&layer))?);
            }
            if !removed.is_empty() || layer.get(&group) != wanted.get(&group) {
                set(&mut layer, &group, new.clone());
                let change = Change { group: group.clone(), add: false, addresses: removed.clone() };
                let outcome = member_change::change(&target, &change, Record::Fleet(&layer))?;
                if !removed.is_empty() {
                    log_outcome(&group, &removed, false, &outcome);
                }
            }
        }
        Ok(())
    }

    /// Commits a published generation newer than the last applied here.
    fn put_policy_in_force(&mut self, published: &PublishedPolicy) -> anyhow::Result<()> {
        let generation = published.generation;
        if self.record.applied_generation.is_some_and(|applied| generation <= applied) {
            if self.record.applied_generation != Some(generation)
                && self.record.refused_generation.as_ref().is_none_or(|(g, _)| *g != generation)
            {
                let why = Refusal::OlderGeneration {
                    published: generation,
                    in_force: self.record.applied_generation.unwrap_or_default(),
                };
                eprintln!("sgctl agent: fleet: refused published policy: {why}; enforcement unchanged");
                self.record.refused_generation = Some((generation, why.to_string()));
            }
            return Ok(());
        }
        if self.record.refused_generation.as_ref().is_some_and(|(g, _)| *g == generation) {
            return Ok(());
        }
        if self.retry.is_some_and(|(g, at)| g == generation && at.elapsed() < RECHECK) {
            return Ok(());
        }
        let (target, _lock) = self.place.open(true)?;
        let in_force = target.policy()?;
        if in_force.as_ref().and_then(published_generation) == Some(generation) {
            self.record.applied_generation = Some(generation);
            return Ok(());
        }
        let mut record = record_of(&self.link, published);
        // `sgctl members` edits were the files' (gone now); the fleet's layer stays.
        if let Some(active) = target.active()? {
            record.member_edits.fleet = target.member_edits(active.slot)?.fleet;
        }
        let attempt = (|| -> anyhow::Result<commit::Outcome> {
            let parsed = record.parse()?;
            commit::commit(&target, &record, &parsed, &target.current_wanted()?)
        })();
        match attempt {
            Ok(outcome) => {
                eprintln!(
                    "sgctl agent: fleet: published policy generation {generation} in force as generation {} ({})",
                    outcome.generation,
                    if outcome.changed { "switched" } else { "unchanged" }
                );
                self.record.applied_generation = Some(generation);
                self.record.refused_generation = None;
                self.retry = None;
                self.policy = None;
            }
            Err(e) if crate::fault::exit_status(&e) == crate::fault::Exit::Invalid => {
                eprintln!(
                    "sgctl agent: fleet: refused published policy generation {generation}: {e:#}; enforcement unchanged"
                );
                self.record.refused_generation = Some((generation, format!("{e:#}")));
            }
            Err(e) => {
                self.retry = Some((generation, Instant::now()));
                return Err(e.context(format!("putting published policy generation {generation} in force")));
            }
        }
        Ok(())
    }

    /// Writes `fleet.json` when something changed (at most once a second)
    /// or every [`HEARTBEAT`].
    fn report(&mut self) -> anyhow::Result<()> {
        {
            let health = lock(&self.link.health);
            self.record.connected = health.connected;
            self.record.last_sync = health.last_sync;
            self.record.last_error.clone_from(&health.last_error);
            self.record.lease = health.lease;
            self.record.resyncs = health.resyncs;
        }
        {
            let view = lock(&self.link.view);
            self.record.hosts = view
                .hosts()
                .into_iter()
                .map(|(host, groups)| HostRecord {
                    policy_generation: view.statuses.get(&host).and_then(|s| s.policy_generation),
                    host,
                    groups,
                })
                .collect();
            self.record.refused =
                view.refused.iter().take(MAX_LISTED_REFUSALS).map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        for group in &self.unknown {
            if self.record.refused.len() < MAX_LISTED_REFUSALS {
                let key = format!("{}hosts/*/members/{group}", self.link.layout.root());
                self.record.refused.insert(key, Refusal::UnknownGroup(group.clone()).to_string());
            }
        }
        let due = match &self.written {
            None => true,
            Some((last, at)) => {
                let same = FleetRecord { updated_at: last.updated_at, ..self.record.clone() } == *last;
                (!same && at.elapsed() >= Duration::from_secs(1)) || at.elapsed() >= HEARTBEAT
            }
        };
        if due {
            self.record.updated_at = unix_now();
            LibDir::new(&self.place.lib_dir).save_fleet(&self.place.scope(), &self.record)?;
            self.written = Some((self.record.clone(), Instant::now()));
        }
        Ok(())
    }
}

fn set(layer: &mut BTreeMap<String, BTreeSet<IpNet>>, group: &str, addresses: BTreeSet<IpNet>) {
    if addresses.is_empty() {
        layer.remove(group);
    } else {
        layer.insert(group.to_owned(), addresses);
    }
}

fn log_outcome(group: &str, addresses: &[IpNet], add: bool, outcome: &member_change::Outcome) {
    // Each address of a small change (the usual one); a count for a large one (a first read).
    let list = if addresses.len() <= 16 {
        addresses.iter().map(|a| a.addr().to_string()).collect::<Vec<_>>().join(" ")
    } else {
        format!("{} addresses", addresses.len())
    };
    let verb = if add { "joined" } else { "left" };
    let how = if outcome.in_place {
        format!("in place, {} entries written, {:.1} ms", outcome.entries_written, outcome.micros as f64 / 1000.0)
    } else {
        format!(
            "as policy generation {} ({}), {:.1} ms",
            outcome.generation,
            outcome.full_change_because.as_deref().unwrap_or("a full change"),
            outcome.micros as f64 / 1000.0
        )
    };
    eprintln!("sgctl agent: fleet: {list} {verb} {group}: {how}");
}
