//! Where `sgctl` keeps its state: on bpffs, so enforcement and state outlive
//! every `sgctl` process.
//!
//! ```text
//! <state-dir>/                      default /sys/fs/bpf/sgctl, mode 0700
//!   layout                          record: the layout version of everything below
//!   <scope>/                        `host`, or `netns-NAME` for `-n NAME`
//!     ACTIVE                        map: the generation slot in force (0 or 1) and its number
//!     policy-0, policy-1            record per slot: the applied policy (its source files)
//!     summary-0, summary-1          record per slot: the policy's digest and its rules' hashes
//!     members-0, members-1          record per slot: memberships changed since (`sgctl members`)
//!     members-journal               record: a membership change being put in force in place
//!     if-<IFACE>/                   one per filtered interface
//!       record-0, record-1          record per slot: groups, hook, rules, counter slots
//!       link_ingress, link_egress   pinned links (the attachments)
//!       <MAP NAME>                  pinned maps shared by both programs
//! ```
//!
//! Scopes keep two namespaces' same-named interfaces apart. What is in
//! force is what `ACTIVE` names: the records of the other slot belong to a
//! change not (or no longer) in force, and an interface directory without
//! a record for the slot in force is an attach that never committed.
//!
//! Beside it, what outlives a reboot: the policy in force kept on disk
//! ([`saved`], under `/var/lib/sgctl`), and the membership edits of
//! `sgctl members` that amend it ([`member_edits`]).
pub mod blob;
pub mod member_edits;
pub mod records;
pub mod saved;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Where sgctl works: the initial network namespace (shown as "host"), or a
/// named one (`ip netns`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    InitNetns,
    Netns(String),
}

impl Scope {
    pub fn dir_name(&self) -> String {
        match self {
            Self::InitNetns => "host".into(),
            Self::Netns(name) => format!("netns-{}", escape(name)),
        }
    }

    pub fn from_dir_name(name: &str) -> Option<Self> {
        match name {
            "host" => Some(Self::InitNetns),
            _ => name.strip_prefix("netns-").map(|n| Self::Netns(unescape(n))),
        }
    }

    /// The namespace name for JSON (`null` for the initial one).
    pub fn netns(&self) -> Option<&str> {
        match self {
            Self::InitNetns => None,
            Self::Netns(n) => Some(n),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InitNetns => f.write_str("host"),
            Self::Netns(n) => write!(f, "netns {n}"),
        }
    }
}

pub const DEFAULT_STATE_DIR: &str = "/sys/fs/bpf/sgctl";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The layout of everything under the state directory. Bump it when
/// records or maps change shape, with a migration or a one-line answer in
/// [`StateDir::open`].
pub const LAYOUT: u32 = 2;

#[derive(serde::Serialize, serde::Deserialize)]
struct LayoutRecord {
    layout: u32,
}

