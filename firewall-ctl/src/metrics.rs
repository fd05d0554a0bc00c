//! Prometheus metrics (docs/cli.md, "Metrics"): what `sgctl stats` reads,
//! per interface, in the OpenMetrics text format, encoded by the Prometheus
//! project's client crate. Served by `sgctl agent` on `/metrics` and printed
//! by `sgctl stats --format prometheus` (node_exporter's textfile collector).
//!
//! Every scrape reads the kernel's counters afresh into a new registry, so
//! the values are exactly those `sgctl stats --json` reads at that moment.
use firewall_common::{
    counters::{reason_slot, Reason, ReasonCounters, RuleCounters},
    Direction,
};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

use crate::{compile::RuleInfo, control::Target};

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One filtered interface, as the kernel counts it now.
pub struct IfaceSample {
    pub netns: String,
    pub interface: String,
    pub rules: Vec<(RuleInfo, RuleCounters)>,
    /// Index `counters::reason_slot(direction, reason)`.
    pub reasons: Vec<ReasonCounters>,
    pub conntrack_entries: u64,
    pub conntrack_limit: u64,
    pub events_suppressed: u64,
}

/// Everything in view, read once.
pub struct Sample {
    /// (netns, generation) per scope with a policy.
    pub generations: Vec<(String, u64)>,
    pub interfaces: Vec<IfaceSample>,
}

/// Reads the counters of every interface of `targets`.
pub fn sample(targets: &[Target]) -> anyhow::Result<Sample> {
    let mut sample = Sample { generations: Vec::new(), interfaces: Vec::new() };
    for target in targets {
        let netns = target.scope.netns().unwrap_or_default().to_owned();
        if let Some(active) = target.active()? {
            sample.generations.push((netns.clone(), active.generation));
        }
        for record in target.interfaces()? {
            let maps = target.maps(&record.ifname);
            let counters = maps.rule_counters(&record.rule_slots())?;
            sample.interfaces.push(IfaceSample {
                netns: netns.clone(),
                interface: record.ifname.clone(),
                rules: record.rules.iter().cloned().zip(counters).collect(),
                reasons: maps.reason_counters()?,
                conntrack_entries: maps.flow_count()? as u64,
                conntrack_limit: u64::from(maps.conntrack_capacity()?),
                events_suppressed: maps.events_suppressed()?,
            });
        }
    }
    Ok(sample)
}

type Labels = Vec<(&'static str, String)>;

/// The sample as an OpenMetrics text exposition.
pub fn encode_sample(sample: &Sample) -> anyhow::Result<String> {
    let mut registry = Registry::default();
    let counter = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<Labels, Counter>::default();
        registry.register(name, help, family.clone());
        family
    };
    let gauge = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<Labels, Gauge>::default();
        registry.register(name, help, family.clone());
        family
    };
    let flows = counter(&mut registry, "sgctl_rule_flows", "Flows opened through the rule");
    let packets = counter(&mut registry, "sgctl_rule_packets", "Packets of the rule's flows, both directions");
    let bytes = counter(&mut registry, "sgctl_rule_bytes", "Bytes of the rule's flows, both directions");
    let dropped = counter(&mut registry, "sgctl_dropped_packets", "Packets dropped, by reason");
    let would_drop = counter(
        &mut registry,
        "sgctl_audit_would_drop_packets",
        "Packets no rule allows that passed because a group of the interface is in audit mode",
    );
    let suppressed = counter(
        &mut registry,
        "sgctl_flow_events_suppressed",
        "Flow events the kernel held back (rate limit per interface, or the ring full)",
    );
    let entries = gauge(&mut registry, "sgctl_conntrack_entries", "Tracked flows");
    let limit = gauge(&mut registry, "sgctl_conntrack_entries_limit", "Capacity of the connection-tracking table");
    let generation = gauge(&mut registry, "sgctl_policy_generation", "Policy generation in force");
    registry.register(
        "sgctl_build",
        "The sgctl that reports",
        Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("object", format!("{:016x}", crate::datapath::object_digest())),
        ]),
    );

    for (netns, g) in &sample.generations {
        generation.get_or_create(&vec![("netns", netns.clone())]).set(gauge_value(*g));
    }
    for i in &sample.interfaces {
        let at = || vec![("netns", i.netns.clone()), ("interface", i.interface.clone())];
        for (rule, c) in &i.rules {
            let mut labels = at();
            labels.push(("group", rule.group.clone()));
            labels.push(("direction", rule.direction.to_string()));
            labels.push(("rule", rule.to_string()));
            flows.get_or_create(&labels).inc_by(c.flows);
            packets.get_or_create(&labels).inc_by(c.packets);
            bytes.get_or_create(&labels).inc_by(c.bytes);
        }
        for (d, direction) in [(Direction::Inbound, "inbound"), (Direction::Outbound, "outbound")] {
            let per = |r: Reason| i.reasons[reason_slot(d, r) as usize].packets;
            for reason in Reason::ALL.into_iter().filter(|r| r.is_drop()) {
                let mut labels = at();
                labels.push(("direction", direction.to_owned()));
                labels.push(("reason", drop_reason_label(reason).to_owned()));
                dropped.get_or_create(&labels).inc_by(per(reason));
            }
            let mut labels = at();
            labels.push(("direction", direction.to_owned()));
            would_drop.get_or_create(&labels).inc_by(per(Reason::PassAudit));
        }
        suppressed.get_or_create(&at()).inc_by(i.events_suppressed);
        entries.get_or_create(&at()).set(gauge_value(i.conntrack_entries));
        limit.get_or_create(&at()).set(gauge_value(i.conntrack_limit));
    }
    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

