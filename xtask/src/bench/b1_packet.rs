//! B1: per-packet cost under BPF_PROG_TEST_RUN, beside an empty XDP
//! program (the floor). The measuring code needs sgctl's library (it loads
//! the real programs and fills their maps), so it lives in
//! `firewall-ctl/benches/datapath.rs`; this module writes its policies,
//! runs it and turns its JSON into the report.
use serde_json::json;

use super::{
    harness::{bench_json, Bench, Report},
    policies,
};
use crate::sh;

pub fn run(b: &Bench) -> anyhow::Result<Report> {
    let dir = b.work.join("policies");
    policies::packet_set(&dir)?;
    let out = b.work.join("b1.json");
    let mut cmd = sh::cargo();
    cmd.args(["bench", "-p", "firewall-ctl", "--bench", "datapath", "--", "--policies"])
        .arg(&dir)
        .arg("--out")
        .arg(&out);
    let doc = bench_json(&mut cmd, &out)?;
    let rows = doc["rows"].as_array().cloned().unwrap_or_default();

    let mut report = Report::new("b1", "per-packet cost (BPF_PROG_TEST_RUN, XDP, beside an empty program)");
    report.json["method"] = json!({"rounds": doc["rounds"], "sources": doc["sources"], "repeat": doc["repeat"], "new_flows": doc["new_flows"]});
    report.json["results"] = json!(rows);
    Ok(report)
}
