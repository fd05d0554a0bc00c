//! Bringing one scope to a wanted set of filtered interfaces under a
//! policy. `apply`, `attach`, `detach` and `restore` all end in
//! [`commit::commit`], because any of them can change which addresses carry
//! a group, and every rule that references the group must follow
//! (docs/semantics.md item 5) — in one switch, for every interface at once.
pub mod commit;
pub mod member_change;
pub mod repair;
pub mod restore;
pub mod trace;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::Context as _;
use firewall_common::policy::Active;
use ipnet::IpNet;

use crate::{
    compile::{self, CompiledInterface},
    datapath::{
        attach::Hooks,
        maps::{self, IfaceMaps},
    },
    netns,
    policy::Policy,
    state::{
        blob,
        member_edits::MemberEdits,
        records::{IfaceRecord, IfaceState, Mode, Origin, PolicyRecord, PolicySummary},
        saved::{LibDir, Saved, SavedInterface},
        Scope, StateDir, StateLock,
    },
    InputError,
};

/// What `sgctl` works on (not a host: a scope, the initial network namespace
/// or a named one): a state directory and a scope in it, and
/// where the applied policy is saved on disk. The process has already
/// entered the scope's network namespace.
#[derive(Clone)]
pub struct Target {
    pub state: StateDir,
    pub lib: LibDir,
    pub scope: Scope,
    /// The most kernel memory the scope's policy may take (`--max-kernel-memory`).
    pub memory_limit: crate::datapath::memory::Limit,
}

/// Where a verb or the agent works and the limits it keeps: the command
/// line's global options (`-n`, `--state-dir`, `--lib-dir`, `--wait`,
/// `--max-kernel-memory`) as the library takes them.
#[derive(Clone, Debug)]
pub struct Place {
    pub netns: Option<String>,
    pub state_dir: PathBuf,
    pub lib_dir: PathBuf,
    /// How long a change waits for another sgctl to finish.
    pub wait: Duration,
    pub memory_limit: crate::datapath::memory::Limit,
}

impl Place {
    /// The scope `-n` names (the initial network namespace without it).
    pub fn scope(&self) -> Scope {
        self.netns.clone().map_or(Scope::InitNetns, Scope::Netns)
    }

    /// The [`Target`] to work on. Verbs that change state take the
    /// directory for themselves (and tidy what a killed `sgctl` or a deleted
    /// namespace left); reports read maps and records that are replaced whole,
    /// need no lock, and change nothing.
    pub fn open(&self, changes: bool) -> anyhow::Result<(Target, Option<StateLock>)> {
        let lib = LibDir::open(&self.lib_dir)?;
        let (state, lock) = if changes {
            let state = StateDir::open(&self.state_dir)?;
            let lock = state.lock(self.wait)?;
            for scope in repair::prune_vanished_scopes(&state, &lib)? {
                eprintln!("sgctl: removed the state and saved policy of {scope}: the namespace no longer exists");
            }
            (state, Some(lock))
        } else {
            (StateDir::open_read_only(&self.state_dir)?, None)
        };
        Ok((Target { state, lib, scope: self.scope(), memory_limit: self.memory_limit }, lock))
    }
}

/// An interface that should be filtered, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub ifname: String,
    pub groups: Vec<String>,
    pub origin: Origin,
    pub mode: Mode,
}

impl Wanted {
    /// The interfaces a policy's `interfaces:` section names.
    pub fn from_policy(policy: &Policy) -> Vec<Self> {
        policy
            .interfaces
            .iter()
            .map(|a| Self {
                ifname: a.interface.clone(),
                groups: a.groups.clone(),
                origin: Origin::Policy,
                mode: Mode::Auto,
            })
            .collect()
    }

    fn of_record(r: &IfaceRecord) -> Self {
        Self { ifname: r.ifname.clone(), groups: r.groups.clone(), origin: r.origin, mode: r.mode }
    }
}

impl From<&Wanted> for SavedInterface {
    fn from(w: &Wanted) -> Self {
        Self { ifname: w.ifname.clone(), groups: w.groups.clone(), origin: w.origin, mode: w.mode }
    }
}

impl From<&SavedInterface> for Wanted {
    fn from(s: &SavedInterface) -> Self {
        Self { ifname: s.ifname.clone(), groups: s.groups.clone(), origin: s.origin, mode: s.mode }
    }
}

