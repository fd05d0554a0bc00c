//! One change of a scope's policy, in one switch (docs/semantics.md items
//! 16 and 17).
//!
//! Every interface's maps and records exist twice, in generation slots 0
//! and 1; the scope's `ACTIVE` says which slot is in force. A commit:
//!
//! 1. compiles everything (bad input stops here, nothing touched);
//! 2. waits one RCU grace period, so no program still reads the other slot;
//! 3. writes the other slot of every interface completely — new policy
//!    maps built and filled before they are installed, unchanged ones
//!    shared — and its records; attaches new interfaces with programs that
//!    pass everything in the slot in force (they were unfiltered before);
//!    replaces programs that must change (hook, table size, object) on the
//!    same maps, so they judge by the slot in force until the switch;
//! 4. switches: one write of `ACTIVE`. From the next packet on, every
//!    interface judges by the new generation, and every reader of the
//!    state sees the new records;
//! 5. waits one grace period, then detaches the interfaces the new
//!    generation leaves unfiltered and frees the old generation's maps.
//!
//! A kill before step 4 leaves the old generation in force everywhere (the
//! next command removes what step 3 attached: its programs passed
//! everything, as the interface did before); a kill after it leaves the new
//! one, and the next command finishes step 5 (see [`super::repair`]).
use std::collections::BTreeMap;

use anyhow::Context as _;
use firewall_common::policy::{slot_flags, slot_state, Active, SlotMeta, SLOT_AUDIT, SLOT_REMOVED};

use super::{compile_all, repair, IfaceChange, Target, Wanted};
use crate::{
    compile::{
        counter_slots::{self, SlotTable},
        image::{self, Image},
        CompiledInterface,
    },
    datapath::{
        self,
        attach::{self, Replace},
        generation, hooks,
        links::{self, LinkState},
        maps::{self, IfaceMaps},
        memory, sys,
    },
    netns,
    policy::Policy,
    state::{
        blob,
        member_edits::MemberEdits,
        records::{EgressHook, IfaceRecord, IfaceState, IngressHook, MemberIndex, Mode, PolicyRecord, PolicySummary},
        saved::{Saved, SavedInterface},
    },
    InputError,
};

/// What a commit did.
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    /// The generation in force afterwards.
    pub generation: u64,
    /// False when the policy and interfaces asked for are exactly those in
    /// force: nothing was written, the generation stays.
    pub changed: bool,
    pub interfaces: Vec<IfaceChange>,
    /// How long the switch took: the `ACTIVE` write and the grace period
    /// after it.
    pub switch_micros: u128,
    /// What the maps of the generation put in force take (`None`: nothing changed).
    pub kernel_memory: Option<memory::Estimate>,
}

/// One interface as the new generation will have it.
struct Planned {
    want: Wanted,
    ifindex: u32,
    /// How its programs sit on it (link layer, XDP or tcx).
    at: attach::Placement,
    image: Image,
    record: IfaceRecord,
    /// Counter slots given to a new rule (zeroed before the switch).
    fresh: Vec<u32>,
    /// Retired slots reused although flows still credited them.
    evicted: Vec<u32>,
    conntrack_capacity: u32,
    timeouts: firewall_common::conntrack::Timeouts,
    /// The interface leaves audit mode: the flows audit let through go.
    audit_ends: bool,
}

/// How a commit may deviate from what it is asked.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// An interface whose XDP hook is taken by another program gets tc
    /// instead of an error (restore and the agent: never unfiltered).
    pub hook_fallback: bool,
}

/// The context of an error that concerns one interface only: restore
/// leaves that interface out and tries the others again.
#[derive(Debug)]
pub struct OnInterface(pub String);

impl std::fmt::Display for OnInterface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interface {}", self.0)
    }
}

/// The interface a failed commit's error concerns alone, if any.
pub fn failed_interface(e: &anyhow::Error) -> Option<String> {
    e.downcast_ref::<OnInterface>().map(|o| o.0.clone())
}

/// Puts `policy` in force with the interfaces `wanted`, or changes nothing
/// if they are what is in force (and every attachment filters as it
/// should). `policy.generation` is ignored: the next number is taken.
pub fn commit(target: &Target, policy: &PolicyRecord, parsed: &Policy, wanted: &[Wanted]) -> anyhow::Result<Outcome> {
    commit_with(target, policy, parsed, wanted, Options::default())
}

