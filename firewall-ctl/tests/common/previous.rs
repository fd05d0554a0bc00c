//! The `sgctl` an upgrade starts from: the last commit before the
//! two-table conntrack layout, whose interfaces have one 40-byte-key table
//! (`firewall_common::conntrack::legacy`). Built for real from this
//! repository's history (`git archive`, its own source tree and target
//! directory under `target/previous/`), once: about five minutes on the
//! 2-core VM, then reused by every run.
use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
};

/// The release before the two-table layout.
pub const COMMIT: &str = "e70198327ed4a9d30cbe31a1dcb0793ce6e5baa4";

/// The previous release's `sgctl`, built if missing.
pub fn sgctl() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("target/previous").join(&COMMIT[..12]);
    let bin = dir.join("sgctl");
    if bin.exists() {
        return bin;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    // One builder at a time; the others wait and find it built.
    let lock = File::create(dir.join(".lock")).expect("lock file");
    // SAFETY: flock on a descriptor we own, held until `lock` drops.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0, "flock");
    if bin.exists() {
        return bin;
    }
    let src = dir.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).expect("source directory");
    let archive = format!("git -C '{}' archive {COMMIT} | tar -x -C '{}'", root.display(), src.display());
    run(Command::new("sh").args(["-c", &archive]), "unpacking the previous release (needs the git history)");
    eprintln!("building the previous release's sgctl ({COMMIT}) once, into {}", dir.display());
    run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "-p", "firewall-ctl", "--bin", "sgctl"])
            .current_dir(&src)
            .env("CARGO_TARGET_DIR", dir.join("target")),
        "building the previous release",
    );
    let tmp = dir.join("sgctl.new");
    std::fs::copy(dir.join("target/debug/sgctl"), &tmp).expect("copying the previous sgctl");
    std::fs::rename(&tmp, &bin).expect("installing the previous sgctl");
    bin
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what}: {status}");
}
