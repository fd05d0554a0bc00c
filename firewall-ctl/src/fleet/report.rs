//! The fleet in `sgctl status`: what the agent last wrote in `fleet.json`
//! (see [`FleetRecord`]), and whether that agent still runs.
use serde::Serialize;

use super::{scope::FleetRecord, session::unix_now};
use crate::state::{saved::LibDir, Scope};

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

/// The lines `sgctl status` prints.
pub fn lines(s: &FleetStatus) -> Vec<String> {
    let r = &s.record;
    let mut out = Vec::new();
    let state = if !s.agent_running {
        format!(
            "agent not running (last report {} s ago): the membership last known stays enforced",
            unix_now().saturating_sub(r.updated_at)
        )
    } else if r.connected {
        format!("connected, in sync {} s ago", s.seconds_since_sync.unwrap_or_default())
    } else {
        format!(
            "NOT CONNECTED ({}): the membership last known stays enforced; last in sync {}",
            r.last_error.as_deref().unwrap_or("connecting"),
            s.seconds_since_sync.map_or("never".to_owned(), |t| format!("{t} s ago"))
        )
    };
    out.push(format!("fleet: host {} under {} on {}: {state}", r.host_id, r.prefix, r.endpoints.join(",")));
    let lease = r.lease.map_or("none".to_owned(), |l| format!("{l:x}"));
    let policy = match (r.applied_generation, r.published_generation) {
        (Some(a), Some(p)) if a == p => format!("published generation {a} in force"),
        (Some(a), Some(p)) => format!("published generation {a} in force, {p} published"),
        (None, Some(p)) => format!("its own files in force, generation {p} published"),
        (_, None) => "no policy published".to_owned(),
    };
    out.push(format!("  lease {lease} ({} s), {} full reads, {policy}", r.lease_ttl, r.resyncs));
    if let Some((generation, why)) = &r.refused_generation {
        out.push(format!("  refused published generation {generation}: {why}"));
    }
    let publishing: Vec<String> = r
        .publishing
        .iter()
        .map(|(g, a)| format!("{g} ({})", a.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")))
        .collect();
    out.push(format!(
        "  publishes: {}",
        if publishing.is_empty() { "nothing".to_owned() } else { publishing.join(", ") }
    ));
    let members: Vec<String> = r.members.iter().map(|(g, n)| format!("{g} {n}")).collect();
    out.push(format!(
        "  members from other hosts: {}",
        if members.is_empty() { "none".to_owned() } else { members.join(", ") }
    ));
    if !r.hosts.is_empty() {
        let rows: Vec<Vec<String>> = r
            .hosts
            .iter()
            .map(|h| {
                vec![
                    format!("  {}", h.host),
                    h.policy_generation.map_or("its own files".to_owned(), |g| g.to_string()),
                    h.groups.join(","),
                ]
            })
            .collect();
        let table = crate::cli::output::table(&["  HOST", "POLICY GENERATION", "GROUPS"], &rows);
        out.extend(table.lines().map(str::to_owned));
    }
    for (key, why) in &r.refused {
        out.push(format!("  refused {key}: {why}"));
    }
    out
}
