//! `sgctl completions SHELL [--dynamic]` and the hidden `sgctl man-pages
//! DIR`: both generated from the clap definitions in `cli`, so they never
//! drift from the parser.
use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::{env::Shells, Shell};

use crate::cli::{completers, Cli};

pub fn completions(shell: Shell, dynamic: bool) -> anyhow::Result<()> {
    let mut script = Vec::new();
    if dynamic {
        // The shell calls `SGCTL_COMPLETE=<shell> sgctl -- <words>` on each
        // TAB; `main` answers through clap_complete's CompleteEnv.
        let shells = Shells::builtins();
        let registrar =
            shells.completer(&shell.to_string()).with_context(|| format!("no dynamic completions for {shell}"))?;
        registrar.write_registration(completers::ENV_VAR, "sgctl", "sgctl", "sgctl", &mut script)?;
    } else {
        clap_complete::generate(shell, &mut Cli::command(), "sgctl", &mut script);
    }
    crate::out!("{}", String::from_utf8_lossy(&script));
    Ok(())
}

pub fn man_pages(out_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    clap_mangen::generate_to(Cli::command(), out_dir)
        .with_context(|| format!("writing man pages into {}", out_dir.display()))?;
    Ok(())
}
