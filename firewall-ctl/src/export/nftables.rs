//! `sgctl export nftables`: the policy as one nftables table, `inet sgctl`,
//! that `nft -f` loads as is (it replaces that table alone, atomically, and
//! leaves every other table of the host alone).
//!
//! # Why `table inet` with `input`, `forward` and `output` chains
//! sgctl judges every packet that arrives on a filtered interface against
//! its inbound rules and every packet that leaves through it against its
//! outbound rules, statefully (semantics.md items 1-12). nftables can only
//! be stateful where conntrack has run: `ct state` is meaningless in the
//! `netdev` family (its ingress and egress hooks run before conntrack), so
//! a `netdev` table could only be the stateless drop filter Cloudflare
//! compared XDP with. The `inet` family's `input`/`forward` hooks see every
//! packet that arrived on an interface (for this host, or routed through
//! it) and `output`/`forward` every packet that leaves, after conntrack and
//! after IP defragmentation; `iifname`/`oifname` pick the filtered
//! interfaces. So:
//!
//! - `ct state established,related accept` first: replies and ICMP errors
//!   about tracked flows pass (items 7 and 9);
//! - ICMPv6 neighbour discovery and multicast listener discovery (types
//!   130-137 and 143) pass unjudged (item 6); non-IP frames never reach an
//!   `inet` table, so ARP and LLDP pass too;
//! - the base chains have `policy accept` and jump, through a verdict map on
//!   the interface name, to one chain per filtered interface and direction
//!   (`IFACE/inbound`, `IFACE/outbound`): interfaces without a group are not
//!   filtered (item 6);
//! - an interface chain holds its groups' rules in file order; a rule that
//!   matches counts and `return`s (so a routed packet is judged by its
//!   inbound interface's chain, then by its outbound interface's), and the
//!   chain ends in a counted `drop` (default deny, item 1).
//!
//! Differences that remain: nf_conntrack is one table per network
//! namespace where sgctl keeps one per interface; its timeouts are the
//! kernel's, not AWS's (`conntrack:` is not exported); a full nf_conntrack
//! table evicts flows that have not seen a reply, where sgctl drops the new
//! flow (item 12); and a packet this host sends that the outbound rules
//! drop is reported to the sending socket (a UDP `send` fails with EPERM,
//! TCP retries its SYN), where sgctl's tc egress drop is silent (item 2).
//!
//! # Rules, sets and counters
//! A rule of group G, direction D, index N becomes one nftables rule per
//! address family and peer kind, all sharing the named counter
//! `IFACE/G/D/N` (comment: the rule's description), so
//! `nft list counters table inet sgctl` reads like `sgctl stats`. It counts
//! the packets that rule admitted before their flow was established (the
//! first packet of a TCP flow; every packet of a UDP flow until a reply
//! comes back), not, as sgctl does, every packet of the flow. The default
//! deny of each chain counts in `IFACE/D/dropped_no_rule`.
//!
//! Peers: `sg:NAME` becomes the set `sg/NAME/v4` (and `/v6`) of the group's
//! member addresses, `pl:NAME` the set `pl/NAME/v4` (`/v6`); a rule's own
//! CIDRs go in a set `rule/G/D/N/v4` (`/v6`) when it has more than one of
//! a family, and its ports in `rule/G/D/N/ports` when it has more than one
//! range. All sets are interval sets with `auto-merge`, so overlapping
//! CIDRs are fine. With `--linear` there are no sets: one rule per (CIDR,
//! port range), the form the scaling benchmark compares with.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
};

use ipnet::IpNet;

use super::{is_v4, members, ExportError, Interface};
use crate::policy::{Group, PeerTarget, Policy, Ports, Protocol, Rule, RuleDirection};

/// The table every export defines (and replaces when loaded again).
pub const TABLE: &str = "sgctl";

/// How the rules are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// One rule per (CIDR, port range), without sets.
    pub linear: bool,
}

/// ICMPv6 types that pass unjudged (semantics.md item 6): multicast listener
/// query/report/done (130-132), router and neighbour discovery and redirect
/// (133-137), MLDv2 report (143).
const ICMPV6_LINK_CONTROL: &str = "mld-listener-query, mld-listener-report, mld-listener-done, nd-router-solicit, \
                                   nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect, \
                                   mld2-listener-report";

/// nftables keeps at most this many bytes of a comment.
const MAX_COMMENT: usize = 127;

/// Elements per line in a set definition.
const ELEMENTS_PER_LINE: usize = 8;

