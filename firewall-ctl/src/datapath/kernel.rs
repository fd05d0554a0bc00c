//! What the running kernel can do, asked of it (never guessed from its
//! version alone: distributions backport), and the floor sgctl needs:
//! `sgctl doctor` shows it all; `apply`, `attach`, `restore` (and the
//! agent's attaches) refuse a kernel below it in one line naming what is
//! missing, before they change anything.
use std::{path::Path, sync::OnceLock};

use serde::Serialize;

use super::{clsact, sys};

/// The oldest kernel sgctl runs on: Debian 12's, the oldest it is tested
/// on (in CI, beside the machine's own).
pub const FLOOR: (u32, u32) = (6, 1);

/// Whether the kernel has tcx (Linux 6.6 and later): asked with a
/// `BPF_PROG_QUERY` of tcx ingress on the loopback device (ifindex 1 in
/// every network namespace), which older kernels refuse with EINVAL.
pub fn has_tcx() -> bool {
    static TCX: OnceLock<bool> = OnceLock::new();
    *TCX.get_or_init(|| {
        !override_no_tcx()
            && match sys::prog_query_count(1, sys::BPF_TCX_INGRESS) {
                Ok(_) => true,
                Err(e) => e.raw_os_error() != Some(libc::EINVAL),
            }
    })
}

/// One thing sgctl needs (or reports), and what the kernel said.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub feature: &'static str,
    /// Needed: sgctl refuses to change anything without it.
    pub required: bool,
    pub ok: bool,
    pub detail: String,
}

/// `uname -r`, and its first two numbers.
pub fn release() -> (String, Option<(u32, u32)>) {
    let release = override_release().unwrap_or_else(|| {
        nix::sys::utsname::uname().map_or_else(|_| String::new(), |u| u.release().to_string_lossy().into_owned())
    });
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    let version = numbers.next().zip(numbers.next());
    (release, version)
}

/// Tests stand for an older kernel with `SGCTL_TEST_KERNEL_RELEASE`; the
/// shipped `sgctl` has no such knob.
#[cfg(feature = "test-support")]
fn override_release() -> Option<String> {
    std::env::var("SGCTL_TEST_KERNEL_RELEASE").ok()
}

#[cfg(not(feature = "test-support"))]
fn override_release() -> Option<String> {
    None
}

/// Tests stand for a kernel without tcx (a reboot into 6.1 under saved
/// state) with `SGCTL_TEST_NO_TCX=1`; the shipped `sgctl` has no such knob.
#[cfg(feature = "test-support")]
fn override_no_tcx() -> bool {
    std::env::var_os("SGCTL_TEST_NO_TCX").is_some()
}

#[cfg(not(feature = "test-support"))]
fn override_no_tcx() -> bool {
    false
}

/// Every check, in the order `doctor` prints them. `clsact` is probed in
/// a throwaway network namespace (it adds a qdisc and a filter).
pub fn checks(state_dir: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    let (release, version) = release();
    out.push(Check {
        feature: "kernel",
        required: true,
        ok: version.is_some_and(|v| v >= FLOOR),
        detail: format!("Linux {release}; sgctl needs {}.{} or later (tested: 6.1 and 6.18)", FLOOR.0, FLOOR.1),
    });
    let probe = |r: std::io::Result<()>| match r {
        Ok(()) => (true, String::new()),
        Err(e) => (false, e.to_string()),
    };
    let (ok, why) = probe(probe_map(sys::BPF_MAP_TYPE_ARRAY, (4, 8), 0).map(drop));
    out.push(Check { feature: "bpf", required: true, ok, detail: detail(ok, "bpf(2) creates maps", &why) });
    let (ok, why) = probe(probe_map_in_map());
    out.push(Check {
        feature: "map-in-map",
        required: true,
        ok,
        detail: detail(ok, "arrays of LPM tries and hashes, inner maps without BTF", &why),
    });
    let (ok, why) = probe(probe_map(sys::BPF_MAP_TYPE_RINGBUF, (0, 0), 0).map(drop));
    out.push(Check { feature: "ring buffer", required: true, ok, detail: detail(ok, "flow events (Linux 5.8)", &why) });
    let bpffs = bpffs_at(state_dir);
    out.push(Check { feature: "bpffs", required: false, ok: bpffs.0, detail: bpffs.1 });
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    out.push(Check {
        feature: "BTF",
        required: false,
        ok: true,
        detail: if btf {
            "/sys/kernel/btf/vmlinux present (sgctl does not need it: its programs carry their own BTF)".into()
        } else {
            "no /sys/kernel/btf/vmlinux (sgctl does not need it: its programs carry their own BTF)".into()
        },
    });
    let tcx = has_tcx();
    out.push(Check {
        feature: "tcx",
        required: false,
        ok: true,
        detail: if tcx {
            "present: tc programs attach as tcx links, first in line".into()
        } else {
            "absent (Linux 6.6 adds it): tc programs go on the clsact hook".into()
        },
    });
    let (ok, why) = probe(probe_clsact());
    out.push(Check {
        feature: "clsact",
        required: !tcx,
        ok,
        detail: detail(ok, "the clsact qdisc and cls_bpf direct-action filters", &why),
    });
    out.push(Check { feature: "memlock", required: false, ok: true, detail: memlock() });
    out
}

