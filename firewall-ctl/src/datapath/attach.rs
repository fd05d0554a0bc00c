//! Attaching an interface's programs, replacing them without a gap, and
//! detaching them, on either kind of hook (the state directory of the
//! interface says which each side is on):
//!
//! - **Links** (XDP, tcx): pinned as `link_ingress` / `link_egress`. A
//!   link attached but not yet pinned when `sgctl` dies goes with the
//!   process, detached by the kernel.
//! - **The legacy tc hook** (clsact, where the kernel has no tcx, or
//!   `--mode clsact`): a `cls_bpf` filter, which is no link and outlives the
//!   process on its own. Its program is pinned as `prog_ingress` /
//!   `prog_egress` *before* the filter is added, so a filter left by an
//!   `sgctl` killed at any instant runs a program the directory names: the
//!   next `sgctl` finds it by that program's id (on whichever device it is)
//!   and keeps it or removes it. "Still ours" is always that id.
//!
//! Replacing (another hook, a resized conntrack table, a newer object)
//! never leaves the interface unfiltered. The new programs share every map
//! with the old ones (the pins are reused, see `Pins`), then:
//! - on the same hook they take the old ones' place atomically: a link gets
//!   the new program (`BPF_LINK_UPDATE`); a clsact filter keeps its
//!   priority and handle and gets the new program in place (cls_bpf swaps
//!   the two with one RCU update), its pin `prog_*_next` until then;
//! - on another hook the new attachment is made beside the old one
//!   (`link_*_next` or `prog_*_next`), the old one removed, and the new one
//!   renamed into place; both judge alike meanwhile.
//!
//! If anything fails, the old programs stay attached; a kill between any
//! two steps leaves the old attachment or the new one running, and the
//! next `sgctl` finishes the move ([`finish_moves`]).
//!
//! Conntrack tables that change (another size, or the single table of an
//! older sgctl, `conntrack::legacy`) are moved in three steps, each safe to
//! be killed after: the new tables are made and the old ones put where the
//! new programs look for flows they do not find (the `*_PREV` maps); the
//! programs are replaced; the old tables' flows are copied over and the old
//! tables let go ([`finish_table_moves`], which the next `sgctl` also runs).
use std::{
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use aya::{
    maps::{ArrayOfMaps, Map, MapData},
    programs::{
        links::FdLink, loaded_programs, tc::TcAttachOptions, LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf,
};
use firewall_common::conntrack::{legacy, FlowEntry, FlowKey, Table};

use super::{
    clock,
    clsact::{self, Direction},
    conntrack::{TableId, Tracked, TABLES},
    hooks::{EgressHook, IngressHook, LinkLayer, Mode},
    maps::{self, IfaceMaps, CONNTRACK_PREV},
    sys, Pins, PROG_EGRESS_TC, PROG_INGRESS_TC, PROG_INGRESS_XDP,
};
use crate::netns;

/// Where a resized table is pinned until the programs use it.
fn next_pin(dir: &Path, table: &str) -> PathBuf {
    dir.join(format!("{table}_next"))
}

/// The map-in-map where the new programs find table `t`'s predecessor.
fn previous_of(t: TableId) -> &'static str {
    match (t.table, t.family) {
        (Table::Confirmed, 4) => maps::CT4_PREV,
        (Table::Confirmed, _) => maps::CT6_PREV,
        (Table::Pending, 4) => maps::CT4_PEND_PREV,
        (Table::Pending, _) => maps::CT6_PEND_PREV,
    }
}

/// The maps of the old layout's conntrack, as it pinned them.
const LEGACY_PINS: [&str; 4] = [legacy::CONNTRACK, "CONNTRACK_next", "CT_SWEPT_AT", "CT_CONFIG"];

/// The pins of one side of an interface.
struct Pinned {
    /// Its link (XDP or tcx).
    link: &'static str,
    /// Its program, when a clsact filter runs it.
    prog: &'static str,
    /// A new attachment beside the old one, until it takes the old one's place.
    link_next: &'static str,
    prog_next: &'static str,
}

const fn pinned(side: Direction) -> Pinned {
    match side {
        Direction::Ingress => Pinned {
            link: "link_ingress",
            prog: "prog_ingress",
            link_next: "link_ingress_next",
            prog_next: "prog_ingress_next",
        },
        Direction::Egress => Pinned {
            link: "link_egress",
            prog: "prog_egress",
            link_next: "link_egress_next",
            prog_next: "prog_egress_next",
        },
    }
}

const SIDES: [Direction; 2] = [Direction::Ingress, Direction::Egress];

/// How an interface's programs sit on it: how they find the network header,
/// whether ingress is on XDP, and which tc hook the tc programs take (see
/// `hooks::plan`, which decides it).
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub link: LinkLayer,
    pub xdp: bool,
    /// With `xdp`: what `--mode` asked for (`auto` falls back to tc where
    /// native XDP fails; `xdp` to generic XDP).
    pub mode: Mode,
    /// The tc programs go on the clsact hook (no tcx here, or `--mode clsact`).
    pub clsact: bool,
}

