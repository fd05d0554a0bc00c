//! `cargo xtask man`: man pages generated from sgctl's clap definitions
//! (`sgctl man-pages`, built on clap_mangen) into `target/man/`: `sgctl.1`
//! and one page per verb (`sgctl-apply.1`, `sgctl-import-aws.1`, …).
//! `cargo xtask package` writes the same pages from the release binary.
use std::path::{Path, PathBuf};

use crate::{bootstrap, sh};

/// Where the pages go.
pub fn out_dir() -> PathBuf {
    sh::root().join("target/man")
}

pub fn run() -> anyhow::Result<()> {
    // sgctl embeds the eBPF object, so building it needs the bootstrap.
    bootstrap::run()?;
    sh::run(sh::cargo().args(["build", "-p", "firewall-ctl", "--bin", "sgctl"]))?;
    let dir = out_dir();
    let pages = write_pages(&sh::root().join("target/debug/sgctl"), &dir)?;
    sh::step("man", &format!("{} pages in {}: {}", pages.len(), dir.display(), pages.join(" ")));
    println!(
        "read one with `man -l {}/sgctl.1`; install with `cp {}/*.1 /usr/local/share/man/man1/`",
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// Has `sgctl` write its pages into `dir`; returns their file names, sorted.
pub fn write_pages(sgctl: &Path, dir: &Path) -> anyhow::Result<Vec<String>> {
    sh::run(std::process::Command::new(sgctl).arg("man-pages").arg(dir))?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".1"))
        .collect();
    pages.sort();
    Ok(pages)
}
