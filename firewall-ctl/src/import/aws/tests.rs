//! Importer tests: the seed examples written as AWS JSON import to policies
//! with the verdicts of `policies/*.yaml` (held to the compiler's reference
//! matcher over a grid of packets); every field form of a permission; what
//! is referenced but missing; malformed documents, each error naming its
//! JSON path.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;

use super::*;
use crate::{
    model::{RuleRef, Rules},
    policy::{parse_sources, Location, Members, PeerTarget, Policy, PortRange, Ports, Protocol, Rule, RuleDirection},
};

/// The rules of `groups` that allow a packet, by the model.
fn reference_match(
    policy: &Policy,
    groups: &[String],
    local: &BTreeMap<String, Vec<IpNet>>,
    direction: RuleDirection,
    protocol: u8,
    port: [u8; 2],
    peer: IpAddr,
) -> Vec<RuleRef> {
    Rules::new(policy, groups, local).map(|r| r.matching(direction, protocol, port, peer)).unwrap_or_default()
}

fn fixture(name: &str) -> Source {
    let path = format!("{}/tests/fixtures/aws/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Source { name: name.to_owned(), text, prefix_list_id: None }
}

fn text(name: &str, text: &str) -> Source {
    Source { name: name.to_owned(), text: text.to_owned(), prefix_list_id: None }
}

fn example(names: &[&str]) -> Policy {
    let sources: Vec<(String, String)> = names
        .iter()
        .map(|n| {
            let path = format!("{}/../policies/{n}", env!("CARGO_MANIFEST_DIR"));
            (n.to_string(), std::fs::read_to_string(&path).expect("example file"))
        })
        .collect();
    parse_sources(&sources).expect("example parses")
}

/// Imports and parses the result, as `sgctl import aws` then `sgctl check` do.
fn import_ok(sources: &[Source]) -> (Policy, Imported) {
    let imported = import(sources).unwrap_or_else(|e| panic!("import failed: {e}"));
    match parse_sources(&[("imported.yaml".to_owned(), imported.yaml.clone())]) {
        Ok(policy) => (policy, imported),
        Err(e) => panic!("the imported policy does not parse: {e}\n{}", imported.yaml),
    }
}

fn import_err(sources: &[Source]) -> String {
    match import(sources) {
        Ok(i) => panic!("accepted:\n{}", i.yaml),
        Err(e) => e.to_string(),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test CIDR")
}

fn here() -> Location {
    Location { file_index: 0, line: 1, col: 1, file: "test".to_owned() }
}

/// Gives `policy` the members `reference` gives `(reference group → group here)`.
fn members_from(policy: &mut Policy, reference: &Policy, names: &[(&str, &str)]) {
    policy.members = names
        .iter()
        .map(|(theirs, ours)| Members {
            group: (*ours).to_owned(),
            at: here(),
            addresses: reference.members_of(theirs).collect(),
        })
        .collect();
}

/// Every packet of a grid: both directions, the seed's ports and a few
/// others, ICMP types, other protocols, and peers inside and outside every
/// range and member set of the examples.
fn grid() -> Vec<(RuleDirection, u8, [u8; 2], IpAddr)> {
    let peers = [
        "203.0.113.10",
        "203.0.113.11",
        "10.0.0.10",
        "10.0.0.11",
        "10.0.1.7",
        "10.0.1.200",
        "10.0.2.5",
        "10.0.3.1",
        "8.8.8.8",
        "fd00::10",
        "fd00::11",
        "fd00:1::7",
        "fd00:2::5",
        "fd00:2::6",
        "2001:db8::1",
    ];
    let mut l4: Vec<(u8, [u8; 2])> = Vec::new();
    for port in [1_u16, 21, 22, 53, 80, 443, 3306, 5432, 8080, 8443, 65535] {
        l4.push((6, port.to_be_bytes()));
        l4.push((17, port.to_be_bytes()));
    }
    for (t, c) in [(8, 0), (0, 0), (3, 4), (128, 0)] {
        l4.push((1, [t, c]));
        l4.push((58, [t, c]));
    }
    l4.push((47, [0, 0]));
    l4.push((50, [0, 0]));
    let mut out = Vec::new();
    for direction in RuleDirection::BOTH {
        for &(protocol, port) in &l4 {
            for peer in peers {
                out.push((direction, protocol, port, peer.parse().expect("grid address")));
            }
        }
    }
    out
}

/// Group `ours` of `imported` allows exactly the packets that group
/// `theirs` of `reference` allows (which rule allows them may differ: a
/// permission with an IPv4 and an IPv6 range is two rules here, one there).
fn assert_same_verdicts(imported: &Policy, ours: &str, reference: &Policy, theirs: &str) {
    let none = BTreeMap::new();
    let mut checked = 0;
    for (direction, protocol, port, peer) in grid() {
        let want = !reference_match(reference, &[theirs.into()], &none, direction, protocol, port, peer).is_empty();
        let got = !reference_match(imported, &[ours.into()], &none, direction, protocol, port, peer).is_empty();
        assert_eq!(got, want, "{ours} vs {theirs}: {direction} proto {protocol} {port:?} peer {peer}");
        checked += usize::from(want);
    }
    assert!(checked > 0, "{theirs} allows nothing on the grid: the comparison proves nothing");
}

// ---- the seed examples ------------------------------------------------------

#[test]
fn seed_example_1_web_server() {
    let reference = example(&["web-server.yaml"]);
    let (imported, result) = import_ok(&[fixture("web-server.json")]);
    assert!(result.warnings.is_empty(), "{:?}", result.warnings);
    assert_eq!(imported.groups.len(), 1);
    let g = &imported.groups[0];
    assert_eq!(g.name, "web-server");
    assert_eq!(g.description.as_deref(), Some("Basic web server"));
    assert!(result.yaml.contains("# sg-0a1b2c3d4e5f60001, \"web-server\", vpc-0f1e2d3c4b5a69788"), "{}", result.yaml);
    // 443 has an IPv4 and an IPv6 range: two rules, each with its description.
    let descriptions: Vec<&str> = g.inbound.iter().filter_map(|r| r.description.as_deref()).collect();
    assert_eq!(
        descriptions,
        [
            "Allow HTTP (web traffic)",
            "SSH access",
            "Allow HTTPS (secure web traffic)",
            "Allow HTTPS (secure web traffic)"
        ]
    );
    assert!(g.outbound.iter().all(|r| !r.implicit));
    assert_same_verdicts(&imported, "web-server", &reference, "web-server");
}

#[test]
fn seed_examples_2_and_3_app_server_and_database() {
    let reference = example(&["app-server.yaml", "database.yaml"]);
    let (mut imported, result) = import_ok(&[fixture("app-db-security-groups.json")]);
    let names: Vec<&str> = imported.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["load-balancer", "app-server", "database"]);
    // No network interfaces in the input: every referenced group's members are to fill in.
    for group in ["load-balancer", "app-server", "database"] {
        assert!(
            result.warnings.iter().any(|w| w.contains(&format!("sg:{group} ")) && w.contains("fill in")),
            "no warning about the members of {group}: {:?}",
            result.warnings
        );
        assert_eq!(imported.members_of(group).count(), 0);
    }
    // The database's empty IpPermissionsEgress is `outbound: []`, not AWS's default.
    assert!(result.yaml.contains("  database:\n    description: \"Database\"\n"), "{}", result.yaml);
    assert!(imported.group("database").expect("database").outbound.is_empty());
    members_from(
        &mut imported,
        &reference,
        &[("load-balancer", "load-balancer"), ("app-server", "app-server"), ("database", "database")],
    );
    for group in ["load-balancer", "app-server", "database"] {
        assert_same_verdicts(&imported, group, &reference, group);
    }
}

#[test]
fn seed_example_3_from_describe_security_group_rules() {
    let reference = example(&["app-server.yaml", "database.yaml"]);
    let (mut imported, result) = import_ok(&[fixture("database-rules.json")]);
    // Known only by id: the group and the one it references are named by their ids.
    let names: Vec<&str> = imported.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["sg-0cccc000000000003", "sg-0bbbb000000000002"]);
    assert!(
        result.warnings.iter().any(|w| w.starts_with("sg-0bbbb000000000002 is referenced but not in the input")),
        "{:?}",
        result.warnings
    );
    // A group of the rules output with no egress rule has none.
    assert!(imported.groups[0].outbound.is_empty());
    members_from(
        &mut imported,
        &reference,
        &[("database", "sg-0cccc000000000003"), ("app-server", "sg-0bbbb000000000002")],
    );
    assert_same_verdicts(&imported, "sg-0cccc000000000003", &reference, "database");
}

