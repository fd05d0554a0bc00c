//! The kernel side as userspace sees it: loading the programs, attaching
//! them, and reading and writing their pinned maps.
pub mod attach;
pub mod maps;

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader};

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