/// `apply --dry-run`: the steps of a commit that need no kernel — `wanted`
/// compiled, and what it takes in the kernel (counted as in a scope with
/// nothing in force) held to `limit`.
pub fn dry_run(
    policy: &PolicyRecord,
    parsed: &Policy,
    wanted: &[Wanted],
    limit: memory::Limit,
) -> anyhow::Result<memory::Estimate> {
    let compiled = compile_all(parsed, wanted)?;
    let texts: Vec<(&str, &str)> = policy.sources.iter().map(|s| (s.path.as_str(), s.text.as_str())).collect();
    let estimate = super::estimate_fresh(&texts, parsed, wanted, &compiled)?;
    memory::check(&estimate, limit)?;
    Ok(estimate)
}

/// [`commit`] with `options`: the steps of the module's description, in order.
pub fn commit_with(
    target: &Target,
    policy: &PolicyRecord,
    parsed: &Policy,
    wanted: &[Wanted],
    options: Options,
) -> anyhow::Result<Outcome> {
    if !wanted.is_empty() {
        datapath::kernel::require()?;
    }
    repair::repair_scope(target)?;
    crate::timings::mark("repair");
    let start = InForce::read(target)?;
    crate::timings::mark("read the records in force");
    // 1. Everything that can fail on bad input, before anything changes.
    let mut planned = plan(target, parsed, wanted, &start, options)?;
    crate::timings::mark("images");
    // What the new generation takes in the kernel, before anything is loaded.
    let estimate = estimate(&planned, policy, parsed);
    memory::check(&estimate, target.memory_limit)?;
    let removed: Vec<&IfaceRecord> = start
        .records
        .values()
        .filter(|r| r.state == IfaceState::Enforce && !wanted.iter().any(|w| w.ifname == r.ifname))
        .collect();
    if unchanged(start.summary.as_ref(), policy, &planned, &start.records, &removed, target)? {
        save_on_disk(target, parsed, policy, start.active.generation, &start.records)?;
        return Ok(Outcome {
            generation: start.active.generation,
            changed: false,
            interfaces: Vec::new(),
            switch_micros: 0,
            kernel_memory: None,
        });
    }
    crate::timings::mark("compare with what is in force");
    // 2. No program may still be reading the slot about to be written: a
    // grace period has passed since the last switch, unless the `sgctl`
    // that made it was killed before its wait.
    if start.active.settled == 0 {
        sys::rcu_barrier().context("waiting for a grace period")?;
    }
    // 3. The new generation, complete, in the slot not in force.
    let changes = write_next(target, policy, parsed, &start, &mut planned, &removed)?;
    crate::timings::mark("write the new generation");
    // 4. The switch, and 5. once no program reads the old slot, tidying up.
    let switch_micros = switch(&start)?;
    crate::timings::mark("switch");
    repair::finish_scope(target)?;
    crate::timings::mark("free the old generation");
    expire_flows(target, &planned)?;
    crate::timings::mark("expire flows");
    save_on_disk(target, parsed, policy, start.generation(), &start.records)?;
    crate::timings::mark("save on disk");
    Ok(Outcome {
        generation: start.generation(),
        changed: true,
        interfaces: changes,
        switch_micros,
        kernel_memory: Some(estimate),
    })
}

/// What is in force in the scope as a commit starts.
struct InForce {
    active_path: std::path::PathBuf,
    active: Active,
    /// The interface records of the slot in force, by name.
    records: BTreeMap<String, IfaceRecord>,
    /// The policy in force, as [`unchanged`] compares it.
    summary: Option<(PolicySummary, MemberEdits)>,
}

impl InForce {
    fn read(target: &Target) -> anyhow::Result<Self> {
        let active_path = target.state.active_path(&target.scope);
        std::fs::create_dir_all(target.state.scope_dir(&target.scope))?;
        maps::create_active(&active_path)?;
        let active = maps::read_active(&active_path)?.unwrap_or_default();
        let records = if active.generation > 0 { target.records(active.slot)? } else { BTreeMap::new() };
        let summary = if active.generation > 0 { in_force_summary(target, active.slot)? } else { None };
        Ok(Self { active_path, active, records, summary })
    }

    /// The slot in force.
    fn now(&self) -> u32 {
        self.active.slot
    }

