//! Attaching an interface's programs, replacing them without a gap, and
//! detaching them. The links are pinned, so the attachments outlive
//! `sgctl`; a link that was attached but not yet pinned when `sgctl` dies
//! goes with the process, detached by the kernel.
//!
//! Replacing (another ingress hook, a resized conntrack table, a newer
//! object) never leaves the interface unfiltered: the new programs share
//! every map with the old ones (the pins are reused, see `Pins`) and take
//! their place on the same links (`BPF_LINK_UPDATE`, atomic), or, for
//! another ingress hook, are attached beside them before the old link is
//! removed. If anything fails, the old programs stay attached.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aya::{
    maps::{ArrayOfMaps, HashMap, Map, MapData},
    programs::{
        links::FdLink, loaded_programs, tc::TcAttachOptions, LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf,
};
use firewall_common::conntrack::{FlowEntry, FlowKey};

use super::{
    hooks::LinkLayer,
    maps::{self, CONNTRACK, CONNTRACK_PREV},
    Pins, PROG_EGRESS_TC, PROG_INGRESS_TC, PROG_INGRESS_XDP,
};
use crate::state::{
    records::{IngressHook, Mode},
    sys,
};

const LINK_INGRESS: &str = "link_ingress";
const LINK_EGRESS: &str = "link_egress";
/// A new ingress link on another hook, pinned until it replaces the old.
const LINK_INGRESS_NEXT: &str = "link_ingress_next";
/// A new egress link (the old one was detached or pushed back), pinned
/// until it replaces the old.
const LINK_EGRESS_NEXT: &str = "link_egress_next";
/// A resized conntrack table, pinned until the programs use it.
const CONNTRACK_NEXT: &str = "CONNTRACK_next";

/// How an interface's programs sit on it: how they find the network header,
/// and whether ingress is on XDP (see `hooks::plan`, which decides it).
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub link: LinkLayer,
    pub xdp: bool,
    /// With `xdp`: what `--mode` asked for (`auto` falls back to tcx where
    /// native XDP fails; `xdp` to generic XDP).
    pub mode: Mode,
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
/// now on are tracked when ingress filtering starts) and pins the links.
/// On failure nothing stays attached; the caller removes `dir`.
pub fn attach_links(ebpf: &mut Ebpf, dir: &Path, ifname: &str, at: Placement) -> anyhow::Result<IngressHook> {
    let result = (|| {
        attach_tc(ebpf, PROG_EGRESS_TC, ifname, TcAttachType::Egress)?.pin(dir.join(LINK_EGRESS))?;
        let (link, hook) = attach_ingress(ebpf, ifname, at)?;
        link.pin(dir.join(LINK_INGRESS))?;
        Ok(hook)
    })();
    if result.is_err() {
        for link in [LINK_INGRESS, LINK_EGRESS] {
            let _ = std::fs::remove_file(dir.join(link));
        }
    }
    result
}

/// What to change about an attached interface's programs.
pub struct Replace {
    pub at: Placement,
    /// The ingress hook in use now.
    pub current: IngressHook,
    /// A conntrack table of this many entries, the tracked flows moved into it.
    pub conntrack_capacity: Option<u32>,
    /// The ingress link, or the egress link, is detached, on another device
    /// or not first on its hook: a new link takes its place (attached
    /// first, beside it, before the old one goes) instead of the program
    /// being replaced on it.
    pub relink_ingress: bool,
    pub relink_egress: bool,
}

/// Puts a fresh copy of the programs in place of the attached ones without
/// a moment unfiltered (see the module comment). `dir` holds the pins.
pub fn replace(dir: &Path, active: PathBuf, ifname: &str, change: &Replace) -> anyhow::Result<IngressHook> {
    let next_table = dir.join(CONNTRACK_NEXT);
    let _ = std::fs::remove_file(&next_table);
    let mut pins = Pins::new(dir, active);
    let capacity = match change.conntrack_capacity {
        Some(capacity) => {
            pins = pins.with(CONNTRACK, next_table.clone());
            capacity
        }
        None => maps::IfaceMaps::at(dir).conntrack_capacity()?,
    };
    let result = replace_programs(dir, pins, capacity, ifname, change);
    if change.conntrack_capacity.is_some() {
        if result.is_err() {
            // The old programs and table stay; the new table goes.
            let _ = std::fs::remove_file(&next_table);
            let _ = set_previous_table(dir, None);
        } else {
            finish_resize(dir)?;
        }
    }
    result
}