#[test]
fn members_come_from_network_interfaces() {
    let reference = example(&["app-server.yaml", "database.yaml"]);
    let sources = [fixture("app-db-security-groups.json"), fixture("app-db-network-interfaces.json")];
    let (imported, result) = import_ok(&sources);
    assert!(result.warnings.is_empty(), "{:?}", result.warnings);
    let members = |g: &str| imported.members_of(g).map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(members("load-balancer"), ["10.0.0.10/32", "fd00::10/128"]);
    assert_eq!(members("app-server"), ["10.0.1.7/32", "10.0.1.8/32", "fd00:1::7/128", "10.0.1.16/28"]);
    assert_eq!(members("database"), ["10.0.2.5/32", "fd00:2::5/128"]);
    // The database's members are the example's own, so its group's verdicts match as imported.
    let none = BTreeMap::new();
    let allows = |p: &Policy, g: &str, peer: &str| {
        let peer: IpAddr = peer.parse().expect("address");
        !reference_match(p, &[g.into()], &none, RuleDirection::Outbound, 6, 3306_u16.to_be_bytes(), peer).is_empty()
    };
    for peer in ["10.0.2.5", "fd00:2::5", "10.0.2.6"] {
        assert_eq!(allows(&imported, "app-server", peer), allows(&reference, "app-server", peer), "{peer}");
    }
}

