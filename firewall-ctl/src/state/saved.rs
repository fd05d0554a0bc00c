//! The applied policy kept on disk, so it survives a reboot (bpffs does not):
//! `sgctl restore` puts it back in force at boot, and an unconfirmed apply
//! (`--confirm-within`) keeps here what to roll back to.
//!
//! ```text
//! <lib-dir>/                    default /var/lib/sgctl, mode 0700
//!   <scope>/                    `host`, or `netns-NAME`
//!     applied.json              the policy in force: its files' text, its interfaces
//!     pending-confirm.json      an apply awaiting `sgctl confirm`, and what came before it
//!     fleet.json                `sgctl agent --etcd`: the fleet as it last saw it (docs/fleet.md)
//! ```
//!
//! Each file is written whole to a temporary name, synced, and renamed over
//! the old one, so a crash leaves the old file or the new one.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::state::{
    member_edits::MemberEdits,
    records::{Mode, Origin, Source},
    Scope,
};

pub const DEFAULT_LIB_DIR: &str = "/var/lib/sgctl";

/// What was in force in a scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub generation: u64,
    pub sources: Vec<Source>,
    pub interfaces: Vec<SavedInterface>,
    /// Memberships changed with `sgctl members` since (also in
    /// `members.json`, which `sgctl members` rewrites alone).
    #[serde(default, skip_serializing_if = "MemberEdits::is_empty")]
    pub members: MemberEdits,
    /// `PolicyRecord::digest` of the sources (0 in files of older versions).
    #[serde(default)]
    pub digest: u64,
}

/// `applied.json` without the sources' text (read past, not kept).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SavedHead {
    pub generation: u64,
    pub interfaces: Vec<SavedInterface>,
    #[serde(default)]
    pub members: MemberEdits,
    #[serde(default)]
    pub digest: u64,
}

/// `members.json`: the membership edits of the saved generation, written
/// on their own by `sgctl members` so that it does not rewrite the policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SavedMembers {
    generation: u64,
    members: MemberEdits,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedInterface {
    pub ifname: String,
    pub groups: Vec<String>,
    pub origin: Origin,
    pub mode: Mode,
}

/// An apply that rolls back by itself unless confirmed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The generation the apply put in force.
    pub generation: u64,
    /// Seconds since the Unix epoch, as the wall clock read when armed (for
    /// people; the rollback goes by `deadline_boottime_ms`).
    pub deadline: u64,
    /// The deadline on `CLOCK_BOOTTIME`, in milliseconds, in boot `boot_id`.
    #[serde(default)]
    pub deadline_boottime_ms: u64,
    #[serde(default)]
    pub boot_id: String,
    /// What was in force before (`None`: nothing, so rolling back detaches everything).
    pub previous: Option<Saved>,
    /// The process waiting to roll back (it follows this record, and exits
    /// when there is none).
    pub helper_pid: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct LibDir {
    root: PathBuf,
}

impl LibDir {
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_owned() }
    }

    /// [`Self::new`], refusing a directory that is a symbolic link, not
    /// root's, or writable by others: what is saved there is put in force
    /// at boot.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        crate::state::check_private("lib", root)?;
        Ok(Self::new(root))
    }

    fn scope_dir(&self, scope: &Scope) -> PathBuf {
        self.root.join(scope.dir_name())
    }

    /// What was saved in force, with the latest membership edits of its generation.
    pub fn applied(&self, scope: &Scope) -> anyhow::Result<Option<Saved>> {
        let Some(mut saved) = read::<Saved>(&self.scope_dir(scope).join("applied.json"))? else { return Ok(None) };
        if let Some(m) = read::<SavedMembers>(&self.scope_dir(scope).join("members.json"))? {
            if m.generation == saved.generation {
                saved.members = m.members;
            }
        }
        Ok(Some(saved))
    }

    /// [`Self::applied`] without the sources' text.
    pub fn applied_head(&self, scope: &Scope) -> anyhow::Result<Option<SavedHead>> {
        let Some(mut head) = read::<SavedHead>(&self.scope_dir(scope).join("applied.json"))? else { return Ok(None) };
        if let Some(m) = read::<SavedMembers>(&self.scope_dir(scope).join("members.json"))? {
            if m.generation == head.generation {
                head.members = m.members;
            }
        }
        Ok(Some(head))
    }

    pub fn save_applied(&self, scope: &Scope, saved: &Saved) -> anyhow::Result<()> {
        // The edits first: a crash between leaves them newer than, or of
        // another generation than, applied.json, never older.
        self.save_members(scope, saved.generation, &saved.members)?;
        write(&self.scope_dir(scope), "applied.json", saved)
    }

    /// Saves the membership edits of generation `generation` alone.
    pub fn save_members(&self, scope: &Scope, generation: u64, members: &MemberEdits) -> anyhow::Result<()> {
        write(&self.scope_dir(scope), "members.json", &SavedMembers { generation, members: members.clone() })
    }

    pub fn pending(&self, scope: &Scope) -> anyhow::Result<Option<Pending>> {
        read(&self.scope_dir(scope).join("pending-confirm.json"))
    }

    pub fn save_pending(&self, scope: &Scope, pending: &Pending) -> anyhow::Result<()> {
        write(&self.scope_dir(scope), "pending-confirm.json", pending)
    }

    pub fn remove_pending(&self, scope: &Scope) -> anyhow::Result<()> {
        let path = self.scope_dir(scope).join("pending-confirm.json");
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    /// `fleet.json`: what `sgctl agent --etcd` keeps of the fleet
    /// (`crate::fleet::FleetRecord`), for `sgctl status` and its next start.
    pub fn fleet<T: DeserializeOwned>(&self, scope: &Scope) -> anyhow::Result<Option<T>> {
        read(&self.scope_dir(scope).join("fleet.json"))
    }

    pub fn save_fleet<T: Serialize>(&self, scope: &Scope, record: &T) -> anyhow::Result<()> {
        write(&self.scope_dir(scope), "fleet.json", record)
    }

    /// Forgets everything saved for `scope`.
    pub fn remove_scope(&self, scope: &Scope) -> anyhow::Result<()> {
        let dir = self.scope_dir(scope);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", dir.display()))
            }
            _ => Ok(()),
        }
    }

    /// Every scope with something saved.
    pub fn scopes(&self) -> anyhow::Result<Vec<Scope>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", self.root.display())),
        };
        let mut scopes: Vec<Scope> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|name| Scope::from_dir_name(&name))
            .collect();
        scopes.sort_by_key(Scope::dir_name);
        Ok(scopes)
    }
}

fn read<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("{}: unreadable", path.display()))?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write<T: Serialize>(dir: &Path, name: &str, value: &T) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec_pretty(value)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} into place", tmp.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
