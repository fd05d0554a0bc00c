//! Prometheus metrics (docs/cli.md, "Metrics"): what `sgctl stats` reads,
//! per interface, as format-neutral [`Family`]s, written in either text
//! format Prometheus reads: the Prometheus text format 0.0.4 (`sgctl stats
//! --format prometheus`, for node_exporter's textfile collector, and the
//! agent's `/metrics` for scrapers that ask for it) or OpenMetrics (the
//! agent's `/metrics` for a Prometheus server, which asks for it first).
//!
//! Every scrape reads the kernel's counters afresh into a new registry, so
//! the values are exactly those `sgctl stats --json` reads at that moment.
use firewall_common::{
    counters::{reason_slot, Reason, ReasonCounters, RuleCounters},
    Direction,
};
use prometheus_client::{
    encoding::{EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family as OmFamily, gauge::Gauge, info::Info},
    registry::Registry,
};

use crate::{compile::RuleInfo, control::Target, datapath::conntrack::Usage, fleet::report::FleetStatus};

/// The content type of [`Format::OpenMetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`Format::Text`].
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One filtered interface, as the kernel counts it now.
pub struct IfaceSample {
    pub netns: String,
    pub interface: String,
    pub rules: Vec<(RuleInfo, RuleCounters)>,
    /// Index `counters::reason_slot(direction, reason)`.
    pub reasons: Vec<ReasonCounters>,
    pub conntrack: Usage,
    pub events_suppressed: u64,
}

/// Everything in view, read once.
pub struct Sample {
    /// (netns, generation) per scope with a policy.
    pub generations: Vec<(String, u64)>,
    pub interfaces: Vec<IfaceSample>,
    /// (netns, the fleet as its `sgctl agent --etcd` last reported it) per
    /// scope whose agent ever ran with `--etcd` (docs/fleet.md).
    pub fleets: Vec<(String, FleetStatus)>,
    /// The agent's repairs since it started (none for `sgctl stats`).
    pub repairs: Vec<Repair>,
}

/// How often the agent found an interface not as its policy wants and put
/// it right (`kind`: `attached`, `updated`, `reattached`, `repaired`,
/// `detached`).
pub struct Repair {
    pub netns: String,
    pub interface: String,
    pub kind: &'static str,
    pub count: u64,
}

/// Reads the counters of every interface of `targets`.
pub fn sample(targets: &[Target]) -> anyhow::Result<Sample> {
    let mut sample =
        Sample { generations: Vec::new(), interfaces: Vec::new(), repairs: Vec::new(), fleets: Vec::new() };
    for target in targets {
        let netns = target.scope.netns().unwrap_or_default().to_owned();
        if let Some(fleet) = crate::fleet::report::status(&target.lib, &target.scope)? {
            sample.fleets.push((netns.clone(), fleet));
        }
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
                conntrack: maps.conntrack_usage()?,
                events_suppressed: maps.events_suppressed()?,
            });
        }
    }
    Ok(sample)
}

type Labels = Vec<(&'static str, String)>;

/// What a family's samples are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Constant labels about the reporter; one sample of value 1.
    Info,
}

/// One metric family, format-neutral: what both encoders write. A counter's
/// or an info's `name` is its base name (`sgctl_rule_flows`, `sgctl_build`):
/// each format adds its own suffixes.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<(Labels, u64)>,
}

impl Family {
    fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Self { name, help, kind, samples: Vec::new() }
    }

    fn add(&mut self, labels: Labels, value: u64) {
        self.samples.push((labels, value));
    }
}

