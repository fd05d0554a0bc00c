//! [`Policy`] → the map entries of one interface (firewall_common::policy).
//!
//! An interface's table is the union of its attached groups' rules, both
//! directions. Each source-file rule gets one id (one bit of a `RuleSet`);
//! its ports and peers all carry that bit, so
//! `L4[dir, proto, port] & (CIDR[peer] | SG[peer])` holds exactly the rules
//! that allow a packet. Modules: `l4` (protocol/ports → prefixes), `lpm`
//! (entries with ancestor sets folded in), `order` (which id each rule
//! gets), `simulate` (the kernel's lookup, in userspace) and `located`
//! (compile errors placed in the policy files). They are tested against
//! [`crate::model`], the naive matcher over the policy.
//!
//! After compiling, the pipeline's later stages: [`counter_slots`] gives each
//! rule a counter slot that stays stable across generations, and [`image`]
//! turns the result into exactly the content of the maps.

pub(crate) mod counter_slots;
pub(crate) mod identity;
pub(crate) mod image;
mod l4;
mod located;
mod lpm;
mod order;
mod simulate;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
};

use firewall_common::{
    conntrack::Timeouts,
    policy::{addr6_from_octets, Addr4, Addr6, L4Key, RuleSet, MAX_RULES, MAX_TIERS},
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use self::{
    located::{locate, summarize_located},
    lpm::RawEntry,
    simulate::{allowed, lookup},
};
pub use crate::policy::RuleDirection;
use crate::policy::{Group, GroupMode, PeerTarget, Policy, Rule};

/// Everything the kernel needs for one interface.
#[derive(Clone, Debug)]
pub struct CompiledInterface {
    /// Index = rule id = bit in [`RuleSet`].
    pub rules: Vec<RuleInfo>,
    pub l4: Trie<L4Key>,
    /// Peer address → rules: CIDR and prefix-list peers, and the member
    /// addresses of `sg:` peers, together.
    pub addr4: Trie<Addr4>,
    pub addr6: Trie<Addr6>,
    /// Rules whose peer is every IPv4 (`0.0.0.0/0`) or IPv6 (`::/0`)
    /// address: they need no address lookup and stay out of the tries.
    pub any4: RuleSet,
    pub any6: RuleSet,
    /// The groups `sg:` peers of this interface name, each with the rules
    /// naming it; an address entry whose [`Chain::source`] is `1 + i` comes
    /// from the `members:` of group `i` alone (see [`source`]).
    pub member_groups: Vec<(String, RuleSet)>,
    pub timeouts: Timeouts,
    pub conntrack_capacity: u32,
    /// `conntrack: { accounting: true }`: tracked flows count packets and bytes.
    pub accounting: bool,
    /// Groups attached in audit mode (`mode: audit`): when any is, a packet
    /// no rule allows passes as `would_drop`.
    pub audit_groups: Vec<String>,
}

impl CompiledInterface {
    /// Entries over all three tries.
    pub fn map_entries(&self) -> usize {
        self.l4.entries.len() + self.addr4.entries.len() + self.addr6.entries.len()
    }

    /// The id of `GROUP/DIRECTION/INDEX`, if attached here.
    pub fn rule_id(&self, group: &str, direction: RuleDirection, index: u32) -> Option<u32> {
        let pos = self.rules.iter().position(|r| r.group == group && r.direction == direction && r.index == index)?;
        u32::try_from(pos).ok()
    }
}

/// One LPM trie entry. Its rules (its own and those of every entry whose
/// prefix contains it) and how to credit its most specific match are its
/// chain's (an index into the trie's chains).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LpmEntry<K> {
    pub prefix_len: u32,
    pub key: K,
    pub chain: u32,
}

/// A trie: its entries, and the chains they share.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trie<K> {
    pub entries: Vec<LpmEntry<K>>,
    pub chains: Vec<Chain>,
    /// Intermediate nodes the kernel's trie adds where the paths to two
    /// entries part without an entry there (they take memory like entries);
    /// single addresses, which go to a hash, left out.
    pub intermediate: usize,
}

/// The prefixes containing an address, longest first, as rule sets: an
/// entry's own rules (peers of exactly its prefix), then its parent's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub own: RuleSet,
    pub parent: Option<u32>,
    /// The union of the chain.
    pub rules: RuleSet,
    /// Where the entry's own rules come from: a [`source`] tag.
    pub source: u32,
}

/// Where an address entry's own rules come from, as far as `sgctl members`
/// needs to know to change a group's membership in place: from one group's
/// `members:` list alone (the tag is `1 +` its index in
/// [`CompiledInterface::member_groups`]), or from anything else.
pub mod source {
    /// CIDR and prefix-list peers, local interface addresses carrying a
    /// group, L4 keys: what only a full apply changes.
    pub const STATIC: u32 = 0;
    /// Several of the above and groups together.
    pub const SHARED: u32 = u32::MAX;