// ---- the forms of a permission --------------------------------------------

fn mixed() -> (Policy, Imported) {
    let mut entries = fixture("prefix-list-entries.json");
    entries.prefix_list_id = Some("pl-0c0c0c0c0c0c0c0c0".to_owned());
    import_ok(&[fixture("mixed.json"), entries])
}

fn peers(rule: &Rule) -> Vec<String> {
    rule.peers.iter().map(|p| p.target.to_string()).collect()
}

#[test]
fn each_range_prefix_list_and_group_is_a_rule_with_its_description() {
    let (p, _) = mixed();
    let g = p.group("bastion-prod").expect("GroupName \"Bastion Prod\" normalised");
    let ssh: Vec<(Vec<String>, Option<&str>)> = g.inbound[..8]
        .iter()
        .inspect(|r| {
            assert_eq!(r.protocol, Protocol::Tcp);
            assert_eq!(r.ports, Ports::Ranges(vec![PortRange { first: 22, last: 22 }]));
        })
        .map(|r| (peers(r), r.description.as_deref()))
        .collect();
    let want: Vec<(Vec<String>, Option<&str>)> = vec![
        (vec!["198.51.100.0/24".into()], Some("Office")),
        (vec!["192.0.2.7/32".into()], Some("VPN \"gateway\"")),
        (vec!["2001:db8:100::/48".into()], Some("Office v6")),
        (vec!["2001:db8:200::/48".into()], None),
        (vec!["pl:pl-0c0c0c0c0c0c0c0c0".into()], Some("Corporate ranges")),
        (vec!["pl:pl-0a0a0a0a0a0a0a0a0".into()], None),
        (vec!["sg:jump".into()], Some("Jump hosts")),
        (vec!["sg:sg-0ffff000000000006".into()], Some("Peered VPC admins")),
    ];
    assert_eq!(ssh, want);
    assert_eq!(g.description.as_deref(), Some("Bastion & monitoring (prod)"));
    let pl = p.prefix_list("pl-0c0c0c0c0c0c0c0c0").expect("prefix list from --prefix-list");
    assert_eq!(pl.cidrs, [net("172.16.0.0/12"), net("2001:db8:300::/48")]);
}

