//! Records kept on bpffs, where `sgctl`'s state lives (bpffs holds no
//! regular files): each is an array map pinned at a path, its elements the
//! 64 KiB pieces of a length-prefixed JSON document, so a record of any
//! size fits (one map element is limited to a few MiB). A write pins a new
//! map beside the old one and renames it over, so a reader sees the old
//! record or the new one, never half of each.
use std::{io, path::Path};

use anyhow::Context as _;
use serde::{de::DeserializeOwned, Serialize};

use crate::datapath::sys;

/// Bytes per map element.
const CHUNK: usize = 64 * 1024;

pub fn write<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let json = serde_json::to_vec(value)?;
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    let chunk = bytes.len().next_multiple_of(8).min(CHUNK);
    bytes.resize(bytes.len().next_multiple_of(chunk), 0);
    let fd = sys::create_array_with("sgctl_record", chunk, &bytes)
        .with_context(|| format!("creating a {} KiB record for {}", bytes.len() / 1024, path.display()))?;
    // bpffs refuses names with a dot.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push("_new");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    sys::obj_pin(&fd, &tmp).with_context(|| format!("pinning {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))?;
    Ok(())
}

/// `Ok(None)` when nothing is pinned at `path`.
pub fn read<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    let fd = match sys::obj_get(path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    let bytes = sys::read_array(&fd).with_context(|| format!("reading {}", path.display()))?;
    let len = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default())).unwrap_or(0) as usize;
    let json = bytes.get(8..8 + len).ok_or_else(|| anyhow::anyhow!("{}: truncated record", path.display()))?;
    Ok(Some(serde_json::from_slice(json).with_context(|| format!("{}: unreadable record", path.display()))?))
}

/// Removes the record at `path`, if any.
pub fn remove(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).with_context(|| format!("removing {}", path.display())),
        _ => Ok(()),
    }
}
