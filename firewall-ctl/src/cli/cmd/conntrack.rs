//! `sgctl conntrack list | flush | gc`.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use firewall_common::{
    conntrack::{FlowEntry, FlowKey, FlowState},
    policy::{addr6_octets, Addr6},
};
use serde::Serialize;

use crate::{
    cli::{
        output::{print_json, table},
        ConntrackAction,
    },
    control::Target,
    datapath::{clock::clock, conntrack::Tracked, maps::idle},
    state::records::IfaceRecord,
    InputError,
};

#[derive(Serialize)]
struct Flow {
    interface: String,
    netns: Option<String>,
    protocol: u8,
    /// The endpoint that opened the flow.
    src: String,
    dst: String,
    state: &'static str,
    /// `confirmed` (nothing evicts it) or `pending` (evictable until the
    /// other side answers; docs/semantics.md item 12).
    table: &'static str,
    /// Rule the flow was allowed by (its counters get the traffic).
    rule: String,
    idle_secs: u64,
    expires_in_secs: u64,
}

#[derive(Serialize)]
struct Removed {
    interface: String,
    netns: Option<String>,
    removed: usize,
}

pub fn run(targets: &[Target], action: &ConntrackAction, json: bool) -> anyhow::Result<()> {
    match action {
        ConntrackAction::List => list(targets, json),
        ConntrackAction::Flush { group: None, rule: None } => {
            // The datagrams in flight go with the flows: their later
            // fragments would otherwise still pass.
            remove(targets, json, |maps, _| {
                maps.remove_fragments(|_| true)?;
                maps.remove_flows(|_, _| true)
            })
        }
        ConntrackAction::Flush { group, rule } => {
            let mut matched = false;
            remove(targets, json, |maps, record| {
                // The counter slots of the rules named, in force or removed.
                let slots: Vec<u32> = record
                    .slots
                    .0
                    .iter()
                    .filter(|(_, e)| {
                        group.as_ref().is_none_or(|g| &e.rule.group == g)
                            && rule.as_ref().is_none_or(|r| &e.rule.to_string() == r)
                    })
                    .map(|(slot, _)| *slot)
                    .collect();
                matched |= !slots.is_empty();
                maps.remove_fragments(|slot| slots.contains(&slot))?;
                maps.remove_flows(|_, e| slots.contains(&e.slot))
            })?;
            if !matched {
                let what = rule
                    .as_ref()
                    .map_or_else(|| format!("group {:?}", group.as_deref().unwrap_or("")), |r| format!("rule {r:?}"));
                return Err(InputError::NoSuchRule { what }.into());
            }
            Ok(())
        }
        ConntrackAction::Gc => remove(targets, json, |maps, _| maps.expire_flows()),
    }
}

fn list(targets: &[Target], json: bool) -> anyhow::Result<()> {
    let clock = clock();
    let now = clock.now();
    let mut flows = Vec::new();
    for target in targets {
        for record in target.interfaces()? {
            let maps = target.maps(&record.ifname);
            let timeouts = maps.timeouts()?;
            for Tracked { key, entry, table } in maps.flows()? {
                let state = FlowState::from_u8(entry.state);
                let idle = idle(&entry, now);
                let timeout = timeouts.for_flow(key.protocol, state);
                if idle > timeout {
                    continue; // expired: the datapath no longer honours it
                }
                let (src, dst) = endpoints(&key, &entry);
                flows.push(Flow {
                    interface: record.ifname.clone(),
                    netns: target.scope.netns().map(str::to_owned),
                    protocol: key.protocol,
                    src,
                    dst,
                    state: state.name(),
                    table: table.name(),
                    rule: match record.rule_of_slot(entry.slot) {
                        Some((rule, false)) => rule.to_string(),
                        Some((rule, true)) => format!("{rule} (removed)"),
                        None if entry.slot == firewall_common::policy::SLOT_AUDIT => "(audit: would drop)".to_owned(),
                        None => "(removed rule)".to_owned(),
                    },
                    idle_secs: clock.secs(idle),
                    expires_in_secs: clock.secs(timeout - idle),
                });
            }
        }
    }
    if json {
        return print_json(&serde_json::json!({ "flows": flows }));
    }
    let rows: Vec<Vec<String>> = flows
        .iter()
        .map(|f| {
            vec![
                f.interface.clone(),
                protocol_name(f.protocol),
                f.src.clone(),
                f.dst.clone(),
                f.state.to_owned(),
                f.table.to_owned(),
                f.rule.clone(),
                f.idle_secs.to_string(),
                f.expires_in_secs.to_string(),
            ]
        })
        .collect();
    crate::out!(
        "{}",
        table(&["INTERFACE", "PROTO", "FROM", "TO", "STATE", "TABLE", "RULE", "IDLE S", "EXPIRES S"], &rows)
    );
    Ok(())
}

fn remove(
    targets: &[Target],
    json: bool,
    mut op: impl FnMut(&crate::datapath::maps::IfaceMaps, &IfaceRecord) -> anyhow::Result<usize>,
) -> anyhow::Result<()> {
    let mut out = Vec::new();
    for target in targets {
        for record in target.interfaces()? {
            let removed = op(&target.maps(&record.ifname), &record)?;
            out.push(Removed { interface: record.ifname, netns: target.scope.netns().map(str::to_owned), removed });
        }
    }
    if json {
        return print_json(&serde_json::json!({ "interfaces": out }));
    }
    for r in out {
        crate::outln!("{}: removed {} flows", r.interface, r.removed);
    }
    Ok(())
}

/// `(opener, other)` as `addr:port` (ports omitted where the flow has none).
fn endpoints(key: &FlowKey, entry: &FlowEntry) -> (String, String) {
    let lo = endpoint(key.family, &key.addr_lo, key.port_lo, key.protocol);
    let hi = endpoint(key.family, &key.addr_hi, key.port_hi, key.protocol);
    if entry.opened_by_lo == 1 {
        (lo, hi)
    } else {
        (hi, lo)
    }
}

fn endpoint(family: u8, addr: &Addr6, port: u16, protocol: u8) -> String {
    let ip: IpAddr = if family == 4 {
        Ipv4Addr::from(addr[0].to_ne_bytes()).into()
    } else {
        Ipv6Addr::from(addr6_octets(*addr)).into()
    };
    match (protocol, ip) {
        (firewall_common::proto::TCP | firewall_common::proto::UDP, IpAddr::V4(v4)) => format!("{v4}:{port}"),
        (firewall_common::proto::TCP | firewall_common::proto::UDP, IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        (firewall_common::proto::ICMP | firewall_common::proto::ICMPV6, ip) if port != 0 => format!("{ip} id {port}"),
        (_, ip) => ip.to_string(),
    }
}

fn protocol_name(p: u8) -> String {
    firewall_common::proto::name(p).map_or_else(|| p.to_string(), str::to_owned)
}
