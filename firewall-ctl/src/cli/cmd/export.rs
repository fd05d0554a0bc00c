//! `sgctl export nftables FILE... [--linear] [--attach IFACE=A,B]...`: the
//! policy for another enforcer, on stdout. Changes nothing.
use std::io::Write as _;

use anyhow::Context as _;

use crate::{
    cli::ExportFormat,
    export::{self, nftables, Interface},
    netns, policy, InputError,
};

pub fn run(format: &ExportFormat, json: bool) -> anyhow::Result<()> {
    if json {
        return Err(InputError::ExportAsJson.into());
    }
    let ExportFormat::Nftables(args) = format;
    let policy = policy::load_files(&args.files)?;
    let extra: Vec<Interface> =
        args.attach.iter().map(|(name, groups)| Interface { name: name.clone(), groups: groups.clone() }).collect();
    let interfaces = export::interfaces(&policy, &extra);
    // As `apply` does: a group carried by a local interface has its addresses as members.
    let addresses = netns::addresses().context("reading interface addresses")?;
    let local = export::local_members(&interfaces, &addresses);
    let text = nftables::ruleset(&policy, &interfaces, &local, nftables::Options { linear: args.linear })?;
    if interfaces.is_empty() {
        eprintln!(
            "sgctl: no interface carries a group (name them under `interfaces:` or with --attach IFACE=GROUP): \
             the ruleset filters nothing"
        );
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).context("writing the ruleset")?;
    stdout.flush().context("writing the ruleset")
}