impl Placement {
    /// Whether programs on `hooks` sit as this placement wants (XDP native
    /// or generic alike).
    pub fn fits(self, hooks: Hooks) -> bool {
        let ingress = if self.xdp { hooks.ingress.is_xdp() } else { hooks.ingress == self.tc_hook() };
        ingress && hook_of(hooks.egress) == self.tc_hook()
    }

    /// The hook a tc program of this placement takes.
    fn tc_hook(self) -> IngressHook {
        if self.clsact {
            IngressHook::Clsact
        } else {
            IngressHook::Tc
        }
    }
}

/// Where both programs of an interface run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Hooks {
    pub ingress: IngressHook,
    pub egress: EgressHook,
}

fn egress_of(hook: IngressHook) -> EgressHook {
    if hook == IngressHook::Clsact {
        EgressHook::Clsact
    } else {
        EgressHook::Tc
    }
}

fn hook_of(egress: EgressHook) -> IngressHook {
    match egress {
        EgressHook::Tc => IngressHook::Tc,
        EgressHook::Clsact => IngressHook::Clsact,
    }
}

/// Loads a fresh copy of the object for a new interface, its maps created
/// and pinned in `dir` (which is created). The programs are not attached:
/// the caller fills the maps first, then calls [`attach_links`].
pub fn prepare_new(dir: &Path, active: PathBuf, conntrack_capacity: u32, link: LinkLayer) -> anyhow::Result<Ebpf> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    super::load(&Pins::new(dir, active), conntrack_capacity, link, 0)
}

/// Attaches a new interface's programs (egress first, so flows opened from
/// now on are tracked when ingress filtering starts) and pins them. On
/// failure nothing stays attached; the caller removes `dir`.
pub fn attach_links(ebpf: &mut Ebpf, dir: &Path, ifname: &str, at: Placement) -> anyhow::Result<Hooks> {
    let result = (|| {
        let site = Site { dir, ifname, ifindex: ifindex_of(ifname)? };
        let egress = attach_side(ebpf, site, Direction::Egress, at, false)?;
        let ingress = attach_side(ebpf, site, Direction::Ingress, at, false)?;
        Ok(Hooks { ingress, egress: egress_of(egress) })
    })();
    if result.is_err() {
        let _ = remove_attachments(dir, ifname);
    }
    result
}

fn ifindex_of(ifname: &str) -> anyhow::Result<u32> {
    netns::ifindex(ifname).ok_or_else(|| crate::InputError::InterfaceNotFound(ifname.to_owned()).into())
}

/// The interface a side is attached to: its state directory (where the
/// links and programs are pinned), its name and its index.
#[derive(Clone, Copy)]
struct Site<'a> {
    dir: &'a Path,
    ifname: &'a str,
    ifindex: u32,
}

