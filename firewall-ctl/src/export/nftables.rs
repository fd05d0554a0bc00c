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
//! - an interface chain judges a packet by its groups' rules, and ends in a
//!   counted `drop` (default deny, item 1). A rule that matches counts and
//!   returns to the base chain (so a routed packet is judged by its inbound
//!   interface's chain, then by its outbound interface's).
//!
//! # The default form: one lookup, as an nftables expert writes it
//! The rules of an interface, direction and family are one concatenated
//! interval verdict map, `ip saddr . meta l4proto . th dport . th sport
//! vmap @IFACE/DIRECTION/v4` (TCP and UDP by destination port, ICMP and
//! ICMPv6 by type and code, the first two bytes `th sport` reads), plus
//! one `ip saddr . meta l4proto vmap` for every other protocol: a packet
//! costs the same with 10 rules as with 1,000. nftables needs the elements
//! of such a map disjoint, so `flat::partition` cuts the rules' address
//! and port ranges into disjoint boxes, each sending the packet (`goto`)
//! to the chain `IFACE/GROUP/DIRECTION/N` of the rule sgctl credits for it
//! (the most specific address, then file order, docs/cli.md), which
//! counts it in the rule's named counter. An `sg:` or `pl:` peer of more
//! than [`LARGE_NAMED_PEER`] addresses is not folded in: it keeps its own
//! interval set, matched by one rule per rule that names it, after the maps
//! (its members stay `nft add element`-able, and a million-CIDR list does
//! not become millions of map elements); a packet such a rule and a map
//! element both allow is credited to the map's rule.
//!
//! `--linear` writes one rule per (CIDR, port range) in file order
//! instead, the first match counting: the form a ruleset grows into rule by
//! rule, which the benchmarks also measure.
//!
//! Differences that remain: nf_conntrack is one table per network
//! namespace where sgctl keeps one per interface; its timeouts are the
//! kernel's, not AWS's (`conntrack:` is not exported); a full nf_conntrack
//! table evicts flows that have not seen a reply, where sgctl drops the new
//! flow (item 12); and a packet this host sends that the outbound rules
//! drop is reported to the sending socket (a UDP `send` fails with EPERM,
//! TCP retries its SYN), where sgctl's tc egress drop is silent (item 2).
//!
//! # Counters
//! Every rule of group G, direction D, index N has the named counter
//! `IFACE/G/D/N` (comment: the rule's description), so `nft list counters
//! table inet sgctl` reads like `sgctl stats`. It counts the packets that
//! rule admitted before their flow was established (the first packet of a
//! TCP flow; every packet of a UDP flow until a reply comes back), not, as
//! sgctl does, every packet of the flow. The default deny of each chain
//! counts in `IFACE/D/dropped_no_rule`.
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
    /// One rule per (CIDR, port range), without sets: the form a ruleset
    /// grows into rule by rule (the benchmarks' second nftables peer).
    /// Otherwise: one lookup per interface, direction and family.
    pub linear: bool,
}

