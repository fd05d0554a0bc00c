//! B6 of `cargo xtask bench`: how long the kernel takes to load (verify
//! and JIT) each of sgctl's programs, and how many instructions its
//! verifier processed for it. The load is what `sgctl apply`/`attach` of a
//! fresh interface and the agent's hotplug wait for.
//!
//! Each program is loaded [`ROUNDS`] times from a fresh copy of the object
//! (maps on a throwaway bpffs directory), for an Ethernet device and for a
//! device without a link-layer header; the median load time is reported.
//!
//! Usage (through `cargo xtask bench b6`):
//! `cargo bench -p firewall-ctl --bench load -- --out FILE`.
use std::{path::PathBuf, time::Instant};

use anyhow::Context as _;
use aya::programs::{SchedClassifier, Xdp};
use firewall_common::conntrack::DEFAULT_CAPACITY;
use firewall_ctl::datapath::{self, hooks::LinkLayer, maps, Pins, PROG_EGRESS_TC, PROG_INGRESS_TC, PROG_INGRESS_XDP};
use serde_json::json;

const ROUNDS: usize = 5;

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(nix::unistd::Uid::effective().is_root(), "the benchmark loads eBPF programs: run it as root");
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(PathBuf::from);
    let out = arg("--out");
    // `--object FILE`: another build of the kernel programs than sgctl's own.
    let object = match arg("--object") {
        Some(path) => std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        None => datapath::OBJECT.to_vec(),
    };

    let mut rows = Vec::new();
    for (link, link_name, programs) in [
        (LinkLayer::Ethernet, "ethernet", &[PROG_INGRESS_XDP, PROG_INGRESS_TC, PROG_EGRESS_TC][..]),
        (LinkLayer::BareIp, "bare-ip", &[PROG_INGRESS_TC, PROG_EGRESS_TC][..]),
    ] {
        for &program in programs {
            let mut times = Vec::new();
            let mut insns = None;
            for round in 0..ROUNDS {
                let (ms, verified) = load_once(&object, link, program, round)?;
                times.push(ms);
                insns = verified;
            }
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            let insns_text = insns.map_or_else(|| "?".to_owned(), |n| n.to_string());
            println!("{link_name:<9} {program:<15} load {median:>8.1} ms   verifier processed {insns_text:>8} insns");
            rows.push(json!({
                "link": link_name, "program": program, "load_ms_median": median,
                "load_ms": times, "verified_insns": insns,
            }));
        }
    }
    if let Some(out) = out {
        let doc = json!({ "rounds": ROUNDS, "rows": rows });
        std::fs::write(&out, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// Loads `program` of a fresh copy of the object: milliseconds spent in the
/// kernel's BPF_PROG_LOAD (timed around `load()`), and the verifier's count.
fn load_once(
    object: &[u8],
    link: LinkLayer,
    program: &'static str,
    round: usize,
) -> anyhow::Result<(f64, Option<u32>)> {
    let dir = PathBuf::from(format!("/sys/fs/bpf/sgctl-bench-load-{}-{round}", std::process::id()));
    std::fs::create_dir_all(&dir).context("creating a directory on bpffs (/sys/fs/bpf)")?;
    let result = (|| {
        let active = dir.join(maps::ACTIVE);
        maps::create_active(&active)?;
        let net_offset = if link == LinkLayer::BareIp { 14 } else { 0 };
        let mut ebpf = datapath::load_object(object, &Pins::new(&dir, active), DEFAULT_CAPACITY, link, net_offset)?;
        let p = ebpf.program_mut(program).with_context(|| program.to_owned())?;
        let start = Instant::now();
        let (ms, info) = if program == PROG_INGRESS_XDP {
            let p: &mut Xdp = p.try_into()?;
            p.load().with_context(|| format!("loading {program}"))?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            (ms, p.info()?)
        } else {
            let p: &mut SchedClassifier = p.try_into()?;
            p.load().with_context(|| format!("loading {program}"))?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            (ms, p.info()?)
        };
        Ok((ms, info.verified_instruction_count()))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
