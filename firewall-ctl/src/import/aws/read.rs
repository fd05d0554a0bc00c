//! AWS documents → an [`Inventory`]: every group with its rules already in
//! sgctl's terms (one rule per address range, group or prefix list), the
//! addresses that carry each group, and the prefix lists. Everything AWS
//! allows but a value out of its documented range is an error naming the
//! JSON path; what sgctl cannot say exactly becomes a warning.

use std::net::IpAddr;

use firewall_common::proto;
use ipnet::IpNet;

use super::{json, ImportError, Source};

/// All inputs, read and checked.
#[derive(Debug, Default)]
pub struct Inventory {
    /// In input order: `SecurityGroups` first, then groups known only from
    /// `SecurityGroupRules`, in order of first appearance.
    pub groups: Vec<Group>,
    /// `(group id, address)` from network interfaces, in input order.
    pub members: Vec<(String, IpNet)>,
    /// The same pairs, to drop repeats without a scan (thousands of interfaces).
    seen_members: std::collections::HashSet<(String, IpNet)>,
    pub prefix_lists: Vec<PrefixList>,
    pub warnings: Vec<String>,
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub vpc: Option<String>,
    pub owner: Option<String>,
    /// `FILE: JSON-PATH` of its definition, for messages.
    pub origin: String,
    pub inbound: Vec<Rule>,
    pub outbound: Vec<Rule>,
}

#[derive(Debug)]
pub struct Rule {
    pub l4: L4,
    pub peer: Peer,
    pub description: Option<String>,
}

/// Protocol and ports (or ICMP type and code) of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    All,
    /// tcp or udp; `None` is every port.
    Ports {
        udp: bool,
        range: Option<(u16, u16)>,
    },
    /// icmp or icmpv6; `None` is any type / any code.
    Icmp {
        v6: bool,
        icmp_type: Option<u8>,
        code: Option<u8>,
    },
    /// Any other protocol: AWS ignores the ports of such a rule.
    Other(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Cidr(IpNet),
    /// A group id.
    Group(String),
    /// A prefix list id.
    PrefixList(String),
    /// Old default-VPC output names the group, not its id; resolved to
    /// [`Peer::Group`] once every group is read. `origin` is for the error.
    GroupName {
        name: String,
        origin: String,
    },
}

#[derive(Debug)]
pub struct PrefixList {
    pub id: String,
    pub origin: String,
    /// CIDRs with their descriptions, duplicates dropped.
    pub entries: Vec<(IpNet, Option<String>)>,
}

/// Reads every source, in order.
pub fn inventory(sources: &[Source]) -> Result<Inventory, ImportError> {
    let mut docs = Vec::with_capacity(sources.len());
    for source in sources {
        docs.push((source, parse_document(source)?));
    }
    let mut inv = Inventory::default();
    for (source, doc) in &docs {
        for (i, sg) in doc.security_groups.iter().flatten().enumerate() {
            let at = At::new(source, format!("SecurityGroups[{i}]"));
            let group = security_group(sg, &at, &mut inv.warnings)?;
            if let Some(first) = inv.groups.iter().find(|g| g.id == group.id) {
                return Err(at.error(format!("{} is described twice (first at {})", group.id, first.origin)));
            }
            inv.groups.push(group);
        }
    }
    resolve_group_names(&mut inv.groups)?;
    let described: Vec<String> = inv.groups.iter().map(|g| g.id.clone()).collect();
    let mut skipped: Vec<String> = Vec::new();
    for (source, doc) in &docs {
        for (i, r) in doc.security_group_rules.iter().flatten().enumerate() {
            let at = At::new(source, format!("SecurityGroupRules[{i}]"));
            if described.contains(&r.group_id) {
                if !skipped.contains(&r.group_id) {
                    skipped.push(r.group_id.clone());
                }
                continue;
            }
            let Some(rule) = group_rule(r, &at, &mut inv.warnings)? else { continue };
            let group = match inv.groups.iter().position(|g| g.id == r.group_id) {
                Some(pos) => &mut inv.groups[pos],
                None => {
                    inv.groups.push(Group {
                        id: r.group_id.clone(),
                        name: None,
                        description: None,
                        vpc: None,
                        owner: None,
                        origin: at.to_string(),
                        inbound: Vec::new(),
                        outbound: Vec::new(),
                    });
                    inv.groups.last_mut().expect("just pushed")
                }
            };
            if r.is_egress { &mut group.outbound } else { &mut group.inbound }.push(rule);
        }
    }
    for id in skipped {
        inv.warnings.push(format!(
            "{id}: described by both describe-security-groups and describe-security-group-rules; \
             imported from describe-security-groups"
        ));
    }
    for (source, doc) in &docs {
        for (i, eni) in doc.network_interfaces.iter().flatten().enumerate() {
            let at = At::new(source, format!("NetworkInterfaces[{i}]"));
            network_interface(eni, &at, &mut inv)?;
        }
        if let Some(entries) = &doc.entries {
            let list = prefix_list(source, doc, entries, &mut inv.warnings)?;
            if let Some(first) = inv.prefix_lists.iter().find(|p| p.id == list.id) {
                let message = format!("prefix list {} is given twice (first in {})", list.id, first.origin);
                return Err(ImportError::new(&source.name, "Entries", message));
            }
            inv.prefix_lists.push(list);
        } else if doc.prefix_list_id.is_some() {
            return Err(ImportError::new(&source.name, "PrefixListId", "given without Entries".to_owned()));
        }
    }
    Ok(inv)
}

