//! `sgctl flows --top N --by bytes|packets [--since D]`: the flows that
//! carried the most, summed over the log's records (one flow: interface,
//! addresses, ports, protocol and verdict; its directions are two flows,
//! as in the records).
use std::{collections::HashMap, time::Duration};

use serde_json::{json, Value};

use super::record::Record;

/// What `--top` ranks by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Rank {
    #[default]
    Bytes,
    Packets,
}

/// `--since`: `N` seconds, or `Ns`, `Nm`, `Nh`, `Nd`.
pub fn parse_since(text: &str) -> Result<Duration, String> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| format!("invalid duration {text:?}: expected N, Ns, Nm, Nh or Nd"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    };
    secs.map(Duration::from_secs).ok_or_else(|| format!("invalid duration {text:?}: expected N, Ns, Nm, Nh or Nd"))
}

/// Whether the record's window ended at or after `since` (seconds since the epoch).
pub fn ends_after(r: &Record, since: u64) -> bool {
    r.get("end").parse::<u64>().is_ok_and(|end| end >= since)
}

/// One flow's sums.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Talker {
    /// A record of the flow (its latest), for the flow's fields.
    pub record: Record,
    pub packets: u64,
    pub bytes: u64,
    pub start: u64,
    pub end: u64,
    pub records: u64,
}

impl Talker {
    pub fn json(&self) -> Value {
        let field = |f: &str| match self.record.get(f) {
            "-" => Value::Null,
            v => v.parse::<u64>().map_or_else(|_| json!(v), |n| json!(n)),
        };
        json!({
            "interface-id": field("interface-id"),
            "flow-direction": field("flow-direction"),
            "srcaddr": field("srcaddr"),
            "dstaddr": field("dstaddr"),
            "srcport": field("srcport"),
            "dstport": field("dstport"),
            "protocol": field("protocol"),
            "action": field("action"),
            "rule-id": field("rule-id"),
            "packets": self.packets,
            "bytes": self.bytes,
            "start": self.start,
            "end": self.end,
            "records": self.records,
        })
    }
}

/// The `n` flows of `records` that carried the most by `rank`, most first
/// (ties: the earlier flow first). SKIPDATA records are no flow.
pub fn top<'a>(records: impl IntoIterator<Item = &'a Record>, n: usize, rank: Rank) -> Vec<Talker> {
    const FLOW: [&str; 8] =
        ["interface-id", "flow-direction", "srcaddr", "dstaddr", "srcport", "dstport", "protocol", "action"];
    let mut flows: HashMap<Vec<String>, Talker> = HashMap::new();
    for r in records.into_iter().filter(|r| r.get("log-status") == "OK") {
        let number = |f: &str| r.get(f).parse::<u64>().unwrap_or(0);
        let id: Vec<String> = FLOW.iter().map(|f| r.get(f).to_owned()).collect();
        let t = flows.entry(id).or_insert_with(|| Talker {
            record: r.clone(),
            packets: 0,
            bytes: 0,
            start: u64::MAX,
            end: 0,
            records: 0,
        });
        t.packets += number("packets");
        t.bytes += number("bytes");
        t.start = t.start.min(number("start"));
        t.end = t.end.max(number("end"));
        t.records += 1;
        t.record = r.clone();
    }
    let mut all: Vec<Talker> = flows.into_values().collect();
    let key = |t: &Talker| if rank == Rank::Bytes { t.bytes } else { t.packets };
    all.sort_by(|a, b| {
        key(b)
            .cmp(&key(a))
            .then(a.start.cmp(&b.start))
            .then_with(|| a.record.custom_line().cmp(&b.record.custom_line()))
    });
    all.truncate(n);
    all
}

/// `--top`'s table columns and rows.
pub fn table_rows(talkers: &[Talker]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec!["IFACE", "DIR", "PROTO", "SOURCE", "DESTINATION", "PACKETS", "BYTES", "START", "END", "ACTION"];
    let rows = talkers
        .iter()
        .map(|t| {
            let r = &t.record;
            let addr = |a: &str, p: &str| match (p, a.contains(':')) {
                ("-", _) => a.to_owned(),
                (_, true) => format!("[{a}]:{p}"),
                (_, false) => format!("{a}:{p}"),
            };
            vec![
                r.get("interface-id").to_owned(),
                r.get("flow-direction").to_owned(),
                r.get("protocol").to_owned(),
                addr(r.get("srcaddr"), r.get("srcport")),
                addr(r.get("dstaddr"), r.get("dstport")),
                t.packets.to_string(),
                t.bytes.to_string(),
                t.start.to_string(),
                t.end.to_string(),
                r.get("action").to_owned(),
            ]
        })
        .collect();
    (header, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(src: &str, packets: u64, bytes: u64, start: u64) -> Record {
        let mut r = Record::empty();
        for (f, v) in [("interface-id", "eth0"), ("dstaddr", "10.0.0.1"), ("protocol", "17"), ("action", "ACCEPT")] {
            r.set(f, v);
        }
        r.set("srcaddr", src);
        r.set("packets", packets);
        r.set("bytes", bytes);
        r.set("start", start);
        r.set("end", start + 10);
        r.set("log-status", "OK");
        r
    }

    #[test]
    fn sums_each_flow_over_its_records_and_ranks_them() {
        let records = [
            record("10.0.0.2", 10, 100_000, 0),
            record("10.0.0.3", 500, 50_000, 0),
            record("10.0.0.2", 10, 100_000, 10),
            record("10.0.0.4", 1, 60, 20),
        ];
        let by_bytes = top(&records, 2, Rank::Bytes);
        assert_eq!(by_bytes.len(), 2);
        assert_eq!(by_bytes[0].record.get("srcaddr"), "10.0.0.2");
        assert_eq!((by_bytes[0].packets, by_bytes[0].bytes, by_bytes[0].records), (20, 200_000, 2));
        assert_eq!((by_bytes[0].start, by_bytes[0].end), (0, 20));
        let by_packets = top(&records, 1, Rank::Packets);
        assert_eq!(by_packets[0].record.get("srcaddr"), "10.0.0.3");
        assert_eq!(by_packets[0].json()["packets"], 500);
    }

    #[test]
    fn since_takes_durations_with_units() {
        assert_eq!(parse_since("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_since("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_since("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_since("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_since("10 minutes").is_err());
        assert!(parse_since("").is_err());
        assert!(ends_after(&record("10.0.0.2", 1, 1, 100), 110));
        assert!(!ends_after(&record("10.0.0.2", 1, 1, 100), 111));
    }
}
