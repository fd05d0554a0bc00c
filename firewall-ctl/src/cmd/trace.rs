//! `sgctl trace`: placeholder until the trace reader lands.
use crate::{cli::TraceArgs, control::Host};

pub fn run(_host: &Host, _args: &TraceArgs, _json: bool) -> anyhow::Result<()> {
    anyhow::bail!("sgctl trace: not yet")
}
