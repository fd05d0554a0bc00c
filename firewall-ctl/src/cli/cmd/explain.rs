//! `sgctl explain`: what happens to a packet on a filtered interface that
//! belongs to no tracked flow, answered by [`crate::model`] — the yardstick
//! the kernel is held to on every CI run (the differential test) — over the
//! applied policy and the groups the interface carries.
use firewall_common::proto;
use serde::Serialize;

use crate::{
    cli::{output::print_json, ExplainArgs},
    control::{self, Target},
    model::{IpPacket, Model, Transport, Verdict},
    policy::RuleDirection,
    InputError,
};

#[derive(Serialize)]
struct Explanation {
    interface: String,
    direction: RuleDirection,
    /// `allowed` (a rule opens a flow), `dropped` (default deny) or
    /// `unfiltered` (passes unjudged).
    verdict: &'static str,
    /// Whether the packet passes.
    allowed: bool,
    /// The rule credited with the flow.
    rule: Option<String>,
    description: Option<String>,
    /// Why an unfiltered packet is not judged.
    unfiltered: Option<&'static str>,
    /// Groups of the interface in audit mode: a packet no rule allows
    /// passes as `would_drop` (verdict `would_drop`).
    audit_groups: Vec<String>,
}

pub fn run(target: &Target, args: &ExplainArgs, json: bool) -> anyhow::Result<()> {
    let (_, policy) =
        target.parsed_policy()?.ok_or_else(|| InputError::NoPolicyInForce { scope: target.scope.to_string() })?;
    let wanted = target.current_wanted()?;
    let attached = wanted
        .iter()
        .find(|w| w.ifname == args.iface)
        .ok_or_else(|| InputError::NotFiltered { ifname: args.iface.clone(), scope: target.scope.to_string() })?;
    let local = control::local_members(&wanted)?;
    let model = Model::new(&policy, &attached.groups, &local)
        .map_err(|e| InputError::AppliedPolicy { error: e.on_interface(&args.iface) })?;

    let direction = if args.outbound { RuleDirection::Outbound } else { RuleDirection::Inbound };
    let packet = IpPacket::new(args.src, args.dst, transport(args)?)?;
    let verdict = model.judge(direction, &packet);
    let audit_groups: Vec<String> = attached
        .groups
        .iter()
        .filter(|g| policy.group(g).is_some_and(|g| g.mode == crate::policy::GroupMode::Audit))
        .cloned()
        .collect();
    let would_drop = verdict == Verdict::Denied && !audit_groups.is_empty();
    let (rule, description) = match &verdict {
        Verdict::Allowed(r) => (Some(r.to_string()), model.rule(r).and_then(|r| r.description.clone())),
        _ => (None, None),
    };
    let out = Explanation {
        interface: args.iface.clone(),
        direction,
        verdict: match verdict {
            Verdict::Allowed(_) => "allowed",
            Verdict::Denied if would_drop => "would_drop",
            Verdict::Denied => "dropped",
            Verdict::Unfiltered(_) => "unfiltered",
        },
        allowed: verdict != Verdict::Denied || would_drop,
        rule,
        description,
        unfiltered: match verdict {
            Verdict::Unfiltered(why) => Some(why.why()),
            _ => None,
        },
        audit_groups,
    };
    if json {
        return print_json(&out);
    }
    match (&out.rule, out.unfiltered) {
        (Some(r), _) => crate::outln!(
            "allowed by {r}{} (replies of the flow pass too)",
            out.description.as_deref().map(|d| format!(" \"{d}\"")).unwrap_or_default()
        ),
        (None, Some(why)) => crate::outln!("passes unfiltered: {why}"),
        (None, None) if !out.audit_groups.is_empty() => crate::outln!(
            "no rule allows it: passes as would_drop (group {} in audit mode), counted and logged; dropped once enforced",
            out.audit_groups.join(", ")
        ),
        (None, None) => {
            crate::outln!("no rule allows it: dropped silently (default deny), unless it belongs to a tracked flow");
        }
    }
    Ok(())
}

/// The packet's transport from `--proto`, `--dport` and the ICMP flags.
fn transport(args: &ExplainArgs) -> anyhow::Result<Transport> {
    let number = match proto::by_name(&args.proto) {
        Some(number) => number,
        None => {
            args.proto.parse().map_err(|_| InputError::InvalidProtocol { value: args.proto.clone(), range: "0-255" })?
        }
    };
    let dport = args.dport.unwrap_or(0);
    let (icmp_type, code) = (args.icmp_type, args.icmp_code.unwrap_or(0));
    Ok(match number {
        proto::TCP => Transport::Tcp { dport },
        proto::UDP => Transport::Udp { dport },
        // Default: an echo request.
        proto::ICMP => Transport::Icmp { icmp_type: icmp_type.unwrap_or(8), code },
        proto::ICMPV6 => Transport::Icmpv6 { icmp_type: icmp_type.unwrap_or(128), code },
        n => Transport::Other(n),
    })
}
