//! One flow-log record and its forms.
//!
//! The text forms are space-separated fields, `-` where a field does not
//! apply, exactly as AWS writes them: the default format is the 14 fields
//! of version 2 ([`V2_FIELDS`]); sgctl's custom format ([`custom_fields`])
//! appends `flow-direction tcp-flags type rule-id group drop-reason
//! end-reason counted`, so its first 14 fields are the v2 record. A log file starts with a header
//! line naming its fields, as AWS's files do.
use std::collections::BTreeMap;

use serde_json::{json, Value};

/// The default fields of AWS VPC Flow Logs version 2, in order.
pub const V2_FIELDS: [&str; 14] = [
    "version",
    "account-id",
    "interface-id",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "action",
    "log-status",
];

/// What the custom format adds after the v2 fields.
/// `end-reason`: why the flow ended (`fin`, `rst`, `expired`, `flushed`,
/// `evicted`), on its last record; `counted`: what `packets` and `bytes`
/// count (`flow`, `first-packet`, `reported`; docs/cli.md, "Flow logs").
pub const EXTRA_FIELDS: [&str; 8] =
    ["flow-direction", "tcp-flags", "type", "rule-id", "group", "drop-reason", "end-reason", "counted"];

/// Every field of the custom format, in order.
pub fn custom_fields() -> Vec<&'static str> {
    V2_FIELDS.iter().chain(EXTRA_FIELDS.iter()).copied().collect()
}

/// A record: field name → value (`-` for none), in the custom format's
/// fields, plus `netns` (not a text field: it is part of `interface-id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub fields: BTreeMap<&'static str, String>,
}

/// Verdict of a record (the `action` field, and audit passes told apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Accept,
    Reject,
    /// Passed because a group is in audit mode: `action` ACCEPT,
    /// `drop-reason` `would_drop`.
    WouldDrop,
}

impl Action {
    pub fn field(self) -> &'static str {
        match self {
            Self::Accept | Self::WouldDrop => "ACCEPT",
            Self::Reject => "REJECT",
        }
    }
}

impl Record {
    /// A record with every field `-`, version 2.
    pub fn empty() -> Self {
        let mut fields: BTreeMap<&'static str, String> = custom_fields().into_iter().map(|f| (f, "-".into())).collect();
        fields.insert("version", "2".into());
        Self { fields }
    }

    pub fn get(&self, field: &str) -> &str {
        self.fields.get(field).map_or("-", String::as_str)
    }

    pub fn set(&mut self, field: &'static str, value: impl ToString) {
        self.fields.insert(field, value.to_string());
    }

    /// The text line of `fields` (no newline).
    pub fn line(&self, fields: &[&str]) -> String {
        fields.iter().map(|f| self.get(f)).collect::<Vec<_>>().join(" ")
    }

    /// The default format: the 14 v2 fields.
    pub fn v2_line(&self) -> String {
        self.line(&V2_FIELDS)
    }

    /// The custom format: v2 and the fields sgctl adds.
    pub fn custom_line(&self) -> String {
        self.line(&custom_fields())
    }

    /// A record read from a text line under `header` (the file's field names).
    pub fn parse(header: &[String], line: &str) -> Option<Self> {
        let values: Vec<&str> = line.split(' ').collect();
        if values.len() != header.len() {
            return None;
        }
        let mut record = Self::empty();
        for (name, value) in header.iter().zip(values) {
            if let Some(field) = custom_fields().into_iter().find(|f| f == name) {
                record.set(field, value);
            }
        }
        Some(record)
    }

    /// JSON: the fields by name, numbers as numbers, `-` as null.
    pub fn json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for field in custom_fields() {
            let text = self.get(field);
            let value = if text == "-" {
                Value::Null
            } else if let Ok(n) = text.parse::<u64>() {
                json!(n)
            } else {
                json!(text)
            };
            out.insert(field.to_owned(), value);
        }
        Value::Object(out)
    }

    /// Which verdict the record carries.
    pub fn action(&self) -> Option<Action> {
        match (self.get("action"), self.get("drop-reason")) {
            ("ACCEPT", "would_drop") => Some(Action::WouldDrop),
            ("ACCEPT", _) => Some(Action::Accept),
            ("REJECT", _) => Some(Action::Reject),
            _ => None,
        }
    }
}

/// The `interface-id` of an interface: its name, and `@NETNS` for one in a
/// named namespace (the same name can exist in several).
pub fn interface_id(netns: Option<&str>, ifname: &str) -> String {
    match netns {
        Some(ns) => format!("{ifname}@{ns}"),
        None => ifname.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_lines_have_exactly_the_fourteen_fields_and_dashes() {
        let mut r = Record::empty();
        r.set("interface-id", "eth0");
        r.set("action", "REJECT");
        r.set("drop-reason", "no_rule");
        let v2 = r.v2_line();
        assert_eq!(v2.split(' ').count(), 14, "{v2}");
        assert_eq!(v2, "2 - eth0 - - - - - - - - - REJECT -");
        let custom = r.custom_line();
        assert_eq!(custom.split(' ').count(), custom_fields().len());
        assert!(custom.starts_with(&v2), "the custom format begins with the v2 record");
        assert!(custom.ends_with(" no_rule - -"), "{custom}");
        let header: Vec<String> = custom_fields().iter().map(|f| (*f).to_owned()).collect();
        assert_eq!(Record::parse(&header, &custom), Some(r.clone()));
        assert_eq!(r.action(), Some(Action::Reject));
        assert_eq!(r.json()["srcaddr"], Value::Null);
        assert_eq!(r.json()["version"], 2);
    }
}