/// Attaches `side`'s program of `ebpf` where `at` says, pinned under its
/// name in the site's directory (its `_next` name with `next`). Returns the hook.
fn attach_side(
    ebpf: &mut Ebpf,
    site: Site<'_>,
    side: Direction,
    at: Placement,
    next: bool,
) -> anyhow::Result<IngressHook> {
    let Site { dir, ifname, ifindex } = site;
    let names = pinned(side);
    let (link_pin, prog_pin) = if next { (names.link_next, names.prog_next) } else { (names.link, names.prog) };
    if side == Direction::Ingress && at.xdp {
        let xdp = match attach_xdp(ebpf, ifname, XdpMode::Driver) {
            Ok(link) => Some((link, IngressHook::XdpNative)),
            // `auto` on a NIC whose driver lacks native XDP: tc beats generic XDP.
            Err(_) if at.mode == Mode::Auto => None,
            Err(native) => {
                let link = attach_xdp(ebpf, ifname, XdpMode::Skb)
                    .with_context(|| format!("native XDP failed too: {native:#}"))?;
                Some((link, IngressHook::XdpGeneric))
            }
        };
        if let Some((link, hook)) = xdp {
            pin_fresh(|p| Ok(link.pin(p).map(|_| ())?), &dir.join(link_pin))?;
            return Ok(hook);
        }
    }
    let prog = if side == Direction::Ingress { PROG_INGRESS_TC } else { PROG_EGRESS_TC };
    if at.clsact {
        // Pinned before the filter exists: a filter never runs a program
        // the state directory does not name.
        let fd = loaded(ebpf, prog)?;
        pin_fresh(|p| Ok(sys::obj_pin(&fd, p)?), &dir.join(prog_pin))?;
        clsact::ensure_qdisc(ifindex)?;
        let filters = clsact::filters(ifindex, side)?;
        let program = clsact::Program { fd: fd.as_fd(), name: prog };
        // A filter of an sgctl whose state was lost (bpffs wiped without a
        // reboot) still judges with its last policy, at priority 1: the new
        // program takes its place in place, so the interface is never
        // unfiltered and sgctl stays first.
        let orphan = filters.iter().find(|f| f.chain == 0 && f.kind == "bpf" && f.prog_name.as_deref() == Some(prog));
        let (slot, how) = match orphan {
            Some(f) => (f.slot(), clsact::Put::Replace),
            None => {
                let priority = clsact::free_priority(&filters);
                if priority != clsact::PRIORITY {
                    eprintln!(
                        "note: {ifname}: clsact {side:?} priority {} is taken by another filter, which runs before \
                         sgctl's (priority {priority}); `sgctl status` lists it",
                        clsact::PRIORITY
                    );
                }
                (clsact::Slot { priority, handle: clsact::HANDLE }, clsact::Put::Add)
            }
        };
        clsact::put(ifindex, side, slot, &program, how)
            .with_context(|| format!("attaching {prog} to {ifname} (clsact)"))?;
        return Ok(IngressHook::Clsact);
    }
    let at_type = if side == Direction::Ingress { TcAttachType::Ingress } else { TcAttachType::Egress };
    let link = attach_tcx(ebpf, prog, ifname, at_type)?;
    pin_fresh(|p| Ok(link.pin(p).map(|_| ())?), &dir.join(link_pin))?;
    Ok(IngressHook::Tc)
}

/// Pins with `pin` at `path`, replacing a stale pin of a killed run.
fn pin_fresh(pin: impl FnOnce(&Path) -> anyhow::Result<()>, path: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    pin(path).with_context(|| format!("pinning {}", path.display()))
}

/// What to change about an attached interface's programs.
pub struct Replace {
    pub at: Placement,
    /// The hooks in use now.
    pub current: Hooks,
    /// A conntrack table of this many entries, the tracked flows moved into it.
    pub conntrack_capacity: Option<u32>,
    /// The ingress, or egress, attachment is detached, on another device,
    /// gone or not first on its hook (`links::check`): a new one is made
    /// beside it, as for a move to another hook, instead of its program
    /// being replaced in place.
    pub relink_ingress: bool,
    pub relink_egress: bool,
}

/// Puts a fresh copy of the programs in place of the attached ones without
/// a moment unfiltered (see the module comment). `dir` holds the pins.
pub fn replace(dir: &Path, active: PathBuf, ifname: &str, change: &Replace) -> anyhow::Result<Hooks> {
    for t in TABLES {
        let _ = std::fs::remove_file(next_pin(dir, t.name));
    }
    let mut pins = Pins::new(dir, active);
    // An interface of the old layout gets its new tables at their own pins,
    // of the size asked for; only tables of today's layout are resized.
    let resize = change.conntrack_capacity.filter(|_| dir.join(maps::CT4).exists());
    let capacity = match (resize, change.conntrack_capacity) {
        (Some(capacity), _) => {
            for t in TABLES {
                pins = pins.with(t.name, next_pin(dir, t.name));
            }
            capacity
        }
        (None, Some(capacity)) => capacity,
        (None, None) => IfaceMaps::at(dir).conntrack_capacity()?,
    };
    let result = replace_programs(dir, pins, capacity, ifname, change, resize.is_some());
    if result.is_err() {
        // The old programs and tables stay; the new tables go.
        for t in TABLES {
            let _ = std::fs::remove_file(next_pin(dir, t.name));
            let _ = set_previous(dir, previous_of(t), None);
        }
        let _ = set_previous(dir, CONNTRACK_PREV, None);
    } else {
        finish_table_moves(dir)?;
    }
    result
}