/// The ruleset for `interfaces` (each with its groups) under `policy`.
/// `local_members` maps a group to the addresses of the local interfaces
/// that carry it; they join its `members:` in `sg:` sets.
pub fn ruleset(
    policy: &Policy,
    interfaces: &[Interface],
    local_members: &BTreeMap<String, Vec<IpNet>>,
    options: Options,
) -> Result<String, ExportError> {
    let mut table = Table {
        policy,
        local_members,
        options,
        counters: String::new(),
        sets: String::new(),
        set_names: BTreeSet::new(),
        chains: String::new(),
    };
    let mut filtered = Vec::with_capacity(interfaces.len());
    for (index, iface) in interfaces.iter().enumerate() {
        if iface.name.chars().any(|c| c == '"' || c == '\\' || c.is_control() || c.is_whitespace()) {
            return Err(ExportError::InterfaceName(iface.name.clone()));
        }
        let groups = attached(policy, iface)?;
        let id = interface_id(&iface.name, index);
        for direction in RuleDirection::BOTH {
            table.interface_chain(&id, &groups, direction);
        }
        filtered.push((iface.name.as_str(), id));
    }

    let mut out = String::new();
    header(&mut out, policy, interfaces, options);
    out.push_str(&format!("table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n"));
    out.push_str(&table.counters);
    out.push_str(&table.sets);
    out.push_str(&table.chains);
    for (hook, directions) in [
        ("input", &[RuleDirection::Inbound][..]),
        ("forward", &[RuleDirection::Inbound, RuleDirection::Outbound][..]),
        ("output", &[RuleDirection::Outbound][..]),
    ] {
        base_chain(&mut out, hook, directions, &filtered);
    }
    out.push_str("}\n");
    Ok(out)
}

/// The groups `iface` carries, each once, in the order given.
fn attached<'a>(policy: &'a Policy, iface: &Interface) -> Result<Vec<&'a Group>, ExportError> {
    let mut out: Vec<&Group> = Vec::new();
    for name in &iface.groups {
        let group = policy
            .group(name)
            .ok_or_else(|| ExportError::UnknownGroup { interface: iface.name.clone(), group: name.clone() })?;
        if !out.iter().any(|g| g.name == group.name) {
            out.push(group);
        }
    }
    Ok(out)
}

/// The interface's name where it is a valid nftables identifier (letters,
/// digits, `_ . -`, not starting with a digit or `-`), else `_ifN`.
fn interface_id(name: &str, index: usize) -> String {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '.');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        name.to_owned()
    } else {
        format!("_if{index}")
    }
}

fn header(out: &mut String, policy: &Policy, interfaces: &[Interface], options: Options) {
    let files = if policy.files.is_empty() { "(no file)".to_owned() } else { policy.files.join(" ") };
    let _ = writeln!(
        out,
        "# Generated by `sgctl export nftables{}` from: {files}",
        if options.linear { " --linear" } else { "" }
    );
    out.push_str(
        "# The same security groups as `sgctl apply` enforces (docs/semantics.md), for nftables.\n\
         # Load with `nft -f FILE`: it replaces `table inet sgctl` atomically and nothing else.\n\
         # Counters (`nft list counters table inet sgctl`): IFACE/GROUP/DIRECTION/N is sgctl's\n\
         # rule GROUP/DIRECTION/N on IFACE; IFACE/DIRECTION/dropped_no_rule is the default deny.\n",
    );
    if interfaces.is_empty() {
        out.push_str("# No interface carries a group: this ruleset filters nothing.\n");
    }
    for iface in interfaces {
        let _ = writeln!(out, "# {}: {}", iface.name, iface.groups.join(", "));
    }
}

/// A hook's base chain: established flows and link control pass, then each
/// filtered interface's chains (by name, through a verdict map), then accept.
fn base_chain(out: &mut String, hook: &str, directions: &[RuleDirection], filtered: &[(&str, String)]) {
    let _ = writeln!(out, "\tchain {hook} {{");
    let _ = writeln!(out, "\t\ttype filter hook {hook} priority filter; policy accept;");
    out.push_str("\t\tct state established,related accept\n");
    let _ = writeln!(out, "\t\ticmpv6 type {{ {ICMPV6_LINK_CONTROL} }} accept");
    if !filtered.is_empty() {
        for direction in directions {
            let selector = match direction {
                RuleDirection::Inbound => "iifname",
                RuleDirection::Outbound => "oifname",
            };
            let targets: Vec<String> =
                filtered.iter().map(|(name, id)| format!("\"{name}\" : jump {id}/{direction}")).collect();
            let _ = writeln!(out, "\t\t{selector} vmap {{ {} }}", targets.join(", "));
        }
    }
    out.push_str("\t}\n");
}