/// The families of a sample, in the order they are written. A new counter
/// or gauge is one more `Family` here; both formats pick it up.
pub fn families(sample: &Sample) -> Vec<Family> {
    let mut flows = Family::new("sgctl_rule_flows", Kind::Counter, "Flows opened through the rule");
    let mut packets = Family::new("sgctl_rule_packets", Kind::Counter, "Packets of the rule's flows, both directions");
    let mut bytes = Family::new("sgctl_rule_bytes", Kind::Counter, "Bytes of the rule's flows, both directions");
    let mut dropped = Family::new("sgctl_dropped_packets", Kind::Counter, "Packets dropped, by reason");
    let mut would_drop = Family::new(
        "sgctl_audit_would_drop_packets",
        Kind::Counter,
        "Packets no rule allows that passed because a group of the interface is in audit mode",
    );
    let mut suppressed = Family::new(
        "sgctl_flow_events_suppressed",
        Kind::Counter,
        "Flow events the kernel held back (rate limit per interface, or the ring full)",
    );
    let mut entries =
        Family::new("sgctl_conntrack_entries", Kind::Gauge, "Tracked flows, by table (confirmed, pending)");
    let mut limit =
        Family::new("sgctl_conntrack_entries_limit", Kind::Gauge, "Capacity of each connection-tracking table");
    let mut promoted = Family::new(
        "sgctl_conntrack_promoted",
        Kind::Counter,
        "Flows confirmed: moved from the pending table to the confirmed one",
    );
    let mut refused = Family::new(
        "sgctl_conntrack_promotions_refused",
        Kind::Counter,
        "Flows kept pending (evictable) because the confirmed table was full",
    );
    let mut evicted = Family::new(
        "sgctl_conntrack_pending_evicted",
        Kind::Counter,
        "Pending flows evicted to make room for newer ones (a flood of flows nobody answers)",
    );
    let mut opened =
        Family::new("sgctl_conntrack_pending_opened", Kind::Counter, "New flows tracked (they start pending)");
    let mut generation = Family::new("sgctl_policy_generation", Kind::Gauge, "Policy generation in force");
    let mut repairs = Family::new(
        "sgctl_agent_repairs",
        Kind::Counter,
        "Interfaces the agent found not as the policy wants and put right, by what it did",
    );
    let mut build = Family::new("sgctl_build", Kind::Info, "The sgctl that reports");
    build.add(
        vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("object", format!("{:016x}", crate::datapath::object_digest())),
        ],
        1,
    );

    for (netns, g) in &sample.generations {
        generation.add(vec![("netns", netns.clone())], *g);
    }
    for i in &sample.interfaces {
        let at = || vec![("netns", i.netns.clone()), ("interface", i.interface.clone())];
        for (rule, c) in &i.rules {
            let mut labels = at();
            labels.push(("group", rule.group.clone()));
            labels.push(("direction", rule.direction.to_string()));
            labels.push(("rule", rule.to_string()));
            flows.add(labels.clone(), c.flows);
            packets.add(labels.clone(), c.packets);
            bytes.add(labels, c.bytes);
        }
        for (d, direction) in [(Direction::Inbound, "inbound"), (Direction::Outbound, "outbound")] {
            let per = |r: Reason| i.reasons[reason_slot(d, r) as usize].packets;
            for reason in Reason::ALL.into_iter().filter(|r| r.is_drop()) {
                let mut labels = at();
                labels.push(("direction", direction.to_owned()));
                labels.push(("reason", reason.label().to_owned()));
                dropped.add(labels, per(reason));
            }
            let mut labels = at();
            labels.push(("direction", direction.to_owned()));
            would_drop.add(labels, per(Reason::PassAudit));
        }
        suppressed.add(at(), i.events_suppressed);
        let c = &i.conntrack;
        for (table, n) in [("confirmed", c.confirmed), ("pending", c.pending)] {
            let mut labels = at();
            labels.push(("table", table.to_owned()));
            entries.add(labels.clone(), n);
            limit.add(labels, u64::from(c.capacity));
        }
        promoted.add(at(), c.promoted);
        refused.add(at(), c.promotion_refused);
        evicted.add(at(), c.pending_evicted);
        opened.add(at(), c.pending_opened);
    }
    for r in &sample.repairs {
        let labels =
            vec![("netns", r.netns.clone()), ("interface", r.interface.clone()), ("repair", r.kind.to_owned())];
        repairs.add(labels, r.count);
    }
    let mut families = vec![
        flows, packets, bytes, dropped, would_drop, suppressed, entries, limit, promoted, refused, evicted, opened,
        generation, repairs, build,
    ];
    families.extend(fleet_families(&sample.fleets));
    families
}