fn replace_programs(
    dir: &Path,
    pins: Pins,
    capacity: u32,
    ifname: &str,
    change: &Replace,
    resize: bool,
) -> anyhow::Result<Hooks> {
    let mut ebpf = super::load(&pins, capacity, change.at.link, 0)?;
    // Every program the change puts in place is verified first (tens of
    // milliseconds each), so the two links change microseconds apart: in
    // between, ingress and egress run different programs, which, when the
    // tables move, track new flows in different tables.
    loaded(&mut ebpf, if change.at.xdp { PROG_INGRESS_XDP } else { PROG_INGRESS_TC })?;
    loaded(&mut ebpf, PROG_EGRESS_TC)?;
    // Until every flow has moved, the new programs look in the old tables
    // for the flows they do not find in theirs.
    if resize {
        for t in TABLES {
            set_previous(dir, previous_of(t), Some(&maps::open(&dir.join(t.name))?))?;
        }
    }
    let legacy_table = dir.join(legacy::CONNTRACK);
    if legacy_table.exists() {
        // The old programs still run: their own repair first, so one table holds every flow.
        finish_legacy_resize(dir)?;
        set_previous(dir, CONNTRACK_PREV, Some(&maps::open(&legacy_table)?))?;
    }
    let ifindex = ifindex_of(ifname)?;
    let site = Site { dir, ifname, ifindex };
    // Ingress first: it is the one that can fail (a driver without XDP).
    let wanted_ingress = if change.at.xdp { None } else { Some(change.at.tc_hook()) };
    let ingress = match (change.current.ingress, wanted_ingress) {
        _ if change.relink_ingress => move_side(&mut ebpf, site, Direction::Ingress, change.at)?,
        // XDP stays XDP (native or generic, as it is).
        (current, None) if current.is_xdp() => {
            update_link(&mut ebpf, PROG_INGRESS_XDP, &dir.join(pinned(Direction::Ingress).link))?;
            current
        }
        (current, Some(wanted)) if current == wanted => {
            replace_in_place(&mut ebpf, dir, ifindex, Direction::Ingress, current)?;
            current
        }
        _ => move_side(&mut ebpf, site, Direction::Ingress, change.at)?,
    };
    let egress = if !change.relink_egress && hook_of(change.current.egress) == change.at.tc_hook() {
        replace_in_place(&mut ebpf, dir, ifindex, Direction::Egress, hook_of(change.current.egress))?;
        change.current.egress
    } else {
        egress_of(move_side(&mut ebpf, site, Direction::Egress, change.at)?)
    };
    Ok(Hooks { ingress, egress })
}

/// Gives `side`'s attachment on `hook` (tcx or clsact) the program of
/// `ebpf`, atomically, on the same hook.
fn replace_in_place(
    ebpf: &mut Ebpf,
    dir: &Path,
    ifindex: u32,
    side: Direction,
    hook: IngressHook,
) -> anyhow::Result<()> {
    let names = pinned(side);
    let prog = if side == Direction::Ingress { PROG_INGRESS_TC } else { PROG_EGRESS_TC };
    if hook != IngressHook::Clsact {
        return update_link(ebpf, prog, &dir.join(names.link));
    }
    let old_id = prog_id(&dir.join(names.prog))?;
    let filter = clsact::filters(ifindex, side)?
        .into_iter()
        .find(|f| f.prog_id == Some(old_id))
        .with_context(|| format!("no clsact {side:?} filter runs sgctl's program {old_id} any more"))?;
    let fd = loaded(ebpf, prog)?;
    pin_fresh(|p| Ok(sys::obj_pin(&fd, p)?), &dir.join(names.prog_next))?;
    let program = clsact::Program { fd: fd.as_fd(), name: prog };
    clsact::put(ifindex, side, filter.slot(), &program, clsact::Put::Replace)?;
    finish_side(dir, Some(ifindex), side)?;
    Ok(())
}

/// Moves `side` to the hook `at` says: the new attachment beside the
/// old, then the old one removed.
fn move_side(ebpf: &mut Ebpf, site: Site<'_>, side: Direction, at: Placement) -> anyhow::Result<IngressHook> {
    let names = pinned(side);
    for stale in [names.link_next, names.prog_next] {
        remove_if_present(&site.dir.join(stale))?;
    }
    let hook = attach_side(ebpf, site, side, at, true)?;
    finish_side(site.dir, Some(site.ifindex), side)?;
    Ok(hook)
}

