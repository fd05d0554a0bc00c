//! All files' definitions → one [`Policy`]: a name defined twice is an
//! error naming both places, every reference (`sg:`, `pl:`, `members:`,
//! `interfaces:`) must name something defined in some file, and the policy
//! as a whole stays within [`limits`]. Lookups go through hash maps: the
//! number of names is bounded only by the input size.

use std::collections::{HashMap, HashSet};

use super::{
    error::{ErrorKind, Location, PolicyError},
    limits,
    parse::FileParts,
    validated::{Attachment, PeerTarget, Policy},
};

/// First definition of each name of one kind, to report a second one.
struct Seen<'a> {
    what: &'static str,
    first: HashMap<&'a str, &'a Location>,
}

impl<'a> Seen<'a> {
    fn new(what: &'static str) -> Self {
        Self { what, first: HashMap::new() }
    }

    fn define(&mut self, name: &'a str, at: &'a Location) -> Result<(), PolicyError> {
        match self.first.insert(name, at) {
            Some(first) => {
                let kind = ErrorKind::Duplicate { what: self.what, name: name.into(), first: first.clone() };
                Err(PolicyError::new(at, kind))
            }
            None => Ok(()),
        }
    }
}

pub fn merge(files: Vec<String>, parts: Vec<FileParts>) -> Result<Policy, PolicyError> {
    check_duplicates(&parts)?;
    let mut policy = Policy { files, ..Policy::default() };
    let mut interface_groups = Vec::new();
    for part in parts {
        policy.groups.extend(part.groups);
        policy.members.extend(part.members);
        policy.prefix_lists.extend(part.prefix_lists);
        for a in part.interfaces {
            let names = a.groups.iter().map(|(g, _)| g.clone()).collect();
            policy.interfaces.push(Attachment { interface: a.interface, at: a.at, groups: names });
            interface_groups.push(a.groups);
        }
        for (key, _, value) in part.conntrack {
            if key == super::parse::ACCOUNTING_KEY {
                policy.conntrack.accounting = value != 0;
                continue;
            }
            let slot = match key {
                "tcp_established_timeout" => &mut policy.conntrack.tcp_established_timeout,
                "udp_stream_timeout" => &mut policy.conntrack.udp_stream_timeout,
                "udp_timeout" => &mut policy.conntrack.udp_timeout,
                _ => &mut policy.conntrack.max_entries,
            };
            *slot = value;
        }
    }
    check_counts(&policy)?;
    check_references(&policy, &interface_groups)?;
    check_rule_addresses(&policy)?;
    Ok(policy)
}

/// How many groups and prefix lists a policy may define.
fn check_counts(policy: &Policy) -> Result<(), PolicyError> {
    if let Some(g) = policy.groups.get(limits::MAX_GROUPS) {
        let why = "that is the most one policy defines";
        let kind = ErrorKind::TooMany { what: "groups".into(), max: limits::MAX_GROUPS, why };
        return Err(PolicyError::new(&g.at, kind));
    }
    if let Some(p) = policy.prefix_lists.get(limits::MAX_PREFIX_LISTS) {
        let why = "that is the most one policy defines; merge lists";
        let kind = ErrorKind::TooMany { what: "prefix lists".into(), max: limits::MAX_PREFIX_LISTS, why };
        return Err(PolicyError::new(&p.at, kind));
    }
    Ok(())
}

/// The peers of every rule, prefix lists and groups expanded and each
/// counted once however many rules name it, add up to at most
/// [`limits::MAX_RULE_ADDRESSES`]: the compiler's work for any interface.
fn check_rule_addresses(policy: &Policy) -> Result<(), PolicyError> {
    check_rule_addresses_within(policy, limits::MAX_RULE_ADDRESSES)
}

/// [`check_rule_addresses`] with the bound `max`. References are checked
/// before, so every name here is defined.
pub(super) fn check_rule_addresses_within(policy: &Policy, max: usize) -> Result<(), PolicyError> {
    let lists: HashMap<&str, usize> = policy.prefix_lists.iter().map(|p| (p.name.as_str(), p.cidrs.len())).collect();
    let mut members: HashMap<&str, usize> = HashMap::new();
    for m in &policy.members {
        *members.entry(m.group.as_str()).or_default() += m.addresses.len();
    }
    let mut counted: HashSet<&PeerTarget> = HashSet::new();
    let mut total: usize = 0;
    for rule in policy.groups.iter().flat_map(|g| g.inbound.iter().chain(&g.outbound)) {
        for peer in &rule.peers {
            if !counted.insert(&peer.target) {
                continue;
            }
            total += match &peer.target {
                PeerTarget::Cidr(_) => 1,
                PeerTarget::PrefixList(name) => lists.get(name.as_str()).copied().unwrap_or_default(),
                PeerTarget::Group(name) => members.get(name.as_str()).copied().unwrap_or_default(),
            };
            if total > max {
                return Err(PolicyError::new(&peer.at, ErrorKind::TooManyAddresses { max }));
            }
        }
    }
    Ok(())
}

fn check_duplicates(parts: &[FileParts]) -> Result<(), PolicyError> {
    let mut groups = Seen::new("group");
    let mut members = Seen::new("members of group");
    let mut lists = Seen::new("prefix list");
    let mut interfaces = Seen::new("interface");
    let mut conntrack = Seen::new("conntrack setting");
    for part in parts {
        for g in &part.groups {
            groups.define(&g.name, &g.at)?;
        }
        for m in &part.members {
            members.define(&m.group, &m.at)?;
        }
        for p in &part.prefix_lists {
            lists.define(&p.name, &p.at)?;
        }
        for a in &part.interfaces {
            interfaces.define(&a.interface, &a.at)?;
        }
        for (key, at, _) in &part.conntrack {
            conntrack.define(key, at)?;
        }
    }
    Ok(())
}

fn check_references(policy: &Policy, interface_groups: &[Vec<(String, Location)>]) -> Result<(), PolicyError> {
    let groups: HashSet<&str> = policy.groups.iter().map(|g| g.name.as_str()).collect();
    let lists: HashSet<&str> = policy.prefix_lists.iter().map(|p| p.name.as_str()).collect();
    let unknown_group = |name: &str, at: &Location, context| {
        let kind = ErrorKind::UnknownGroup { name: name.to_owned(), context };
        Err(PolicyError::new(at, kind))
    };
    for group in &policy.groups {
        for rule in group.inbound.iter().chain(&group.outbound) {
            for peer in &rule.peers {
                match &peer.target {
                    PeerTarget::Group(name) if !groups.contains(name.as_str()) => {
                        return unknown_group(name, &peer.at, "in sg:");
                    }
                    PeerTarget::PrefixList(name) if !lists.contains(name.as_str()) => {
                        let kind = ErrorKind::UnknownPrefixList(name.clone());
                        return Err(PolicyError::new(&peer.at, kind));
                    }
                    _ => {}
                }
            }
        }
    }
    for m in &policy.members {
        if !groups.contains(m.group.as_str()) {
            return unknown_group(&m.group, &m.at, "in members");
        }
    }
    for (attachment, listed) in policy.interfaces.iter().zip(interface_groups) {
        let mut seen = HashSet::with_capacity(listed.len());
        for (name, at) in listed {
            if !groups.contains(name.as_str()) {
                return unknown_group(name, at, "in interfaces");
            }
            if !seen.insert(name.as_str()) {
                let kind =
                    ErrorKind::RepeatedAttachment { interface: attachment.interface.clone(), group: name.clone() };
                return Err(PolicyError::new(at, kind));
            }
        }
    }
    Ok(())
}
