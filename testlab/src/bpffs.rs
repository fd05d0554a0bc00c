//! A private sgctl state directory per lab (`sgctl --state-dir`), on bpffs,
//! so end-to-end tests never share pinned state with each other or with the
//! machine's own `/sys/fs/bpf/sgctl`.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use nix::{
    mount::{mount, MsFlags},
    sys::statfs::{statfs, FsType},
};

const BPFFS: &str = "/sys/fs/bpf";
/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: FsType = FsType(0xcafe_4a11);
/// Where the labs' state directories live, one per lab prefix.
const ROOT: &str = "/sys/fs/bpf/testlab";

/// Mounts bpffs on /sys/fs/bpf unless it is there already.
fn ensure_mounted() -> anyhow::Result<()> {
    if statfs(BPFFS).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC) {
        return Ok(());
    }
    fs::create_dir_all(BPFFS).with_context(|| format!("creating {BPFFS}"))?;
    mount(Some("bpf"), BPFFS, Some("bpf"), MsFlags::empty(), None::<&str>)
        .with_context(|| format!("mounting bpffs on {BPFFS}"))
}

/// Creates `/sys/fs/bpf/testlab/PREFIX`.
pub(crate) fn create(prefix: &str) -> anyhow::Result<PathBuf> {
    ensure_mounted()?;
    let dir = Path::new(ROOT).join(prefix);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Removes a state directory and every pin in it (unpinning a link detaches it).
pub(crate) fn remove(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir) {
        eprintln!("testlab: cleaning up {}: {e}", dir.display());
    }
}

/// State directories whose names `is_stale` (labs of dead processes).
pub(crate) fn stale(is_stale: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(ROOT) else {
        return Vec::new();
    };
    entries.filter_map(Result::ok).filter(|e| is_stale(&e.file_name().to_string_lossy())).map(|e| e.path()).collect()
}