/// Finishes a move of `side` that a new attachment (`*_next`) started: if
/// the new attachment runs, the old one goes and the new one takes its
/// name; if it never got onto its hook, it goes. Returns whether there
/// was anything to finish. `ifindex`: where the interface's filters are
/// looked for first.
fn finish_side(dir: &Path, ifindex: Option<u32>, side: Direction) -> anyhow::Result<bool> {
    let names = pinned(side);
    let (link_next, prog_next) = (dir.join(names.link_next), dir.join(names.prog_next));
    let new_runs = if link_next.exists() {
        // A pinned link is attached.
        true
    } else if prog_next.exists() {
        let id = prog_id(&prog_next)?;
        !find_filters(&[id], ifindex)?.is_empty()
    } else {
        return Ok(false);
    };
    if !new_runs {
        remove_if_present(&prog_next)?;
        return Ok(true);
    }
    // The old attachment goes: its filters (none if it was replaced in
    // place), its program pin, its link.
    let old_prog = dir.join(names.prog);
    if old_prog.exists() {
        let old = prog_id(&old_prog)?;
        delete_filters(&find_filters(&[old], ifindex)?)?;
    }
    if link_next.exists() {
        remove_if_present(&old_prog)?;
        // One rename drops the old link's pin (detaching it) and puts the
        // new one in its place.
        std::fs::rename(&link_next, dir.join(names.link)).context("replacing the link")?;
    } else {
        remove_if_present(&dir.join(names.link))?;
        std::fs::rename(&prog_next, &old_prog).context("replacing the program pin")?;
    }
    Ok(true)
}

/// A leftover of an `sgctl` killed while moving a side to another hook or
/// replacing a clsact filter's program: finishes the move (see
/// [`finish_side`]). Returns whether there was one.
pub fn finish_moves(dir: &Path, ifname: &str) -> anyhow::Result<bool> {
    let ifindex = netns::ifindex(ifname);
    let mut any = false;
    for side in SIDES {
        any |= finish_side(dir, ifindex, side)?;
    }
    Ok(any)
}

/// Completes every move of conntrack tables once the new programs run
/// (see the module comment); also finishes the job of an `sgctl` killed
/// half way, or undoes a move whose programs never ran.
pub fn finish_table_moves(dir: &Path) -> anyhow::Result<()> {
    finish_resize(dir)?;
    finish_upgrade(dir)
}

/// A resize: each new table takes its table's pin (the old one going to
/// the new programs' `*_PREV`), every flow of the old tables is copied over
/// (one the programs took over already is kept as it is), and the old
/// tables are forgotten.
fn finish_resize(dir: &Path) -> anyhow::Result<()> {
    for t in TABLES {
        let next = next_pin(dir, t.name);
        if !next.exists() {
            continue;
        }
        if !programs_use_map(dir, maps::open(&next)?.info()?.id())? {
            // Killed before the programs were replaced: the old table is in use.
            std::fs::remove_file(&next).context("removing an unused conntrack table")?;
            set_previous(dir, previous_of(t), None)?;
            continue;
        }
        set_previous(dir, previous_of(t), Some(&maps::open(&dir.join(t.name))?))?;
        std::fs::rename(&next, dir.join(t.name)).context("installing a resized conntrack table")?;
    }
    let iface = IfaceMaps::at(dir);
    for t in TABLES {
        // An interface of the previous layout has none of these yet.
        if !dir.join(previous_of(t)).exists() {
            continue;
        }
        let outer = iface.outer(previous_of(t))?;
        let Ok(old) = outer.get(&0, 0) else { continue };
        let (keys, values) = sys::read_all(old.fd().as_fd(), t.key_size(), size_of::<FlowEntry>())?;
        let flows = keys.chunks_exact(t.key_size()).zip(values.chunks_exact(size_of::<FlowEntry>()));
        // A full new table keeps the flows that fit (the user asked for it).
        iface.add_flows(flows.map(|(k, v)| Tracked { key: t.flow_key(k), entry: read_pod(v), table: t.table }))?;
        set_previous(dir, previous_of(t), None)?;
    }
    Ok(())
}

/// An interface an older sgctl filtered, once the new programs run: the
/// flows of its single table are converted into the new tables (each to
/// the table its state calls for) and the old layout's maps unpinned.
fn finish_upgrade(dir: &Path) -> anyhow::Result<()> {
    let legacy_table = dir.join(legacy::CONNTRACK);
    if !legacy_table.exists() {
        return set_previous(dir, CONNTRACK_PREV, None);
    }
    if !dir.join(maps::CT4).exists() || !programs_use_map(dir, maps::open(&dir.join(maps::CT4))?.info()?.id())? {
        // The old programs still run on their table (the next replace moves
        // it): only what their own sgctl would have finished.
        return finish_legacy_resize(dir);
    }
    let old = maps::open(&legacy_table)?;
    let (keys, values) = sys::read_all(old.fd().as_fd(), size_of::<FlowKey>(), size_of::<legacy::FlowEntry>())?;
    let clock = clock::clock();
    let (now, now_coarse_ns) = (clock.now(), coarse_ns());
    let flows = keys.chunks_exact(size_of::<FlowKey>()).zip(values.chunks_exact(size_of::<legacy::FlowEntry>())).map(
        |(k, v)| {
            let key: FlowKey = read_pod(k);
            let old: legacy::FlowEntry = read_pod(v);
            let idle = clock.ticks(Duration::from_nanos(now_coarse_ns.saturating_sub(old.last_seen_ns)));
            let entry = legacy::upgraded(&old, now.saturating_sub(idle));
            let table = if entry.is_confirmable(key.protocol) { Table::Confirmed } else { Table::Pending };
            Tracked { key, entry, table }
        },
    );
    IfaceMaps::at(dir).add_flows(flows)?;
    set_previous(dir, CONNTRACK_PREV, None)?;
    for name in LEGACY_PINS {
        remove_if_present(&dir.join(name))?;
    }
    Ok(())
}

