//! Flow logs (docs/cli.md, "Flow logs"): the datapath's flow events
//! (firewall_common::events), aggregated per flow, direction and window
//! into records in the AWS VPC Flow Logs format, written to a rotated file
//! and as JSON lines; `sgctl flows` reads them back.
//!
//! - [`record`]: one record, its text forms (the default v2 fields, and
//!   the custom format that adds `flow-direction tcp-flags type rule-id
//!   group drop-reason end-reason counted`) and its JSON form;
//! - [`aggregate`]: events → records, per window;
//! - [`accounting`]: with per-flow accounting, the conntrack tables →
//!   records of what each flow carried in the window, and its end;
//! - [`file`](mod@file): the rotated log file, written and read back;
//! - [`top`]: the flows that carried the most (`sgctl flows --top`).
pub mod accounting;
pub mod aggregate;
pub mod file;
pub mod record;
pub mod top;

/// Where `sgctl agent` writes flow logs unless told otherwise.
pub const DEFAULT_FLOW_LOG: &str = "/var/log/sgctl/flows.log";
