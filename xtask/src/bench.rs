//! `cargo xtask bench`: a placeholder until the benchmarks exist.
use anyhow::bail;

pub fn run() -> anyhow::Result<()> {
    bail!("xtask bench: not implemented yet")
}