/// A resize of the old layout's table cut short, finished as that layout's
/// own sgctl would have: `CONNTRACK_next` replaces `CONNTRACK` if the
/// programs use it (else it goes), and the flows of the table in
/// `CONNTRACK_PREV` are copied into `CONNTRACK`.
fn finish_legacy_resize(dir: &Path) -> anyhow::Result<()> {
    let (table, next) = (dir.join(legacy::CONNTRACK), dir.join(LEGACY_PINS[1]));
    if next.exists() {
        if !programs_use_map(dir, maps::open(&next)?.info()?.id())? {
            std::fs::remove_file(&next).context("removing an unused conntrack table")?;
            return set_previous(dir, CONNTRACK_PREV, None);
        }
        set_previous(dir, CONNTRACK_PREV, Some(&maps::open(&table)?))?;
        std::fs::rename(&next, &table).context("installing the resized conntrack table")?;
    }
    let outer = IfaceMaps::at(dir).outer(CONNTRACK_PREV)?;
    if let Ok(old) = outer.get(&0, 0) {
        let into = maps::open(&table)?;
        let (keys, values) = sys::read_all(old.fd().as_fd(), size_of::<FlowKey>(), size_of::<legacy::FlowEntry>())?;
        let entries = keys.chunks_exact(size_of::<FlowKey>()).zip(values.chunks_exact(size_of::<legacy::FlowEntry>()));
        for (key, value) in entries {
            // There already, or the table is full: either way it stays as it is.
            let _ = sys::update_with(into.fd().as_fd(), key, value, sys::NOEXIST);
        }
        set_previous(dir, CONNTRACK_PREV, None)?;
    }
    Ok(())
}