#[test]
fn protocols_ports_and_icmp() {
    let (p, result) = mixed();
    let g = p.group("bastion-prod").expect("group");
    let r = &g.inbound[8..];
    assert_eq!(
        (r[0].protocol, &r[0].ports),
        (Protocol::Udp, &Ports::Ranges(vec![PortRange { first: 8000, last: 8100 }]))
    );
    // ICMP: FromPort is the type, ToPort the code, -1 any.
    assert_eq!((r[1].protocol, r[1].icmp_type, r[1].icmp_code), (Protocol::Icmp, Some(3), Some(4)));
    assert_eq!((r[2].protocol, r[2].icmp_type, r[2].icmp_code), (Protocol::Icmp, Some(8), None));
    assert_eq!((r[3].protocol, r[3].icmp_type, r[3].icmp_code), (Protocol::Icmp, None, None));
    // "58" is ICMPv6.
    assert_eq!((r[4].protocol, r[4].icmp_type, r[4].icmp_code), (Protocol::Icmpv6, None, None));
    // A bare number: all of that protocol, ports or not.
    assert_eq!((r[5].protocol, &r[5].ports), (Protocol::Other(50), &Ports::Any));
    // -1: every protocol, here from the group itself.
    assert_eq!((r[6].protocol, peers(&r[6])), (Protocol::All, vec!["sg:bastion-prod".to_owned()]));
    // TCP 0-65535 is every port.
    assert_eq!((g.outbound[0].protocol, &g.outbound[0].ports), (Protocol::Tcp, &Ports::Any));
    assert!(result.yaml.contains("protocol: icmp, icmp_type: 3, icmp_code: 4,"), "{}", result.yaml);

    let none = BTreeMap::new();
    let allows = |proto: u8, port: [u8; 2], peer: &str| {
        let peer: IpAddr = peer.parse().expect("address");
        !reference_match(&p, &["bastion-prod".into()], &none, RuleDirection::Inbound, proto, port, peer).is_empty()
    };
    assert!(allows(1, [3, 4], "8.8.8.8"));
    assert!(!allows(1, [3, 1], "8.8.8.8"));
    assert!(allows(1, [8, 7], "10.9.9.9"));
    assert!(!allows(1, [0, 0], "10.9.9.9"));
    assert!(allows(1, [0, 0], "10.1.2.3"));
    assert!(allows(58, [135, 0], "2001:db8::99"));
    assert!(allows(50, [0, 0], "203.0.113.9"));
    assert!(!allows(51, [0, 0], "203.0.113.9"));
    assert!(allows(17, 8050_u16.to_be_bytes(), "10.2.3.4"));
    assert!(!allows(17, 8101_u16.to_be_bytes(), "10.2.3.4"));
    assert!(allows(6, 22_u16.to_be_bytes(), "172.16.5.5"), "prefix list entries");
}

#[test]
fn unresolved_references_become_empty_definitions_with_warnings() {
    let (p, result) = import_ok(&[fixture("mixed.json")]);
    let w = &result.warnings;
    // The peered VPC's group: an empty group to give members.
    let placeholder = p.group("sg-0ffff000000000006").expect("placeholder group");
    assert!(placeholder.inbound.is_empty() && placeholder.outbound.is_empty());
    assert_eq!(p.members_of("sg-0ffff000000000006").count(), 0);
    assert!(
        w.iter().any(|w| w.starts_with("sg-0ffff000000000006 is referenced but not in the input")
            && w.contains("members: sg-0ffff000000000006")),
        "{w:?}"
    );
    // The prefix list without its entries.
    assert_eq!(p.prefix_list("pl-0c0c0c0c0c0c0c0c0").map(|l| l.cidrs.len()), Some(0));
    assert!(w.iter().any(|w| w.contains("pl-0c0c0c0c0c0c0c0c0=FILE")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("pl-0a0a0a0a0a0a0a0a0=FILE")), "{w:?}");
    // The groups of the input that are referenced but carried by no interface given.
    assert!(w.iter().any(|w| w.starts_with("sg:jump (sg-0eeee000000000005) is referenced")), "{w:?}");
    assert!(w.iter().any(|w| w.starts_with("sg:bastion-prod (sg-0dddd000000000004)")), "{w:?}");
    assert_eq!(w.len(), 5, "{w:?}");
}