/// A named peer (`sg:`, `pl:`) with more addresses than this keeps a set
/// of its own and one nftables rule per rule that names it, rather than
/// being folded into the interface's maps: its entries stay `nft add
/// element`-able and the maps stay small (a million-CIDR prefix list
/// would be millions of map elements).
pub const LARGE_NAMED_PEER: usize = 1024;

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
#[derive(Clone, Copy)]
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
        let lines = if self.options.linear {
            self.linear_rules(id, groups, direction)
        } else {
            self.flat_rules(id, groups, direction)
        };
        let mut lines = lines;
        let dropped = format!("{id}/{direction}/dropped_no_rule");
        self.counter(&dropped, Some("packets no rule allowed (default deny)"));
        lines.push(format!("counter name {dropped} drop"));

        let _ = writeln!(self.chains, "\tchain {id}/{direction} {{");
        for line in lines {
            let _ = writeln!(self.chains, "\t\t{line}");
        }
        self.chains.push_str("\t}\n\n");
    }

    /// The whole direction as one lookup per family: a concatenated
    /// interval map from (address, protocol, destination port, source
    /// port) to the rule's own chain for TCP, UDP, ICMP and ICMPv6, and one
    /// from (address, protocol) for every other protocol, their elements
    /// disjoint (`flat::partition`). A rule's chain counts in its named
    /// counter and returns to the base chain, as a matching linear rule
    /// does. Rules naming a large `sg:`/`pl:` peer follow the maps, one
    /// nftables rule each with the peer's own set.
    fn flat_rules(&mut self, id: &str, groups: &[&Group], direction: RuleDirection) -> Vec<String> {
        let field = match direction {
            RuleDirection::Inbound => "saddr",
            RuleDirection::Outbound => "daddr",
        };
        let mut rules: Vec<(RuleRef<'_>, &Rule)> = Vec::new();
        for group in groups {
            for (index, rule) in group.rules(direction).iter().enumerate() {
                rules.push((RuleRef { group: &group.name, direction, index }, rule));
            }
        }
        let chains: Vec<String> = rules.iter().map(|(at, _)| format!("{id}/{}", at.name())).collect();
        let mut lines = Vec::new();
        let mut large = Vec::new();
        for family in [Family::V4, Family::V6] {
            let mut atoms = Vec::new();
            for (position, (at, rule)) in rules.iter().enumerate() {
                for net in self.peer_nets(rule, family, LARGE_NAMED_PEER) {
                    for l4 in l4_boxes(rule) {
                        atoms.push(flat::Atom { rule: position, prefix: net.prefix_len(), addr: span(net), l4 });
                    }
                }
                if family == Family::V4 {
                    for name in self.large_peers(rule) {
                        large.push((position, at.name(), name));
                    }
                }
            }
            let entries = flat::partition(&atoms);
            let (ported, other): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| is_ported(e.l4[0]));
            let prefix = format!("{} {field}", family.keyword());
            // (entries, map name suffix, key type after the address, L4 fields, selector)
            let maps = [
                (ported, "", " . inet_proto . inet_service . inet_service", 3, "meta l4proto . th dport . th sport"),
                (other, "/proto", " . inet_proto", 1, "meta l4proto"),
            ];
            for (entries, suffix, key, fields, selector) in maps {
                if entries.is_empty() {
                    continue;
                }
                let name = format!("{id}/{direction}/{}{suffix}", family.suffix());
                let elements: Vec<String> = entries
                    .iter()
                    .map(|e| {
                        let l4: Vec<String> = e.l4[..fields].iter().map(|r| range_text(*r)).collect();
                        format!("{} . {} : goto {}", addr_text(family, e.addr), l4.join(" . "), chains[e.rule])
                    })
                    .collect();
                self.map(&name, &format!("{}{key}", family.set_type()), &elements);
                lines.push(format!("{prefix} . {selector} vmap @{name}"));
            }
        }
        for (position, rule_name, peer) in large {
            let rule = rules[position].1;
            for family in [Family::V4, Family::V6] {
                let nets: Vec<IpNet> = self.named_peer(&peer).into_iter().filter(|n| family.holds(n)).collect();
                if nets.is_empty() {
                    continue;
                }
                let set = format!("{}/{}", peer_set_stem(&peer), family.suffix());
                self.address_set(&set, family, &nets);
                let at = rules[position].0;
                for l4 in self.l4_matches(rule, &at) {
                    let matches = format!("{} {field} @{set} {l4}", family.keyword());
                    lines.push(format!("{} goto {} comment \"{rule_name}\"", matches.trim_end(), chains[position]));
                }
            }
        }
        for ((at, rule), chain) in rules.iter().zip(&chains) {
            self.counter(chain, rule.description.as_deref());
            let _ = writeln!(self.chains, "\tchain {chain} {{");
            let _ = writeln!(self.chains, "\t\tcounter name {chain} comment \"{}\"", at.name());
            self.chains.push_str("\t}\n\n");
        }
        lines
    }

    /// The named peers of `rule` too large for the maps, each once.
    fn large_peers(&self, rule: &Rule) -> Vec<PeerTarget> {
        let mut out: Vec<PeerTarget> = Vec::new();
        for peer in &rule.peers {
            if !matches!(peer.target, PeerTarget::Cidr(_))
                && !out.contains(&peer.target)
                && self.named_peer(&peer.target).len() > LARGE_NAMED_PEER
            {
                out.push(peer.target.clone());
            }
        }
        out
    }

    fn map(&mut self, name: &str, key_type: &str, elements: &[String]) {
        let _ = writeln!(self.sets, "\tmap {name} {{");
        let _ = writeln!(self.sets, "\t\ttype {key_type} : verdict");
        self.sets.push_str("\t\tflags interval\n\t\telements = {");
        for (i, e) in elements.iter().enumerate() {
            self.sets.push_str(if i == 0 { " " } else { ",\n\t\t\t     " });
            self.sets.push_str(e);
        }
        self.sets.push_str(" }\n\t}\n\n");
    }

    /// One rule per (CIDR, port range), in file order: each counts in its
    /// named counter and returns.
    fn linear_rules(&mut self, id: &str, groups: &[&Group], direction: RuleDirection) -> Vec<String> {
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
        lines
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

    /// `ip saddr …` / `ip6 daddr …` matches of the rule's peers in
    /// `family`, one per address (the linear form).
    fn address_matches(&self, rule: &Rule, at: &RuleRef<'_>, family: Family) -> Vec<String> {
        let field = match at.direction {
            RuleDirection::Inbound => "saddr",
            RuleDirection::Outbound => "daddr",
        };
        let prefix = format!("{} {field}", family.keyword());
        self.peer_nets(rule, family, usize::MAX).into_iter().map(|n| format!("{prefix} {n}")).collect()
    }

    /// The addresses of `rule`'s peers in `family`, each once, in order:
    /// its own CIDRs and the members of named peers of at most `largest`
    /// addresses.
    fn peer_nets(&self, rule: &Rule, family: Family, largest: usize) -> Vec<IpNet> {
        let mut seen = BTreeSet::new();
        let mut nets = Vec::new();
        for peer in &rule.peers {
            let more = match &peer.target {
                PeerTarget::Cidr(net) => vec![*net],
                named => self.named_peer(named),
            };
            if more.len() <= largest {
                nets.extend(more.into_iter().filter(|n| family.holds(n) && seen.insert(*n)));
            }
        }
        nets
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

/// Protocols whose first four header bytes the maps key on: TCP and UDP
/// (destination port), ICMP and ICMPv6 (type and code, as `th sport`).
const PORTED: [u32; 4] = [1, 6, 17, 58];

fn is_ported(protocols: flat::Span<u32>) -> bool {
    protocols.0 == protocols.1 && PORTED.contains(&protocols.0)
}

/// The L4 boxes of a rule: (protocol, destination port, source port).
/// `all` and bare protocol numbers cover every port; the protocols of
/// [`PORTED`] are split out of them (a packet of those always has the four
/// bytes the ported map reads, or is malformed).
fn l4_boxes(rule: &Rule) -> Vec<flat::L4> {
    const ANY_PORT: flat::Span<u32> = (0, 65535);
    let proto = |p: u32| (p, p);
    match rule.protocol {
        Protocol::All => {
            let mut out: Vec<flat::L4> = PORTED.iter().map(|&p| [proto(p), ANY_PORT, ANY_PORT]).collect();
            let mut lo = 0;
            for &p in &PORTED {
                if lo < p {
                    out.push([(lo, p - 1), ANY_PORT, ANY_PORT]);
                }
                lo = p + 1;
            }
            out.push([(lo, 255), ANY_PORT, ANY_PORT]);
            out
        }
        Protocol::Tcp | Protocol::Udp => {
            let p = if rule.protocol == Protocol::Tcp { 6 } else { 17 };
            match &rule.ports {
                Ports::Any => vec![[proto(p), ANY_PORT, ANY_PORT]],
                Ports::Ranges(ranges) => {
                    ranges.iter().map(|r| [proto(p), (u32::from(r.first), u32::from(r.last)), ANY_PORT]).collect()
                }
            }
        }
        Protocol::Icmp | Protocol::Icmpv6 => {
            let p = if rule.protocol == Protocol::Icmp { 1 } else { 58 };
            let type_code = match (rule.icmp_type, rule.icmp_code) {
                (None, _) => ANY_PORT,
                (Some(t), None) => (u32::from(t) << 8, u32::from(t) << 8 | 0xff),
                (Some(t), Some(c)) => (u32::from(t) << 8 | u32::from(c), u32::from(t) << 8 | u32::from(c)),
            };
            vec![[proto(p), ANY_PORT, type_code]]
        }
        Protocol::Other(n) => vec![[proto(u32::from(n)), ANY_PORT, ANY_PORT]],
    }
}

/// A network as an address range, in the family's own width.
fn span(net: IpNet) -> flat::Span<u128> {
    match net {
        IpNet::V4(n) => (u128::from(u32::from(n.network())), u128::from(u32::from(n.broadcast()))),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// An address range as nftables writes it: a prefix where it is one.
fn addr_text(family: Family, (lo, hi): flat::Span<u128>) -> String {
    let addr = |v: u128| match family {
        Family::V4 => std::net::Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX)).to_string(),
        Family::V6 => std::net::Ipv6Addr::from(v).to_string(),
    };
    let size = hi - lo;
    let aligned = size.checked_add(1).is_none_or(|n| n.is_power_of_two() && lo % n == 0);
    if aligned {
        let bits = if family == Family::V4 { 32 } else { 128 };
        let len = bits - (u128::BITS - size.leading_zeros());
        format!("{}/{len}", addr(lo))
    } else {
        format!("{}-{}", addr(lo), addr(hi))
    }
}

fn range_text((lo, hi): flat::Span<u32>) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// `sg/NAME` or `pl/NAME`: the stem of a named peer's sets.
fn peer_set_stem(target: &PeerTarget) -> String {
    match target {
        PeerTarget::Group(name) => format!("sg/{name}"),
        PeerTarget::PrefixList(name) => format!("pl/{name}"),
        PeerTarget::Cidr(net) => net.to_string(),
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

mod flat;
#[cfg(test)]
mod tests;
