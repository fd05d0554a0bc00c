//! B1: per-packet cost under BPF_PROG_TEST_RUN, beside an empty XDP
//! program (the floor). The measuring code needs sgctl's library (it loads
//! the real programs and fills their maps), so it lives in
//! `firewall-ctl/benches/datapath.rs`; this module writes its policies,
//! runs it and turns its JSON into the report.
use serde_json::json;

use super::{
    harness::{bench_json, cell, Bench, Report},
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
    let policies: Vec<String> = {
        let mut seen: Vec<String> = Vec::new();
        for r in &rows {
            let p = r["policy"].as_str().unwrap_or_default().to_owned();
            if !seen.contains(&p) {
                seen.push(p);
            }
        }
        seen
    };
    for family in ["IPv4", "IPv6"] {
        let cases = ["tracked flow", "new flow", "dropped packet"];
        let find = |policy: &str, case: &str| {
            rows.iter().find(|r| r["policy"] == policy && r["family"] == family && r["case"] == case)
        };
        // The smallest cost above the floor of each case, over the policies.
        let smallest: Vec<f64> = cases
            .iter()
            .map(|c| {
                policies
                    .iter()
                    .filter_map(|p| find(p, c).and_then(|r| r["above_floor_ns"].as_f64()))
                    .fold(f64::NAN, f64::min)
            })
            .collect();
        let mut table = Vec::new();
        for policy in &policies {
            let mut row = vec![policy.clone()];
            let not_loadable = rows.iter().find(|r| r["policy"] == policy.as_str() && r.get("family").is_none());
            if let Some(r) = not_loadable {
                row.push(r["status"].as_str().unwrap_or_default().to_owned());
                row.extend(std::iter::repeat_n(String::new(), 2 * cases.len()));
            } else {
                for (i, case) in cases.iter().enumerate() {
                    let r = find(policy, case);
                    let ns = r.and_then(|r| r["ns"].as_f64()).unwrap_or(f64::NAN);
                    let floor = r.and_then(|r| r["floor_ns"].as_f64()).unwrap_or(f64::NAN);
                    let above = ns - floor;
                    row.push(format!("{} ({})", cell(ns, 0), cell(floor, 0)));
                    row.push(format!("{} / {}", cell(above, 0), super::harness::ratio(above, smallest[i])));
                }
                row.insert(1, String::new());
            }
            table.push(row);
        }
        report.table(
            &format!("{family}: ns per packet (floor), and ns above the floor / ratio to the smallest case"),
            &[
                "policy",
                "status",
                "tracked flow ns (floor)",
                "above / ratio",
                "new flow ns (floor)",
                "above / ratio",
                "dropped ns (floor)",
                "above / ratio",
            ],
            &table,
        );
    }
    report.note(&format!(
        "Each figure is the median of {} rounds. Tracked and dropped: {} sources, each frame run {} times in one \
         call (the kernel's mean per run); the floor is the empty XDP program on the same frames in the same \
         round. New flow: {} fresh flows per round, one run per call, floor measured the same way (so both \
         include the call's own overhead). `rules-N`: N rules, one /24 each, the allowing rules last; \
         `cidrs-N`: N varied CIDRs (half IPv4, half IPv6, prefixes /16-/32 and /48-/128) in a prefix list the \
         allowing rule uses, probes drawn from random hosts of random CIDRs of the list; `hosts-1m`: the same \
         with a million single addresses (/32 and /128), probes drawn from them.",
        doc["rounds"], doc["sources"], doc["repeat"], doc["new_flows"]
    ));
    report.json["results"] = json!(rows);
    Ok(report)
}
