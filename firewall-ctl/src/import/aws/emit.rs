//! An [`Inventory`] → policy YAML text. Every string from the input is
//! data, never structure: values are written double-quoted with YAML's
//! escapes ([`quote`]), comments with every line-breaking or unprintable
//! character escaped ([`comment`]), keys are policy names (fitted to the
//! name grammar, `names`) or AWS ids (checked by `read`).

use std::{collections::BTreeMap, fmt::Write as _};

use ipnet::IpNet;

use super::read::{Group, Inventory, Peer, Rule, L4};

/// The policy's text, and what the user must still fill in.
pub struct Emitted {
    pub yaml: String,
    pub warnings: Vec<String>,
    /// Groups written, those referenced but not in the input included.
    pub groups: usize,
    pub rules: usize,
}

/// At most this many characters per description (policy-format.md).
const MAX_DESCRIPTION: usize = 255;

pub fn policy(inv: &Inventory, files: &[String]) -> Emitted {
    let mut warnings = Vec::new();
    let referenced_groups = referenced(inv, |p| match p {
        Peer::Group(id) => Some(id.as_str()),
        _ => None,
    });
    let referenced_lists = referenced(inv, |p| match p {
        Peer::PrefixList(id) => Some(id.as_str()),
        _ => None,
    });
    let placeholders: Vec<String> =
        referenced_groups.iter().filter(|id| !inv.groups.iter().any(|g| &g.id == *id)).cloned().collect();
    let ids: Vec<(String, Option<String>)> = inv.groups.iter().map(|g| (g.id.clone(), g.name.clone())).collect();
    let names = super::names::assign(&ids, &placeholders);

    let mut out = String::new();
    let _ = writeln!(out, "# Imported by `sgctl import aws` from {}.", comment(&files.join(", ")));
    out.push_str(
        "# Review it, fill in what the warnings list (members of referenced groups,\n\
         # entries of prefix lists), then attach groups to this host's interfaces\n\
         # (an `interfaces:` section or `sgctl attach`).\n",
    );
    out.push_str("groups:\n");
    let members = members(inv, &names);
    let mut rules = 0;
    for g in &inv.groups {
        rules += group(&mut out, g, &names, &mut warnings);
    }
    for id in &placeholders {
        let _ = writeln!(out, "  # {}: referenced, but not in the input", comment(id));
        let _ = writeln!(out, "  {}:", names[id]);
        let _ = writeln!(out, "    description: {}", quote(&format!("{id} (not imported: fill in its members)")));
        out.push_str("    inbound: []\n    outbound: []\n");
        if !members.contains_key(id) {
            warnings.push(format!(
                "{id} is referenced but not in the input: imported as an empty group \"{id}\"; \
                 fill in `members: {id}: [...]` with the addresses that carry it"
            ));
        }
    }
    let with_members: Vec<&String> =
        names.keys().filter(|id| referenced_groups.contains(id) || members.contains_key(*id)).collect();
    if !with_members.is_empty() {
        out.push_str("\n# Addresses that carry each group: in AWS, the private addresses of the\n");
        out.push_str("# network interfaces it is attached to (describe-network-interfaces).\n");
        out.push_str("# Local interfaces a group is attached to join it by themselves.\n");
        out.push_str("members:\n");
        for id in ordered(inv, &placeholders, &with_members) {
            let name = &names[id];
            match members.get(id) {
                Some(addrs) => {
                    let list: Vec<String> = addrs.iter().map(|a| quote(&a.to_string())).collect();
                    let _ = writeln!(out, "  {name}: [{}]", list.join(", "));
                }
                None => {
                    let _ = writeln!(out, "  {name}: []   # fill in: the addresses that carry {id}");
                    if inv.groups.iter().any(|g| &g.id == id) {
                        warnings.push(format!(
                            "sg:{name} ({id}) is referenced but no network interface in the input carries it: \
                             fill in `members: {name}: [...]`, or attach it to a local interface"
                        ));
                    }
                }
            }
        }
    }

    let lists: Vec<&String> = referenced_lists.iter().chain(inv.prefix_lists.iter().map(|p| &p.id)).collect();
    let mut written: Vec<&String> = Vec::new();
    for id in lists {
        if written.contains(&id) {
            continue;
        }
        if written.is_empty() {
            out.push_str("\nprefix_lists:\n");
        }
        written.push(id);
        match inv.prefix_lists.iter().find(|p| &p.id == id) {
            Some(list) if !list.entries.is_empty() => {
                let _ = writeln!(out, "  {id}:   # from {}", comment(&list.origin));
                for (net, description) in &list.entries {
                    let about = description.as_deref().map(|d| format!("   # {}", comment(d))).unwrap_or_default();
                    let _ = writeln!(out, "    - {}{about}", quote(&net.to_string()));
                }
            }
            Some(list) => {
                let _ = writeln!(out, "  {id}: []   # empty in {}", comment(&list.origin));
            }
            None => {
                let _ = writeln!(out, "  {id}: []   # fill in: the entries of {id}");
                warnings.push(format!(
                    "{id} is referenced but its entries are not in the input: fill in `prefix_lists: {id}: [...]` \
                     (`aws ec2 get-managed-prefix-list-entries --prefix-list-id {id}`, \
                     imported with --prefix-list {id}=FILE)"
                ));
            }
        }
    }
    Emitted { yaml: out, warnings, groups: inv.groups.len() + placeholders.len(), rules }
}

