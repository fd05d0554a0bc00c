//! `sgctl doctor`: what this kernel can do for sgctl, asked of it, and
//! which hooks each interface of the namespace would get. Changes nothing
//! (its clsact probe runs in a network namespace of its own).
use serde::Serialize;

use crate::{
    cli::output::print_json,
    datapath::{
        attach::Placement,
        hooks,
        kernel::{self, Check},
    },
    state::records::Mode,
};

#[derive(Serialize)]
struct Doctor {
    /// `uname -r`.
    kernel: String,
    /// Every required check passed: `apply`, `attach` and `restore` will run.
    ok: bool,
    checks: Vec<Check>,
    interfaces: Vec<Interface>,
}

/// An interface and the hooks `--mode auto` gives it here.
#[derive(Serialize)]
struct Interface {
    interface: String,
    /// The driver kind (`veth`, `wireguard`, …; `nic` for a device on a
    /// bus), or null.
    kind: Option<String>,
    /// `xdp-native`, `tc`, `clsact`; null when sgctl refuses the device.
    ingress: Option<&'static str>,
    egress: Option<&'static str>,
    /// Why sgctl refuses it, or a note on XDP.
    note: Option<String>,
}

pub fn run(state_dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let checks = kernel::checks(state_dir);
    let ok = checks.iter().all(|c| c.ok || !c.required);
    let interfaces = interfaces()?;
    let report = Doctor { kernel: kernel::release().0, ok, checks, interfaces };
    if json {
        print_json(&report)?;
    } else {
        crate::outln!("Linux {}", report.kernel);
        for c in &report.checks {
            let verdict = match (c.ok, c.required) {
                (true, _) => "ok",
                (false, true) => "MISSING",
                (false, false) => "absent",
            };
            crate::outln!("  {verdict:<8}{:<13}{}", c.feature, c.detail);
        }
        crate::outln!("interfaces, with --mode auto:");
        for i in &report.interfaces {
            let kind = i.kind.as_deref().unwrap_or("-");
            match (i.ingress, i.egress) {
                (Some(ingress), Some(egress)) => {
                    let note = i.note.as_deref().map_or(String::new(), |n| format!(" ({n})"));
                    crate::outln!("  {:<16}{kind:<12}ingress {ingress}, egress {egress}{note}", i.interface);
                }
                _ => crate::outln!("  {:<16}{kind:<12}refused: {}", i.interface, i.note.as_deref().unwrap_or("")),
            }
        }
    }
    if !report.ok {
        let missing: Vec<&str> = report.checks.iter().filter(|c| c.required && !c.ok).map(|c| c.feature).collect();
        anyhow::bail!("this kernel lacks what sgctl needs: {}", missing.join(", "));
    }
    Ok(())
}

fn interfaces() -> anyhow::Result<Vec<Interface>> {
    let mut out = Vec::new();
    for entry in nix::net::if_::if_nameindex()?.iter() {
        let ifname = entry.name().to_string_lossy().into_owned();
        let kind = hooks::link_facts(&ifname)
            .ok()
            .and_then(|f| f.kind)
            .or_else(|| crate::netns::is_physical(&ifname).then(|| "nic".to_owned()));
        let (ingress, egress, note) = match hooks::check(&ifname, Mode::Auto).and_then(|()| placement(&ifname)) {
            Ok(at) => {
                let tc = if at.clsact { "clsact" } else { "tc" };
                let note = at.xdp.then(|| "native XDP; tc where the driver lacks it".to_owned());
                (Some(if at.xdp { "xdp-native" } else { tc }), Some(tc), note)
            }
            Err(e) => (None, None, Some(format!("{e:#}"))),
        };
        out.push(Interface { interface: ifname, kind, ingress, egress, note });
    }
    Ok(out)
}

/// The placement `--mode auto` would choose, without refusing a taken XDP hook.
fn placement(ifname: &str) -> anyhow::Result<Placement> {
    hooks::plan(ifname, Mode::Auto, &[])
}