    /// The slot the commit writes.
    fn next(&self) -> u32 {
        1 - self.active.slot
    }

    /// The generation the commit puts in force.
    fn generation(&self) -> u64 {
        self.active.generation + 1
    }

    /// The record in force of the interface `ifname` is now (`ifindex`),
    /// if it is filtered.
    fn filtered(&self, ifname: &str, ifindex: u32) -> Option<&IfaceRecord> {
        self.records.get(ifname).filter(|r| r.state == IfaceState::Enforce && r.ifindex == ifindex)
    }
}

/// Step 1: compiles `wanted` and plans each interface; an error that
/// concerns one interface alone says which ([`OnInterface`]).
fn plan(
    target: &Target,
    parsed: &Policy,
    wanted: &[Wanted],
    start: &InForce,
    options: Options,
) -> anyhow::Result<Vec<Planned>> {
    let compiled = compile_all(parsed, wanted)?;
    crate::timings::mark("compile");
    wanted
        .iter()
        .zip(compiled)
        .map(|(want, compiled)| {
            plan_interface(target, want, &compiled, start, options).context(OnInterface(want.ifname.clone()))
        })
        .collect()
}

/// One interface of step 1: where its programs go, its counter slots, its
/// image and its record.
fn plan_interface(
    target: &Target,
    want: &Wanted,
    compiled: &CompiledInterface,
    start: &InForce,
    options: Options,
) -> anyhow::Result<Planned> {
    let generation = start.generation();
    let ifindex = netns::ifindex(&want.ifname)
        .ok_or_else(|| InputError::NoSuchInterface { ifname: want.ifname.clone(), scope: target.scope.to_string() })?;
    let old = start.filtered(&want.ifname, ifindex);
    // Devices sgctl cannot filter (or not with that hook) are refused
    // here, before anything changes.
    let ours: Vec<u32> = old
        .and_then(|_| attach::program_ids(&target.state.iface_dir(&target.scope, &want.ifname)).ok())
        .map(|(ingress, _)| vec![ingress])
        .unwrap_or_default();
    let at = match hooks::plan(&want.ifname, want.mode, &ours) {
        Err(e) if options.hook_fallback && xdp_unavailable(&e) => {
            eprintln!("note: {}: {e}; filtered with tc instead", want.ifname);
            attach::Placement { xdp: false, ..hooks::plan(&want.ifname, Mode::Tc, &ours)? }
        }
        other => other?,
    };
    let previous_slots = old.map_or_else(SlotTable::default, |r| r.slots.clone());
    let maps = target.maps(&want.ifname);
    let assignment = counter_slots::assign(&previous_slots, &compiled.rules, generation, || {
        // Only when a retired slot must be reused: which ones flows still credit.
        if old.is_some() {
            maps.slots_in_use().unwrap_or_default()
        } else {
            Default::default()
        }
    });
    let image = image::build(compiled, &assignment.by_rule)?;
    let record = IfaceRecord {
        ifindex,
        ingress: old.map_or(IngressHook::Tc, |r| r.ingress),
        egress: old.map_or(EgressHook::Tc, |r| r.egress),
        generation,
        ..record_of(want, compiled, &image, assignment.table)
    };
    Ok(Planned {
        want: want.clone(),
        ifindex,
        at,
        image,
        record,
        fresh: assignment.fresh,
        evicted: assignment.evicted,
        conntrack_capacity: compiled.conntrack_capacity,
        timeouts: compiled.timeouts,
        audit_ends: false,
    })
}

/// Step 3: every planned interface's slot `next`, its programs and its
/// record; the interfaces no longer wanted left unfiltered in `next`; the
/// policy's records. On failure, what this commit attached is detached
/// again (it passed everything, as the interface did before) and nothing
/// is switched.
fn write_next(
    target: &Target,
    policy: &PolicyRecord,
    parsed: &Policy,
    start: &InForce,
    planned: &mut [Planned],
    removed: &[&IfaceRecord],
) -> anyhow::Result<Vec<IfaceChange>> {
    let mut changes = Vec::new();
    let mut attached_here: Vec<(std::path::PathBuf, String)> = Vec::new();
    let result = write_interfaces(target, start, planned, &mut changes, &mut attached_here)
        .and_then(|()| write_removed(target, start, removed, &mut changes))
        .and_then(|()| write_policy_records(target, policy, parsed, start));
    if let Err(e) = result {
        // Interfaces attached by this commit were passing everything: as before.
        for (dir, ifname) in attached_here {
            let _ = attach::detach(&dir, &ifname);
        }
        return Err(e.context("nothing was switched: the previous policy is still in force"));
    }
    Ok(changes)
}

