//! The stored results, `bench/results/bN.json`, read back: the one source
//! of every number in the generated tables and figures (`tables`,
//! `figures`), whichever run wrote them.
use std::{collections::BTreeMap, path::Path};

use anyhow::Context as _;
use serde_json::Value;

use super::harness::median;

/// Every `bN.json` of a results directory, by benchmark id (`b1`, …).
pub struct Results(BTreeMap<String, Value>);

impl Results {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let mut all = BTreeMap::new();
        let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let Some(id) = path.file_stem().and_then(|s| s.to_str()) else { continue };
            if path.extension().is_some_and(|e| e == "json") && id.starts_with('b') {
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                let doc = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
                all.insert(id.to_owned(), doc);
            }
        }
        Ok(Self(all))
    }

    /// One benchmark's document, if it has been run.
    pub fn get(&self, id: &str) -> Option<&Value> {
        self.0.get(id)
    }

    /// One benchmark's result rows (empty if it has not been run).
    pub fn rows(&self, id: &str) -> &[Value] {
        self.get(id).and_then(|d| d["results"].as_array()).map_or(&[], Vec::as_slice)
    }
}

/// A number of the JSON; NaN when absent.
pub fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// A string of the JSON; empty when absent.
pub fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// The median of a JSON array of numbers (or the number itself).
pub fn median_of(v: &Value) -> f64 {
    match v.as_array() {
        Some(all) => median(&all.iter().map(num).collect::<Vec<_>>()),
        None => num(v),
    }
}

/// The distinct values of `key` over `rows`, in the order they first appear.
pub fn distinct<'a>(rows: &'a [Value], key: &str) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for r in rows {
        let v = text(&r[key]);
        if !v.is_empty() && !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen
}

/// B1: the row of one policy, address family and case.
pub fn b1_row<'a>(rows: &'a [Value], policy: &str, family: &str, case: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["policy"] == policy && r["family"] == family && r["case"] == case)
}

/// B2: the median packets per second of one flood, size and filter.
pub fn b2_pps(rows: &[Value], flood: &str, rules: &str, variant: &str) -> f64 {
    rows.iter()
        .find(|r| r["flood"] == flood && r["rules"] == rules && r["variant"] == variant)
        .map_or(f64::NAN, |r| num(&r["pps_median"]))
}

/// B2's filters, in the order of its tables.
pub const B2_VARIANTS: [&str; 5] = ["none", "sgctl tcx", "sgctl XDP", "nft expert", "nft linear"];

/// B5: per second of the flood, the median over the runs of one tracker
/// of the per-second series `key` (e.g. `admitted_per_second`).
pub fn b5_per_second(tracker: &Value, key: &str) -> Vec<f64> {
    let runs = tracker["runs"].as_array().map_or(&[][..], Vec::as_slice);
    let seconds = runs.iter().filter_map(|r| r[key].as_array()).map(Vec::len).max().unwrap_or(0);
    (0..seconds).map(|s| median(&runs.iter().map(|r| num(&r[key][s])).collect::<Vec<_>>())).collect()
}

/// B5: the median over the runs of one tracker of `f` of each run.
pub fn b5_median(tracker: &Value, f: impl Fn(&Value) -> f64) -> f64 {
    median(&tracker["runs"].as_array().into_iter().flatten().map(f).collect::<Vec<_>>())
}

/// The first and last value of a per-second series, NaN if empty.
pub fn first_last(series: &Value) -> (f64, f64) {
    let all = series.as_array().map_or(&[][..], Vec::as_slice);
    (all.first().map_or(f64::NAN, num), all.last().map_or(f64::NAN, num))
}
