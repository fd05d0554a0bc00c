//! `sgctl publish FILE... --etcd URL`.
use std::path::PathBuf;

use crate::{
    cli::output::print_json,
    fleet::{publish, EtcdArgs},
};

pub fn run(files: &[PathBuf], etcd: &EtcdArgs, json: bool) -> anyhow::Result<()> {
    let published = publish::publish(etcd, files)?;
    if json {
        return print_json(&published);
    }
    let plural = |n: usize, one: &str| if n == 1 { format!("1 {one}") } else { format!("{n} {one}s") };
    crate::outln!(
        "published policy generation {} at {} (etcd revision {}): {}, {}",
        published.generation,
        published.key,
        published.revision,
        plural(published.groups, "group"),
        plural(published.prefix_lists, "prefix list")
    );
    Ok(())
}