/// The planned interfaces of step 3, each with its record.
fn write_interfaces(
    target: &Target,
    start: &InForce,
    planned: &mut [Planned],
    changes: &mut Vec<IfaceChange>,
    attached_here: &mut Vec<(std::path::PathBuf, String)>,
) -> anyhow::Result<()> {
    for plan in planned {
        let step = match start.filtered(&plan.want.ifname, plan.ifindex) {
            Some(old) => update_interface(target, start, plan, old),
            None => attach_interface(target, start, plan, attached_here),
        }
        .context(OnInterface(plan.want.ifname.clone()))?;
        changes.push(step);
        crate::timings::mark("maps and programs");
        blob::write(&target.state.iface_record_path(&target.scope, &plan.want.ifname, start.next()), &plan.record)?;
        crate::timings::mark("interface record");
    }
    Ok(())
}

/// An interface filtered now: its new generation beside the one in force,
/// and its programs replaced or put back where they must be.
fn update_interface(
    target: &Target,
    start: &InForce,
    plan: &mut Planned,
    old: &IfaceRecord,
) -> anyhow::Result<IfaceChange> {
    let dir = target.state.iface_dir(&target.scope, &plan.want.ifname);
    let maps = IfaceMaps::at(&dir);
    // The kernel's word on each side: one detached, replaced or pushed back
    // behind sgctl's back is put back here, on the same maps.
    let health = links::check(&dir, old.ifindex, &old.ifname);
    plan.audit_ends =
        maps.slot_meta(start.now())?.flags & slot_flags::AUDIT != 0 && plan.image.meta.flags & slot_flags::AUDIT == 0;
    maps.move_flows(&plan.evicted, SLOT_REMOVED)?;
    maps.reset_rule_counters(&plan.fresh)?;
    generation::write(&maps, start.next(), &plan.image, Some((start.now(), &old.digests)))
        .with_context(|| format!("interface {}", plan.want.ifname))?;
    // What the kernel runs, not what a record says: a killed `sgctl` may
    // have moved the hook or resized the table.
    let capacity = maps.conntrack_capacity()?;
    let current =
        attach::hooks(&dir, old.ingress).unwrap_or(attach::Hooks { ingress: old.ingress, egress: old.egress });
    (plan.record.ingress, plan.record.egress) = (current.ingress, current.egress);
    let needs = Replace {
        at: plan.at,
        current,
        conntrack_capacity: (capacity != plan.conntrack_capacity).then_some(plan.conntrack_capacity),
        relink_ingress: relink(&health.ingress),
        relink_egress: relink(&health.egress),
    };
    let other_hook = !plan.at.fits(current);
    let change = needs.conntrack_capacity.is_some() || other_hook || old.object != plan.record.object;
    if !change && health.is_ok() {
        return Ok(IfaceChange::Updated { interface: plan.want.ifname.clone() });
    }
    let hooks = attach::replace(&dir, start.active_path.clone(), &plan.want.ifname, &needs).with_context(|| {
        format!("interface {}: the previous programs stay attached and enforcing", plan.want.ifname)
    })?;
    (plan.record.ingress, plan.record.egress) = (hooks.ingress, hooks.egress);
    let interface = plan.want.ifname.clone();
    if change {
        Ok(IfaceChange::Reattached { interface, hooks })
    } else {
        Ok(IfaceChange::Repaired { interface, hooks, repaired: health.problems() })
    }
}

