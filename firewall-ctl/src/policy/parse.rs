//! One file's YAML tree → its definitions, each value checked on its own.
//! Checks that need every file (duplicates, references) are in `merge`.

use super::{
    error::{ErrorKind, Location, PolicyError},
    limits,
    validated::{
        Group, GroupMode, Members, Peer, PeerTarget, Ports, PrefixList, Protocol, Rule, RuleDirection,
        DEFAULT_OUTBOUND_DESCRIPTION,
    },
    values,
    yaml::{Node, Value},
};

/// What one file defines, before the files are merged.
#[derive(Debug, Default)]
pub struct FileParts {
    pub groups: Vec<Group>,
    pub members: Vec<Members>,
    pub prefix_lists: Vec<PrefixList>,
    pub interfaces: Vec<FileAttachment>,
    /// `conntrack:` key, where it is set, value (`accounting`: 1 or 0).
    pub conntrack: Vec<(&'static str, Location, u32)>,
}

/// An `interfaces:` entry, with each group's location for reference errors.
#[derive(Debug)]
pub struct FileAttachment {
    pub interface: String,
    pub at: Location,
    pub groups: Vec<(String, Location)>,
}

const TOP_KEYS: &[&str] = &["groups", "members", "prefix_lists", "interfaces", "conntrack"];
const GROUP_KEYS: &[&str] = &["description", "mode", "inbound", "outbound"];
const RULE_KEYS: &[&str] = &["protocol", "ports", "icmp_type", "icmp_code", "source", "destination", "description"];
/// `conntrack:` keys with their AWS ranges (docs/semantics.md item 10).
const CONNTRACK_KEYS: &[(&str, u64, u64)] = &[
    ("tcp_established_timeout", 60, 432_000),
    ("udp_stream_timeout", 60, 180),
    ("udp_timeout", 30, 60),
    ("max_entries", 1024, 4_194_304),
];
/// `conntrack: { accounting: true }`: per-flow packet and byte counts
/// (docs/semantics.md item 12), for the flow logs.
pub const ACCOUNTING_KEY: &str = "accounting";

/// A map's entries after its keys were checked against the allowed set.
struct Fields<'a>(&'a [(Node, Node)]);

impl<'a> Fields<'a> {
    fn read(node: &'a Node, context: &str, allowed: &[&str]) -> Result<Self, PolicyError> {
        let entries = map(node, "a map", "a map of keys to values")?;
        for (key, _) in entries {
            if !allowed.contains(&key.key_text()) {
                let kind = ErrorKind::UnknownKey {
                    key: key.key_text().to_owned(),
                    context: context.to_owned(),
                    allowed: allowed.join(", "),
                };
                return Err(PolicyError::new(&key.at, kind));
            }
        }
        Ok(Self(entries))
    }

    /// The key node and value node of `key`.
    fn get(&self, key: &str) -> Option<(&'a Node, &'a Node)> {
        self.0.iter().find(|(k, _)| k.key_text() == key).map(|(k, v)| (k, v))
    }

    fn value(&self, key: &str) -> Option<&'a Node> {
        self.get(key).map(|(_, v)| v)
    }
}

/// The entries of a map; a null (an empty section) is an empty map.
fn map<'a>(node: &'a Node, what: &'static str, expected: &'static str) -> Result<&'a [(Node, Node)], PolicyError> {
    match &node.value {
        Value::Map(entries) => Ok(&**entries),
        _ if node.is_null() => Ok(&[]),
        _ => Err(values::wrong_type(node, what, expected)),
    }
}

/// A list of scalars, or one scalar; empty lists allowed (unlike rule fields).
fn scalars<'a>(
    node: &'a Node,
    what: &'static str,
    expected: &'static str,
) -> Result<Vec<(&'a Node, &'a str)>, PolicyError> {
    match &node.value {
        Value::Seq(items) => items.iter().map(|n| Ok((n, values::scalar(n, what, expected)?))).collect(),
        _ => Ok(vec![(node, values::scalar(node, what, expected)?)]),
    }
}