fn replace_programs(
    dir: &Path,
    pins: Pins,
    capacity: u32,
    ifname: &str,
    change: &Replace,
) -> anyhow::Result<IngressHook> {
    let mut ebpf = super::load(&pins, capacity, change.at.link, 0)?;
    if change.conntrack_capacity.is_some() {
        // Until every flow has moved, the new programs look in the old table
        // for the flows they do not find in theirs.
        let old = maps::open(&dir.join(CONNTRACK))?;
        set_previous_table(dir, Some(&old))?;
    }
    let same_hook = change.at.xdp == change.current.is_xdp();
    // Ingress first: it is the one that can fail (a driver without XDP).
    let hook = if same_hook && !change.relink_ingress {
        let prog = if change.current == IngressHook::Tc { PROG_INGRESS_TC } else { PROG_INGRESS_XDP };
        update_link(&mut ebpf, prog, &dir.join(LINK_INGRESS))?;
        change.current
    } else {
        let (link, hook) = attach_ingress(&mut ebpf, ifname, change.at)?;
        put_in_place(link, dir, LINK_INGRESS_NEXT, LINK_INGRESS)?;
        hook
    };
    if change.relink_egress {
        let link = attach_tc(&mut ebpf, PROG_EGRESS_TC, ifname, TcAttachType::Egress)?;
        put_in_place(link, dir, LINK_EGRESS_NEXT, LINK_EGRESS)?;
    } else {
        update_link(&mut ebpf, PROG_EGRESS_TC, &dir.join(LINK_EGRESS))?;
    }
    Ok(hook)
}

/// Pins a new `link` as `next`, then renames it over `pin`: one rename drops
/// the old link's pin (detaching it) and puts the new one in its place; both
/// filter the same way meanwhile. A kill between leaves `next`, which
/// [`finish_hook_switch`] puts in place.
fn put_in_place(link: FdLink, dir: &Path, next: &str, pin: &str) -> anyhow::Result<()> {
    let next = dir.join(next);
    let _ = std::fs::remove_file(&next);
    link.pin(&next)?;
    std::fs::rename(&next, dir.join(pin)).with_context(|| format!("replacing {pin}"))
}

/// Completes a resize once the new programs run: the new table takes the
/// `CONNTRACK` pin, every flow of the old one is copied over (a flow the
/// programs took over already is kept as it is), and the old table is
/// forgotten. Also finishes the job of an `sgctl` killed half way.
pub fn finish_resize(dir: &Path) -> anyhow::Result<()> {
    let next_table = dir.join(CONNTRACK_NEXT);
    if next_table.exists() {
        let next_id = maps::open(&next_table)?.info()?.id();
        if !programs_use_map(dir, next_id)? {
            // Killed before the programs were replaced: the old table is in use.
            std::fs::remove_file(&next_table).context("removing an unused conntrack table")?;
            return set_previous_table(dir, None);
        }
        let old = maps::open(&dir.join(CONNTRACK))?;
        set_previous_table(dir, Some(&old))?;
        std::fs::rename(&next_table, dir.join(CONNTRACK)).context("installing the resized conntrack table")?;
    }
    let outer: ArrayOfMaps<MapData, MapData> =
        ArrayOfMaps::try_from(Map::ArrayOfMaps(maps::open(&dir.join(CONNTRACK_PREV))?))?;
    let Ok(old) = outer.get(&0, 0) else { return Ok(()) };
    let old: HashMap<MapData, FlowKey, FlowEntry> = HashMap::try_from(Map::HashMap(old))?;
    let mut new: HashMap<MapData, FlowKey, FlowEntry> =
        HashMap::try_from(Map::HashMap(maps::open(&dir.join(CONNTRACK))?))?;
    for item in old.iter() {
        let Ok((key, entry)) = item else { continue };
        // BPF_NOEXIST: the programs may have taken the flow over already.
        // A full new table keeps the flows that fit (the user asked for it).
        let _ = new.insert(key, entry, 1);
    }
    set_previous_table(dir, None)
}