/// An interface new here (or recreated: the old device and its links are
/// gone): attached with programs that pass everything in the slot in
/// force, as it was before, and its generation in the next slot.
fn attach_interface(
    target: &Target,
    start: &InForce,
    plan: &mut Planned,
    attached_here: &mut Vec<(std::path::PathBuf, String)>,
) -> anyhow::Result<IfaceChange> {
    let dir = target.state.iface_dir(&target.scope, &plan.want.ifname);
    let maps = IfaceMaps::at(&dir);
    attach::detach(&dir, &plan.want.ifname)?;
    let mut ebpf = attach::prepare_new(&dir, start.active_path.clone(), plan.conntrack_capacity, plan.at.link)?;
    attached_here.push((dir.clone(), plan.want.ifname.clone()));
    // Unfiltered until the switch, as it was before.
    generation::write_meta(&maps, start.now(), &unfiltered(), &[])?;
    generation::write(&maps, start.next(), &plan.image, None)
        .with_context(|| format!("interface {}", plan.want.ifname))?;
    maps.set_timeouts(plan.timeouts)?;
    let hooks = attach::attach_links(&mut ebpf, &dir, &plan.want.ifname, plan.at)?;
    (plan.record.ingress, plan.record.egress) = (hooks.ingress, hooks.egress);
    Ok(IfaceChange::Attached { interface: plan.want.ifname.clone(), hooks })
}

/// Interfaces filtered now that the new generation leaves unfiltered
/// (detached once it is in force).
fn write_removed(
    target: &Target,
    start: &InForce,
    removed: &[&IfaceRecord],
    changes: &mut Vec<IfaceChange>,
) -> anyhow::Result<()> {
    for record in removed {
        let maps = target.maps(&record.ifname);
        generation::write_meta(&maps, start.next(), &unfiltered(), &[])?;
        let detaching =
            IfaceRecord { state: IfaceState::Detaching, generation: start.generation(), ..(*record).clone() };
        blob::write(&target.state.iface_record_path(&target.scope, &record.ifname, start.next()), &detaching)?;
        changes.push(IfaceChange::Detached { interface: record.ifname.clone() });
    }
    Ok(())
}

/// The policy's records of the next slot: its text, its summary and its
/// membership edits.
fn write_policy_records(
    target: &Target,
    policy: &PolicyRecord,
    parsed: &Policy,
    start: &InForce,
) -> anyhow::Result<()> {
    let next = start.next();
    let record = PolicyRecord { generation: start.generation(), ..policy.clone() };
    blob::write(&target.state.policy_path(&target.scope, next), &record)?;
    blob::write(&target.state.summary_path(&target.scope, next), &PolicySummary::of(&record, parsed))?;
    let edits = target.state.members_path(&target.scope, next);
    if policy.member_edits.is_empty() {
        blob::remove(&edits)?;
    } else {
        blob::write(&edits, &policy.member_edits)?;
    }
    crate::timings::mark("policy record");
    Ok(())
}

/// Steps 4 and 5: one write of `ACTIVE` puts the next slot in force; once a
/// grace period has passed (no program reads the old slot) it is marked
/// settled. Returns how long both took, in microseconds.
fn switch(start: &InForce) -> anyhow::Result<u128> {
    let (slot, generation) = (start.next(), start.generation());
    let switch = std::time::Instant::now();
    maps::write_active(&start.active_path, Active { slot, settled: 0, generation })?;
    sys::rcu_barrier().context("waiting for a grace period")?;
    maps::write_active(&start.active_path, Active { slot, settled: 1, generation })?;
    Ok(switch.elapsed().as_micros())
}

/// After the switch: each interface's timeouts set, and as far as that goes
/// its expired flows removed (and where it leaves audit mode, what only
/// audit let through).
fn expire_flows(target: &Target, planned: &[Planned]) -> anyhow::Result<()> {
    for plan in planned {
        let maps = target.maps(&plan.want.ifname);
        maps.set_timeouts(plan.timeouts)?;
        let _ = maps.expire_flows();
        if plan.audit_ends {
            // Audit let these through although no rule allowed them; in
            // enforce mode they are cut (docs/semantics.md item 18).
            let _ = maps.remove_flows(|_, e| e.slot == SLOT_AUDIT);
            // And the datagrams it let through: their later fragments too.
            let _ = maps.remove_fragments(|slot| slot == SLOT_AUDIT);
        }
    }
    Ok(())
}

/// The summary and membership edits of the policy in slot `slot`: what
/// [`unchanged`] compares (an older sgctl's state has no summary: its
/// record is read and summarized).
fn in_force_summary(target: &Target, slot: u32) -> anyhow::Result<Option<(PolicySummary, MemberEdits)>> {
    let edits = target.member_edits(slot)?;
    if let Some(summary) = blob::read::<PolicySummary>(&target.state.summary_path(&target.scope, slot))? {
        return Ok(Some((summary, edits)));
    }
    let Some(record) = blob::read::<PolicyRecord>(&target.state.policy_path(&target.scope, slot))? else {
        return Ok(None);
    };
    Ok(Some((PolicySummary { generation: record.generation, digest: record.digest(), groups: Vec::new() }, edits)))
}