pub fn file(root: &Node) -> Result<FileParts, PolicyError> {
    let top = Fields::read(root, "at the top level", TOP_KEYS)?;
    let mut parts = FileParts::default();
    if let Some(node) = top.value("groups") {
        for (name, body) in map(node, "a map", "a map of group names to groups")? {
            parts.groups.push(group(name, body)?);
        }
    }
    if let Some(node) = top.value("members") {
        for (name, list) in map(node, "a map", "a map of group names to address lists")? {
            let addresses = scalars(list, "an address", "a list of addresses or CIDRs")?
                .into_iter()
                .map(|(n, text)| {
                    if text.starts_with("sg:") || text.starts_with("pl:") {
                        return Err(PolicyError::new(&n.at, ErrorKind::InvalidMember(text.into())));
                    }
                    values::cidr(n, text)
                })
                .collect::<Result<_, _>>()?;
            let group = values::name(name, "group")?;
            parts.members.push(Members { group, at: name.at.clone(), addresses });
        }
    }
    if let Some(node) = top.value("prefix_lists") {
        for (name, list) in map(node, "a map", "a map of list names to CIDR lists")? {
            let cidrs = scalars(list, "a CIDR", "a list of CIDRs")?
                .into_iter()
                .map(|(n, text)| {
                    // A word that is no address at all gets the general message.
                    if text.contains('/') || text.parse::<std::net::IpAddr>().is_ok() {
                        values::cidr(n, text)
                    } else {
                        let kind = ErrorKind::InvalidPrefixListEntry(text.into());
                        Err(PolicyError::new(&n.at, kind))
                    }
                })
                .collect::<Result<_, _>>()?;
            let name_text = values::name(name, "prefix list")?;
            parts.prefix_lists.push(PrefixList { name: name_text, at: name.at.clone(), cidrs });
        }
    }
    if let Some(node) = top.value("interfaces") {
        for (iface, list) in map(node, "a map", "a map of interface names to group lists")? {
            let interface = values::interface_name(iface)?;
            let groups = attachment_groups(&interface, iface, list)?;
            parts.interfaces.push(FileAttachment { interface, at: iface.at.clone(), groups });
        }
    }
    if let Some(node) = top.value("conntrack") {
        let mut keys: Vec<&str> = CONNTRACK_KEYS.iter().map(|(k, _, _)| *k).collect();
        keys.push(ACCOUNTING_KEY);
        let fields = Fields::read(node, "in conntrack", &keys)?;
        for &(key, min, max) in CONNTRACK_KEYS {
            if let Some((k, v)) = fields.get(key) {
                let n = values::number(v, key, min, max)?;
                // The ranges above all fit in u32.
                parts.conntrack.push((key, k.at.clone(), n as u32));
            }
        }
        if let Some((k, v)) = fields.get(ACCOUNTING_KEY) {
            let on = values::boolean(v, ACCOUNTING_KEY)?;
            parts.conntrack.push((ACCOUNTING_KEY, k.at.clone(), u32::from(on)));
        }
    }
    Ok(parts)
}

/// The groups listed for one interface. An empty list is refused: it reads
/// as "filter with nothing" but would mean "not filtered" (docs/policy-format.md),
/// and dropping everything instead would lock the host out on a typo.
fn attachment_groups(interface: &str, iface: &Node, list: &Node) -> Result<Vec<(String, Location)>, PolicyError> {
    let empty = match &list.value {
        Value::Seq(items) => items.is_empty(),
        _ => list.is_null(),
    };
    if empty {
        // A missing value has no position of its own worth showing: point at the key.
        let at = if list.is_null() { &iface.at } else { &list.at };
        return Err(PolicyError::new(at, ErrorKind::EmptyAttachment(interface.to_owned())));
    }
    let items = scalars(list, "a group name", "a list of group names")?;
    if let Some((n, _)) = items.get(limits::MAX_GROUPS_PER_INTERFACE) {
        let kind = ErrorKind::TooMany {
            what: format!("groups for interface \"{interface}\""),
            max: limits::MAX_GROUPS_PER_INTERFACE,
            why: "merge groups that are always attached together",
        };
        return Err(PolicyError::new(&n.at, kind));
    }
    items.into_iter().map(|(n, _)| Ok((values::name(n, "group")?, n.at.clone()))).collect()
}

fn group(name_node: &Node, body: &Node) -> Result<Group, PolicyError> {
    let name = values::name(name_node, "group")?;
    let fields = Fields::read(body, &format!("in group \"{name}\""), GROUP_KEYS)?;
    let description = fields.value("description").map(description).transpose()?;
    let mode = fields.value("mode").map(group_mode).transpose()?.unwrap_or_default();
    let inbound = match fields.value("inbound") {
        Some(list) => rules(list, RuleDirection::Inbound)?,
        None => Vec::new(),
    };
    let outbound = match fields.value("outbound") {
        Some(list) => rules(list, RuleDirection::Outbound)?,
        None => vec![default_outbound(&name_node.at)],
    };
    if let Some(rule) = inbound.iter().chain(&outbound).nth(limits::MAX_RULES_PER_GROUP) {
        let kind = ErrorKind::TooMany {
            what: format!("rules in group \"{name}\""),
            max: limits::MAX_RULES_PER_GROUP,
            why: "that is all one interface holds; split the group",
        };
        return Err(PolicyError::new(&rule.at, kind));
    }
    Ok(Group { name, at: name_node.at.clone(), description, mode, inbound, outbound })
}

