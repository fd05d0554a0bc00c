//! B8: the agent's flow logs with per-flow accounting, at 10k, 100k and
//! 1M tracked flows, every one of which moved in every window (one record
//! per flow and direction: the worst case). The measuring code needs
//! sgctl's library (it loads the real programs, fills their conntrack
//! table and runs the agent's window work on it), so it lives in
//! `firewall-ctl/benches/flowlog.rs`; this module runs it and turns its
//! JSON into the report.
use serde_json::json;

use super::harness::{bench_json, Bench, Report};
use crate::sh;

pub fn run(b: &Bench) -> anyhow::Result<Report> {
    let out = b.dir("b8")?.join("b8.json");
    let mut cmd = sh::cargo();
    cmd.args(["bench", "-p", "firewall-ctl", "--bench", "flowlog", "--", "--out"]).arg(&out);
    let doc = bench_json(&mut cmd, &out)?;
    let mut report = Report::new("b8", "flow logs with accounting: the agent's window at 10k, 100k and 1M flows");
    report.json["method"] = json!({"window_s": doc["window_s"], "windows": doc["windows"]});
    report.json["results"] = doc["rows"].clone();
    Ok(report)
}