/// The fleet's families (docs/fleet.md), one sample per scope whose agent
/// runs with `--etcd` (and per group for the members). A report of an agent
/// that no longer runs counts as not connected: nobody keeps it in sync.
fn fleet_families(fleets: &[(String, FleetStatus)]) -> Vec<Family> {
    let mut connected =
        Family::new("sgctl_fleet_connected", Kind::Gauge, "Whether the agent reaches etcd (1) or not (0)");
    let mut last_sync = Family::new(
        "sgctl_fleet_last_sync_timestamp_seconds",
        Kind::Gauge,
        "When the agent's view last matched etcd, seconds since the Unix epoch",
    );
    let mut members =
        Family::new("sgctl_fleet_members", Kind::Gauge, "Members from other hosts in force here, by group");
    let mut refused =
        Family::new("sgctl_fleet_refused_keys", Kind::Gauge, "Keys under the prefix whose value is refused");
    let mut generation = Family::new(
        "sgctl_fleet_policy_generation",
        Kind::Gauge,
        "The published policy generation in force (0: the host's own files)",
    );
    let mut resyncs =
        Family::new("sgctl_fleet_resyncs", Kind::Counter, "Full reads of the prefix (start, and after etcd was lost)");
    for (netns, fleet) in fleets {
        let r = &fleet.record;
        let at = || vec![("netns", netns.clone()), ("host", r.host_id.clone())];
        connected.add(at(), u64::from(r.connected && fleet.agent_running));
        if let Some(t) = r.last_sync {
            last_sync.add(at(), t);
        }
        for (group, n) in &r.members {
            let mut labels = at();
            labels.push(("group", group.clone()));
            members.add(labels, *n as u64);
        }
        refused.add(at(), r.refused.len() as u64);
        generation.add(at(), r.applied_generation.unwrap_or_default());
        resyncs.add(at(), r.resyncs);
    }
    vec![connected, last_sync, members, refused, generation, resyncs]
}

