//! `cargo xtask bench`: bootstrap, then firewall-ctl's `datapath` benchmark
//! (per-packet cost under BPF_PROG_TEST_RUN beside an empty XDP program,
//! and `sgctl apply` beside `nft -f`, measured in the same run).
use anyhow::{bail, Context as _};

use crate::{bootstrap, sh};

pub fn run() -> anyhow::Result<()> {
    sh::require_root("bench")?;
    bootstrap::run()?;
    let mut cmd = sh::cargo();
    cmd.args(["bench", "-p", "firewall-ctl", "--bench", "datapath"]);
    let what = sh::describe(&cmd);
    let status = cmd.status().with_context(|| format!("cannot start `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}