/// An exclusive hold on a state directory, released on drop (or when the
/// process dies, so a killed `sgctl` never leaves it locked).
pub struct StateLock(#[expect(dead_code, reason = "held for its Drop")] nix::fcntl::Flock<std::fs::File>);

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens the state directory of a verb that only reads: nothing is
    /// created or written (a directory that does not exist reads as empty).
    pub fn open_read_only(root: &Path) -> anyhow::Result<Self> {
        let dir = Self { root: root.to_owned() };
        if root.exists() {
            check_private("state", root)?;
            match blob::read::<LayoutRecord>(&root.join("layout"))? {
                Some(r) if r.layout != LAYOUT => anyhow::bail!(
                    "state directory {} has layout {} and this sgctl knows layout {LAYOUT}: use the sgctl that wrote it",
                    root.display(),
                    r.layout
                ),
                _ => {}
            }
        }
        Ok(dir)
    }

    /// Opens (creating if needed, mode 0700) the state directory of a verb
    /// that changes it, which must be on bpffs; the default location is
    /// mounted if `/sys/fs/bpf` is not.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        if root == Path::new(DEFAULT_STATE_DIR) && !is_bpffs(Path::new("/sys/fs/bpf")) {
            // Root's alone (systemd mounts it so too): on a bpffs others
            // may write, anyone could make the state directory first.
            nix::mount::mount(Some("bpf"), "/sys/fs/bpf", Some("bpf"), nix::mount::MsFlags::empty(), Some("mode=0700"))
                .context("mounting bpffs on /sys/fs/bpf")?;
        }
        // Never through a symbolic link, whoever made it.
        check_private("state", root)?;
        if !root.exists() {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .with_context(|| format!("creating state directory {}", root.display()))?;
        }
        if !is_bpffs(root) {
            anyhow::bail!(crate::InputError::NotBpffs { dir: root.to_owned() });
        }
        check_private("state", root)?;
        let dir = Self { root: root.to_owned() };
        dir.check_layout()?;
        Ok(dir)
    }

    /// Refuses a state directory laid out by another `sgctl` version,
    /// saying what to do; writes the layout of a new one.
    fn check_layout(&self) -> anyhow::Result<()> {
        let path = self.root.join("layout");
        match blob::read::<LayoutRecord>(&path)? {
            Some(r) if r.layout == LAYOUT => Ok(()),
            Some(r) => anyhow::bail!(
                "state directory {} has layout {} and this sgctl knows layout {LAYOUT}: use the sgctl that wrote it",
                self.root.display(),
                r.layout
            ),
            None if self.scopes()?.is_empty() => blob::write(&path, &LayoutRecord { layout: LAYOUT }),
            None => anyhow::bail!(
                "state directory {} was written by an sgctl before layout {LAYOUT}: run that sgctl's `detach` on each \
                 interface (or delete the directory, leaving them unfiltered), then apply again",
                self.root.display()
            ),
        }
    }

    /// Takes the state directory for a verb that changes it, waiting (and
    /// saying so, with the holder's pid) while another `sgctl` holds it, for
    /// at most `wait`: two applies interleaving their map writes would leave
    /// a mix of both policies.
    pub fn lock(&self, wait: std::time::Duration) -> anyhow::Result<StateLock> {
        self.flock(nix::fcntl::FlockArg::LockExclusiveNonblock, wait)
    }

    /// Takes the state directory for reading, beside other readers: a
    /// report that must not see a change half made (the rollback puts the
    /// old policy in force, then drops its pending record) waits, for at
    /// most `wait`, while a verb that changes state holds it.
    pub fn lock_shared(&self, wait: std::time::Duration) -> anyhow::Result<StateLock> {
        self.flock(nix::fcntl::FlockArg::LockSharedNonblock, wait)
    }

    fn flock(&self, how: nix::fcntl::FlockArg, wait: std::time::Duration) -> anyhow::Result<StateLock> {
        use nix::{errno::Errno, fcntl::Flock};
        let deadline = std::time::Instant::now() + wait;
        let mut said = false;
        let mut dir = std::fs::File::open(&self.root).with_context(|| format!("opening {}", self.root.display()))?;
        loop {
            match Flock::lock(dir, how) {
                Ok(held) => return Ok(StateLock(held)),
                Err((back, Errno::EWOULDBLOCK)) => dir = back,
                Err((_, e)) => return Err(e).with_context(|| format!("locking {}", self.root.display())),
            }
            let holder = lock_holder(&self.root).map_or_else(|| "another sgctl".to_owned(), |pid| format!("pid {pid}"));
            if std::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "{} is locked by {holder}; gave up after {} s (wait for it to finish, or stop it)",
                    self.root.display(),
                    wait.as_secs()
                );
            }
            if !said {
                eprintln!("sgctl: waiting for {holder}, which holds {}", self.root.display());
                said = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The scope's `ACTIVE` map pin.
    pub fn active_path(&self, scope: &Scope) -> PathBuf {
        self.scope_dir(scope).join(firewall_common::map_names::ACTIVE)
    }

    pub fn scope_dir(&self, scope: &Scope) -> PathBuf {
        self.root.join(scope.dir_name())
    }

    /// The policy record of generation slot `slot`.
    pub fn policy_path(&self, scope: &Scope, slot: u32) -> PathBuf {
        self.scope_dir(scope).join(format!("policy-{slot}"))
    }

    /// The summary of the policy record of generation slot `slot`.
    pub fn summary_path(&self, scope: &Scope, slot: u32) -> PathBuf {
        self.scope_dir(scope).join(format!("summary-{slot}"))
    }

    /// The membership edits (`sgctl members`) of generation slot `slot`.
    pub fn members_path(&self, scope: &Scope, slot: u32) -> PathBuf {
        self.scope_dir(scope).join(format!("members-{slot}"))
    }

    /// A membership change being put in force in place (see `control::member_change`).
    pub fn members_journal_path(&self, scope: &Scope) -> PathBuf {
        self.scope_dir(scope).join("members-journal")
    }

    /// The record of interface `ifname` for generation slot `slot`.
    pub fn iface_record_path(&self, scope: &Scope, ifname: &str, slot: u32) -> PathBuf {
        self.iface_dir(scope, ifname).join(format!("record-{slot}"))
    }

    pub fn iface_dir(&self, scope: &Scope, ifname: &str) -> PathBuf {
        self.scope_dir(scope).join(format!("if-{}", escape(ifname)))
    }

    /// Every scope that has state.
    pub fn scopes(&self) -> anyhow::Result<Vec<Scope>> {
        let mut scopes: Vec<Scope> =
            read_dir_names(&self.root)?.iter().filter_map(|n| Scope::from_dir_name(n)).collect();
        scopes.sort_by_key(Scope::dir_name);
        Ok(scopes)
    }

    /// Names of the interfaces with a directory in `scope` (committed or not).
    pub fn interfaces(&self, scope: &Scope) -> anyhow::Result<Vec<String>> {
        let mut names: Vec<String> = read_dir_names(&self.scope_dir(scope))?
            .iter()
            .filter_map(|n| n.strip_prefix("if-").map(unescape))
            .collect();
        names.sort();
        Ok(names)
    }
}

