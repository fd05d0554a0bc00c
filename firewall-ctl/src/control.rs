//! Bringing one host (scope) to a wanted set of filtered interfaces under a
//! policy. `apply`, `attach` and `detach` all end here, because any of them
//! can change which addresses carry a group, and every rule that references
//! the group must follow (semantics.md item 5).
use std::collections::BTreeMap;

use anyhow::Context as _;
use ipnet::IpNet;

use crate::{
    compile::{self, CompiledInterface},
    datapath::{attach, maps::IfaceMaps},
    netns,
    state::{
        blob,
        records::{IfaceRecord, IngressHook, Mode, Origin, PolicyRecord},
        Scope, StateDir,
    },
    InputError,
};

/// The host `sgctl` works on: a state directory and a scope in it. The
/// process has already entered the scope's network namespace.
pub struct Host {
    pub state: StateDir,
    pub scope: Scope,
}

/// An interface that should be filtered, and how.
#[derive(Clone, Debug)]
pub struct Wanted {
    pub ifname: String,
    pub groups: Vec<String>,
    pub origin: Origin,
    pub mode: Mode,
}

impl Wanted {
    /// The interfaces a policy's `interfaces:` section names.
    pub fn from_policy(policy: &crate::policy::Policy) -> Vec<Self> {
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
}

/// What happened to one interface.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum IfaceChange {
    Attached { interface: String, ingress: IngressHook },
    Updated { interface: String },
    Reattached { interface: String, ingress: IngressHook },
    Detached { interface: String },
}

impl std::fmt::Display for IfaceChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Attached { interface, ingress } => {
                write!(f, "attached {interface}: ingress {ingress}, egress tc (tcx)")
            }
            Self::Reattached { interface, ingress } => {
                write!(f, "reattached {interface}: ingress {ingress}, egress tc (tcx)")
            }
            Self::Updated { interface } => write!(f, "updated {interface}"),
            Self::Detached { interface } => write!(f, "detached {interface}"),
        }
    }
}

impl Host {
    pub fn policy(&self) -> anyhow::Result<Option<PolicyRecord>> {
        blob::read(&self.state.policy_path(&self.scope))
    }

    pub fn save_policy(&self, record: &PolicyRecord) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.state.scope_dir(&self.scope))?;
        blob::write(&self.state.policy_path(&self.scope), record)
    }

    /// Records of the filtered interfaces of this scope.
    pub fn interfaces(&self) -> anyhow::Result<Vec<IfaceRecord>> {
        let mut out = Vec::new();
        for ifname in self.state.interfaces(&self.scope)? {
            if let Some(record) = blob::read(&self.record_path(&ifname))? {
                out.push(record);
            }
        }
        Ok(out)
    }

    pub fn maps(&self, ifname: &str) -> IfaceMaps {
        IfaceMaps::at(&self.state.iface_dir(&self.scope, ifname))
    }

    fn record_path(&self, ifname: &str) -> std::path::PathBuf {
        self.state.iface_dir(&self.scope, ifname).join("record")
    }

    /// Compiles every wanted interface (any input error returns before the
    /// kernel is touched), then attaches, updates or detaches to match.
    pub fn reconcile(&self, policy: &PolicyRecord, wanted: &[Wanted]) -> anyhow::Result<Vec<IfaceChange>> {
        let compiled = compile_all(policy, wanted)?;
        let ifindexes = wanted
            .iter()
            .map(|w| {
                netns::ifindex(&w.ifname)
                    .ok_or_else(|| InputError(format!("interface {:?} does not exist in {}", w.ifname, self.scope)))
            })
            .collect::<Result<Vec<u32>, InputError>>()?;
        // Devices sgctl cannot filter (or not with that hook) are refused
        // before anything changes.
        for w in wanted {
            crate::datapath::hooks::check(&w.ifname, w.mode)?;
        }
        let current: BTreeMap<String, IfaceRecord> =
            self.interfaces()?.into_iter().map(|r| (r.ifname.clone(), r)).collect();
        let mut changes = Vec::new();

        for ((want, compiled), ifindex) in wanted.iter().zip(&compiled).zip(ifindexes) {
            let dir = self.state.iface_dir(&self.scope, &want.ifname);
            let old = current.get(&want.ifname);
            let reusable = old.is_some_and(|o| {
                o.ifindex == ifindex && o.mode == want.mode && o.conntrack_capacity == compiled.conntrack_capacity
            });
            let ingress = if reusable {
                self.maps(&want.ifname).write_policy(compiled)?;
                changes.push(IfaceChange::Updated { interface: want.ifname.clone() });
                old.map_or(IngressHook::Tc, |o| o.ingress)
            } else {
                if old.is_some() {
                    // The interface was recreated, or the mode or table size
                    // changed: the programs and maps are rebuilt.
                    attach::detach(&dir)?;
                }
                let ingress = attach::attach(&dir, &want.ifname, want.mode, compiled)?;
                changes.push(if old.is_some() {
                    IfaceChange::Reattached { interface: want.ifname.clone(), ingress }
                } else {
                    IfaceChange::Attached { interface: want.ifname.clone(), ingress }
                });
                ingress
            };
            let record = IfaceRecord {
                ifname: want.ifname.clone(),
                ifindex,
                groups: want.groups.clone(),
                origin: want.origin,
                mode: want.mode,
                ingress,
                generation: policy.generation,
                conntrack_capacity: compiled.conntrack_capacity,
                rules: compiled.rules.clone(),
            };
            blob::write(&self.record_path(&want.ifname), &record)?;
            let maps = self.maps(&want.ifname);
            maps.expire_flows(&maps.timeouts()?)?;
        }

        for ifname in current.keys().filter(|n| !wanted.iter().any(|w| &w.ifname == *n)) {
            attach::detach(&self.state.iface_dir(&self.scope, ifname))?;
            changes.push(IfaceChange::Detached { interface: ifname.clone() });
        }
        Ok(changes)
    }

    /// The currently filtered interfaces as [`Wanted`] entries, leaving out
    /// interfaces that no longer exist (deleting an interface detaches its
    /// programs; the next reconcile removes the state left behind).
    pub fn current_wanted(&self) -> anyhow::Result<Vec<Wanted>> {
        Ok(self
            .interfaces()?
            .into_iter()
            .filter(|r| netns::ifindex(&r.ifname).is_some())
            .map(|r| Wanted { ifname: r.ifname, groups: r.groups, origin: r.origin, mode: r.mode })
            .collect())
    }
}

/// Compiles each wanted interface against the policy. A group carried by an
/// interface gets that interface's addresses as members.
pub fn compile_all(policy: &PolicyRecord, wanted: &[Wanted]) -> anyhow::Result<Vec<CompiledInterface>> {
    let local = local_members(wanted)?;
    wanted
        .iter()
        .map(|w| {
            for group in &w.groups {
                if policy.policy.group(group).is_none() {
                    return Err(InputError(format!(
                        "interface {}: group {group:?} is not defined by the applied policy",
                        w.ifname
                    ))
                    .into());
                }
            }
            compile::compile_interface(&policy.policy, &w.groups, &local)
                .map_err(|e| InputError(format!("interface {}: {e}", w.ifname)).into())
        })
        .collect()
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
