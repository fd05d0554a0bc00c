//! What a killed `sgctl` may leave, and how the next one (holding the state
//! lock, before it changes anything) puts it right. Whatever the instant of
//! the kill, every interface was enforcing a complete policy — the one in
//! force before the command, or the one after — and these steps only
//! finish or undo the bookkeeping around it:
//!
//! - an interface directory with no record for the generation in force was
//!   being attached by a commit that never switched: its programs pass
//!   everything (the interface was unfiltered), and it is removed;
//! - an interface whose record in force says `detaching` was being removed
//!   after a switch: its programs already pass everything; the links go;
//! - a new attachment pinned beside the old (a hook change, or a clsact
//!   filter's program replacement, cut short): the move is finished if the
//!   new one runs, undone if not;
//! - resized conntrack tables not yet in place, or the table of an older
//!   sgctl not yet moved into today's: the move is finished if the programs
//!   already use the new tables, undone if not (`attach::finish_table_moves`);
//! - the old generation's large policy maps still installed: they are freed;
//! - a membership change (`sgctl members`) cut short: it is finished from
//!   its journal (see [`super::member_change`]).
use anyhow::Context as _;

use super::Target;
use crate::{
    datapath::{attach, generation, maps},
    state::{blob, records::IfaceState, saved::LibDir, Scope, StateDir},
};

/// Undoes an uncommitted change and finishes a committed one in `target`'s
/// scope.
pub fn repair_scope(target: &Target) -> anyhow::Result<()> {
    // A membership change cut short is finished first: it belongs to the
    // generation in force.
    super::member_change::finish_journal(target)?;
    let active = maps::read_active(&target.state.active_path(&target.scope))?.filter(|a| a.generation > 0);
    for ifname in target.state.interfaces(&target.scope)? {
        let dir = target.state.iface_dir(&target.scope, &ifname);
        let committed = match active {
            Some(a) => blob::read::<RecordState>(&target.state.iface_record_path(&target.scope, &ifname, a.slot))?,
            None => None,
        };
        if committed.is_none() {
            attach::detach(&dir, &ifname).with_context(|| format!("removing the uncommitted attach of {ifname}"))?;
            continue;
        }
        attach::finish_moves(&dir, &ifname).with_context(|| format!("finishing the move of {ifname}'s programs"))?;
        attach::finish_table_moves(&dir).with_context(|| format!("finishing the conntrack move of {ifname}"))?;
    }
    finish_scope(target)
}

/// The steps after a switch: detach what the generation in force leaves
/// unfiltered, and free the old generation's maps.
pub fn finish_scope(target: &Target) -> anyhow::Result<()> {
    let Some(active) = maps::read_active(&target.state.active_path(&target.scope))?.filter(|a| a.generation > 0) else {
        return Ok(());
    };
    for ifname in target.state.interfaces(&target.scope)? {
        let dir = target.state.iface_dir(&target.scope, &ifname);
        let Some(record) =
            blob::read::<RecordState>(&target.state.iface_record_path(&target.scope, &ifname, active.slot))?
        else {
            continue;
        };
        match record.state {
            IfaceState::Detaching => attach::detach(&dir, &ifname).with_context(|| format!("detaching {ifname}"))?,
            IfaceState::Enforce => generation::free_old(&maps::IfaceMaps::at(&dir), active.slot, 1 - active.slot)
                .with_context(|| format!("freeing the old maps of {ifname}"))?,
        }
    }
    Ok(())
}

/// The part of an interface record repairs look at (reading only it skips
/// building the rest, which may be large).
#[derive(serde::Deserialize)]
struct RecordState {
    state: IfaceState,
}

/// Removes the state of named network namespaces that are really gone:
/// no `/run/netns` name, and no link of theirs still holding a device (a
/// namespace deleted by name while a process keeps it alive still has its
/// interfaces, filtered). Their pinned maps would otherwise hold kernel
/// memory for ever, and their saved policy (in `lib`) would be restored at
/// every boot for ever. A saved policy without state on bpffs (after a
/// boot, before its namespace is made) stays: `status` shows it. Only
/// under the state lock. Returns the scopes removed.
pub fn prune_vanished_scopes(state: &StateDir, lib: &LibDir) -> anyhow::Result<Vec<Scope>> {
    let mut pruned = Vec::new();
    for scope in state.scopes()? {
        let Scope::Netns(name) = &scope else { continue };
        if std::path::Path::new("/run/netns").join(name).exists() {
            continue;
        }
        let alive =
            state.interfaces(&scope)?.iter().any(|ifname| attach::links_alive(&state.iface_dir(&scope, ifname)));
        if alive {
            continue;
        }
        // The saved policy first: a kill between leaves the state, which
        // the next command removes; never a saved policy without state,
        // which nothing would remove.
        lib.remove_scope(&scope)?;
        std::fs::remove_dir_all(state.scope_dir(&scope))
            .with_context(|| format!("removing the state of vanished netns {name}"))?;
        pruned.push(scope);
    }
    Ok(pruned)
}