/// CLOCK_MONOTONIC_COARSE in ns: the clock the old layout stamped flows with.
fn coarse_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map_or(0, |t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

fn read_pod<T: aya::Pod>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: enough bytes, and any bytes are a valid `Pod`.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

/// Sets (or clears) `[0]` of the map-in-map `name`.
fn set_previous(dir: &Path, name: &str, table: Option<&MapData>) -> anyhow::Result<()> {
    let path = dir.join(name);
    if !path.exists() {
        return Ok(());
    }
    let mut outer: ArrayOfMaps<MapData, MapData> = ArrayOfMaps::try_from(Map::ArrayOfMaps(maps::open(&path)?))?;
    match table {
        Some(table) => outer.set(0, table, 0).with_context(|| format!("setting {name}"))?,
        None if outer.get(&0, 0).is_ok() => {
            // aya 0.14 cannot delete from a map-in-map: the raw syscall.
            let fd = sys::obj_get(&path)?;
            sys::map_delete_u32(&fd, 0).with_context(|| format!("forgetting the table in {name}"))?;
        }
        None => {}
    }
    Ok(())
}

/// Whether the programs attached in `dir` use map `map_id`.
fn programs_use_map(dir: &Path, map_id: u32) -> anyhow::Result<bool> {
    let (ingress, _) = program_ids(dir)?;
    for info in loaded_programs() {
        let info = info?;
        if info.id() == ingress {
            return Ok(info.map_ids()?.unwrap_or_default().contains(&map_id));
        }
    }
    Ok(false)
}

/// `prog` of `ebpf`, loaded (here, unless it is already), as a descriptor.
fn loaded(ebpf: &mut Ebpf, prog: &str) -> anyhow::Result<OwnedFd> {
    let fd = match ebpf.program_mut(prog).with_context(|| format!("program {prog} missing"))? {
        aya::programs::Program::SchedClassifier(p) => {
            if p.fd().is_err() {
                p.load().with_context(|| format!("loading {prog}"))?;
            }
            p.fd()?.as_fd().try_clone_to_owned()?
        }
        aya::programs::Program::Xdp(p) => {
            if p.fd().is_err() {
                p.load().with_context(|| format!("loading {prog}"))?;
            }
            p.fd()?.as_fd().try_clone_to_owned()?
        }
        _ => anyhow::bail!("{prog}: unexpected program type"),
    };
    Ok(fd)
}

/// Makes the link pinned at `pin` run `prog` of `ebpf` (loaded here).
fn update_link(ebpf: &mut Ebpf, prog: &str, pin: &Path) -> anyhow::Result<()> {
    let fd = loaded(ebpf, prog)?;
    let link = sys::obj_get(pin).with_context(|| format!("opening {}", pin.display()))?;
    sys::link_update(link.as_fd(), fd.as_fd())
        .with_context(|| format!("replacing the program of {}", pin.display()))?;
    Ok(())
}

fn attach_tcx(ebpf: &mut Ebpf, prog: &str, ifname: &str, at: TcAttachType) -> anyhow::Result<FdLink> {
    let program: &mut SchedClassifier =
        ebpf.program_mut(prog).with_context(|| format!("program {prog} missing"))?.try_into()?;
    if program.fd().is_err() {
        program.load().with_context(|| format!("loading {prog}"))?;
    }
    // First in line: a program attached earlier cannot pass a packet
    // before sgctl has judged it.
    let id = program
        .attach_with_options(ifname, at, TcAttachOptions::TcxOrder(LinkOrder::first()))
        .with_context(|| format!("attaching {prog} to {ifname} (tcx)"))?;
    Ok(FdLink::try_from(program.take_link(id)?)?)
}

fn attach_xdp(ebpf: &mut Ebpf, ifname: &str, mode: XdpMode) -> anyhow::Result<FdLink> {
    let program: &mut Xdp = ebpf.program_mut(PROG_INGRESS_XDP).context("program sg_ingress_xdp missing")?.try_into()?;
    if program.fd().is_err() {
        program.load().context("loading sg_ingress_xdp")?;
    }
    let id = program.attach(ifname, mode).with_context(|| format!("attaching XDP ({mode:?}) to {ifname}"))?;
    Ok(FdLink::try_from(program.take_link(id)?)?)
}

/// Removes the attachment whose state is in `dir`: its clsact filters are
/// deleted, and unpinning the links detaches the programs; unpinning the
/// maps frees them. `ifname` is where its filters are looked for first.
pub fn detach(dir: &Path, ifname: &str) -> anyhow::Result<()> {
    remove_attachments(dir, ifname)?;
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Deletes every filter that runs a program pinned in `dir`, then unpins
/// the programs and links. A kill half way leaves the pins, and so what
/// the next try needs to find the filters.
fn remove_attachments(dir: &Path, ifname: &str) -> anyhow::Result<()> {
    let progs: Vec<PathBuf> =
        SIDES.iter().flat_map(|s| [pinned(*s).prog, pinned(*s).prog_next]).map(|n| dir.join(n)).collect();
    let ids: Vec<u32> = progs.iter().filter_map(|p| prog_id(p).ok()).collect();
    if !ids.is_empty() {
        delete_filters(&find_filters(&ids, netns::ifindex(ifname))?)?;
    }
    for side in SIDES {
        let names = pinned(side);
        for name in [names.link_next, names.link, names.prog_next, names.prog] {
            remove_if_present(&dir.join(name))?;
        }
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// A clsact filter running one of sgctl's programs, and where.
#[derive(Clone, Debug)]
struct Found {
    ifindex: u32,
    side: Direction,
    filter: clsact::Filter,
}

/// The clsact filters of this network namespace that run a program of
/// `ids`: on `hint` (the interface's index by name) if any are there, else
/// on any device (the interface may have been renamed).
fn find_filters(ids: &[u32], hint: Option<u32>) -> anyhow::Result<Vec<Found>> {
    if let Some(ifindex) = hint {
        let found = filters_on(ids, ifindex)?;
        if !found.is_empty() {
            return Ok(found);
        }
    }
    let mut found = Vec::new();
    for ifindex in netns::ifindexes()? {
        if Some(ifindex) != hint {
            found.extend(filters_on(ids, ifindex)?);
        }
    }
    Ok(found)
}

/// The clsact filters of device `ifindex` that run a program of `ids`.
fn filters_on(ids: &[u32], ifindex: u32) -> anyhow::Result<Vec<Found>> {
    let mut found = Vec::new();
    for side in SIDES {
        for filter in clsact::filters(ifindex, side)? {
            if filter.prog_id.is_some_and(|id| ids.contains(&id)) {
                found.push(Found { ifindex, side, filter });
            }
        }
    }
    Ok(found)
}

fn delete_filters(found: &[Found]) -> anyhow::Result<()> {
    for f in found {
        clsact::delete(f.ifindex, f.side, f.filter.slot())?;
    }
    Ok(())
}

/// The id of the program pinned at `pin`.
fn prog_id(pin: &Path) -> anyhow::Result<u32> {
    let fd = sys::obj_get(pin).with_context(|| format!("opening {}", pin.display()))?;
    Ok(sys::prog_info_id(&fd)?)
}

/// The ids of sgctl's programs of `dir` (ingress, egress): those its links
/// run, or its clsact filters (whether or not a filter still runs them).
pub fn program_ids(dir: &Path) -> anyhow::Result<(u32, u32)> {
    let id = |side: Direction| -> anyhow::Result<u32> {
        let names = pinned(side);
        match link_info(&dir.join(names.link)) {
            Ok(info) => Ok(info.prog_id),
            Err(_) => prog_id(&dir.join(names.prog)),
        }
    };
    Ok((id(Direction::Ingress)?, id(Direction::Egress)?))
}

fn link_info(pin: &Path) -> anyhow::Result<sys::LinkInfo> {
    let fd = sys::obj_get(pin).with_context(|| format!("opening {}", pin.display()))?;
    Ok(sys::link_info(&fd)?)
}

/// The hooks the programs of `dir` are on, from what is pinned (it may
/// differ from a record when an `sgctl` was killed while moving hooks).
/// Native and generic XDP look alike to the kernel's link info, so
/// `recorded` tells them apart when it says XDP.
pub fn hooks(dir: &Path, recorded: IngressHook) -> anyhow::Result<Hooks> {
    let side = |side: Direction| -> anyhow::Result<IngressHook> {
        let names = pinned(side);
        let link = dir.join(names.link);
        if link.exists() {
            return Ok(match link_info(&link)?.link_type {
                sys::BPF_LINK_TYPE_XDP if recorded.is_xdp() => recorded,
                sys::BPF_LINK_TYPE_XDP => IngressHook::XdpNative,
                _ => IngressHook::Tc,
            });
        }
        anyhow::ensure!(dir.join(names.prog).exists(), "no {side:?} attachment in {}", dir.display());
        Ok(IngressHook::Clsact)
    };
    Ok(Hooks { ingress: side(Direction::Ingress)?, egress: egress_of(side(Direction::Egress)?) })
}

/// What the kernel says of `side`'s attachment in `dir`: a pinned link
/// (XDP, tcx), or the clsact filters of interface `ifindex` that run its
/// pinned program; `None` when neither is pinned.
pub fn attachment(dir: &Path, ifindex: u32, side: Direction) -> Option<Attachment> {
    let names = pinned(side);
    if let Ok(info) = link_info(&dir.join(names.link)) {
        return Some(Attachment::Link(info));
    }
    let id = prog_id(&dir.join(names.prog)).ok()?;
    let filters = clsact::filters(ifindex, side).unwrap_or_default();
    Some(Attachment::Filter { runs: filters.iter().any(|f| f.prog_id == Some(id) && judges(f)) })
}

/// Whether a clsact filter's program judges every packet of its hook: in
/// chain 0 (other chains run only when an action jumps there) and
/// direct-action (else its verdict would be read as a class id).
fn judges(filter: &clsact::Filter) -> bool {
    filter.chain == 0 && filter.direct_action
}

/// One side's attachment, as the kernel has it.
pub enum Attachment {
    Link(sys::LinkInfo),
    /// A clsact filter's program: whether a filter of the interface runs
    /// it on every packet of the hook.
    Filter {
        runs: bool,
    },
}

/// Whether program `prog_id` is one of sgctl's for the interface in `dir`:
/// a program on that interface's own maps (`IFACE_STATS` stands for them).
pub fn is_ours(dir: &Path, prog_id: u32) -> bool {
    let Ok(stats) = sys::map_id(&dir.join(maps::IFACE_STATS)) else { return false };
    sys::prog_map_ids(prog_id).is_ok_and(|ids| ids.contains(&stats))
}

/// Whether the links of `dir` still hold an interface: false once the
/// device (or its whole network namespace) is gone, which detaches them.
/// Clsact filters are not links and say nothing here: see [`attachment`].
pub fn links_alive(dir: &Path) -> bool {
    SIDES.iter().any(|s| link_info(&dir.join(pinned(*s).link)).is_ok_and(|info| info.ifindex != 0))
}
