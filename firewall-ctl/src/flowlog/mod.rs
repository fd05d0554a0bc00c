//! Flow logs (docs/cli.md, "Flow logs"): the datapath's flow events
//! (firewall_common::events), aggregated per flow, direction and window
//! into records in the AWS VPC Flow Logs format, written to a rotated file
//! and as JSON lines; `sgctl flows` reads them back.
//!
//! - [`record`]: one record, its text forms (the default v2 fields, and
//!   the custom format that adds `flow-direction tcp-flags type rule-id
//!   group drop-reason`) and its JSON form;
//! - [`aggregate`]: events → records, per window;
//! - [`file`](mod@file): the rotated log file, written and read back.
pub mod aggregate;
pub mod file;
pub mod record;

/// Where `sgctl agent` writes flow logs unless told otherwise.
pub const DEFAULT_FLOW_LOG: &str = "/var/log/sgctl/flows.log";
