//! `sgctl explain`: which rule allows a packet, by the same algorithm the
//! kernel runs, on the interface's compiled policy.
use std::net::IpAddr;

use serde::Serialize;

use crate::{
    cli::ExplainArgs,
    compile,
    control::{self, Host},
    output::print_json,
    policy::{Protocol, RuleDirection},
    InputError,
};

#[derive(Serialize)]
struct Explanation {
    interface: String,
    direction: RuleDirection,
    allowed: bool,
    rule: Option<String>,
    description: Option<String>,
}

pub fn run(host: &Host, args: &ExplainArgs, json: bool) -> anyhow::Result<()> {
    let (_, policy) =
        host.parsed_policy()?.ok_or_else(|| InputError(format!("no policy applied in {}", host.scope)))?;
    let wanted = host.current_wanted()?;
    let index = wanted
        .iter()
        .position(|w| w.ifname == args.iface)
        .ok_or_else(|| InputError(format!("interface {:?} is not filtered in {}", args.iface, host.scope)))?;
    let compiled = control::compile_all(&policy, &wanted)?.swap_remove(index);

    let direction = if args.outbound { RuleDirection::Outbound } else { RuleDirection::Inbound };
    let protocol = parse_protocol(&args.proto)?;
    let protocol_number = protocol.number().unwrap_or(0);
    let port_or_icmp = if protocol.is_icmp() {
        // Default: an echo request.
        let echo = if protocol == Protocol::Icmpv6 { 128 } else { 8 };
        [args.icmp_type.unwrap_or(echo), args.icmp_code.unwrap_or(0)]
    } else {
        args.dport.unwrap_or(0).to_be_bytes()
    };
    let peer: IpAddr = match direction {
        RuleDirection::Inbound => args.src,
        RuleDirection::Outbound => args.dst,
    };
    let rule = compile::lookup(&compiled, direction, protocol_number, port_or_icmp, peer)
        .and_then(|id| compiled.rules.get(id as usize));
    let out = Explanation {
        interface: args.iface.clone(),
        direction,
        allowed: rule.is_some(),
        rule: rule.map(ToString::to_string),
        description: rule.and_then(|r| r.description.clone()),
    };
    if json {
        return print_json(&out);
    }
    match rule {
        Some(r) => crate::outln!(
            "allowed by {r}{} (replies of the flow pass too)",
            r.description.as_deref().map(|d| format!(" \"{d}\"")).unwrap_or_default()
        ),
        None => {
            crate::outln!("no rule allows it: dropped silently (default deny), unless it belongs to a tracked flow")
        }
    }
    Ok(())
}

fn parse_protocol(s: &str) -> anyhow::Result<Protocol> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "icmp" => Protocol::Icmp,
        "icmpv6" => Protocol::Icmpv6,
        n => Protocol::from_number(n.parse().map_err(|_| {
            InputError(format!("invalid protocol {s:?}: expected tcp, udp, icmp, icmpv6 or a number 0-255"))
        })?),
    })
}
