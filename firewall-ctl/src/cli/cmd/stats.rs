//! `sgctl stats [--watch SECS]`: traffic per rule, drops per interface.
use std::collections::BTreeMap;

use firewall_common::{
    counters::{reason_slot, Reason, ReasonCounters},
    Direction,
};
use serde::Serialize;

use crate::{
    agent::metrics,
    cli::{
        output::{print_json, table},
        StatsFormat,
    },
    compile::RuleInfo,
    control::Target,
    datapath::conntrack::Usage,
};

#[derive(Serialize)]
pub struct Stats {
    pub rules: Vec<RuleStats>,
    pub interfaces: Vec<IfaceStats>,
}

#[derive(Serialize)]
pub struct RuleStats {
    pub rule: String,
    pub group: String,
    pub direction: String,
    pub index: u32,
    pub description: Option<String>,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Serialize)]
pub struct IfaceStats {
    pub interface: String,
    pub netns: Option<String>,
    pub dropped_no_rule: u64,
    pub dropped_malformed: u64,
    pub dropped_conntrack_full: u64,
    pub dropped_fragment: u64,
    /// Packets no rule allows that passed because a group of the interface
    /// is in audit mode (`mode: audit`).
    pub would_drop: u64,
    /// Packets per verdict reason and direction, for the curious.
    pub inbound: BTreeMap<&'static str, u64>,
    pub outbound: BTreeMap<&'static str, u64>,
    /// Both conntrack tables' use, and what happened to their flows.
    pub conntrack: Usage,
}

pub fn run(targets: &[Target], watch: Option<u64>, format: StatsFormat) -> anyhow::Result<()> {
    loop {
        match format {
            StatsFormat::Json => print_json(&collect(targets)?)?,
            StatsFormat::Table => print_tables(&collect(targets)?),
            StatsFormat::Prometheus => exposition(targets, metrics::Format::Text)?,
            StatsFormat::Openmetrics => exposition(targets, metrics::Format::OpenMetrics)?,
        }
        let Some(secs) = watch else { return Ok(()) };
        std::thread::sleep(std::time::Duration::from_secs(secs.max(1)));
        crate::outln!();
    }
}

fn exposition(targets: &[Target], format: metrics::Format) -> anyhow::Result<()> {
    crate::out!("{}", metrics::encode_sample(&metrics::sample(targets)?, format)?);
    Ok(())
}

/// Sums each rule over every interface it is compiled into.
pub fn collect(targets: &[Target]) -> anyhow::Result<Stats> {
    let mut rules: BTreeMap<(String, String, u32), RuleStats> = BTreeMap::new();
    let mut interfaces = Vec::new();
    for target in targets {
        for record in target.interfaces()? {
            let maps = target.maps(&record.ifname);
            for (info, c) in record.rules.iter().zip(maps.rule_counters(&record.rule_slots())?) {
                let entry = rules.entry(sort_key(info)).or_insert_with(|| RuleStats {
                    rule: info.to_string(),
                    group: info.group.clone(),
                    direction: info.direction.to_string(),
                    index: info.index,
                    description: info.description.clone(),
                    flows: 0,
                    packets: 0,
                    bytes: 0,
                });
                entry.flows += c.flows;
                entry.packets += c.packets;
                entry.bytes += c.bytes;
            }
            interfaces.push(iface_stats(&record.ifname, target, &maps.reason_counters()?, maps.conntrack_usage()?));
        }
    }
    Ok(Stats { rules: rules.into_values().collect(), interfaces })
}

fn sort_key(info: &RuleInfo) -> (String, String, u32) {
    (info.group.clone(), info.direction.to_string(), info.index)
}

fn iface_stats(ifname: &str, target: &Target, counters: &[ReasonCounters], conntrack: Usage) -> IfaceStats {
    let per_direction = |d: Direction| -> BTreeMap<&'static str, u64> {
        Reason::ALL.iter().map(|r| (r.name(), counters[reason_slot(d, *r) as usize].packets)).collect()
    };
    let (inbound, outbound) = (per_direction(Direction::Inbound), per_direction(Direction::Outbound));
    let both = |r: Reason| inbound[r.name()] + outbound[r.name()];
    IfaceStats {
        interface: ifname.to_owned(),
        netns: target.scope.netns().map(str::to_owned),
        dropped_no_rule: both(Reason::DropNoRule),
        dropped_malformed: both(Reason::DropMalformed),
        dropped_conntrack_full: both(Reason::DropConntrackFull),
        dropped_fragment: both(Reason::DropFragment),
        would_drop: both(Reason::PassAudit),
        inbound,
        outbound,
        conntrack,
    }
}

fn print_tables(stats: &Stats) {
    let rows: Vec<Vec<String>> = stats
        .rules
        .iter()
        .map(|r| {
            vec![
                r.rule.clone(),
                r.description.clone().unwrap_or_default(),
                r.flows.to_string(),
                r.packets.to_string(),
                r.bytes.to_string(),
            ]
        })
        .collect();
    crate::out!("{}", table(&["RULE", "DESCRIPTION", "FLOWS", "PACKETS", "BYTES"], &rows));
    crate::outln!();
    let rows: Vec<Vec<String>> = stats
        .interfaces
        .iter()
        .map(|i| {
            vec![
                i.interface.clone(),
                i.netns.clone().unwrap_or_else(|| "-".into()),
                i.dropped_no_rule.to_string(),
                i.dropped_malformed.to_string(),
                i.dropped_conntrack_full.to_string(),
                i.dropped_fragment.to_string(),
                i.would_drop.to_string(),
            ]
        })
        .collect();
    crate::out!(
        "{}",
        table(
            &["INTERFACE", "NETNS", "DROPPED NO RULE", "MALFORMED", "CONNTRACK FULL", "FRAGMENT", "WOULD DROP (AUDIT)"],
            &rows
        )
    );
}
