//! The fleet in `sgctl status`: what the agent last wrote in `fleet.json`
//! (see [`FleetRecord`]), and whether that agent still runs.
use serde::Serialize;

use super::scope::FleetRecord;
use crate::{
    state::{saved::LibDir, Scope},
    timings::unix_now,
};

/// A report older than this is not the running agent's.
const STALE_AFTER_SECS: u64 = 15;

#[derive(Clone, Debug, Serialize)]
pub struct FleetStatus {
    #[serde(flatten)]
    pub record: FleetRecord,
    /// Whether the agent that wrote it still runs (its process is there and
    /// reported within the last few seconds).
    pub agent_running: bool,
    /// Seconds since the agent's view last matched etcd.
    pub seconds_since_sync: Option<u64>,
}

/// The fleet as `scope`'s agent last reported it (`None`: no agent ever ran with `--etcd`).
pub fn status(lib: &LibDir, scope: &Scope) -> anyhow::Result<Option<FleetStatus>> {
    let Some(record) = lib.fleet::<FleetRecord>(scope)? else { return Ok(None) };
    let now = unix_now();
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", record.agent_pid)).unwrap_or_default();
    let agent_running = comm.trim() == "sgctl" && now.saturating_sub(record.updated_at) <= STALE_AFTER_SECS;
    let seconds_since_sync = record.last_sync.map(|t| now.saturating_sub(t));
    Ok(Some(FleetStatus { record, agent_running, seconds_since_sync }))
}
