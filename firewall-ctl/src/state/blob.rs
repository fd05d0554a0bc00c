//! Small JSON records kept on bpffs, where `sgctl`'s state lives (bpffs
//! holds no regular files): each is a one-element array map pinned at a
//! path. A write pins a new map beside the old one and renames it over, so a
//! reader sees the old record or the new one, never half of each.
use std::{io, path::Path};

use serde::{de::DeserializeOwned, Serialize};

use super::sys;

pub fn write<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let json = serde_json::to_vec(value)?;
    let mut bytes = (json.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    bytes.resize(bytes.len().next_multiple_of(8), 0);
    let fd = sys::create_array_with("sgctl_record", &bytes)?;
    // bpffs refuses names with a dot.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push("_new");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    sys::obj_pin(&fd, &tmp)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// `Ok(None)` when nothing is pinned at `path`.
pub fn read<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    let fd = match sys::obj_get(path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    let bytes = sys::read_array(&fd)?;
    let len = u32::from_le_bytes(bytes[..4].try_into()?) as usize;
    let json = bytes.get(4..4 + len).ok_or_else(|| anyhow::anyhow!("{}: truncated record", path.display()))?;
    Ok(Some(serde_json::from_slice(json)?))
}
