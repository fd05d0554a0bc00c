//! Which rules allow a packet, and which one is credited with its flow,
//! straight from docs/semantics.md items 1-5 and docs/cli.md ("Rule
//! identity"): a loop over the attached rules, no tries, no bit sets. The
//! compiler, `simulate` and the kernel are all tested against this, so it
//! takes nothing from the compiler: which groups are attached and which
//! addresses carry a group are worked out here again, plainly.

use std::{cmp::Reverse, collections::BTreeMap, fmt, net::IpAddr};

use ipnet::IpNet;
use serde::Serialize;

use crate::{
    compile::CompileError,
    policy::{Group, PeerTarget, Policy, Ports, Protocol, Rule, RuleDirection},
};

/// Tiers of specificity the kernel tells apart when crediting a flow
/// (`firewall_common::policy::MAX_TIERS`; docs/cli.md states the rule): the
/// `CREDIT_DEPTH - 1` longest prefix lengths containing the peer one tier
/// each, then everything less specific — longer chains and `/0` peers —
/// together, where the first rule in file order wins.
pub const CREDIT_DEPTH: usize = firewall_common::policy::MAX_TIERS;

/// A rule as `sgctl stats` and `explain` name it: `GROUP/DIRECTION/INDEX`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RuleRef {
    pub group: String,
    pub direction: RuleDirection,
    /// Position in the group's `inbound`/`outbound` list, from 0.
    pub index: u32,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.group, self.direction, self.index)
    }
}

/// The credited rule and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credit {
    pub rule: RuleRef,
    /// The longest of its peer prefixes that contains the peer.
    pub prefix_len: u8,
    /// The credited rule's prefix lies in the last tier, which holds more
    /// than one prefix length: the first in file order among them won, not
    /// necessarily the most specific.
    pub past_walk: bool,
}

/// The rules of the groups attached to one interface.
pub struct Rules<'a> {
    policy: &'a Policy,
    groups: Vec<&'a Group>,
    local_members: &'a BTreeMap<String, Vec<IpNet>>,
}

/// A rule that allows the packet, and how specific its address match is.
struct Match<'a> {
    rule: RuleRef,
    at: &'a Rule,
    /// The longest of the rule's peer prefixes that contains the peer.
    prefix_len: u8,
}

impl<'a> Rules<'a> {
    /// The union of `groups` (each once); `local_members` maps a group to
    /// the addresses of local interfaces carrying it, which join its
    /// `members:` for `sg:` peers.
    pub fn new(
        policy: &'a Policy,
        groups: &[String],
        local_members: &'a BTreeMap<String, Vec<IpNet>>,
    ) -> Result<Self, CompileError> {
        let mut attached: Vec<&Group> = Vec::new();
        for name in groups {
            let group = policy.group(name).ok_or_else(|| CompileError::UnknownGroup(name.clone()))?;
            if !attached.iter().any(|g| g.name == group.name) {
                attached.push(group);
            }
        }
        Ok(Self { policy, groups: attached, local_members })
    }