#[test]
fn clashing_and_odd_names() {
    let group = |id: &str, name: &str| {
        format!(
            r#"{{"GroupId": "{id}", "GroupName": "{name}", "IpPermissions": [], "IpPermissionsEgress": [],
                "Description": "line one\nline \"two\" \\ \u0007 é"}}"#
        )
    };
    let doc = format!(
        r#"{{"SecurityGroups": [{}, {}, {}]}}"#,
        group("sg-01", "default"),
        group("sg-02", "default"),
        group("sg-03", "!!!")
    );
    let (p, _) = import_ok(&[text("d.json", &doc)]);
    let names: Vec<&str> = p.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["default", "default-sg-02", "sg-03"]);
    assert_eq!(p.groups[0].description.as_deref(), Some("line one\nline \"two\" \\ \u{7} é"));
}

#[test]
fn adjusted_values_are_warned_about() {
    let doc = r#"{"SecurityGroups": [{"GroupId": "sg-01", "GroupName": "a", "IpPermissionsEgress": [],
        "IpPermissions": [
            {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 1023, "IpRanges": [{"CidrIp": "10.0.0.1/8"}]},
            {"IpProtocol": "udp", "FromPort": 0, "ToPort": 0, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}
        ]}]}"#;
    let (p, result) = import_ok(&[text("w.json", doc)]);
    let r = &p.groups[0].inbound;
    assert_eq!(r.len(), 1, "port 0 alone and a permission with no peer are skipped");
    assert_eq!(r[0].ports, Ports::Ranges(vec![PortRange { first: 1, last: 1023 }]));
    assert_eq!(r[0].peers[0].target, PeerTarget::Cidr(net("10.0.0.0/8")));
    let w = result.warnings.join("\n");
    for must in [
        "w.json: SecurityGroups[0].IpPermissions[0]: ports 0-1023 imported as 1-1023",
        "w.json: SecurityGroups[0].IpPermissions[0].IpRanges[0].CidrIp: \"10.0.0.1/8\" has host bits set",
        "w.json: SecurityGroups[0].IpPermissions[1]: port 0 only",
        "w.json: SecurityGroups[0].IpPermissions[2]: allows no source or destination",
    ] {
        assert!(w.contains(must), "missing {must:?} in\n{w}");
    }
}

#[test]
fn a_group_described_by_both_commands_comes_from_describe_security_groups() {
    let sources = [fixture("app-db-security-groups.json"), fixture("database-rules.json")];
    let (p, result) = import_ok(&sources);
    assert_eq!(p.group("database").map(|g| g.inbound.len()), Some(1));
    assert!(p.group("sg-0cccc000000000003").is_none());
    assert!(result.warnings.iter().any(|w| w.starts_with("sg-0cccc000000000003: described by both")));
}

// ---- malformed input ---------------------------------------------------------

#[test]
fn malformed_documents_name_the_json_path() {
    let web = fixture("web-server.json").text;
    let cases: Vec<(String, &str)> = vec![
        (
            web.replacen("\"FromPort\": 22", "\"FromPort\": 22.5", 1),
            "web-server.json: SecurityGroups[0].IpPermissions[1].FromPort: invalid type: floating point `22.5`, expected a whole number",
        ),
        (
            web.replacen("\"FromPort\": 443", "\"FromPort\": \"443\"", 1),
            "web-server.json: SecurityGroups[0].IpPermissions[2].FromPort: invalid type: string \"443\", expected a whole number",
        ),
        (
            web.replacen("203.0.113.10/32", "203.0.113.10/33", 1),
            "web-server.json: SecurityGroups[0].IpPermissions[1].IpRanges[0].CidrIp: invalid CIDR \"203.0.113.10/33\"",
        ),
        (
            web.replacen("\"CidrIpv6\": \"::/0\"", "\"CidrIpv6\": \"0.0.0.0/0\"", 1),
            "web-server.json: SecurityGroups[0].IpPermissions[2].Ipv6Ranges[0].CidrIpv6: \"0.0.0.0/0\" is of the wrong family",
        ),
        (
            web.replacen("\"IpProtocol\": \"tcp\"", "\"IpProtocol\": \"tcpx\"", 1),
            "web-server.json: SecurityGroups[0].IpPermissions[0].IpProtocol: unknown protocol \"tcpx\"",
        ),
        (
            web.replacen("\"ToPort\": 22", "\"ToPort\": 70000", 1),
            "web-server.json: SecurityGroups[0].IpPermissions[1].ToPort: 70000 is not a port",
        ),
        (
            web.replacen("\"FromPort\": 80", "\"FromPort\": 90", 1),
            "web-server.json: SecurityGroups[0].IpPermissions[0]: FromPort 90 is above ToPort 80",
        ),
        (web.replacen("\"GroupId\": \"sg-0a1b2c3d4e5f60001\",", "", 1), "web-server.json: SecurityGroups[0]: missing field `GroupId`"),
        (
            web.replacen("\"GroupId\": \"sg-0a1b2c3d4e5f60001\"", "\"GroupId\": \"web\"", 1),
            "web-server.json: SecurityGroups[0].GroupId: \"web\" is not an AWS id",
        ),
        (web.replacen("\"SecurityGroups\"", "\"Reservations\"", 1), "web-server.json: Reservations: not a key sgctl imports: expected SecurityGroups,"),
        (web.replacen("\"Tags\": [", "\"Tags\": [[", 1), "web-server.json:77:20: expected `,` or `]`"),
        ("{}".to_owned(), "web-server.json: (top level): nothing to import"),
    ];
    for (doc, want) in cases {
        let got = import_err(&[text("web-server.json", &doc)]);
        assert!(got.starts_with(want), "got  {got}\nwant {want}…");
    }
}

