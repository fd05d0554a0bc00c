//! Builds the kernel programs (`firewall-ebpf`) for bpfel-unknown-none with
//! the nightly toolchain and bpf-linker (`cargo xtask bootstrap` installs
//! both), leaving the object in OUT_DIR for `include_bytes_aligned!`.
//!
//! With firewall-ctl's `test-support` feature (tests, benchmarks, fuzzing)
//! the object also carries the test programs (`firewall-ebpf`'s
//! `test-programs` feature); the shipped sgctl's object does not.
//!
//! With `AYA_BUILD_SKIP=1` (for work on the pure-userspace modules only) an
//! empty placeholder object is written instead; loading it fails at run time.
use std::path::Path;

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let out_dir = std::env::var("OUT_DIR").context("OUT_DIR")?;
    let object = Path::new(&out_dir).join("firewall");
    if !object.exists() {
        std::fs::write(&object, b"").context("writing placeholder object")?;
    }
    let root_dir = Path::new(&manifest_dir).join("../firewall-ebpf");
    let root_dir = root_dir.to_str().context("non-UTF-8 workspace path")?;
    let features: &[&str] =
        if std::env::var_os("CARGO_FEATURE_TEST_SUPPORT").is_some() { &["test-programs"] } else { &[] };
    aya_build::build_ebpf(
        [Package { name: "firewall-ebpf", root_dir, features, ..Default::default() }],
        Toolchain::default(),
    )
}