    /// The attached rule that `rule` names.
    pub fn get(&self, rule: &RuleRef) -> Option<&'a Rule> {
        let group = self.groups.iter().find(|g| g.name == rule.group)?;
        group.rules(rule.direction).get(usize::try_from(rule.index).ok()?)
    }

    /// Every rule that allows a packet, in group and file order.
    /// `port_or_icmp` is the destination port in network order, or
    /// `[type, code]` for ICMP/ICMPv6, or zero for other protocols; `peer`
    /// is the source of an inbound packet, the destination of an outbound
    /// one.
    pub fn matching(
        &self,
        direction: RuleDirection,
        protocol: u8,
        port_or_icmp: [u8; 2],
        peer: IpAddr,
    ) -> Vec<RuleRef> {
        self.matches(direction, protocol, port_or_icmp, peer).into_iter().map(|m| m.rule).collect()
    }

    /// The rule credited with the flow (cli.md): the most specific address
    /// match, then the first in file order (an implicit default outbound
    /// rule, in no file, after the written ones); `None` is default deny.
    ///
    /// "Most specific" looks as deep as the kernel's walk: when more than
    /// [`CREDIT_DEPTH`] distinct prefix lengths of the interface's rules
    /// (any direction, any protocol) contain the peer and none of the
    /// `CREDIT_DEPTH` longest has a rule that allows the packet, the first
    /// in file order among all that allow it is credited.
    pub fn credited(
        &self,
        direction: RuleDirection,
        protocol: u8,
        port_or_icmp: [u8; 2],
        peer: IpAddr,
    ) -> Option<RuleRef> {
        self.credit(direction, protocol, port_or_icmp, peer).map(|c| c.rule)
    }

    /// [`Self::credited`], with how it was chosen.
    pub fn credit(
        &self,
        direction: RuleDirection,
        protocol: u8,
        port_or_icmp: [u8; 2],
        peer: IpAddr,
    ) -> Option<Credit> {
        let matches = self.matches(direction, protocol, port_or_icmp, peer);
        // The tiers: the longest lengths (not /0) one each, then the rest.
        let nested: Vec<u8> = self.nested_prefix_lengths(peer).into_iter().filter(|len| *len > 0).collect();
        let last = CREDIT_DEPTH - 1;
        let tier =
            |len: u8| if len == 0 { last } else { nested.iter().position(|l| *l == len).unwrap_or(last).min(last) };
        let chosen = matches.into_iter().min_by_key(|m| (tier(m.prefix_len), file_order(m.at)))?;
        let lengths_in_last =
            nested.len().saturating_sub(last) + usize::from(self.nested_prefix_lengths(peer).contains(&0));
        let past_walk = tier(chosen.prefix_len) == last && lengths_in_last > 1;
        Some(Credit { rule: chosen.rule, prefix_len: chosen.prefix_len, past_walk })
    }

    fn matches(&self, direction: RuleDirection, protocol: u8, port_or_icmp: [u8; 2], peer: IpAddr) -> Vec<Match<'a>> {
        let mut out = Vec::new();
        for group in &self.groups {
            for (index, rule) in group.rules(direction).iter().enumerate() {
                if !l4_matches(rule, protocol, port_or_icmp) {
                    continue;
                }
                let Some(prefix_len) = self.peer_nets(rule).filter(|n| n.contains(&peer)).map(|n| n.prefix_len()).max()
                else {
                    continue;
                };
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                out.push(Match { rule: RuleRef { group: group.name.clone(), direction, index }, at: rule, prefix_len });
            }
        }
        out
    }

    /// The networks a rule names: its CIDRs, the entries of its prefix
    /// lists and the addresses carrying its `sg:` groups.
    fn peer_nets(&self, rule: &'a Rule) -> impl Iterator<Item = IpNet> + 'a {
        let (policy, local) = (self.policy, self.local_members);
        rule.peers.iter().flat_map(move |p| match &p.target {
            PeerTarget::Cidr(net) => vec![*net],
            PeerTarget::PrefixList(name) => policy.prefix_list(name).map(|pl| pl.cidrs.clone()).unwrap_or_default(),
            PeerTarget::Group(name) => {
                policy.members_of(name).chain(local.get(name).into_iter().flatten().copied()).collect()
            }
        })
    }

    /// The distinct prefix lengths, longest first, among the peers of every
    /// rule here (both directions, every protocol) that contain `addr`: the
    /// tiers the kernel's walk steps through.
    pub fn nested_prefix_lengths(&self, addr: IpAddr) -> Vec<u8> {
        let mut lengths: Vec<u8> = self
            .groups
            .iter()
            .flat_map(|g| RuleDirection::BOTH.into_iter().flat_map(move |d| g.rules(d)))
            .flat_map(|rule| self.peer_nets(rule))
            .filter(|n| n.contains(&addr))
            .map(|n| n.prefix_len())
            .collect();
        lengths.sort_unstable_by_key(|&len| Reverse(len));
        lengths.dedup();
        lengths
    }
}

/// Where a rule stands in file order: files in the order given, then line
/// and column; the implicit default outbound rule last.
fn file_order(rule: &Rule) -> (bool, u32, u32, u32) {
    (rule.implicit, rule.at.file_index, rule.at.line, rule.at.col)
}

/// Semantics item 4: `tcp`/`udp` rules match destination ports, `icmp` and
/// `icmpv6` rules their type and code, `all` and other protocols anything.
fn l4_matches(rule: &Rule, protocol: u8, [a, b]: [u8; 2]) -> bool {
    if rule.protocol == Protocol::All {
        return true;
    }
    if rule.protocol.number() != Some(protocol) {
        return false;
    }
    if rule.protocol.has_ports() {
        let port = u16::from_be_bytes([a, b]);
        return match &rule.ports {
            Ports::Any => true,
            Ports::Ranges(ranges) => ranges.iter().any(|r| r.contains(port)),
        };
    }
    if rule.protocol.is_icmp() {
        return rule.icmp_type.is_none_or(|t| t == a) && rule.icmp_code.is_none_or(|c| c == b);
    }
    true
}