#[test]
fn malformed_references_and_prefix_lists() {
    let icmp_code_without_type = r#"{"SecurityGroups": [{"GroupId": "sg-01", "IpPermissionsEgress": [],
        "IpPermissions": [{"IpProtocol": "icmp", "FromPort": -1, "ToPort": 3, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}]}"#;
    assert!(import_err(&[text("i.json", icmp_code_without_type)])
        .starts_with("i.json: SecurityGroups[0].IpPermissions[0].ToPort: an ICMP code needs a type"));
    let by_name = r#"{"SecurityGroups": [{"GroupId": "sg-01", "IpPermissionsEgress": [],
        "IpPermissions": [{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupName": "nosuch"}]}]}]}"#;
    assert!(import_err(&[text("n.json", by_name)])
        .starts_with("n.json: SecurityGroups[0].IpPermissions[0].UserIdGroupPairs[0]: refers to group \"nosuch\""));
    let resolved = by_name.replace("\"IpPermissionsEgress\"", "\"GroupName\": \"nosuch\", \"IpPermissionsEgress\"");
    let (p, _) = import_ok(&[text("n.json", &resolved)]);
    assert_eq!(peers(&p.groups[0].inbound[0]), ["sg:nosuch"]);
    let entries = fixture("prefix-list-entries.json");
    assert!(import_err(std::slice::from_ref(&entries))
        .starts_with("prefix-list-entries.json: Entries: prefix-list entries without"));
    let two_peers = r#"{"SecurityGroupRules": [{"GroupId": "sg-01", "IsEgress": false, "IpProtocol": "-1",
        "CidrIpv4": "10.0.0.0/8", "CidrIpv6": "::/0"}]}"#;
    assert!(import_err(&[text("r.json", two_peers)]).starts_with("r.json: SecurityGroupRules[0]: names several peers"));
    let twice = [fixture("web-server.json"), fixture("web-server.json")];
    assert!(import_err(&twice).contains("sg-0a1b2c3d4e5f60001 is described twice"));
}

#[test]
fn one_document_may_hold_several_commands_outputs() {
    let groups: serde_json::Value = serde_json::from_str(&fixture("app-db-security-groups.json").text).expect("json");
    let enis: serde_json::Value = serde_json::from_str(&fixture("app-db-network-interfaces.json").text).expect("json");
    let entries: serde_json::Value = serde_json::from_str(&fixture("prefix-list-entries.json").text).expect("json");
    let doc = serde_json::json!({
        "SecurityGroups": groups["SecurityGroups"],
        "NetworkInterfaces": enis["NetworkInterfaces"],
        "PrefixListId": "pl-0123",
        "Entries": entries["Entries"],
    });
    let (p, result) = import_ok(&[text("all.json", &doc.to_string())]);
    assert_eq!(p.groups.len(), 3);
    assert_eq!(p.members_of("database").count(), 2);
    assert_eq!(p.prefix_list("pl-0123").map(|l| l.cidrs.len()), Some(2));
    assert!(result.warnings.is_empty(), "{:?}", result.warnings);
}