/// What happened to one interface.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum IfaceChange {
    Attached {
        interface: String,
        #[serde(flatten)]
        hooks: Hooks,
    },
    Updated {
        interface: String,
    },
    Reattached {
        interface: String,
        #[serde(flatten)]
        hooks: Hooks,
    },
    /// Links found detached, replaced or not first, put back (`repaired`:
    /// what was wrong).
    Repaired {
        interface: String,
        #[serde(flatten)]
        hooks: Hooks,
        repaired: Vec<String>,
    },
    Detached {
        interface: String,
    },
}

impl IfaceChange {
    pub fn interface(&self) -> &str {
        match self {
            Self::Attached { interface, .. }
            | Self::Updated { interface }
            | Self::Reattached { interface, .. }
            | Self::Repaired { interface, .. }
            | Self::Detached { interface } => interface,
        }
    }

    /// What was done, in one word (the agent's repair metric's label).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Attached { .. } => "attached",
            Self::Updated { .. } => "updated",
            Self::Reattached { .. } => "reattached",
            Self::Repaired { .. } => "repaired",
            Self::Detached { .. } => "detached",
        }
    }
}

impl std::fmt::Display for IfaceChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Attached { interface, hooks } => {
                write!(f, "attached {interface}: ingress {}, egress {}", hooks.ingress, hooks.egress)
            }
            Self::Reattached { interface, hooks } => {
                write!(f, "reattached {interface} without a gap: ingress {}, egress {}", hooks.ingress, hooks.egress)
            }
            Self::Repaired { interface, hooks, repaired } => {
                let (ingress, egress) = (hooks.ingress, hooks.egress);
                write!(f, "repaired {interface} ({}): ingress {ingress}, egress {egress}", repaired.join(", "))
            }
            Self::Updated { interface } => write!(f, "updated {interface}"),
            Self::Detached { interface } => write!(f, "detached {interface}"),
        }
    }
}

impl Target {
    /// The generation in force (`None`: nothing was ever committed here).
    pub fn active(&self) -> anyhow::Result<Option<Active>> {
        Ok(maps::read_active(&self.state.active_path(&self.scope))?.filter(|a| a.generation > 0))
    }

    /// The policy in force, with its membership edits.
    pub fn policy(&self) -> anyhow::Result<Option<PolicyRecord>> {
        let Some(active) = self.active()? else { return Ok(None) };
        let Some(mut record) = blob::read::<PolicyRecord>(&self.state.policy_path(&self.scope, active.slot))? else {
            return Ok(None);
        };
        record.member_edits = self.member_edits(active.slot)?;
        Ok(Some(record))
    }

    /// The summary of the policy in force (`None` also when an older sgctl
    /// wrote the state, without one).
    pub fn summary(&self) -> anyhow::Result<Option<PolicySummary>> {
        let Some(active) = self.active()? else { return Ok(None) };
        blob::read(&self.state.summary_path(&self.scope, active.slot))
    }

    /// The membership edits of generation slot `slot`.
    pub fn member_edits(&self, slot: u32) -> anyhow::Result<MemberEdits> {
        Ok(blob::read(&self.state.members_path(&self.scope, slot))?.unwrap_or_default())
    }

    /// The policy in force, parsed.
    pub fn parsed_policy(&self) -> anyhow::Result<Option<(PolicyRecord, Policy)>> {
        let Some(record) = self.policy()? else { return Ok(None) };
        let parsed = record.parse().context("the recorded policy no longer parses")?;
        Ok(Some((record, parsed)))
    }

    /// Records of the interfaces filtered in the generation in force.
    pub fn interfaces(&self) -> anyhow::Result<Vec<IfaceRecord>> {
        let Some(active) = self.active()? else { return Ok(Vec::new()) };
        Ok(self.records(active.slot)?.into_values().filter(|r| r.state == IfaceState::Enforce).collect())
    }

    /// Every interface record of generation slot `slot`, by name.
    pub fn records(&self, slot: u32) -> anyhow::Result<BTreeMap<String, IfaceRecord>> {
        let mut out = BTreeMap::new();
        for ifname in self.state.interfaces(&self.scope)? {
            if let Some(record) = blob::read::<IfaceRecord>(&self.state.iface_record_path(&self.scope, &ifname, slot))?
            {
                out.insert(ifname, record);
            }
        }
        Ok(out)
    }