    /// The source of an entry named by both `a` and `b`.
    pub fn combine(a: u32, b: u32) -> u32 {
        if a == b {
            a
        } else {
            SHARED
        }
    }
}

impl<K> Trie<K> {
    /// The own rules along chain `chain`, longest prefix first.
    pub fn tiers(&self, chain: u32) -> Vec<RuleSet> {
        let mut out = Vec::new();
        let mut next = Some(chain);
        while let Some(c) = next {
            let c = &self.chains[c as usize];
            out.push(c.own);
            next = c.parent;
        }
        out
    }

    /// Every rule of `entry`: its own and its ancestors'.
    pub fn rules(&self, entry: &LpmEntry<K>) -> &RuleSet {
        &self.chains[entry.chain as usize].rules
    }
}

/// The tiers the datapath walks to credit a flow (docs/cli.md: the most
/// specific address match, then the first rule in file order): a chain's
/// own rules, longest prefix first, then the rules for every address; at
/// most `MAX_TIERS`, the last one holding everything less specific (nesting
/// deeper than that credits the first rule in file order among the rest).
pub fn credit_tiers(chain: &[RuleSet], any: &RuleSet) -> [RuleSet; MAX_TIERS] {
    let mut tiers = [RuleSet::EMPTY; MAX_TIERS];
    for (i, set) in chain.iter().chain(std::iter::once(any)).enumerate() {
        tiers[i.min(MAX_TIERS - 1)].union_with(set);
    }
    tiers
}

/// Who a rule id is, for counters and `explain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleInfo {
    pub group: String,
    pub direction: RuleDirection,
    /// Position in the group's `inbound`/`outbound` list, from 0.
    pub index: u32,
    pub description: Option<String>,
    /// What the rule matches (group, direction, protocol, ports, ICMP type
    /// and code, peers; not its position or description), hashed: a rule
    /// with the same identity keeps its counters across policy changes.
    pub identity: u64,
}

impl fmt::Display for RuleInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.group, self.direction, self.index)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("unknown group \"{0}\": it is not defined in the policy")]
    UnknownGroup(String),
    #[error("groups {groups} have {count} rules together: at most {max} fit on one interface")]
    TooManyRules { groups: String, count: usize, max: usize },
    #[error("the {map} map needs {entries} entries: at most {capacity} fit")]
    MapFull { map: &'static str, entries: usize, capacity: u32 },
    /// `error` is no `source`: the message holds it already, and a source
    /// would print it twice in an error chain.
    #[error("interface {interface}: {error}")]
    OnInterface { interface: String, error: Box<CompileError> },
}

impl CompileError {
    /// Names the interface whose compilation failed.
    #[must_use]
    pub fn on_interface(self, interface: &str) -> Self {
        Self::OnInterface { interface: interface.to_owned(), error: Box::new(self) }
    }
}

/// What `sgctl check` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub groups: usize,
    /// Source-file rules of all groups, implicit outbound rules included.
    pub rules: usize,
    /// Entries over the interfaces named under `interfaces:` (without the
    /// addresses of local interfaces, which only `apply` knows).
    pub map_entries: usize,
}

/// Compiles every `interfaces:` attachment, to validate and count.
pub fn summarize(policy: &Policy) -> Result<Summary, CompileError> {
    let mut map_entries = 0;
    for a in &policy.interfaces {
        let compiled =
            compile_interface(policy, &a.groups, &BTreeMap::new()).map_err(|e| e.on_interface(&a.interface))?;
        map_entries += compiled.map_entries();
    }
    let rules = policy.groups.iter().map(|g| g.inbound.len() + g.outbound.len()).sum();
    Ok(Summary { groups: policy.groups.len(), rules, map_entries })
}

/// The attached groups, each once, in the order given.
fn attached<'a>(policy: &'a Policy, groups: &[String]) -> Result<Vec<&'a Group>, CompileError> {
    let mut out: Vec<&Group> = Vec::new();
    for name in groups {
        let group = policy.group(name).ok_or_else(|| CompileError::UnknownGroup(name.clone()))?;
        if !out.iter().any(|g| g.name == group.name) {
            out.push(group);
        }
    }
    Ok(out)
}