/// Turns [`Peer::GroupName`] into [`Peer::Group`]: the name must be the
/// `GroupName` of exactly one group of the input.
fn resolve_group_names(groups: &mut [Group]) -> Result<(), ImportError> {
    let by_name: Vec<(Option<String>, String)> = groups.iter().map(|g| (g.name.clone(), g.id.clone())).collect();
    for rule in groups.iter_mut().flat_map(|g| g.inbound.iter_mut().chain(g.outbound.iter_mut())) {
        let Peer::GroupName { name, origin } = &rule.peer else { continue };
        let ids: Vec<&String> = by_name.iter().filter(|(n, _)| n.as_ref() == Some(name)).map(|(_, id)| id).collect();
        match ids.as_slice() {
            [id] => rule.peer = Peer::Group((*id).clone()),
            found => {
                let why = if found.is_empty() {
                    "no group of that name is in the input"
                } else {
                    "several groups have that name"
                };
                return Err(ImportError::located(
                    origin.clone(),
                    format!("refers to group \"{name}\" by name only and {why}: add its GroupId"),
                ));
            }
        }
    }
    Ok(())
}

fn parse_document(source: &Source) -> Result<json::Document, ImportError> {
    let de = &mut serde_json::Deserializer::from_str(&source.text);
    let doc: json::Document = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            // serde_json's message ends with "at line L column C"; say it as FILE:L:C.
            let message = inner.to_string();
            let message = message.split(" at line ").next().unwrap_or_default().to_owned();
            return ImportError::at_position(&source.name, inner.line(), inner.column(), message);
        }
        let message = inner.to_string();
        let message = message.split(" at line ").next().unwrap_or_default().to_owned();
        // Records ignore unknown fields, so an unknown field is a top-level key.
        if message.starts_with("unknown field") {
            let message = format!("not a key sgctl imports: expected {}", json::KNOWN_KEYS);
            return ImportError::new(&source.name, &path, message);
        }
        if path == "." {
            return ImportError::new(&source.name, "(top level)", message);
        }
        ImportError::new(&source.name, &path, message)
    })?;
    let empty = doc.security_groups.is_none()
        && doc.security_group_rules.is_none()
        && doc.network_interfaces.is_none()
        && doc.entries.is_none();
    if empty {
        let message = format!("nothing to import: expected one of {}", json::KNOWN_KEYS);
        return Err(ImportError::new(&source.name, "(top level)", message));
    }
    if doc.entries.is_some() && doc.prefix_list_id.is_none() && source.prefix_list_id.is_none() {
        let message = "prefix-list entries without their list's id: pass the file as --prefix-list pl-ID=FILE \
                       (or add \"PrefixListId\" to the document)"
            .to_owned();
        return Err(ImportError::new(&source.name, "Entries", message));
    }
    Ok(doc)
}

/// A place in one input, `FILE: JSON-PATH`.
struct At<'a> {
    file: &'a str,
    path: String,
}

impl<'a> At<'a> {
    fn new(source: &'a Source, path: String) -> Self {
        Self { file: &source.name, path }
    }

    fn child(&self, key: &str) -> Self {
        Self { file: self.file, path: format!("{}.{key}", self.path) }
    }

    fn index(&self, key: &str, i: usize) -> Self {
        Self { file: self.file, path: format!("{}.{key}[{i}]", self.path) }
    }

    fn error(&self, message: String) -> ImportError {
        ImportError::located(self.to_string(), message)
    }
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.path)
    }
}

