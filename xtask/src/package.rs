//! `cargo xtask package`: the Debian package, `target/debian/sgctl_*.deb`,
//! built by cargo-deb from `[package.metadata.deb]` in firewall-ctl's
//! Cargo.toml, then checked with lintian.
//!
//! What cargo-deb cannot take from the tree as it is, this stages under
//! `target/release/deb/` from the release binary first: the man pages
//! (`sgctl man-pages`, as `cargo xtask man`), the completion scripts, and
//! the units of `packaging/` with the package's paths (`/usr/sbin/sgctl`).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::{bootstrap, build, install, man, sh};

/// Where cargo-deb leaves the package.
pub fn out_dir() -> PathBuf {
    sh::root().join("target/debian")
}

/// What the assets in firewall-ctl's Cargo.toml name as `target/release/deb/`.
fn staging_dir() -> PathBuf {
    sh::root().join("target/release/deb")
}

/// Completion scripts: shell, and the file name its vendor directory expects.
const COMPLETIONS: [(&str, &str); 3] = [("bash", "sgctl"), ("zsh", "_sgctl"), ("fish", "sgctl.fish")];

pub fn run() -> anyhow::Result<()> {
    bootstrap::run()?;
    build::build_sgctl()?;
    stage(&build::sgctl_path())?;
    let deb = build_deb()?;
    add_md5sums(&deb)?;
    lint(&deb)?;
    sh::step("package", &format!("{} ready", deb.display()));
    println!("list it with `dpkg-deb -c {}`; install it with `apt install {}`", deb.display(), deb.display());
    Ok(())
}

/// Writes what the package's assets take from the release binary.
fn stage(sgctl: &Path) -> anyhow::Result<()> {
    let dir = staging_dir();
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let (man_dir, completions, units) = (dir.join("man"), dir.join("completions"), dir.join("systemd"));
    for d in [&man_dir, &completions, &units] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // Man pages are installed compressed (Debian policy 12.1); -n keeps the
    // name and time out of the archive, so the package is reproducible.
    for page in man::write_pages(sgctl, &man_dir)? {
        sh::run(Command::new("gzip").args(["-9", "-n", "-f"]).arg(man_dir.join(page)))?;
    }
    for (shell, file) in COMPLETIONS {
        let script = sh::stdout(Command::new(sgctl).args(["completions", shell]))?;
        fs::write(completions.join(file), script)?;
    }
    for unit in install::UNITS {
        let text = install::unit_text(unit, Path::new("/usr"))?;
        // A path the rewrite does not know would point outside the package.
        if let Some(line) = text.lines().find(|l| !l.starts_with('#') && l.contains("/usr/local")) {
            bail!("packaging/{unit} names a path under /usr/local that the package does not have: {line}");
        }
        fs::write(units.join(unit), text)?;
    }
    sh::step("package", &format!("man pages, completions and units staged in {}", dir.display()));
    Ok(())
}

/// Runs cargo-deb on the staged tree; returns the package's path.
fn build_deb() -> anyhow::Result<PathBuf> {
    let out = out_dir();
    // One package in the directory, so nothing stale is ever picked up.
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    let printed = sh::stdout(sh::cargo().args(["deb", "-p", "firewall-ctl", "--no-build", "--output"]).arg(&out))?;
    let deb = printed.lines().rev().map(str::trim).find(|l| l.ends_with(".deb")).map(PathBuf::from);
    match deb {
        Some(deb) if deb.is_file() => Ok(deb),
        _ => bail!("cargo deb did not name the package it wrote: {printed}"),
    }
}

/// Repacks the package with `DEBIAN/md5sums`, as dh_md5sums writes it for
/// every Debian package: cargo-deb writes none, and without it `dpkg
/// --verify sgctl` (or debsums) cannot tell that `/usr/sbin/sgctl` was
/// changed. dpkg-deb builds the archive again with the same modes, root
/// ownership and mtimes clamped to the ones cargo-deb wrote.
fn add_md5sums(deb: &Path) -> anyhow::Result<()> {
    let tree = out_dir().join("tree");
    sh::run(Command::new("dpkg-deb").arg("--raw-extract").arg(deb).arg(&tree))?;
    let mut files = Vec::new();
    collect_files(&tree, &tree, &mut files)?;
    files.sort();
    let sums = sh::stdout(Command::new("md5sum").args(&files).current_dir(&tree))?;
    fs::write(tree.join("DEBIAN/md5sums"), sums)?;
    let epoch = fs::metadata(tree.join("usr/sbin/sgctl"))?.modified()?;
    let epoch = epoch.duration_since(std::time::UNIX_EPOCH)?.as_secs();
    sh::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&tree)
            .arg(deb)
            .env("SOURCE_DATE_EPOCH", epoch.to_string()),
    )?;
    fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    Ok(())
}

/// The regular files under `dir` outside `DEBIAN/`, relative to `root`.
fn collect_files(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let rel = path.strip_prefix(root)?.to_path_buf();
        if rel == Path::new("DEBIAN") {
            continue;
        }
        let kind = fs::symlink_metadata(&path)?.file_type();
        if kind.is_dir() {
            collect_files(root, &path, files)?;
        } else if kind.is_file() {
            files.push(rel);
        }
    }
    Ok(())
}

/// lintian at its default level (errors and warnings): any tag fails, unless
/// `packaging/debian/lintian-overrides` overrides it with a reason.
fn lint(deb: &Path) -> anyhow::Result<()> {
    let out = sh::output(Command::new("lintian").args(["--fail-on", "error,warning"]).arg(deb))?;
    let text: String = [out.stdout, out.stderr]
        .iter()
        .flat_map(|o| String::from_utf8_lossy(o).lines().map(str::to_owned).collect::<Vec<_>>())
        // Said to root whatever the package: we run as root.
        .filter(|l| l != "running with root privileges is not recommended!")
        .map(|l| l + "\n")
        .collect();
    if !out.status.success() {
        bail!("lintian {}: {}\n{text}", deb.display(), out.status);
    }
    sh::step("lintian", if text.trim().is_empty() { "clean" } else { text.trim() });
    Ok(())
}
