//! B6: how long the kernel takes to load (verify and JIT) each of sgctl's
//! programs, and how many instructions its verifier processed. A fresh
//! `sgctl apply`/`attach` and the agent's hotplug wait for these loads.
//! The measuring code loads the real object through sgctl's library, so it
//! lives in `firewall-ctl/benches/load.rs`; this module runs it and turns
//! its JSON into the report.
use serde_json::json;

use super::harness::{bench_json, Bench, Report};
use crate::sh;

pub fn run(b: &Bench) -> anyhow::Result<Report> {
    let out = b.work.join("b6.json");
    let mut cmd = sh::cargo();
    cmd.args(["bench", "-p", "firewall-ctl", "--bench", "load", "--", "--out"]).arg(&out);
    let doc = bench_json(&mut cmd, &out)?;
    let rows = doc["rows"].as_array().cloned().unwrap_or_default();

    let mut report = Report::new("b6", "program load time (BPF_PROG_LOAD: verifier and JIT)");
    report.json["rounds"] = doc["rounds"].clone();
    report.json["results"] = json!(rows);
    Ok(report)
}