/// The parts of the table, in the order they are written.
struct Table<'a> {
    policy: &'a Policy,
    local_members: &'a BTreeMap<String, Vec<IpNet>>,
    options: Options,
    counters: String,
    sets: String,
    /// Sets defined so far (a set shared by several rules is written once).
    set_names: BTreeSet<String>,
    chains: String,
}

/// Address family of a match.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn suffix(self) -> &'static str {
        match self {
            Self::V4 => "v4",
            Self::V6 => "v6",
        }
    }

    fn keyword(self) -> &'static str {
        match self {
            Self::V4 => "ip",
            Self::V6 => "ip6",
        }
    }

    fn set_type(self) -> &'static str {
        match self {
            Self::V4 => "ipv4_addr",
            Self::V6 => "ipv6_addr",
        }
    }

    fn holds(self, net: &IpNet) -> bool {
        is_v4(net) == (self == Self::V4)
    }
}

/// Which rule of which group, for names and comments.
struct RuleRef<'r> {
    group: &'r str,
    direction: RuleDirection,
    index: usize,
}

impl RuleRef<'_> {
    /// `GROUP/DIRECTION/N`, as sgctl names rules.
    fn name(&self) -> String {
        format!("{}/{}/{}", self.group, self.direction, self.index)
    }
}