fn security_group(sg: &json::SecurityGroup, at: &At, warnings: &mut Vec<String>) -> Result<Group, ImportError> {
    aws_id(&sg.group_id, "sg-", &at.child("GroupId"))?;
    let mut inbound = Vec::new();
    for (i, p) in sg.ip_permissions.iter().enumerate() {
        inbound.extend(permission(p, &at.index("IpPermissions", i), warnings)?);
    }
    let mut outbound = Vec::new();
    match &sg.ip_permissions_egress {
        Some(perms) => {
            for (i, p) in perms.iter().enumerate() {
                outbound.extend(permission(p, &at.index("IpPermissionsEgress", i), warnings)?);
            }
        }
        None => warnings.push(format!(
            "{}: no IpPermissionsEgress (an EC2-Classic group?): imported with no outbound rules",
            sg.group_id
        )),
    }
    Ok(Group {
        id: sg.group_id.clone(),
        name: sg.group_name.clone(),
        description: sg.description.clone(),
        vpc: sg.vpc_id.clone(),
        owner: sg.owner_id.clone(),
        origin: at.to_string(),
        inbound,
        outbound,
    })
}

/// One `IpPermissions` element → one rule per range, prefix list and group.
fn permission(p: &json::IpPermission, at: &At, warnings: &mut Vec<String>) -> Result<Vec<Rule>, ImportError> {
    let Some(l4) = l4(&p.ip_protocol, p.from_port, p.to_port, at, warnings)? else {
        return Ok(Vec::new());
    };
    let mut rules = Vec::new();
    let mut add = |peer, description: &Option<String>| {
        rules.push(Rule { l4, peer, description: description.clone() });
    };
    for (i, r) in p.ip_ranges.iter().enumerate() {
        add(Peer::Cidr(cidr(&r.cidr_ip, false, &at.index("IpRanges", i).child("CidrIp"), warnings)?), &r.description);
    }
    for (i, r) in p.ipv6_ranges.iter().enumerate() {
        let net = cidr(&r.cidr_ipv6, true, &at.index("Ipv6Ranges", i).child("CidrIpv6"), warnings)?;
        add(Peer::Cidr(net), &r.description);
    }
    for (i, r) in p.prefix_list_ids.iter().enumerate() {
        let id = aws_id(&r.prefix_list_id, "pl-", &at.index("PrefixListIds", i).child("PrefixListId"))?;
        add(Peer::PrefixList(id), &r.description);
    }
    for (i, pair) in p.user_id_group_pairs.iter().enumerate() {
        let at = at.index("UserIdGroupPairs", i);
        let id = match (&pair.group_id, &pair.group_name) {
            (Some(id), _) => aws_id(id, "sg-", &at.child("GroupId"))?,
            // Resolved by name once every group is known (`names`).
            (None, Some(name)) => {
                add(Peer::GroupName { name: name.clone(), origin: at.to_string() }, &pair.description);
                continue;
            }
            (None, None) => return Err(at.error("names no group: expected GroupId".to_owned())),
        };
        add(Peer::Group(id), &pair.description);
    }
    if rules.is_empty() {
        warnings.push(format!("{at}: allows no source or destination (no ranges, prefix lists or groups): skipped"));
    }
    Ok(rules)
}

/// One `SecurityGroupRules` element; `None` (with a warning) if sgctl cannot express it.
fn group_rule(r: &json::SecurityGroupRule, at: &At, warnings: &mut Vec<String>) -> Result<Option<Rule>, ImportError> {
    aws_id(&r.group_id, "sg-", &at.child("GroupId"))?;
    let l4 = l4(&r.ip_protocol, r.from_port, r.to_port, at, warnings)?;
    let mut peers = Vec::new();
    if let Some(c) = &r.cidr_ipv4 {
        peers.push(Peer::Cidr(cidr(c, false, &at.child("CidrIpv4"), warnings)?));
    }
    if let Some(c) = &r.cidr_ipv6 {
        peers.push(Peer::Cidr(cidr(c, true, &at.child("CidrIpv6"), warnings)?));
    }
    if let Some(id) = &r.prefix_list_id {
        peers.push(Peer::PrefixList(aws_id(id, "pl-", &at.child("PrefixListId"))?));
    }
    if let Some(g) = &r.referenced_group_info {
        peers.push(Peer::Group(aws_id(&g.group_id, "sg-", &at.child("ReferencedGroupInfo").child("GroupId"))?));
    }
    const PEERS: &str = "exactly one of CidrIpv4, CidrIpv6, PrefixListId, ReferencedGroupInfo";
    let peer = match peers.as_slice() {
        [peer] => peer.clone(),
        [] => return Err(at.error(format!("names no peer: expected {PEERS}"))),
        _ => return Err(at.error(format!("names several peers: expected {PEERS}"))),
    };
    Ok(l4.map(|l4| Rule { l4, peer, description: r.description.clone() }))
}

