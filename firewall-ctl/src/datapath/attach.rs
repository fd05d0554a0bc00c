//! Attaching one interface: load a fresh copy of the programs and maps,
//! fill the policy, attach, and pin everything so it outlives `sgctl`.
use std::path::Path;

use anyhow::Context as _;
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::TcAttachOptions,
        LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf,
};

use super::{PROG_EGRESS_TC, PROG_INGRESS_TC, PROG_INGRESS_XDP};
use crate::{
    compile::CompiledInterface,
    state::records::{IngressHook, Mode},
};

const LINK_INGRESS: &str = "link_ingress";
const LINK_EGRESS: &str = "link_egress";

/// Loads, fills, attaches and pins under `dir` (which must not exist yet).
/// On any failure nothing stays attached and `dir` is removed.
pub fn attach(dir: &Path, ifname: &str, mode: Mode, compiled: &CompiledInterface) -> anyhow::Result<IngressHook> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = attach_into(dir, ifname, mode, compiled);
    if result.is_err() {
        let _ = detach(dir);
    }
    result
}

fn attach_into(dir: &Path, ifname: &str, mode: Mode, compiled: &CompiledInterface) -> anyhow::Result<IngressHook> {
    let (link, use_xdp) = super::hooks::plan(ifname, mode)?;
    // The policy is in place before the first packet meets the programs.
    let mut ebpf = super::load_pinned_for(dir, compiled, link, 0)?;

    // Egress first: outbound flows opened from now on are tracked, so their
    // replies pass once ingress filtering starts.
    attach_tc(&mut ebpf, PROG_EGRESS_TC, ifname, TcAttachType::Egress, &dir.join(LINK_EGRESS))?;
    if use_xdp {
        match attach_xdp(&mut ebpf, ifname, XdpMode::Driver, &dir.join(LINK_INGRESS)) {
            Ok(()) => return Ok(IngressHook::XdpNative),
            // `auto` on a NIC whose driver lacks native XDP: tcx beats generic XDP.
            Err(_) if mode == Mode::Auto => {}
            Err(native) => {
                attach_xdp(&mut ebpf, ifname, XdpMode::Skb, &dir.join(LINK_INGRESS))
                    .with_context(|| format!("native XDP failed too: {native:#}"))?;
                return Ok(IngressHook::XdpGeneric);
            }
        }
    }
    attach_tc(&mut ebpf, PROG_INGRESS_TC, ifname, TcAttachType::Ingress, &dir.join(LINK_INGRESS))?;
    Ok(IngressHook::Tc)
}

fn attach_tc(ebpf: &mut Ebpf, prog: &str, ifname: &str, at: TcAttachType, pin: &Path) -> anyhow::Result<()> {
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
    let link = FdLink::try_from(program.take_link(id)?)?;
    link.pin(pin).with_context(|| format!("pinning {}", pin.display()))?;
    Ok(())
}

fn attach_xdp(ebpf: &mut Ebpf, ifname: &str, mode: XdpMode, pin: &Path) -> anyhow::Result<()> {
    let program: &mut Xdp = ebpf.program_mut(PROG_INGRESS_XDP).context("program sg_ingress_xdp missing")?.try_into()?;
    if program.fd().is_err() {
        program.load().context("loading sg_ingress_xdp")?;
    }
    let id = program.attach(ifname, mode).with_context(|| format!("attaching XDP ({mode:?}) to {ifname}"))?;
    let link = FdLink::try_from(program.take_link(id)?)?;
    link.pin(pin).with_context(|| format!("pinning {}", pin.display()))?;
    Ok(())
}

/// Removes the attachment whose state is in `dir`: unpinning the links
/// detaches the programs; unpinning the maps frees them.
pub fn detach(dir: &Path) -> anyhow::Result<()> {
    for link in [LINK_INGRESS, LINK_EGRESS] {
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

/// Whether both links of the attachment in `dir` are pinned, and the ids of
/// the programs they run (ingress, egress).
pub fn program_ids(dir: &Path) -> anyhow::Result<(u32, u32)> {
    let id = |name: &str| -> anyhow::Result<u32> {
        let link = FdLink::from(PinnedLink::from_pin(dir.join(name))?);
        Ok(link.info()?.program_id())
    };
    Ok((id(LINK_INGRESS)?, id(LINK_EGRESS)?))
}