    pub fn maps(&self, ifname: &str) -> IfaceMaps {
        IfaceMaps::at(&self.state.iface_dir(&self.scope, ifname))
    }

    /// What is in force, as it is saved on disk.
    pub fn in_force(&self) -> anyhow::Result<Option<Saved>> {
        let Some(policy) = self.policy()? else { return Ok(None) };
        let interfaces = self.interfaces()?.iter().map(|r| SavedInterface::from(&Wanted::of_record(r))).collect();
        Ok(Some(Saved {
            generation: policy.generation,
            digest: policy.digest(),
            sources: policy.sources,
            interfaces,
            members: policy.member_edits,
        }))
    }

    /// The currently filtered interfaces as [`Wanted`] entries, leaving out
    /// interfaces that no longer exist (deleting an interface detaches its
    /// programs; the next commit removes the state left behind).
    pub fn current_wanted(&self) -> anyhow::Result<Vec<Wanted>> {
        Ok(self.interfaces()?.iter().filter(|r| netns::ifindex(&r.ifname).is_some()).map(Wanted::of_record).collect())
    }
}

/// Compiles each wanted interface against the policy. A group carried by an
/// interface gets that interface's addresses as members.
pub fn compile_all(policy: &Policy, wanted: &[Wanted]) -> anyhow::Result<Vec<CompiledInterface>> {
    let local = local_members(wanted)?;
    wanted
        .iter()
        .map(|w| {
            for group in &w.groups {
                if policy.group(group).is_none() {
                    return Err(InputError::GroupNotDefined { ifname: w.ifname.clone(), group: group.clone() }.into());
                }
            }
            compile::compile_interface(policy, &w.groups, &local).map_err(|e| e.on_interface(&w.ifname).into())
        })
        .collect()
}

/// What `policy` (read from `sources`) on `wanted`, compiled as
/// `compiled`, takes in the kernel once applied to a scope with nothing in
/// force: for `check` and `apply --dry-run`, which change nothing.
pub fn estimate_fresh(
    sources: &[(&str, &str)],
    parsed: &Policy,
    wanted: &[Wanted],
    compiled: &[CompiledInterface],
) -> anyhow::Result<crate::datapath::memory::Estimate> {
    let mut interfaces = Vec::with_capacity(wanted.len());
    for (want, compiled) in wanted.iter().zip(compiled) {
        let assignment =
            compile::counter_slots::assign(&Default::default(), &compiled.rules, 1, std::collections::HashSet::new);
        let image = compile::image::build(compiled, &assignment.by_rule)?;
        let record = commit::record_of(want, compiled, &image, assignment.table);
        let record = crate::datapath::memory::json_len(&record);
        interfaces.push(crate::datapath::memory::interface(&want.ifname, &image, compiled.conntrack_capacity, record));
    }
    // The policy record's JSON, without copying the texts into one.
    #[derive(serde::Serialize)]
    struct SourceView<'a> {
        path: &'a str,
        text: &'a str,
    }
    #[derive(serde::Serialize)]
    struct RecordView<'a> {
        generation: u64,
        sources: Vec<SourceView<'a>>,
    }
    let view =
        RecordView { generation: 1, sources: sources.iter().map(|&(path, text)| SourceView { path, text }).collect() };
    let summary = PolicySummary { generation: 1, digest: u64::MAX, groups: PolicySummary::groups_of(parsed) };
    let scope = crate::datapath::memory::scope(
        crate::datapath::memory::json_len(&view),
        crate::datapath::memory::json_len(&summary),
    );
    Ok(crate::datapath::memory::Estimate::new(interfaces, scope))
}

/// Group → addresses of the local interfaces that carry it.
pub fn local_members(wanted: &[Wanted]) -> anyhow::Result<BTreeMap<String, Vec<IpNet>>> {
    let addresses = netns::addresses().context("reading interface addresses")?;
    let mut members: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
    for w in wanted {
        let Some(addrs) = addresses.get(&w.ifname) else { continue };
        for group in &w.groups {
            members.entry(group.clone()).or_default().extend(addrs.iter().copied());
        }
    }
    Ok(members)
}
