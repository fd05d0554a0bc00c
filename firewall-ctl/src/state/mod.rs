//! Where `sgctl` keeps its state: on bpffs, so enforcement and state outlive
//! every `sgctl` process.
//!
//! ```text
//! <state-dir>/                      default /sys/fs/bpf/sgctl
//!   <scope>/                        `host`, or `netns-NAME` for `-n NAME`
//!     policy                        record: the applied policy, its sources, generation
//!     if-<IFACE>/                   one per filtered interface
//!       record                      record: groups, hook, compiled rule table
//!       link_ingress, link_egress   pinned links (the attachments)
//!       <MAP NAME>                  pinned maps shared by both programs
//! ```
//!
//! Scopes keep two namespaces' same-named interfaces apart.
pub mod blob;
pub mod records;
pub mod sys;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// A host: the initial network namespace, or a named one (`ip netns`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Host,
    Netns(String),
}

impl Scope {
    fn dir_name(&self) -> String {
        match self {
            Self::Host => "host".into(),
            Self::Netns(name) => format!("netns-{}", escape(name)),
        }
    }

    fn from_dir_name(name: &str) -> Option<Self> {
        match name {
            "host" => Some(Self::Host),
            _ => name.strip_prefix("netns-").map(|n| Self::Netns(unescape(n))),
        }
    }

    /// The namespace name for JSON (`null` for the host).
    pub fn netns(&self) -> Option<&str> {
        match self {
            Self::Host => None,
            Self::Netns(n) => Some(n),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Host => f.write_str("host"),
            Self::Netns(n) => write!(f, "netns {n}"),
        }
    }
}

pub const DEFAULT_STATE_DIR: &str = "/sys/fs/bpf/sgctl";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// An exclusive hold on a state directory, released on drop (or when the
/// process dies, so a killed `sgctl` never leaves it locked).
pub struct StateLock(#[expect(dead_code, reason = "held for its Drop")] nix::fcntl::Flock<std::fs::File>);

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed) the state directory, which must be on
    /// bpffs; the default location is mounted if `/sys/fs/bpf` is not.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        if root == Path::new(DEFAULT_STATE_DIR) && !is_bpffs(Path::new("/sys/fs/bpf")) {
            nix::mount::mount(Some("bpf"), "/sys/fs/bpf", Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
                .context("mounting bpffs on /sys/fs/bpf")?;
        }
        std::fs::create_dir_all(root).with_context(|| format!("creating state directory {}", root.display()))?;
        if !is_bpffs(root) {
            anyhow::bail!(crate::InputError(format!(
                "state directory {} is not on a bpffs mount (mount -t bpf bpf DIR)",
                root.display()
            )));
        }
        Ok(Self { root: root.to_owned() })
    }

    /// Takes the state directory for a verb that changes it, waiting (and
    /// saying so) while another `sgctl` holds it: two applies interleaving
    /// their map writes would leave a mix of both policies.
    pub fn lock(&self) -> anyhow::Result<StateLock> {
        use nix::{
            errno::Errno,
            fcntl::{Flock, FlockArg},
        };
        let dir = std::fs::File::open(&self.root).with_context(|| format!("opening {}", self.root.display()))?;
        let held = match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
            Ok(held) => held,
            Err((dir, Errno::EWOULDBLOCK)) => {
                eprintln!("sgctl: waiting for another sgctl to finish with {}", self.root.display());
                Flock::lock(dir, FlockArg::LockExclusive).map_err(|(_, e)| e)?
            }
            Err((_, e)) => return Err(e).with_context(|| format!("locking {}", self.root.display())),
        };
        Ok(StateLock(held))
    }

    pub fn scope_dir(&self, scope: &Scope) -> PathBuf {
        self.root.join(scope.dir_name())
    }

    pub fn policy_path(&self, scope: &Scope) -> PathBuf {
        self.scope_dir(scope).join("policy")
    }

    pub fn iface_dir(&self, scope: &Scope, ifname: &str) -> PathBuf {
        self.scope_dir(scope).join(format!("if-{}", escape(ifname)))
    }

    /// Removes the state of named network namespaces that no longer exist:
    /// their interfaces went with them, and their pinned maps would
    /// otherwise hold kernel memory for ever. Returns the scopes removed.
    pub fn prune_vanished_scopes(&self) -> anyhow::Result<Vec<Scope>> {
        let mut pruned = Vec::new();
        for scope in self.scopes()? {
            if let Scope::Netns(name) = &scope {
                if !Path::new("/run/netns").join(name).exists() {
                    std::fs::remove_dir_all(self.scope_dir(&scope))
                        .with_context(|| format!("removing the state of vanished netns {name}"))?;
                    pruned.push(scope);
                }
            }
        }
        Ok(pruned)
    }

    /// Every scope that has state.
    pub fn scopes(&self) -> anyhow::Result<Vec<Scope>> {
        let mut scopes: Vec<Scope> =
            read_dir_names(&self.root)?.iter().filter_map(|n| Scope::from_dir_name(n)).collect();
        scopes.sort_by_key(Scope::dir_name);
        Ok(scopes)
    }

    /// Names of the interfaces filtered in `scope`.
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
