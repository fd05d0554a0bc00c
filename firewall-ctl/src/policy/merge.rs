//! All files' definitions → one [`Policy`]: a name defined twice is an
//! error naming both places, and every reference (`sg:`, `pl:`, `members:`,
//! `interfaces:`) must name something defined in some file.

use std::collections::HashMap;

use super::{
    error::{ErrorKind, Location, PolicyError},
    model::{Attachment, PeerTarget, Policy},
    parse::FileParts,
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
            let slot = match key {
                "tcp_established_timeout" => &mut policy.conntrack.tcp_established_timeout,
                "udp_stream_timeout" => &mut policy.conntrack.udp_stream_timeout,
                "udp_timeout" => &mut policy.conntrack.udp_timeout,
                _ => &mut policy.conntrack.max_entries,
            };
            *slot = value;
        }
    }
    check_references(&policy, &interface_groups)?;
    Ok(policy)
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
    let unknown_group = |name: &str, at: &Location, context| {
        let kind = ErrorKind::UnknownGroup { name: name.to_owned(), context };
        Err(PolicyError::new(at, kind))
    };
    for group in &policy.groups {
        for rule in group.inbound.iter().chain(&group.outbound) {
            for peer in &rule.peers {
                match &peer.target {
                    PeerTarget::Group(name) if policy.group(name).is_none() => {
                        return unknown_group(name, &peer.at, "in sg:");
                    }
                    PeerTarget::PrefixList(name) if policy.prefix_list(name).is_none() => {
                        let kind = ErrorKind::UnknownPrefixList(name.clone());
                        return Err(PolicyError::new(&peer.at, kind));
                    }
                    _ => {}
                }
            }
        }
    }
    for m in &policy.members {
        if policy.group(&m.group).is_none() {
            return unknown_group(&m.group, &m.at, "in members");
        }
    }
    for (attachment, groups) in policy.interfaces.iter().zip(interface_groups) {
        for (i, (name, at)) in groups.iter().enumerate() {
            if policy.group(name).is_none() {
                return unknown_group(name, at, "in interfaces");
            }
            if groups[..i].iter().any(|(earlier, _)| earlier == name) {
                let kind =
                    ErrorKind::RepeatedAttachment { interface: attachment.interface.clone(), group: name.clone() };
                return Err(PolicyError::new(at, kind));
            }
        }
    }
    Ok(())
}