/// The two text formats Prometheus reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text: what a Prometheus server asks for first.
    OpenMetrics,
    /// The Prometheus text format 0.0.4: what node_exporter's textfile
    /// collector, `promtool check metrics` and every older scraper read.
    Text,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Self::Text => TEXT_CONTENT_TYPE,
        }
    }

    /// The format an HTTP `Accept` header prefers: OpenMetrics when it
    /// ranks `application/openmetrics-text` above (or with) `text/plain`,
    /// else the 0.0.4 text, which is also the answer to no header, `*/*`
    /// or anything else (as Prometheus' own client libraries negotiate).
    pub fn from_accept(accept: Option<&str>) -> Self {
        let (mut openmetrics, mut text) = (0.0_f32, 0.0_f32);
        for item in accept.unwrap_or_default().split(',') {
            let Ok(media) = item.trim().parse::<mime::Mime>() else { continue };
            let q = media
                .get_param("q")
                .and_then(|q| q.as_str().parse::<f32>().ok())
                .filter(|q| (0.0..=1.0).contains(q))
                .unwrap_or(1.0);
            match (media.type_().as_str(), media.subtype().as_str()) {
                ("application", "openmetrics-text") => {
                    // Only 1.0.0 (or an unversioned request) is what we write.
                    let version = media.get_param("version").map(|v| v.as_str().to_owned());
                    if version.is_none_or(|v| v == "1.0.0") {
                        openmetrics = openmetrics.max(q);
                    }
                }
                ("text", "plain") => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }
}

/// The sample in `format`.
pub fn encode_sample(sample: &Sample, format: Format) -> anyhow::Result<String> {
    let families = families(sample);
    match format {
        Format::OpenMetrics => openmetrics(&families),
        Format::Text => text(&families),
    }
}

/// OpenMetrics text, by the Prometheus project's client crate: counters
/// typed by their base name with `_total` samples, infos as `info`, `# EOF`.
fn openmetrics(families: &[Family]) -> anyhow::Result<String> {
    let mut registry = Registry::default();
    for f in families {
        match f.kind {
            Kind::Counter => {
                let family = OmFamily::<OmLabels, Counter>::default();
                for (labels, value) in &f.samples {
                    family.get_or_create(&om_labels(labels)).inc_by(*value);
                }
                registry.register(f.name, f.help, family);
            }
            Kind::Gauge => {
                let family = OmFamily::<OmLabels, Gauge>::default();
                for (labels, value) in &f.samples {
                    family.get_or_create(&om_labels(labels)).set(i64::try_from(*value).unwrap_or(i64::MAX));
                }
                registry.register(f.name, f.help, family);
            }
            Kind::Info => {
                let labels = f.samples.first().map(|(l, _)| om_labels(l)).unwrap_or_default();
                registry.register(f.name, f.help, Info::new(labels));
            }
        }
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

type OmLabels = Vec<(&'static str, Escaped)>;

fn om_labels(labels: &Labels) -> OmLabels {
    labels.iter().map(|(k, v)| (*k, Escaped(v.clone()))).collect()
}

/// A label value that prometheus-client 0.24 would write as is: escaped
/// here (`\\`, `\"`, `\n`, as both text formats require), so an interface
/// or namespace name holding a quote or backslash cannot end the value early.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Escaped(String);

impl EncodeLabelValue for Escaped {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// The Prometheus text format 0.0.4, by the tikv `prometheus` crate's
/// encoder: a counter's `# TYPE` names its `_total` samples, an info is a
/// gauge `NAME_info` of value 1 (the 0.0.4 convention), no `# EOF`, and a
/// family without samples is left out (0.0.4 has no empty families).
fn text(families: &[Family]) -> anyhow::Result<String> {
    use prometheus::proto;
    let mut out = Vec::new();
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        let (name, kind) = match f.kind {
            Kind::Counter => (format!("{}_total", f.name), proto::MetricType::COUNTER),
            Kind::Gauge => (f.name.to_owned(), proto::MetricType::GAUGE),
            Kind::Info => (format!("{}_info", f.name), proto::MetricType::GAUGE),
        };
        let mut family = proto::MetricFamily::default();
        family.set_name(name);
        family.set_help(f.help.to_owned());
        family.set_field_type(kind);
        let metrics = f
            .samples
            .iter()
            .map(|(labels, value)| {
                let mut metric = proto::Metric::default();
                metric.set_label(
                    labels
                        .iter()
                        .map(|(k, v)| {
                            let mut pair = proto::LabelPair::default();
                            pair.set_name((*k).to_owned());
                            pair.set_value(v.clone());
                            pair
                        })
                        .collect(),
                );
                #[expect(clippy::cast_precision_loss, reason = "Prometheus values are float64; so is its client's")]
                let value = *value as f64;
                if kind == proto::MetricType::COUNTER {
                    let mut c = proto::Counter::default();
                    c.set_value(value);
                    metric.set_counter(c);
                } else {
                    let mut g = proto::Gauge::default();
                    g.set_value(value);
                    metric.set_gauge(g);
                }
                metric
            })
            .collect();
        family.set_metric(metrics);
        out.push(family);
    }
    Ok(prometheus::TextEncoder::new().encode_to_string(&out)?)
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
                conntrack: Usage {
                    capacity: 65536,
                    confirmed: 4,
                    pending: 1,
                    pending_opened: 12,
                    promoted: 5,
                    promotion_refused: 0,
                    pending_evicted: 6,
                },
                events_suppressed: 9,
            }],
            fleets: vec![("ns1".into(), fleet())],
            repairs: vec![Repair { netns: "ns1".into(), interface: "eth0".into(), kind: "repaired", count: 2 }],
        }
    }

    fn fleet() -> FleetStatus {
        let record = crate::fleet::FleetRecord {
            host_id: "db".into(),
            connected: true,
            last_sync: Some(1_700_000_000),
            resyncs: 2,
            applied_generation: Some(4),
            members: [("app".to_owned(), 3)].into(),
            refused: [("/sgctl/v1/hosts/evil/members/app".to_owned(), "not JSON".to_owned())].into(),
            ..Default::default()
        };
        FleetStatus { record, agent_running: true, seconds_since_sync: Some(1) }
    }

    const RULE: &str = r#"{netns="ns1",interface="eth0",group="web",direction="inbound",rule="web/inbound/1"}"#;

    /// The samples both formats hold, as the contract (docs/cli.md) names them.
    fn contract_samples() -> Vec<String> {
        vec![
            format!("sgctl_rule_flows_total{RULE} 2"),
            format!("sgctl_rule_packets_total{RULE} 12"),
            format!("sgctl_rule_bytes_total{RULE} 960"),
            r#"sgctl_dropped_packets_total{netns="ns1",interface="eth0",direction="inbound",reason="no_rule"} 5"#
                .to_owned(),
            r#"sgctl_audit_would_drop_packets_total{netns="ns1",interface="eth0",direction="outbound"} 2"#.to_owned(),
            r#"sgctl_flow_events_suppressed_total{netns="ns1",interface="eth0"} 9"#.to_owned(),
            r#"sgctl_conntrack_entries{netns="ns1",interface="eth0",table="confirmed"} 4"#.to_owned(),
            r#"sgctl_conntrack_entries{netns="ns1",interface="eth0",table="pending"} 1"#.to_owned(),
            r#"sgctl_conntrack_entries_limit{netns="ns1",interface="eth0",table="pending"} 65536"#.to_owned(),
            r#"sgctl_conntrack_promoted_total{netns="ns1",interface="eth0"} 5"#.to_owned(),
            r#"sgctl_conntrack_promotions_refused_total{netns="ns1",interface="eth0"} 0"#.to_owned(),
            r#"sgctl_conntrack_pending_evicted_total{netns="ns1",interface="eth0"} 6"#.to_owned(),
            r#"sgctl_conntrack_pending_opened_total{netns="ns1",interface="eth0"} 12"#.to_owned(),
            r#"sgctl_policy_generation{netns=""} 3"#.to_owned(),
            r#"sgctl_fleet_connected{netns="ns1",host="db"} 1"#.to_owned(),
            r#"sgctl_fleet_last_sync_timestamp_seconds{netns="ns1",host="db"} 1700000000"#.to_owned(),
            r#"sgctl_fleet_members{netns="ns1",host="db",group="app"} 3"#.to_owned(),
            r#"sgctl_fleet_refused_keys{netns="ns1",host="db"} 1"#.to_owned(),
            r#"sgctl_fleet_policy_generation{netns="ns1",host="db"} 4"#.to_owned(),
            r#"sgctl_fleet_resyncs_total{netns="ns1",host="db"} 2"#.to_owned(),
            r#"sgctl_agent_repairs_total{netns="ns1",interface="eth0",repair="repaired"} 2"#.to_owned(),
        ]
    }

    #[test]
    fn openmetrics_has_every_metric_of_the_contract_with_its_labels() {
        let text = encode_sample(&sample(), Format::OpenMetrics).expect("encodes");
        for line in contract_samples() {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert!(text.lines().any(|l| l == "# TYPE sgctl_rule_flows counter"), "{text}");
        assert!(text.lines().any(|l| l == "# TYPE sgctl_build info"), "{text}");
        assert!(text.lines().any(|l| l.starts_with("sgctl_build_info{version=")), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn text_004_names_counters_by_their_samples_and_has_no_info_or_eof() {
        let text = encode_sample(&sample(), Format::Text).expect("encodes");
        for line in contract_samples() {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        for line in [
            "# TYPE sgctl_rule_flows_total counter",
            "# TYPE sgctl_dropped_packets_total counter",
            "# TYPE sgctl_conntrack_entries gauge",
            "# TYPE sgctl_build_info gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert!(text.lines().any(|l| l.starts_with("sgctl_build_info{version=") && l.ends_with(" 1")), "{text}");
        assert!(!text.contains("# EOF") && !text.contains(" info\n"), "{text}");
        // Every family in both formats: a new one needs no second list.
        let om = encode_sample(&sample(), Format::OpenMetrics).expect("encodes");
        for f in families(&sample()) {
            assert!(text.contains(&format!("# HELP {}", f.name)), "{} in 0.0.4", f.name);
            assert!(om.contains(&format!("# HELP {}", f.name)), "{} in OpenMetrics", f.name);
        }
    }

    #[test]
    fn a_fleet_report_of_an_agent_gone_is_not_connected() {
        let mut s = sample();
        s.fleets[0].1.agent_running = false;
        let text = encode_sample(&s, Format::Text).expect("encodes");
        assert!(text.lines().any(|l| l == r#"sgctl_fleet_connected{netns="ns1",host="db"} 0"#), "{text}");
    }

    #[test]
    fn label_values_are_escaped_in_both_formats() {
        let mut s = sample();
        s.interfaces[0].interface = "we\"ird\\\nx".into();
        for format in [Format::Text, Format::OpenMetrics] {
            let text = encode_sample(&s, format).expect("encodes");
            assert!(text.contains(r#"interface="we\"ird\\\nx""#), "{format:?}:\n{text}");
            assert!(
                text.lines().all(|l| !l.starts_with('x')),
                "{format:?}: a newline in a label ended a line:\n{text}"
            );
        }
    }

    #[test]
    fn accept_header_picks_the_format() {
        // What Prometheus 2.x sends.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;\
                          q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(Some("application/openmetrics-text")), Format::OpenMetrics);
        for text in [
            None,
            Some(""),
            Some("*/*"),
            Some("text/plain"),
            Some("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5"),
            // A version we do not write.
            Some("application/openmetrics-text;version=0.0.1"),
            Some("application/openmetrics-text;q=0"),
            Some("garbage;;;"),
        ] {
            assert_eq!(Format::from_accept(text), Format::Text, "{text:?}");
        }
        assert_eq!(Format::OpenMetrics.content_type(), OPENMETRICS_CONTENT_TYPE);
        assert!(Format::Text.content_type().starts_with("text/plain; version=0.0.4"));
    }
}
