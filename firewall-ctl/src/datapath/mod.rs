//! The kernel side as userspace sees it: loading the programs, attaching
//! them, and reading and writing their pinned maps.
pub mod attach;
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
    anyhow::ensure!(
        !OBJECT.is_empty(),
        "this sgctl was built without its eBPF object (AYA_BUILD_SKIP); rebuild with `cargo xtask build`"
    );
    EbpfLoader::new()
        .map_max_entries(maps::CONNTRACK, conntrack_capacity)
        .load(OBJECT)
        .context("loading the eBPF object")
}

/// Loads a fresh copy for one interface, pins its maps in `dir` (which must
/// exist) and fills them with `compiled`. The programs are not attached yet.
pub fn load_pinned(dir: &Path, compiled: &CompiledInterface) -> anyhow::Result<Ebpf> {
    let ebpf = load(compiled.conntrack_capacity)?;
    for name in maps::PINNED {
        let map = ebpf.map(name).with_context(|| format!("map {name} missing from the object"))?;
        map.pin(dir.join(name)).with_context(|| format!("pinning map {name}"))?;
    }
    maps::IfaceMaps::at(dir).write_policy(compiled)?;
    Ok(ebpf)
}