/// Sets (or clears) `CONNTRACK_PREV[0]`.
fn set_previous_table(dir: &Path, table: Option<&MapData>) -> anyhow::Result<()> {
    let path = dir.join(CONNTRACK_PREV);
    let mut outer: ArrayOfMaps<MapData, MapData> = ArrayOfMaps::try_from(Map::ArrayOfMaps(maps::open(&path)?))?;
    match table {
        Some(table) => outer.set(0, table, 0).context("setting CONNTRACK_PREV")?,
        None if outer.get(&0, 0).is_ok() => {
            // aya 0.14 cannot delete from a map-in-map: the raw syscall.
            let fd = sys::obj_get(&path)?;
            sys::map_delete_u32(&fd, 0).context("forgetting the old conntrack table")?;
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

/// Makes the link pinned at `pin` run `prog` of `ebpf` (loaded here).
fn update_link(ebpf: &mut Ebpf, prog: &str, pin: &Path) -> anyhow::Result<()> {
    let fd = match ebpf.program_mut(prog).with_context(|| format!("program {prog} missing"))? {
        aya::programs::Program::SchedClassifier(p) => {
            p.load().with_context(|| format!("loading {prog}"))?;
            p.fd()?.try_clone()?
        }
        aya::programs::Program::Xdp(p) => {
            p.load().with_context(|| format!("loading {prog}"))?;
            p.fd()?.try_clone()?
        }
        _ => anyhow::bail!("{prog}: unexpected program type"),
    };
    let link = sys::obj_get(pin).with_context(|| format!("opening {}", pin.display()))?;
    use std::os::fd::AsFd as _;
    sys::link_update(link.as_fd(), fd.as_fd())
        .with_context(|| format!("replacing the program of {}", pin.display()))?;
    Ok(())
}

/// Attaches the ingress program on the hook `at` says.
fn attach_ingress(ebpf: &mut Ebpf, ifname: &str, at: Placement) -> anyhow::Result<(FdLink, IngressHook)> {
    if at.xdp {
        match attach_xdp(ebpf, ifname, XdpMode::Driver) {
            Ok(link) => return Ok((link, IngressHook::XdpNative)),
            // `auto` on a NIC whose driver lacks native XDP: tcx beats generic XDP.
            Err(_) if at.mode == Mode::Auto => {}
            Err(native) => {
                let link = attach_xdp(ebpf, ifname, XdpMode::Skb)
                    .with_context(|| format!("native XDP failed too: {native:#}"))?;
                return Ok((link, IngressHook::XdpGeneric));
            }
        }
    }
    Ok((attach_tc(ebpf, PROG_INGRESS_TC, ifname, TcAttachType::Ingress)?, IngressHook::Tc))
}

fn attach_tc(ebpf: &mut Ebpf, prog: &str, ifname: &str, at: TcAttachType) -> anyhow::Result<FdLink> {
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

/// Removes the attachment whose state is in `dir`: unpinning the links
/// detaches the programs; unpinning the maps frees them.
pub fn detach(dir: &Path) -> anyhow::Result<()> {
    for link in [LINK_INGRESS_NEXT, LINK_EGRESS_NEXT, LINK_INGRESS, LINK_EGRESS] {
        remove_if_present(&dir.join(link))?;
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// A leftover of an `sgctl` killed while moving to another ingress hook or
/// replacing a broken link: the new link is attached beside the old.
/// Finishes the move.
pub fn finish_hook_switch(dir: &Path) -> anyhow::Result<bool> {
    let mut finished = false;
    for (next, pin) in [(LINK_INGRESS_NEXT, LINK_INGRESS), (LINK_EGRESS_NEXT, LINK_EGRESS)] {
        let next = dir.join(next);
        if next.exists() {
            std::fs::rename(&next, dir.join(pin)).with_context(|| format!("replacing {pin}"))?;
            finished = true;
        }
    }
    Ok(finished)
}

/// The ids of the programs the pinned links of `dir` run (ingress, egress).
pub fn program_ids(dir: &Path) -> anyhow::Result<(u32, u32)> {
    let id = |name: &str| -> anyhow::Result<u32> { Ok(link_info(&dir.join(name))?.prog_id) };
    Ok((id(LINK_INGRESS)?, id(LINK_EGRESS)?))
}

fn link_info(pin: &Path) -> anyhow::Result<sys::LinkInfo> {
    let fd = sys::obj_get(pin).with_context(|| format!("opening {}", pin.display()))?;
    Ok(sys::link_info(&fd)?)
}

/// The ingress hook the pinned ingress link of `dir` is on, from the kernel
/// (it may differ from a record when an `sgctl` was killed while moving
/// hooks). Native and generic XDP look alike to the kernel's link info, so
/// `recorded` tells them apart when it says XDP.
pub fn ingress_hook(dir: &Path, recorded: IngressHook) -> anyhow::Result<IngressHook> {
    let path = dir.join(LINK_INGRESS);
    Ok(match link_info(&path)?.link_type {
        sys::BPF_LINK_TYPE_XDP if recorded.is_xdp() => recorded,
        sys::BPF_LINK_TYPE_XDP => IngressHook::XdpNative,
        _ => IngressHook::Tc,
    })
}

/// One of an interface's two links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Ingress,
    Egress,
}

/// What the kernel says of the pinned `which` link of `dir` (`None`: no
/// pinned link).
pub fn link(dir: &Path, which: Which) -> Option<sys::LinkInfo> {
    link_info(&dir.join(match which {
        Which::Ingress => LINK_INGRESS,
        Which::Egress => LINK_EGRESS,
    }))
    .ok()
}

/// Whether program `prog_id` is one of sgctl's for the interface in `dir`:
/// a program on that interface's own maps (`IFACE_STATS` stands for them).
pub fn is_ours(dir: &Path, prog_id: u32) -> bool {
    let Ok(stats) = sys::map_id(&dir.join(maps::IFACE_STATS)) else { return false };
    sys::prog_map_ids(prog_id).is_ok_and(|ids| ids.contains(&stats))
}

/// Whether the links of `dir` still hold an interface: false once the
/// device (or its whole network namespace) is gone, which detaches them.
pub fn links_alive(dir: &Path) -> bool {
    [LINK_INGRESS, LINK_EGRESS].iter().any(|name| link_info(&dir.join(name)).is_ok_and(|info| info.ifindex != 0))
}