/// A drop reason as a label value: its name without `dropped_`.
pub fn drop_reason_label(reason: Reason) -> &'static str {
    let name = reason.name();
    name.strip_prefix("dropped_").unwrap_or(name)
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use firewall_common::counters::REASON_SLOTS;

    use super::*;
    use crate::policy::RuleDirection;

    fn sample() -> Sample {
        let rule = RuleInfo {
            group: "web".into(),
            direction: RuleDirection::Inbound,
            index: 1,
            description: Some("HTTP".into()),
            identity: 7,
        };
        let mut reasons = vec![ReasonCounters::default(); REASON_SLOTS as usize];
        reasons[Reason::DropNoRule as usize].packets = 5;
        reasons[reason_slot(Direction::Outbound, Reason::PassAudit) as usize].packets = 2;
        Sample {
            generations: vec![(String::new(), 3)],
            interfaces: vec![IfaceSample {
                netns: "ns1".into(),
                interface: "eth0".into(),
                rules: vec![(rule, RuleCounters { flows: 2, packets: 12, bytes: 960 })],
                reasons,
                conntrack_entries: 4,
                conntrack_limit: 65536,
                events_suppressed: 9,
            }],
        }
    }

    #[test]
    fn every_metric_of_the_contract_with_its_labels() {
        let text = encode_sample(&sample()).expect("encodes");
        let rule = r#"{netns="ns1",interface="eth0",group="web",direction="inbound",rule="web/inbound/1"}"#;
        for line in [
            format!("sgctl_rule_flows_total{rule} 2"),
            format!("sgctl_rule_packets_total{rule} 12"),
            format!("sgctl_rule_bytes_total{rule} 960"),
            r#"sgctl_dropped_packets_total{netns="ns1",interface="eth0",direction="inbound",reason="no_rule"} 5"#
                .to_owned(),
            r#"sgctl_audit_would_drop_packets_total{netns="ns1",interface="eth0",direction="outbound"} 2"#.to_owned(),
            r#"sgctl_flow_events_suppressed_total{netns="ns1",interface="eth0"} 9"#.to_owned(),
            r#"sgctl_conntrack_entries{netns="ns1",interface="eth0"} 4"#.to_owned(),
            r#"sgctl_conntrack_entries_limit{netns="ns1",interface="eth0"} 65536"#.to_owned(),
            r#"sgctl_policy_generation{netns=""} 3"#.to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert!(text.lines().any(|l| l.starts_with("sgctl_build_info{version=")), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