/// `IpProtocol`, `FromPort`, `ToPort` → [`L4`]; `None` (with a warning) for
/// a rule sgctl cannot express at all (only port 0).
fn l4(
    protocol: &str,
    from: Option<i64>,
    to: Option<i64>,
    at: &At,
    warnings: &mut Vec<String>,
) -> Result<Option<L4>, ImportError> {
    let number = match protocol.to_ascii_lowercase().as_str() {
        "-1" | "all" => return Ok(Some(L4::All)),
        other => match (proto::by_name(other), other.parse::<u8>()) {
            (Some(n), _) => n,
            (None, Ok(n)) if other.bytes().all(|b| b.is_ascii_digit()) => n,
            (None, _) => {
                return Err(at.child("IpProtocol").error(format!(
                    "unknown protocol \"{protocol}\": expected tcp, udp, icmp, icmpv6, -1 or a number 0-255"
                )))
            }
        },
    };
    match number {
        proto::TCP | proto::UDP => ports(number == proto::UDP, from, to, at, warnings),
        proto::ICMP | proto::ICMPV6 => icmp(number == proto::ICMPV6, from, to, at).map(Some),
        n => Ok(Some(L4::Other(n))),
    }
}

fn ports(
    udp: bool,
    from: Option<i64>,
    to: Option<i64>,
    at: &At,
    warnings: &mut Vec<String>,
) -> Result<Option<L4>, ImportError> {
    let (from, to) = match (from, to) {
        (None | Some(-1), None | Some(-1)) => return Ok(Some(L4::Ports { udp, range: None })),
        (Some(f), Some(t)) => (f, t),
        (None, Some(_)) => return Err(at.child("FromPort").error("missing: ToPort needs a FromPort".to_owned())),
        (Some(_), None) => return Err(at.child("ToPort").error("missing: FromPort needs a ToPort".to_owned())),
    };
    let check = |key: &str, v: i64| match u16::try_from(v) {
        Ok(port) => Ok(port),
        Err(_) => Err(at.child(key).error(format!("{v} is not a port: expected 0-65535, or -1 for all"))),
    };
    let (first, last) = (check("FromPort", from)?, check("ToPort", to)?);
    if first > last {
        return Err(at.error(format!("FromPort {first} is above ToPort {last}")));
    }
    if (first, last) == (0, 65535) {
        return Ok(Some(L4::Ports { udp, range: None }));
    }
    if first == 0 {
        // Port 0 is reserved; sgctl's ranges start at 1.
        if last == 0 {
            warnings.push(format!("{at}: port 0 only, which sgctl cannot express: skipped"));
            return Ok(None);
        }
        warnings.push(format!("{at}: ports 0-{last} imported as 1-{last} (sgctl ranges start at 1)"));
        return Ok(Some(L4::Ports { udp, range: Some((1, last)) }));
    }
    Ok(Some(L4::Ports { udp, range: Some((first, last)) }))
}

/// ICMP: `FromPort` is the type, `ToPort` the code, -1 any.
fn icmp(v6: bool, from: Option<i64>, to: Option<i64>, at: &At) -> Result<L4, ImportError> {
    let field = |key: &str, v: Option<i64>, what: &str| match v {
        None | Some(-1) => Ok(None),
        Some(v) => u8::try_from(v)
            .map(Some)
            .map_err(|_| at.child(key).error(format!("{v} is not an ICMP {what}: expected 0-255, or -1 for any"))),
    };
    let icmp_type = field("FromPort", from, "type")?;
    let code = field("ToPort", to, "code")?;
    if icmp_type.is_none() && code.is_some() {
        return Err(at.child("ToPort").error("an ICMP code needs a type: FromPort is -1".to_owned()));
    }
    Ok(L4::Icmp { v6, icmp_type, code })
}