/// Saves `policy` (under `parsed`), in force as `generation`, on disk, for
/// `sgctl restore` after a reboot, keeping the interfaces saved before that
/// are still wanted and are not filtered now: those that do not exist (they
/// are attached when they appear), and those that appeared while this
/// commit ran (not filtered before it, `before_commit`: the agent attaches
/// them next). One this commit stopped filtering (a `detach`) goes.
/// Writes nothing if that is what is saved already.
pub fn save_on_disk(
    target: &Target,
    parsed: &Policy,
    policy: &PolicyRecord,
    generation: u64,
    before_commit: &BTreeMap<String, IfaceRecord>,
) -> anyhow::Result<()> {
    let mut interfaces: Vec<SavedInterface> =
        target.interfaces()?.iter().map(|r| SavedInterface::from(&Wanted::of_record(r))).collect();
    let before = target.lib.applied_head(&target.scope)?;
    if let Some(before) = &before {
        for saved in &before.interfaces {
            let named = parsed.interfaces.iter().any(|a| a.interface == saved.ifname);
            let filtered_before =
                before_commit.get(&saved.ifname).filter(|r| r.state == IfaceState::Enforce).map(|r| r.ifindex);
            if stays_saved(saved, named, filtered_before, netns::ifindex(&saved.ifname))
                && !interfaces.iter().any(|i| i.ifname == saved.ifname)
            {
                interfaces.push(saved.clone());
            }
        }
    }
    // Interfaces the policy names that do not exist (`apply
    // --allow-missing`): saved, so they are attached when they appear.
    for a in &parsed.interfaces {
        if netns::ifindex(&a.interface).is_none() && !interfaces.iter().any(|i| i.ifname == a.interface) {
            interfaces.push(SavedInterface {
                ifname: a.interface.clone(),
                groups: a.groups.clone(),
                origin: crate::state::records::Origin::Policy,
                mode: Mode::Auto,
            });
        }
    }
    let digest = policy.digest();
    let same = before.as_ref().is_some_and(|b| {
        b.generation == generation
            && b.digest == digest
            && b.interfaces == interfaces
            && b.members == policy.member_edits
    });
    if !same {
        let now = Saved {
            generation,
            sources: policy.sources.clone(),
            interfaces,
            members: policy.member_edits.clone(),
            digest,
        };
        target.lib.save_applied(&target.scope, &now).context("saving the applied policy on disk")?;
    }
    Ok(())
}

/// Whether an interface of the head saved before a commit stays saved
/// though the commit does not filter it: when the policy still names it
/// (`named`) or a command attached it, unless this very device was filtered
/// before the commit (`filtered_before`, the ifindex of its record) and is
/// not now, which is a detach made on purpose. A device deleted and
/// created again under the name (`ifindex_now` another ifindex; a container
/// or tunnel restarted, while the agent was removing the old one) is
/// another interface, not filtered yet: it stays saved, so the agent's next
/// look attaches it. Dropped, it would stay unfiltered for good.
fn stays_saved(saved: &SavedInterface, named: bool, filtered_before: Option<u32>, ifindex_now: Option<u32>) -> bool {
    let wanted = named || saved.origin == crate::state::records::Origin::Command;
    let detached = filtered_before.is_some() && filtered_before == ifindex_now;
    wanted && !detached
}

/// The record of an interface filtered by `want` with `compiled` (as
/// `image`, its counter slots `slots`); its place, hook and generation are
/// the caller's to set.
pub fn record_of(want: &Wanted, compiled: &CompiledInterface, image: &Image, slots: SlotTable) -> IfaceRecord {
    IfaceRecord {
        ifname: want.ifname.clone(),
        ifindex: 0,
        state: IfaceState::Enforce,
        groups: want.groups.clone(),
        origin: want.origin,
        mode: want.mode,
        ingress: IngressHook::Tc,
        egress: EgressHook::Tc,
        generation: 0,
        conntrack_capacity: compiled.conntrack_capacity,
        rules: compiled.rules.clone(),
        slots,
        digests: image.digests,
        object: datapath::object_digest(),
        members: MemberIndex {
            groups: compiled.member_groups.iter().map(|(g, set)| (g.clone(), set.iter().collect())).collect(),
            any4: compiled.any4.iter().collect(),
            any6: compiled.any6.iter().collect(),
            classes: image.class_table.clone(),
            hosts: Some([image.host4.len() as u64, image.host6.len() as u64]),
            indexed: true,
        },
    }
}