impl Table<'_> {
    /// `IFACE/DIRECTION`: the rules of every group the interface carries,
    /// then the counted default deny.
    fn interface_chain(&mut self, id: &str, groups: &[&Group], direction: RuleDirection) {
        let mut lines = Vec::new();
        for group in groups {
            for (index, rule) in group.rules(direction).iter().enumerate() {
                let at = RuleRef { group: &group.name, direction, index };
                let counter = format!("{id}/{}", at.name());
                self.counter(&counter, rule.description.as_deref());
                for matches in self.rule_matches(rule, &at) {
                    lines.push(format!("{matches} counter name {counter} return comment \"{}\"", at.name()));
                }
            }
        }
        let dropped = format!("{id}/{direction}/dropped_no_rule");
        self.counter(&dropped, Some("packets no rule allowed (default deny)"));
        lines.push(format!("counter name {dropped} drop"));

        let _ = writeln!(self.chains, "\tchain {id}/{direction} {{");
        for line in lines {
            let _ = writeln!(self.chains, "\t\t{line}");
        }
        self.chains.push_str("\t}\n\n");
    }

    fn counter(&mut self, name: &str, comment: Option<&str>) {
        let _ = writeln!(self.counters, "\tcounter {name} {{");
        if let Some(text) = comment {
            let _ = writeln!(self.counters, "\t\tcomment \"{}\"", comment_text(text));
        }
        self.counters.push_str("\t}\n\n");
    }

    /// The match expressions of a rule, one per nftables rule it becomes.
    fn rule_matches(&mut self, rule: &Rule, at: &RuleRef<'_>) -> Vec<String> {
        let families: &[Family] = match rule.protocol {
            Protocol::Icmp => &[Family::V4],
            Protocol::Icmpv6 => &[Family::V6],
            _ => &[Family::V4, Family::V6],
        };
        let l4 = self.l4_matches(rule, at);
        let mut out = Vec::new();
        for &family in families {
            for address in self.address_matches(rule, at, family) {
                for l4 in &l4 {
                    out.push(if l4.is_empty() { address.clone() } else { format!("{address} {l4}") });
                }
            }
        }
        out
    }

    /// `ip saddr …` / `ip6 daddr …` matches of the rule's peers in `family`.
    fn address_matches(&mut self, rule: &Rule, at: &RuleRef<'_>, family: Family) -> Vec<String> {
        let field = match at.direction {
            RuleDirection::Inbound => "saddr",
            RuleDirection::Outbound => "daddr",
        };
        let prefix = format!("{} {field}", family.keyword());
        let own: Vec<IpNet> = rule
            .peers
            .iter()
            .filter_map(|p| match &p.target {
                PeerTarget::Cidr(net) if family.holds(net) => Some(*net),
                _ => None,
            })
            .collect();

        if self.options.linear {
            let mut seen = BTreeSet::new();
            let mut nets = own;
            for peer in &rule.peers {
                nets.extend(self.named_peer(&peer.target).into_iter().filter(|n| family.holds(n)));
            }
            return nets.into_iter().filter(|n| seen.insert(*n)).map(|n| format!("{prefix} {n}")).collect();
        }

        let mut out = Vec::new();
        match own.as_slice() {
            [] => {}
            [one] => out.push(format!("{prefix} {one}")),
            many => {
                let name = format!("rule/{}/{}", at.name(), family.suffix());
                self.address_set(&name, family, many);
                out.push(format!("{prefix} @{name}"));
            }
        }
        let mut named_done = BTreeSet::new();
        for peer in &rule.peers {
            let kind = match &peer.target {
                PeerTarget::Cidr(_) => continue,
                PeerTarget::Group(name) => format!("sg/{name}"),
                PeerTarget::PrefixList(name) => format!("pl/{name}"),
            };
            if !named_done.insert(kind.clone()) {
                continue;
            }
            let nets: Vec<IpNet> = self.named_peer(&peer.target).into_iter().filter(|n| family.holds(n)).collect();
            if nets.is_empty() {
                continue; // an empty set matches nothing
            }
            let name = format!("{kind}/{}", family.suffix());
            self.address_set(&name, family, &nets);
            out.push(format!("{prefix} @{name}"));
        }
        out
    }

    /// The networks behind `sg:NAME` (members) or `pl:NAME` (its CIDRs).
    fn named_peer(&self, target: &PeerTarget) -> Vec<IpNet> {
        match target {
            PeerTarget::Cidr(_) => Vec::new(),
            PeerTarget::Group(name) => members(self.policy, self.local_members, name),
            PeerTarget::PrefixList(name) => self.policy.prefix_list(name).map(|p| p.cidrs.clone()).unwrap_or_default(),
        }
    }

    fn address_set(&mut self, name: &str, family: Family, nets: &[IpNet]) {
        let mut seen = BTreeSet::new();
        let elements: Vec<String> = nets.iter().filter(|n| seen.insert(**n)).map(ToString::to_string).collect();
        self.set(name, family.set_type(), &elements);
    }

    fn set(&mut self, name: &str, set_type: &str, elements: &[String]) {
        if !self.set_names.insert(name.to_owned()) {
            return;
        }
        let _ = writeln!(self.sets, "\tset {name} {{");
        let _ = writeln!(self.sets, "\t\ttype {set_type}");
        self.sets.push_str("\t\tflags interval\n\t\tauto-merge\n\t\telements = {");
        for (i, chunk) in elements.chunks(ELEMENTS_PER_LINE).enumerate() {
            self.sets.push_str(if i == 0 { " " } else { ",\n\t\t\t     " });
            self.sets.push_str(&chunk.join(", "));
        }
        self.sets.push_str(" }\n\t}\n\n");
    }

    /// Protocol, port and ICMP matches; one per nftables rule (several only
    /// for `--linear` port lists). An empty string matches every protocol.
    fn l4_matches(&mut self, rule: &Rule, at: &RuleRef<'_>) -> Vec<String> {
        match rule.protocol {
            Protocol::All => vec![String::new()],
            Protocol::Tcp | Protocol::Udp => {
                let proto = rule.protocol.to_string();
                match &rule.ports {
                    Ports::Any => vec![format!("meta l4proto {proto}")],
                    Ports::Ranges(ranges) => {
                        let each: Vec<String> = ranges
                            .iter()
                            .map(|r| {
                                if r.first == r.last {
                                    r.first.to_string()
                                } else {
                                    format!("{}-{}", r.first, r.last)
                                }
                            })
                            .collect();
                        if self.options.linear || each.len() == 1 {
                            each.into_iter().map(|p| format!("{proto} dport {p}")).collect()
                        } else {
                            let name = format!("rule/{}/ports", at.name());
                            self.set(&name, "inet_service", &each);
                            vec![format!("{proto} dport @{name}")]
                        }
                    }
                }
            }
            Protocol::Icmp | Protocol::Icmpv6 => {
                let (keyword, proto) =
                    if rule.protocol == Protocol::Icmp { ("icmp", "icmp") } else { ("icmpv6", "ipv6-icmp") };
                vec![match (rule.icmp_type, rule.icmp_code) {
                    (None, _) => format!("meta l4proto {proto}"),
                    (Some(t), None) => format!("{keyword} type {t}"),
                    (Some(t), Some(c)) => format!("{keyword} type {t} {keyword} code {c}"),
                }]
            }
            Protocol::Other(n) => vec![format!("meta l4proto {n}")],
        }
    }
}

/// A description as an nftables comment: no quotes or control characters,
/// at most [`MAX_COMMENT`] bytes.
fn comment_text(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = match c {
            '"' => '\'',
            c if c.is_control() => ' ',
            c => c,
        };
        if out.len() + c.len_utf8() > MAX_COMMENT {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