/// `mode: enforce | audit`.
fn group_mode(node: &Node) -> Result<GroupMode, PolicyError> {
    match values::scalar(node, "a mode", "enforce or audit")? {
        "enforce" => Ok(GroupMode::Enforce),
        "audit" => Ok(GroupMode::Audit),
        other => Err(PolicyError::new(&node.at, ErrorKind::InvalidMode(other.to_owned()))),
    }
}

/// What a new AWS security group has: all protocols out to everywhere.
fn default_outbound(at: &Location) -> Rule {
    let everywhere = ["0.0.0.0/0", "::/0"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .map(|net| Peer { at: at.clone(), target: PeerTarget::Cidr(net) })
        .collect();
    Rule {
        at: at.clone(),
        protocol: Protocol::All,
        ports: Ports::Any,
        icmp_type: None,
        icmp_code: None,
        peers: everywhere,
        description: Some(DEFAULT_OUTBOUND_DESCRIPTION.to_owned()),
        implicit: true,
    }
}

fn description(node: &Node) -> Result<String, PolicyError> {
    let text = values::scalar(node, "a description", "text of up to 255 characters")?;
    let len = text.chars().count();
    if len > 255 {
        let start = text.chars().take(20).collect();
        return Err(PolicyError::new(&node.at, ErrorKind::DescriptionTooLong { start, len }));
    }
    Ok(text.to_owned())
}

fn rules(list: &Node, direction: RuleDirection) -> Result<Vec<Rule>, PolicyError> {
    match &list.value {
        Value::Seq(items) => items.iter().map(|item| rule(item, direction)).collect(),
        _ => Err(values::wrong_type(list, "a list of rules", "a list of rules; write [] for none")),
    }
}

fn rule(node: &Node, direction: RuleDirection) -> Result<Rule, PolicyError> {
    let dir = direction.as_str();
    let fields = Fields::read(node, &format!("in an {dir} rule"), RULE_KEYS)?;
    let (peer_key, wrong_key) = match direction {
        RuleDirection::Inbound => ("source", "destination"),
        RuleDirection::Outbound => ("destination", "source"),
    };
    if let Some((k, _)) = fields.get(wrong_key) {
        let kind = ErrorKind::WrongPeerKey { key: wrong_key, direction: dir, expected: peer_key };
        return Err(PolicyError::new(&k.at, kind));
    }
    let missing = |key, expected| {
        let context = format!("in an {dir} rule");
        PolicyError::new(&node.at, ErrorKind::MissingKey { key, context, expected })
    };

    let Some(proto_node) = fields.value("protocol") else {
        return Err(missing("protocol", "tcp, udp, icmp, icmpv6, all or a protocol number"));
    };
    let protocol = values::protocol(proto_node)?;
    let ports = match (fields.get("ports"), protocol.has_ports()) {
        (Some((_, v)), true) => values::ports(v)?,
        (None, true) => return Err(PolicyError::new(&node.at, ErrorKind::MissingPorts(protocol.to_string()))),
        (Some((k, _)), false) => return Err(PolicyError::new(&k.at, ErrorKind::PortsNotAllowed(protocol.to_string()))),
        (None, false) => Ports::Any,
    };
    let mut icmp = [None, None];
    for (slot, key) in icmp.iter_mut().zip(["icmp_type", "icmp_code"]) {
        if let Some((k, v)) = fields.get(key) {
            if !protocol.is_icmp() {
                let kind = ErrorKind::IcmpNotAllowed { key, protocol: protocol.to_string() };
                return Err(PolicyError::new(&k.at, kind));
            }
            *slot = Some((values::icmp(v, key)?, v));
        }
    }
    // A code without a type cannot be expressed in the L4 trie (its prefix
    // pins the type before the code), and "code 4 of any type" is never
    // what anyone means, so it is refused.
    if let [None, Some((code, v))] = icmp {
        return Err(PolicyError::new(&v.at, ErrorKind::IcmpCodeWithoutType(code.to_string())));
    }

    let Some(peer_node) = fields.value(peer_key) else {
        return Err(missing(peer_key, "a CIDR, an address, sg:GROUP, pl:LIST or a list of these"));
    };
    const PEER_EXPECTED: &str = "a CIDR, an address, sg:GROUP or pl:LIST";
    let peers = values::one_or_many(peer_node, peer_key, "an address", PEER_EXPECTED)?
        .into_iter()
        .map(|(n, text)| Ok(Peer { at: n.at.clone(), target: values::peer(n, text, peer_key)? }))
        .collect::<Result<_, PolicyError>>()?;

    Ok(Rule {
        at: node.at.clone(),
        protocol,
        ports,
        icmp_type: icmp[0].map(|(t, _)| t),
        icmp_code: icmp[1].map(|(c, _)| c),
        peers,
        description: fields.value("description").map(description).transpose()?,
        implicit: false,
    })
}
