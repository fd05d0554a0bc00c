//! B6: how long the kernel takes to load (verify and JIT) each of sgctl's
//! programs, and how many instructions its verifier processed. A fresh
//! `sgctl apply`/`attach` and the agent's hotplug wait for these loads.
//! The measuring code loads the real object through sgctl's library, so it
//! lives in `firewall-ctl/benches/load.rs`; this module runs it and turns
//! its JSON into the report.
use serde_json::json;

use super::harness::{bench_json, cell, Bench, Report};
use crate::sh;

pub fn run(b: &Bench) -> anyhow::Result<Report> {
    let out = b.work.join("b6.json");
    let mut cmd = sh::cargo();
    cmd.args(["bench", "-p", "firewall-ctl", "--bench", "load", "--", "--out"]).arg(&out);
    let doc = bench_json(&mut cmd, &out)?;
    let rows = doc["rows"].as_array().cloned().unwrap_or_default();

    let mut report = Report::new("b6", "program load time (BPF_PROG_LOAD: verifier and JIT)");
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r["link"].as_str().unwrap_or_default().to_owned(),
                r["program"].as_str().unwrap_or_default().to_owned(),
                cell(r["load_ms_median"].as_f64().unwrap_or(f64::NAN), 1),
                r["verified_insns"].as_u64().map_or_else(|| "?".to_owned(), |n| n.to_string()),
            ]
        })
        .collect();
    report.table(
        "Median load time of each program",
        &["link layer", "program", "load ms (median)", "insns the verifier processed"],
        &table,
    );
    report.note(&format!(
        "Each program of a fresh copy of the object (maps on a throwaway bpffs directory) loaded {} times; \
         the time is the `load()` call, nearly all of it BPF_PROG_LOAD. `bare-ip`: the copy for a device \
         without an Ethernet header (LINK_BARE_IP set), which sgctl loads for tun, WireGuard and the like.",
        doc["rounds"]
    ));
    report.json["results"] = json!(rows);
    Ok(report)
}
