//! The kernel side as userspace sees it: loading the programs, attaching
//! them, and reading and writing their pinned maps.
pub mod attach;
pub mod generation;
pub mod hooks;
pub mod links;
pub mod maps;

use std::{collections::BTreeMap, path::PathBuf, sync::OnceLock};

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader};
use firewall_common::map_names;

/// The kernel programs, built by build.rs from `firewall-ebpf`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/firewall"));

/// Program names in [`OBJECT`].
pub const PROG_INGRESS_XDP: &str = "sg_ingress_xdp";
pub const PROG_INGRESS_TC: &str = "sg_ingress_tc";
pub const PROG_EGRESS_TC: &str = "sg_egress_tc";

/// A digest of [`OBJECT`]: an interface whose programs came from another
/// object gets this one's in place (`sgctl` was upgraded).
pub fn object_digest() -> u64 {
    static DIGEST: OnceLock<u64> = OnceLock::new();
    *DIGEST.get_or_init(|| crate::compile::identity::fnv1a(OBJECT))
}

/// Where each map of a copy of the object lives on bpffs. A map whose pin
/// exists is reused, so programs loaded again for an interface (another
/// hook, a newer `sgctl`, a resized conntrack table) share every map with
/// the programs they replace; a map whose pin does not exist is created and
/// pinned there.
pub struct Pins(BTreeMap<&'static str, PathBuf>);

impl Pins {
    /// Every map of the interface in `dir`, and the scope's `ACTIVE` and
    /// event rings (pinned beside `ACTIVE`).
    pub fn new(dir: &std::path::Path, active: PathBuf) -> Self {
        // Every map of the object but `SCRATCH`, each program copy's own.
        let mut pins: BTreeMap<&'static str, PathBuf> = map_names::ALL
            .into_iter()
            .filter(|name| *name != map_names::SCRATCH)
            .map(|name| (name, dir.join(name)))
            .collect();
        for ring in [maps::EVENTS, maps::TRACE_EVENTS] {
            pins.insert(ring, active.with_file_name(ring));
        }
        pins.insert(maps::ACTIVE, active);
        Self(pins)
    }

    /// Pins map `name` at `path` instead.
    pub fn with(mut self, name: &'static str, path: PathBuf) -> Self {
        self.0.insert(name, path);
        self
    }
}

/// Loads a copy of the object with its maps at `pins` and a conntrack
/// table of `conntrack_capacity` entries (used only when the table is
/// created, not reused), for a device of `link` layer whose network header
/// starts at `net_offset` when it has no Ethernet header (0 on a real
/// device; the verdict tests use 14, see `LINK_NET_OFFSET` in the kernel
/// programs). The programs are not loaded into the kernel yet.
pub fn load(pins: &Pins, conntrack_capacity: u32, link: hooks::LinkLayer, net_offset: u32) -> anyhow::Result<Ebpf> {
    anyhow::ensure!(
        !OBJECT.is_empty(),
        "this sgctl was built without its eBPF object (AYA_BUILD_SKIP); rebuild with `cargo xtask build`"
    );
    load_object(OBJECT, pins, conntrack_capacity, link, net_offset)
}

/// [`load`] of another build of the object (the load-time benchmark
/// measures candidate builds with it).
pub fn load_object(
    object: &[u8],
    pins: &Pins,
    conntrack_capacity: u32,
    link: hooks::LinkLayer,
    net_offset: u32,
) -> anyhow::Result<Ebpf> {
    let bare_ip = u32::from(link == hooks::LinkLayer::BareIp);
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(maps::CONNTRACK, conntrack_capacity)
        .override_global("LINK_BARE_IP", &bare_ip, true)
        .override_global("LINK_NET_OFFSET", &net_offset, true);
    for (name, path) in &pins.0 {
        loader.map_pin_path(name, path.as_path());
    }
    loader.load(object).context("loading the eBPF object")
}