/// bpffs refuses names with a dot (`eth0.100`, `ns.a`): spell `.` as `%2E`
/// (and `%` as `%25`).
fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('.', "%2E")
}

fn unescape(name: &str) -> String {
    name.replace("%2E", ".").replace("%25", "%")
}

fn read_dir_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("listing {}", dir.display())),
    }
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// Refuses a `what` (`state` or `lib`) directory that is a symbolic link,
/// is not root's, or that others could write: whoever can write it can
/// replace a pinned program or a saved policy. One that does not exist
/// passes (sgctl makes it, mode 0700).
pub fn check_private(what: &'static str, root: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = match std::fs::symlink_metadata(root) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", root.display())),
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(root).unwrap_or_default();
        anyhow::bail!(crate::InputError::DirIsSymlink { what, dir: root.to_owned(), target });
    }
    if meta.uid() != 0 {
        anyhow::bail!(crate::InputError::DirNotRoots { what, dir: root.to_owned(), uid: meta.uid() });
    }
    if meta.mode() & 0o022 != 0 {
        anyhow::bail!(crate::InputError::StateDirNotPrivate {
            what,
            dir: root.to_owned(),
            uid: meta.uid(),
            mode: meta.mode() & 0o7777
        });
    }
    Ok(())
}

/// The pid holding the `flock` on `dir`, from /proc/locks.
fn lock_holder(dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(dir).ok()?;
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    std::fs::read_to_string("/proc/locks").ok()?.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF"
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&wanted.as_str()))
            .then(|| fields.get(4)?.parse().ok())
            .flatten()
    })
}