fn detail(ok: bool, what: &str, why: &str) -> String {
    if ok {
        what.to_owned()
    } else {
        format!("{what}: {why}")
    }
}

/// Refuses, in one line naming the feature, a kernel sgctl cannot filter
/// with. Asked once per process (cheap: a few map creations; the clsact
/// probe only where there is no tcx).
pub fn require() -> anyhow::Result<()> {
    static VERDICT: OnceLock<Result<(), String>> = OnceLock::new();
    VERDICT
        .get_or_init(|| {
            let (release, version) = release();
            if version.is_none_or(|v| v < FLOOR) {
                return Err(format!(
                    "this kernel (Linux {release}) is older than {}.{}, the oldest sgctl supports; `sgctl doctor` says what it has",
                    FLOOR.0, FLOOR.1
                ));
            }
            let missing = |feature: &str, e: std::io::Error| {
                Err(format!("this kernel lacks {feature} ({e}), which sgctl needs; `sgctl doctor` says what it has"))
            };
            if let Err(e) = probe_map_in_map() {
                return missing("arrays of maps", e);
            }
            if let Err(e) = probe_map(sys::BPF_MAP_TYPE_RINGBUF, (0, 0), 0) {
                return missing("BPF ring buffers", e);
            }
            if !has_tcx() {
                if let Err(e) = probe_clsact() {
                    return missing("both tcx and the clsact qdisc with cls_bpf (CONFIG_NET_SCH_INGRESS, CONFIG_NET_CLS_BPF)", e);
                }
            }
            Ok(())
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Creates (and drops) a map of `map_type`; ring buffers get one page.
fn probe_map(map_type: u32, (key, value): (u32, u32), flags: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    let entries = if map_type == sys::BPF_MAP_TYPE_RINGBUF { 4096 } else { 1 };
    sys::create_map("sg_probe", map_type, (key, value), entries, flags, None)
}

/// An array of LPM tries, its template and inner trie without BTF: what
/// every policy map is.
fn probe_map_in_map() -> std::io::Result<()> {
    use std::os::fd::AsFd as _;
    const BPF_F_NO_PREALLOC: u32 = 1;
    let trie = || probe_map(sys::BPF_MAP_TYPE_LPM_TRIE, (8, 8), BPF_F_NO_PREALLOC);
    let template = trie()?;
    let outer = sys::create_map("sg_probe", sys::BPF_MAP_TYPE_ARRAY_OF_MAPS, (4, 4), 2, 0, Some(template.as_fd()))?;
    let inner = trie()?;
    sys::update(outer.as_fd(), &0u32.to_ne_bytes(), &(std::os::fd::AsRawFd::as_raw_fd(&inner) as u32).to_ne_bytes())
}

/// A cls_bpf direct-action filter on the clsact ingress hook of the
/// loopback device of a network namespace made for the probe (and gone
/// with the thread that made it): nothing of the host's changes.
fn probe_clsact() -> std::io::Result<()> {
    std::thread::spawn(|| -> std::io::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        let program = sys::load_pass_classifier()?;
        let io = |e: anyhow::Error| std::io::Error::other(format!("{e:#}"));
        clsact::ensure_qdisc(1).map_err(io)?;
        let program = clsact::Program { fd: std::os::fd::AsFd::as_fd(&program), name: "sg_probe" };
        let slot = clsact::Slot { priority: clsact::PRIORITY, handle: clsact::HANDLE };
        clsact::put(1, clsact::Direction::Ingress, slot, &program, clsact::Put::Add).map_err(io)
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("the probe thread panicked")))
}

/// Whether `state_dir`'s bpffs is there (sgctl mounts /sys/fs/bpf itself if not).
fn bpffs_at(state_dir: &Path) -> (bool, String) {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let mut dir = state_dir;
    while !dir.exists() {
        let Some(parent) = dir.parent() else { break };
        dir = parent;
    }
    match nix::sys::statfs::statfs(dir) {
        Ok(fs) if fs.filesystem_type().0 == BPF_FS_MAGIC => (true, format!("{} is on bpffs", dir.display())),
        Ok(_) => (
            false,
            format!(
                "{} is not on bpffs: sgctl mounts bpffs on /sys/fs/bpf when the state directory is under it",
                dir.display()
            ),
        ),
        Err(e) => (false, format!("{}: {e}", dir.display())),
    }
}

/// RLIMIT_MEMLOCK and the memory cgroup's limit: since Linux 5.11 BPF maps
/// are charged to the memory cgroup, not to RLIMIT_MEMLOCK.
fn memlock() -> String {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into `limit`.
    let rlimit = if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        std::io::Error::last_os_error().to_string()
    } else if limit.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        super::memory::human(limit.rlim_cur)
    };
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| c.lines().find_map(|l| l.strip_prefix("0::").map(str::to_owned)))
        .map_or_else(
            || "unknown".to_owned(),
            |path| {
                std::fs::read_to_string(format!("/sys/fs/cgroup{path}/memory.max"))
                    .map_or_else(|_| "none: the root cgroup".to_owned(), |m| m.trim().to_owned())
            },
        );
    format!("maps are charged to the memory cgroup (memory.max: {cgroup}), not RLIMIT_MEMLOCK ({rlimit})")
}