/// Writes one group; returns its number of rules.
fn group(out: &mut String, g: &Group, names: &BTreeMap<String, String>, warnings: &mut Vec<String>) -> usize {
    let mut about = vec![g.id.clone()];
    if let Some(name) = &g.name {
        about.push(format!("\"{name}\""));
    }
    if let Some(vpc) = &g.vpc {
        about.push(vpc.clone());
    }
    if let Some(owner) = &g.owner {
        about.push(format!("owner {owner}"));
    }
    let _ = writeln!(out, "  # {}", comment(&about.join(", ")));
    let _ = writeln!(out, "  {}:", names[&g.id]);
    if let Some(d) = &g.description {
        let _ = writeln!(out, "    description: {}", quote(&description(d, &g.id, warnings)));
    }
    for (key, peer_key, rules) in [("inbound", "source", &g.inbound), ("outbound", "destination", &g.outbound)] {
        // Always written: AWS lists a group's egress rules explicitly, and
        // a missing `outbound:` would mean "allow all" to sgctl.
        if rules.is_empty() {
            let _ = writeln!(out, "    {key}: []");
            continue;
        }
        let _ = writeln!(out, "    {key}:");
        for r in rules.iter() {
            let _ = writeln!(out, "      - {{ {} }}", rule(r, peer_key, names, &g.id, warnings));
        }
    }
    g.inbound.len() + g.outbound.len()
}

fn rule(r: &Rule, peer_key: &str, names: &BTreeMap<String, String>, group: &str, w: &mut Vec<String>) -> String {
    let mut fields = Vec::new();
    match r.l4 {
        L4::All => fields.push("protocol: all".to_owned()),
        L4::Ports { udp, range } => {
            fields.push(format!("protocol: {}", if udp { "udp" } else { "tcp" }));
            fields.push(match range {
                None => "ports: all".to_owned(),
                Some((a, b)) if a == b => format!("ports: {a}"),
                Some((a, b)) => format!("ports: \"{a}-{b}\""),
            });
        }
        L4::Icmp { v6, icmp_type, code } => {
            fields.push(format!("protocol: {}", if v6 { "icmpv6" } else { "icmp" }));
            if let Some(t) = icmp_type {
                fields.push(format!("icmp_type: {t}"));
            }
            if let Some(c) = code {
                fields.push(format!("icmp_code: {c}"));
            }
        }
        L4::Other(n) => fields.push(format!("protocol: {n}")),
    }
    let peer = match &r.peer {
        Peer::Cidr(net) => net.to_string(),
        Peer::Group(id) => format!("sg:{}", names[id]),
        Peer::PrefixList(id) => format!("pl:{id}"),
        Peer::GroupName { name, .. } => unreachable!("group name {name} resolved by read::inventory"),
    };
    fields.push(format!("{peer_key}: {}", quote(&peer)));
    if let Some(d) = &r.description {
        fields.push(format!("description: {}", quote(&description(d, group, w))));
    }
    fields.join(", ")
}

/// Ids that some rule's peer names through `pick`, in first-use order.
fn referenced(inv: &Inventory, pick: impl Fn(&Peer) -> Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for g in &inv.groups {
        for r in g.inbound.iter().chain(&g.outbound) {
            if let Some(id) = pick(&r.peer) {
                if !out.iter().any(|o| o == id) {
                    out.push(id.to_owned());
                }
            }
        }
    }
    out
}

/// Network-interface addresses of each group the policy defines.
fn members(inv: &Inventory, names: &BTreeMap<String, String>) -> BTreeMap<String, Vec<IpNet>> {
    let mut out: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
    for (id, net) in &inv.members {
        if names.contains_key(id) {
            out.entry(id.clone()).or_default().push(*net);
        }
    }
    out
}

/// `ids` in the order their groups are written.
fn ordered<'a>(inv: &'a Inventory, placeholders: &'a [String], ids: &[&String]) -> Vec<&'a String> {
    inv.groups.iter().map(|g| &g.id).chain(placeholders).filter(|id| ids.contains(id)).collect()
}

fn description(text: &str, group: &str, warnings: &mut Vec<String>) -> String {
    if text.chars().count() <= MAX_DESCRIPTION {
        return text.to_owned();
    }
    warnings.push(format!("{group}: a description longer than {MAX_DESCRIPTION} characters was cut"));
    text.chars().take(MAX_DESCRIPTION).collect()
}

/// Whether YAML may carry `c` as it is: printable (YAML 1.2's
/// `c-printable`) and not a line break in any YAML version (1.1 also
/// breaks lines at U+0085, U+2028 and U+2029, and PyYAML follows it). The
/// byte-order mark is printable but only allowed at the start of a stream.
fn plain_char(c: char) -> bool {
    matches!(c, ' '..='~' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// `\uXXXX` (or `\UXXXXXXXX`) for `c`, YAML's escape.
fn escape_char(out: &mut String, c: char) {
    let code = u32::from(c);
    let _ = if code <= 0xffff { write!(out, "\\u{code:04x}") } else { write!(out, "\\U{code:08x}") };
}

/// A string as comment text: a comment ends at the line break, so every
/// character that could break the line (or that YAML refuses in a stream)
/// is written as its escape, visibly: nothing in it can become structure.
pub fn comment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if plain_char(c) {
            out.push(c);
        } else {
            escape_char(&mut out, c);
        }
    }
    out
}

/// A YAML double-quoted scalar: `"` and `\` escaped, and every character
/// YAML would not carry as it is (control characters, line and paragraph
/// separators, the byte-order mark, non-characters) as `\uXXXX`, so the
/// value reads back exactly and never ends the scalar or the line.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if plain_char(c) => out.push(c),
            c => escape_char(&mut out, c),
        }
    }
    out.push('"');
    out
}
