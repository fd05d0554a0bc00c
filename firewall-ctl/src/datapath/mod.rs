//! The kernel side as userspace sees it: loading the programs, attaching
//! them, and reading and writing their pinned maps.
pub(crate) mod attach;
pub mod clock;
pub(crate) mod clsact;
pub mod conntrack;
pub(crate) mod generation;
pub mod hooks;
pub mod kernel;
pub(crate) mod links;
pub mod maps;
pub(crate) mod memory;
mod rtnetlink;
pub(crate) mod sys;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::OnceLock,
};

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
    pub fn new(dir: &Path, active: PathBuf) -> Self {
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
    let hz = clock::clock().hz();
    let mut loader = EbpfLoader::new();
    for table in conntrack::TABLES {
        loader.map_max_entries(table.name, conntrack_capacity);
    }
    loader
        .override_global("LINK_BARE_IP", &bare_ip, true)
        .override_global("LINK_NET_OFFSET", &net_offset, true)
        .override_global("TICKS_PER_SEC", &hz, true);
    let defs = if std::ptr::eq(object, OBJECT) { object_maps().to_vec() } else { map_defs(object)? };
    for (name, path) in &pins.0 {
        if let Some(def) = defs.iter().find(|d| d.name == *name) {
            create_outer_map(def, path)?;
        }
        loader.map_pin_path(name, path.as_path());
    }
    loader.load(object).context("loading the eBPF object")
}

/// A map the object declares, as the loader creates it.
#[derive(Clone, Debug)]
pub struct MapDef {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    /// The template of the inner maps, for a map of maps.
    pub inner: Option<Box<MapDef>>,
}

/// The maps of [`OBJECT`] (empty if the object is missing).
pub fn object_maps() -> &'static [MapDef] {
    static MAPS: OnceLock<Vec<MapDef>> = OnceLock::new();
    MAPS.get_or_init(|| map_defs(OBJECT).unwrap_or_default())
}

/// The maps `object` declares, by name.
fn map_defs(object: &[u8]) -> anyhow::Result<Vec<MapDef>> {
    fn def(name: String, m: &aya_obj::Map) -> MapDef {
        MapDef {
            inner: m.inner().map(|i| Box::new(def(format!("{name}.inner"), &i))),
            name,
            map_type: m.map_type(),
            key_size: m.key_size(),
            value_size: m.value_size(),
            max_entries: m.max_entries(),
            flags: m.map_flags(),
        }
    }
    let object = aya_obj::Object::parse(object).context("parsing the eBPF object")?;
    let mut maps: Vec<MapDef> = object.maps.iter().map(|(name, m)| def(name.clone(), m)).collect();
    maps.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(maps)
}

/// Creates the maps of maps of the object that the interface directory
/// `dir` has no pin of (programs of an older sgctl, whose object declared
/// fewer), as loading the object would: a generation can then be written
/// into them before the new programs are put on them.
pub fn create_missing_outer_maps(dir: &Path) -> anyhow::Result<()> {
    for def in object_maps().iter().filter(|d| d.inner.is_some()) {
        create_outer_map(def, &dir.join(&def.name))?;
    }
    Ok(())
}

/// Creates and pins at `pin` the map of maps `def` (unless the pin exists)
/// with a template without BTF, as every inner map sgctl puts in its slots
/// is (see `sys::create_map`). aya would make the template from the
/// object's BTF definition, with BTF: kernels 5.15-6.1 then refuse every
/// inner map without it (`bpf_map_update_elem`: EINVAL). The loader reuses
/// the pin. Other maps are left to the loader.
fn create_outer_map(def: &MapDef, pin: &Path) -> anyhow::Result<()> {
    use std::os::fd::AsFd as _;
    let Some(inner) = def.inner.as_deref() else { return Ok(()) };
    if pin.exists() {
        return Ok(());
    }
    let template = sys::create_map(
        "sg_template",
        inner.map_type,
        (inner.key_size, inner.value_size),
        inner.max_entries,
        inner.flags,
        None,
    )
    .with_context(|| format!("creating the template of {}", def.name))?;
    let outer = sys::create_map(
        &def.name,
        def.map_type,
        (def.key_size, def.value_size),
        def.max_entries,
        def.flags,
        Some(template.as_fd()),
    )
    .with_context(|| format!("creating {}", def.name))?;
    // Pinned beside, then renamed: a kill never leaves a half-made pin.
    // (bpffs refuses names with a dot.)
    let tmp = pin.with_file_name(format!("{}_new", def.name));
    let _ = std::fs::remove_file(&tmp);
    sys::obj_pin(&outer, &tmp).with_context(|| format!("pinning {}", tmp.display()))?;
    std::fs::rename(&tmp, pin).with_context(|| format!("pinning {}", pin.display()))?;
    Ok(())
}
