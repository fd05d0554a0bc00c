//! The kernel side as userspace sees it: loading the programs, attaching
//! them, and reading and writing their pinned maps.
pub mod attach;
pub mod hooks;
pub mod maps;

use std::path::Path;

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader};

use crate::compile::CompiledInterface;

/// The kernel programs, built by build.rs from `firewall-ebpf`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/firewall"));

/// Program names in [`OBJECT`].
pub const PROG_INGRESS_XDP: &str = "sg_ingress_xdp";
pub const PROG_INGRESS_TC: &str = "sg_ingress_tc";
pub const PROG_EGRESS_TC: &str = "sg_egress_tc";

/// Loads a fresh copy of the object: new, empty maps for one interface,
/// with a conntrack table of `conntrack_capacity` entries.
pub fn load(conntrack_capacity: u32) -> anyhow::Result<Ebpf> {
    load_for(conntrack_capacity, hooks::LinkLayer::Ethernet, 0)
}

/// [`load`] for a device of `link` layer, whose network header starts at
/// `net_offset` when it has no Ethernet header (0 on a real device; the
/// verdict tests use 14, see `LINK_NET_OFFSET` in the kernel programs).
pub fn load_for(conntrack_capacity: u32, link: hooks::LinkLayer, net_offset: u32) -> anyhow::Result<Ebpf> {
    anyhow::ensure!(
        !OBJECT.is_empty(),
        "this sgctl was built without its eBPF object (AYA_BUILD_SKIP); rebuild with `cargo xtask build`"
    );
    let bare_ip = u32::from(link == hooks::LinkLayer::BareIp);
    EbpfLoader::new()
        .map_max_entries(maps::CONNTRACK, conntrack_capacity)
        .override_global("LINK_BARE_IP", &bare_ip, true)
        .override_global("LINK_NET_OFFSET", &net_offset, true)
        .load(OBJECT)
        .context("loading the eBPF object")
}

/// Loads a fresh copy for one interface, pins its maps in `dir` (which must
/// exist) and fills them with `compiled`. The programs are not attached yet.
pub fn load_pinned(dir: &Path, compiled: &CompiledInterface) -> anyhow::Result<Ebpf> {
    load_pinned_for(dir, compiled, hooks::LinkLayer::Ethernet, 0)
}

/// [`load_pinned`] for a device of `link` layer (see [`load_for`]).
pub fn load_pinned_for(
    dir: &Path,
    compiled: &CompiledInterface,
    link: hooks::LinkLayer,
    net_offset: u32,
) -> anyhow::Result<Ebpf> {
    let ebpf = load_for(compiled.conntrack_capacity, link, net_offset)?;
    for name in maps::PINNED {
        let map = ebpf.map(name).with_context(|| format!("map {name} missing from the object"))?;
        map.pin(dir.join(name)).with_context(|| format!("pinning map {name}"))?;
    }
    maps::IfaceMaps::at(dir).write_policy(compiled)?;
    Ok(ebpf)
}