/// The kernel memory of the scope once `planned` and `policy` (under
/// `parsed`) are in force.
fn estimate(planned: &[Planned], policy: &PolicyRecord, parsed: &Policy) -> memory::Estimate {
    let interfaces = planned
        .iter()
        .map(|p| {
            let record = memory::json_len(&p.record);
            memory::interface(&p.want.ifname, &p.image, p.conntrack_capacity, record)
        })
        .collect();
    let summary = memory::json_len(&PolicySummary::of(policy, parsed));
    memory::Estimate::new(interfaces, memory::scope(memory::json_len(policy), summary))
}

/// Whether a side in `state` needs a new attachment (rather than its
/// program put back in place on the one it has).
fn relink(state: &LinkState) -> bool {
    !matches!(state, LinkState::Ok | LinkState::OtherProgram { .. })
}

/// Whether `e` refuses XDP on a device (taken by another program, or no
/// Ethernet header) that tc can filter.
fn xdp_unavailable(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<InputError>(),
        Some(InputError::XdpHookTaken { .. } | InputError::XdpWithoutEthernet { .. })
    )
}

/// A generation slot in which an interface is not filtered.
fn unfiltered() -> SlotMeta {
    SlotMeta { state: slot_state::UNFILTERED, flags: 0, any4: Default::default(), any6: Default::default() }
}

/// Whether the commit would change nothing: same policy text, same
/// interfaces with the same records (up to the generation number), the
/// programs already the ones this `sgctl` carries and their tables sized.
fn unchanged(
    old_policy: Option<&(PolicySummary, MemberEdits)>,
    policy: &PolicyRecord,
    planned: &[Planned],
    in_force: &BTreeMap<String, IfaceRecord>,
    removed: &[&IfaceRecord],
    target: &Target,
) -> anyhow::Result<bool> {
    let Some((old_summary, old_edits)) = old_policy else { return Ok(false) };
    if old_summary.digest != policy.digest() || *old_edits != policy.member_edits || !removed.is_empty() {
        return Ok(false);
    }
    for plan in planned {
        let Some(old) = in_force.get(&plan.want.ifname) else { return Ok(false) };
        let same =
            IfaceRecord { generation: old.generation, ingress: old.ingress, egress: old.egress, ..plan.record.clone() };
        let dir = target.state.iface_dir(&target.scope, &plan.want.ifname);
        let kernel_agrees = links::check(&dir, old.ifindex, &old.ifname).is_ok()
            && target.maps(&plan.want.ifname).conntrack_capacity()? == plan.conntrack_capacity
            && plan.at.fits(attach::hooks(&dir, old.ingress)?);
        if same != *old || !kernel_agrees {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::records::Origin;

    fn saved(origin: Origin) -> SavedInterface {
        SavedInterface { ifname: "late0".into(), groups: vec!["web".into()], origin, mode: Mode::Auto }
    }

    #[test]
    fn a_device_created_again_under_a_saved_name_stays_saved() {
        let policy = saved(Origin::Policy);
        // Deleted and created again while the agent removed the old one.
        assert!(stays_saved(&policy, true, Some(7), Some(9)));
        // Gone: saved until it comes back.
        assert!(stays_saved(&policy, true, Some(7), None));
        // Never filtered (left out of a partial restore): still wanted.
        assert!(stays_saved(&policy, true, None, Some(7)));
        // The same device, filtered before and not now: detached on purpose.
        assert!(!stays_saved(&policy, true, Some(7), Some(7)));
        // No longer named by the policy.
        assert!(!stays_saved(&policy, false, None, None));
        // Attached by a command: kept without the policy naming it.
        assert!(stays_saved(&saved(Origin::Command), false, Some(7), Some(9)));
        assert!(!stays_saved(&saved(Origin::Command), false, Some(7), Some(7)));
    }
}