/// Compiles one interface carrying `groups` (their union). `local_members`
/// maps a group to the addresses of the local interfaces it is attached
/// to; they join the group's `members:` for `sg:` references.
pub fn compile_interface(
    policy: &Policy,
    groups: &[String],
    local_members: &BTreeMap<String, Vec<IpNet>>,
) -> Result<CompiledInterface, CompileError> {
    let attached = attached(policy, groups)?;
    let mut rules: Vec<(RuleInfo, &Rule)> = Vec::new();
    for group in &attached {
        for direction in RuleDirection::BOTH {
            for (index, rule) in group.rules(direction).iter().enumerate() {
                let info = RuleInfo {
                    group: group.name.clone(),
                    direction,
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    description: rule.description.clone(),
                    identity: identity::of(&group.name, direction, rule),
                };
                rules.push((info, rule));
            }
        }
    }
    if rules.len() > MAX_RULES {
        let groups = attached.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(", ");
        return Err(CompileError::TooManyRules { groups, count: rules.len(), max: MAX_RULES });
    }
    order::sort(&mut rules);

    // Each peer source (a CIDR, a prefix list, a group) once, with every
    // rule naming it: a list named by many rules is expanded once.
    let mut sources = Sources::default();
    let mut l4 = Vec::new();
    for (id, (info, rule)) in rules.iter().enumerate() {
        // At most MAX_RULES, checked above.
        let id = id as u32;
        l4.extend(l4::keys(rule, info.direction).into_iter().map(|(len, key)| RawEntry::new(len, key, id, 0)));
        for peer in &rule.peers {
            sources.name(&peer.target, id);
        }
    }
    let mut raw = Raw::default();
    let mut member_groups = Vec::new();
    for (target, set) in &sources.list {
        let set_index = raw.sets.len() as u32;
        raw.sets.push(*set);
        match target {
            PeerTarget::Cidr(net) => raw.add([*net], set_index, source::STATIC),
            PeerTarget::PrefixList(name) => {
                let cidrs = policy.prefix_list(name).map(|p| p.cidrs.as_slice());
                raw.add(cidrs.unwrap_or_default().iter().copied(), set_index, source::STATIC);
            }
            PeerTarget::Group(name) => {
                member_groups.push((name.clone(), *set));
                // Local addresses are not the group's `members:`: `sgctl members` does not change them.
                raw.add(policy.members_of(name), set_index, member_groups.len() as u32);
                let local = local_members.get(name).into_iter().flatten().copied();
                raw.add(local, set_index, source::STATIC);
            }
        }
    }
    let l4_sets: Vec<RuleSet> = (0..rules.len() as u32)
        .map(|id| {
            let mut set = RuleSet::EMPTY;
            set.insert(id);
            set
        })
        .collect();
    let mut infos: Vec<RuleInfo> = rules.into_iter().map(|(info, _)| info).collect();
    identity::disambiguate(&mut infos);
    Ok(CompiledInterface {
        rules: infos,
        l4: lpm::build(l4, &l4_sets, None),
        // Single addresses live in a hash beside each address trie.
        addr4: lpm::build(raw.addr4, &raw.sets, Some(32)),
        addr6: lpm::build(raw.addr6, &raw.sets, Some(128)),
        any4: raw.any4,
        any6: raw.any6,
        member_groups,
        timeouts: policy.conntrack.timeouts(),
        conntrack_capacity: policy.conntrack.capacity(),
        accounting: policy.conntrack.accounting,
        audit_groups: attached.iter().filter(|g| g.mode == GroupMode::Audit).map(|g| g.name.clone()).collect(),
    })
}

/// The distinct peers of an interface's rules, in first-named order, each
/// with the rules naming it.
#[derive(Default)]
struct Sources {
    list: Vec<(PeerTarget, RuleSet)>,
    index: HashMap<PeerTarget, usize>,
}

impl Sources {
    fn name(&mut self, target: &PeerTarget, rule: u32) {
        let next = self.list.len();
        let i = *self.index.entry(target.clone()).or_insert(next);
        if i == next {
            self.list.push((target.clone(), RuleSet::EMPTY));
        }
        self.list[i].1.insert(rule);
    }
}

/// Address prefixes before merging, and the rule sets they index.
#[derive(Default)]
struct Raw {
    sets: Vec<RuleSet>,
    addr4: Vec<RawEntry>,
    addr6: Vec<RawEntry>,
    any4: RuleSet,
    any6: RuleSet,
}

impl Raw {
    /// Address peers: IPv4 networks go only to the IPv4 map, IPv6 only to
    /// the IPv6 one (an IPv4 CIDR never matches an IPv6 packet); a /0 goes
    /// to the family's every-address set instead.
    fn add(&mut self, nets: impl IntoIterator<Item = IpNet>, set: u32, source: u32) {
        for net in nets {
            let len = u32::from(net.prefix_len());
            match net {
                IpNet::V4(_) if len == 0 => self.any4.union_with(&self.sets[set as usize]),
                IpNet::V6(_) if len == 0 => self.any6.union_with(&self.sets[set as usize]),
                IpNet::V4(n) => self.addr4.push(RawEntry::new(len, n.network().octets(), set, source)),
                IpNet::V6(n) => {
                    self.addr6.push(RawEntry::new(len, addr6_from_octets(n.network().octets()), set, source));
                }
            }
        }
    }
}