/// A CIDR of `IpRanges`/`Ipv6Ranges`/`CidrIpv4`/`CidrIpv6`: of the right
/// family; host bits are cleared with a warning (AWS matches the network).
fn cidr(text: &str, v6: bool, at: &At, warnings: &mut Vec<String>) -> Result<IpNet, ImportError> {
    let family = if v6 { "an IPv6 CIDR such as ::/0" } else { "an IPv4 CIDR such as 10.0.0.0/8" };
    let net: IpNet = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => return Err(at.error(format!("invalid CIDR \"{text}\": expected {family}"))),
    };
    if matches!(net, IpNet::V6(_)) != v6 {
        return Err(at.error(format!("\"{text}\" is of the wrong family: expected {family}")));
    }
    if net.trunc() != net {
        warnings.push(format!("{at}: \"{text}\" has host bits set: imported as {}", net.trunc()));
    }
    Ok(net.trunc())
}

/// An AWS id (`sg-…`, `pl-…`) as a policy name: AWS ids are already
/// lowercase hex after the prefix, which the name grammar accepts.
fn aws_id(text: &str, prefix: &str, at: &At) -> Result<String, ImportError> {
    let rest = text.strip_prefix(prefix).unwrap_or_default();
    let ok = !rest.is_empty() && rest.len() <= 60 && rest.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    if !ok {
        return Err(at.error(format!("\"{text}\" is not an AWS id: expected {prefix} and lowercase letters or digits")));
    }
    Ok(text.to_owned())
}

fn network_interface(eni: &json::NetworkInterface, at: &At, inv: &mut Inventory) -> Result<(), ImportError> {
    let mut addresses: Vec<IpNet> = Vec::new();
    let mut add = |text: &str, at: At, prefix: bool| -> Result<(), ImportError> {
        let net = if prefix {
            text.parse::<IpNet>().map(|n| n.trunc()).ok()
        } else {
            text.parse::<IpAddr>().ok().map(IpNet::from)
        };
        let Some(net) = net else {
            let expected = if prefix { "a CIDR" } else { "an IP address" };
            return Err(at.error(format!("invalid address \"{text}\": expected {expected}")));
        };
        if !addresses.contains(&net) {
            addresses.push(net);
        }
        Ok(())
    };
    if let Some(a) = &eni.private_ip_address {
        add(a, at.child("PrivateIpAddress"), false)?;
    }
    for (i, a) in eni.private_ip_addresses.iter().enumerate() {
        add(&a.private_ip_address, at.index("PrivateIpAddresses", i).child("PrivateIpAddress"), false)?;
    }
    for (i, a) in eni.ipv6_addresses.iter().enumerate() {
        add(&a.ipv6_address, at.index("Ipv6Addresses", i).child("Ipv6Address"), false)?;
    }
    for (i, p) in eni.ipv4_prefixes.iter().enumerate() {
        add(&p.ipv4_prefix, at.index("Ipv4Prefixes", i).child("Ipv4Prefix"), true)?;
    }
    for (i, p) in eni.ipv6_prefixes.iter().enumerate() {
        add(&p.ipv6_prefix, at.index("Ipv6Prefixes", i).child("Ipv6Prefix"), true)?;
    }
    if addresses.is_empty() {
        let id = eni.network_interface_id.as_deref().unwrap_or("a network interface");
        inv.warnings.push(format!("{at}: {id} has no private address: it adds no members"));
    }
    for (i, g) in eni.groups.iter().enumerate() {
        let id = aws_id(&g.group_id, "sg-", &at.index("Groups", i).child("GroupId"))?;
        for net in &addresses {
            if inv.seen_members.insert((id.clone(), *net)) {
                inv.members.push((id.clone(), *net));
            }
        }
    }
    Ok(())
}

fn prefix_list(
    source: &Source,
    doc: &json::Document,
    entries: &[json::PrefixListEntry],
    warnings: &mut Vec<String>,
) -> Result<PrefixList, ImportError> {
    let (id_text, id_path) = match (&source.prefix_list_id, &doc.prefix_list_id) {
        (Some(flag), Some(key)) if flag != key => {
            let message = format!("PrefixListId {key} differs from --prefix-list {flag}");
            return Err(ImportError::new(&source.name, "PrefixListId", message));
        }
        (Some(flag), _) => (flag.clone(), "(--prefix-list)"),
        (None, Some(key)) => (key.clone(), "PrefixListId"),
        (None, None) => unreachable!("checked by parse_document"),
    };
    let id = aws_id(&id_text, "pl-", &At::new(source, id_path.to_owned()))?;
    let mut nets = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let at = At::new(source, format!("Entries[{i}].Cidr"));
        let v6 = e.cidr.contains(':');
        let net = cidr(&e.cidr, v6, &at, warnings)?;
        if !nets.iter().any(|(n, _)| *n == net) {
            nets.push((net, e.description.clone()));
        }
    }
    Ok(PrefixList { id, origin: source.name.clone(), entries: nets })
}
