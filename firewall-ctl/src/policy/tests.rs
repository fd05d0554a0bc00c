//! Policy parser tests: the accepted forms, and one test per error class
//! with its exact `FILE:LINE:COL: message`.

use ipnet::IpNet;

use super::*;

fn parse(text: &str) -> Result<Policy, PolicyError> {
    let files = [("p.yaml".to_owned(), text.to_owned())];
    crate::testing::fuzzing::record_seed(&files);
    parse_sources(&files)
}

fn ok(text: &str) -> Policy {
    match parse(text) {
        Ok(p) => p,
        Err(e) => panic!("refused: {e}\n{text}"),
    }
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// One inbound rule in group `a` (the rule's `{` is at 4:9).
fn inbound(rule: &str) -> String {
    format!("groups:\n  a:\n    inbound:\n      - {{ {rule} }}\n")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test CIDR")
}

fn rule0(p: &Policy) -> &Rule {
    &p.groups[0].inbound[0]
}

// ---- accepted forms -------------------------------------------------------

#[test]
fn protocols() {
    for (text, want) in [
        ("tcp, ports: 1", Protocol::Tcp),
        ("UDP, ports: 1", Protocol::Udp),
        ("icmp", Protocol::Icmp),
        ("icmpv6", Protocol::Icmpv6),
        ("all", Protocol::All),
        ("-1", Protocol::All),
        ("'-1'", Protocol::All),
        ("6, ports: 1", Protocol::Tcp),
        ("58", Protocol::Icmpv6),
        ("0", Protocol::Other(0)),
        ("47", Protocol::Other(47)),
        ("255", Protocol::Other(255)),
    ] {
        let p = ok(&inbound(&format!("protocol: {text}, source: 10.0.0.0/8")));
        assert_eq!(rule0(&p).protocol, want, "{text}");
    }
}

#[test]
fn ports_forms() {
    let r = |first, last| PortRange { first, last };
    for (text, want) in [
        ("22", Ports::Ranges(vec![r(22, 22)])),
        ("\"8000-8100\"", Ports::Ranges(vec![r(8000, 8100)])),
        ("8000-8100", Ports::Ranges(vec![r(8000, 8100)])),
        ("all", Ports::Any),
        ("[22, 80, all]", Ports::Any),
        ("[https, http, 1-1024]", Ports::Ranges(vec![r(443, 443), r(80, 80), r(1, 1024)])),
        ("65535", Ports::Ranges(vec![r(65535, 65535)])),
    ] {
        let p = ok(&inbound(&format!("protocol: tcp, ports: {text}, source: 10.0.0.0/8")));
        assert_eq!(rule0(&p).ports, want, "{text}");
    }
    let services = [("ssh", 22), ("ftp", 21), ("sftp", 22), ("http", 80), ("https", 443), ("rdp", 3389)];
    for (name, port) in services.into_iter().chain([("dns", 53), ("mysql", 3306), ("postgres", 5432)]) {
        let p = ok(&inbound(&format!("protocol: udp, ports: {name}, source: 10.0.0.0/8")));
        assert_eq!(rule0(&p).ports, Ports::Ranges(vec![r(port, port)]), "{name}");
    }
}

#[test]
fn peers_forms() {
    let text = "groups:
  a:
    inbound:
      - protocol: all
        source: [10.0.0.5, \"fd00::5\", 0.0.0.0/0, \"::/0\", sg:a, pl:office]
prefix_lists:
  office: [192.0.2.0/24, \"2001:db8::/32\", 198.51.100.7]
";
    let p = ok(text);
    let targets: Vec<String> = rule0(&p).peers.iter().map(|p| p.target.to_string()).collect();
    assert_eq!(targets, ["10.0.0.5/32", "fd00::5/128", "0.0.0.0/0", "::/0", "sg:a", "pl:office"]);
    assert_eq!((rule0(&p).peers[1].at.line, rule0(&p).peers[1].at.col), (5, 28));
    let pl = p.prefix_list("office").expect("defined");
    assert_eq!(pl.cidrs, [net("192.0.2.0/24"), net("2001:db8::/32"), net("198.51.100.7/32")]);
}

#[test]
fn icmp_fields() {
    let p = ok(&inbound("protocol: icmp, icmp_type: 8, icmp_code: 0, source: 0.0.0.0/0"));
    assert_eq!((rule0(&p).icmp_type, rule0(&p).icmp_code), (Some(8), Some(0)));
    let p = ok(&inbound("protocol: icmpv6, icmp_type: 128, source: ::/0"));
    assert_eq!((rule0(&p).icmp_type, rule0(&p).icmp_code), (Some(128), None));
}

#[test]
fn default_and_empty_outbound() {
    let p = ok("groups:\n  a: {}\n  b:\n    outbound: []\n  c:\n");
    let a = p.group("a").expect("a");
    assert!(a.inbound.is_empty());
    assert_eq!(a.outbound.len(), 1);
    let d = &a.outbound[0];
    assert!(d.implicit);
    assert_eq!(d.protocol, Protocol::All);
    assert_eq!(d.description.as_deref(), Some("Allow all outbound traffic (default)"));
    let peers: Vec<String> = d.peers.iter().map(|p| p.target.to_string()).collect();
    assert_eq!(peers, ["0.0.0.0/0", "::/0"]);
    assert!(p.group("b").expect("b").outbound.is_empty());
    assert_eq!(p.group("c").expect("c").outbound.len(), 1);
}

#[test]
fn files_merge_in_order_with_cross_references() {
    let p = parse_sources(&[
        ("one.yaml".into(), "groups:\n  z: { inbound: [{protocol: all, source: sg:a}] }\n".into()),
        ("two.yaml".into(), "groups:\n  a: {}\nmembers:\n  z: [10.0.0.1]\ninterfaces:\n  eth0: [a, z]\n".into()),
    ])
    .expect("valid");
    let names: Vec<&str> = p.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["z", "a"]);
    assert_eq!(p.members_of("z").collect::<Vec<_>>(), [net("10.0.0.1/32")]);
    assert_eq!(p.interfaces[0].groups, ["a", "z"]);
    assert_eq!(p.groups[1].at.file_index, 1);
    assert_eq!(p.files, ["one.yaml", "two.yaml"]);
}

#[test]
fn conntrack_section() {
    let p = ok("groups: {}\n");
    assert_eq!(p.conntrack.timeouts(), firewall_common::conntrack::Timeouts::AWS_DEFAULT);
    assert_eq!(p.conntrack.capacity(), firewall_common::conntrack::DEFAULT_CAPACITY);
    let p = ok("conntrack:\n  tcp_established_timeout: 3600\n  udp_stream_timeout: 60\n  udp_timeout: 45\n  max_entries: 1024\n");
    let t = p.conntrack.timeouts();
    assert_eq!(t.tcp_established, 3600 * 1_000_000_000);
    assert_eq!(t.udp_stream, 60 * 1_000_000_000);
    assert_eq!(t.udp_single, 45 * 1_000_000_000);
    assert_eq!(t.icmp, firewall_common::conntrack::Timeouts::AWS_DEFAULT.icmp);
    assert_eq!(p.conntrack.capacity(), 1024);
    assert!(!p.conntrack.accounting, "accounting is opt-in");
    assert!(ok("conntrack:\n  accounting: true\n").conntrack.accounting);
    assert!(!ok("conntrack: { accounting: false }\n").conntrack.accounting);
}

#[test]
fn conntrack_accounting_is_true_or_false() {
    assert_eq!(
        err("conntrack:\n  accounting: yes\n"),
        "p.yaml:2:15: invalid accounting \"yes\": expected true or false"
    );
    // A policy saved before the key existed reads as accounting off.
    let mut json = serde_json::to_value(ok("groups: {}\n")).expect("serialises");
    json["conntrack"].as_object_mut().expect("a map").remove("accounting");
    let back: Policy = serde_json::from_value(json).expect("deserialises");
    assert!(!back.conntrack.accounting);
}

#[test]
fn policy_round_trips_through_json() {
    let p = ok(&inbound("protocol: tcp, ports: [22, 8000-8100], source: [sg:a, 10.0.0.0/8]"));
    let json = serde_json::to_string(&p).expect("serialises");
    let back: Policy = serde_json::from_str(&json).expect("deserialises");
    assert_eq!(serde_json::to_string(&back).expect("serialises"), json);
}

#[test]
fn empty_and_comment_only_files() {
    assert!(ok("").groups.is_empty());
    assert!(ok("# nothing yet\n").groups.is_empty());
}

#[test]
fn interfaces_are_checked_where_named() {
    let p = ok("groups:\n  a: {}\ninterfaces:\n  eth0: [a]\n  veth9: [a]\n");
    assert!(check_interfaces(&p, |_| true).is_ok());
    let e = check_interfaces(&p, |name| name == "eth0").expect_err("veth9 missing");
    assert_eq!(e.to_string(), "p.yaml:5:3: interface \"veth9\" does not exist on this host: check `ip link`");
}

// ---- one test per error class ---------------------------------------------

#[test]
fn error_invalid_cidr_prefix() {
    assert_eq!(
        err(&inbound("protocol: tcp, ports: 80, source: 10.0.1.0/33")),
        "p.yaml:4:45: invalid CIDR \"10.0.1.0/33\": prefix length must be 0-32 for IPv4"
    );
    assert_eq!(
        err(&inbound("protocol: tcp, ports: 80, source: \"fd00::/129\"")),
        "p.yaml:4:45: invalid CIDR \"fd00::/129\": prefix length must be 0-128 for IPv6"
    );
    assert_eq!(
        err(&inbound("protocol: tcp, ports: 80, source: 10.0.300.0/24")),
        "p.yaml:4:45: invalid CIDR \"10.0.300.0/24\": expected an IPv4 or IPv6 address before the '/'"
    );
}

#[test]
fn error_host_bits_set() {
    assert_eq!(
        err(&inbound("protocol: tcp, ports: 80, source: 10.0.0.1/8")),
        "p.yaml:4:45: CIDR \"10.0.0.1/8\" has host bits set: did you mean 10.0.0.0/8?"
    );
}

#[test]
fn error_invalid_peer() {
    assert_eq!(
        err(&inbound("protocol: tcp, ports: 80, source: [10.0.0.0/8, sg-123]")),
        "p.yaml:4:58: invalid source \"sg-123\": expected a CIDR (10.0.0.0/8, ::/0), an address, sg:GROUP or pl:LIST"
    );
}

#[test]
fn group_mode_is_enforce_unless_audit_and_nothing_else() {
    let p = parse_sources(&[("p.yaml".into(), "groups:\n  a:\n    mode: audit\n  b: {}\n".into())]).expect("parses");
    assert_eq!(p.group("a").map(|g| g.mode), Some(GroupMode::Audit));
    assert_eq!(p.group("b").map(|g| g.mode), Some(GroupMode::Enforce));
    assert_eq!(
        err("groups:\n  a:\n    mode: block\n"),
        "p.yaml:3:11: invalid mode \"block\": expected enforce or audit"
    );
}

#[test]
fn error_unknown_key() {
    assert_eq!(
        err("groups:\n  a:\n    inbond: []\n"),
        "p.yaml:3:5: unknown key \"inbond\" in group \"a\": expected one of description, mode, inbound, outbound"
    );
    assert_eq!(
        err(&inbound("protocol: tcp, port: 80, source: 10.0.0.0/8")),
        "p.yaml:4:26: unknown key \"port\" in an inbound rule: expected one of protocol, ports, icmp_type, icmp_code, source, destination, description"
    );
    assert_eq!(
        err("group:\n  a: {}\n"),
        "p.yaml:1:1: unknown key \"group\" at the top level: expected one of groups, members, prefix_lists, interfaces, conntrack"
    );
    assert_eq!(
        err("conntrack:\n  tcp_timeout: 60\n"),
        "p.yaml:2:3: unknown key \"tcp_timeout\" in conntrack: expected one of tcp_established_timeout, udp_stream_timeout, udp_timeout, max_entries, accounting"
    );
}

#[test]
fn error_unknown_group_in_sg() {
    assert_eq!(
        err(&inbound("protocol: tcp, ports: 80, source: sg:nope")),
        "p.yaml:4:45: unknown group \"nope\" in sg:: define it under groups:"
    );
}

#[test]
fn error_unknown_group_in_members() {
    assert_eq!(
        err("groups:\n  a: {}\nmembers:\n  b: [10.0.0.1]\n"),
        "p.yaml:4:3: unknown group \"b\" in members: define it under groups:"
    );
}

#[test]
fn error_unknown_group_in_interfaces() {
    assert_eq!(
        err("groups:\n  a: {}\ninterfaces:\n  eth0: [a, b]\n"),
        "p.yaml:4:13: unknown group \"b\" in interfaces: define it under groups:"
    );
}

#[test]
fn error_group_attached_twice() {
    assert_eq!(
        err("groups:\n  a: {}\ninterfaces:\n  eth0: [a, a]\n"),
        "p.yaml:4:13: group \"a\" is listed twice for interface \"eth0\": list each group once"
    );
}

#[test]
fn error_unknown_prefix_list() {
    assert_eq!(
        err(&inbound("protocol: tcp, ports: 80, source: pl:office")),
        "p.yaml:4:45: unknown prefix list \"pl:office\": define it under prefix_lists:"
    );
}

#[test]
fn error_port_out_of_range() {
    assert_eq!(
        err(&inbound("protocol: tcp, ports: 65536, source: 10.0.0.0/8")),
        "p.yaml:4:33: port \"65536\" is out of range: ports are 1-65535"
    );
    assert_eq!(
        err(&inbound("protocol: tcp, ports: 0, source: 10.0.0.0/8")),
        "p.yaml:4:33: port \"0\" is out of range: ports are 1-65535"
    );
    assert_eq!(
        err(&inbound("protocol: udp, ports: [53, \"0-100\"], source: 10.0.0.0/8")),
        "p.yaml:4:38: port \"0-100\" is out of range: ports are 1-65535"
    );
}

#[test]
fn error_invalid_port() {
    assert_eq!(
        err(&inbound("protocol: tcp, ports: smtp, source: 10.0.0.0/8")),
        "p.yaml:4:33: invalid port \"smtp\": expected a number 1-65535, \"FROM-TO\", all, or one of ssh ftp sftp http https rdp dns mysql postgres"
    );
}

#[test]
fn error_reversed_range() {
    assert_eq!(
        err(&inbound("protocol: tcp, ports: 8100-8000, source: 10.0.0.0/8")),
        "p.yaml:4:33: port range \"8100-8000\" is reversed: write it low-high"
    );
}

#[test]
fn error_ports_on_non_port_protocols() {
    for proto in ["icmp", "all", "47"] {
        assert_eq!(
            err(&inbound(&format!("protocol: {proto}, ports: 80, source: 10.0.0.0/8"))),
            format!("p.yaml:4:{}: ports are not allowed with protocol \"{proto}\": ports apply to tcp and udp only (use icmp_type/icmp_code for ICMP)", 23 + proto.len())
        );
    }
}

#[test]
fn error_missing_ports() {
    assert_eq!(
        err(&inbound("protocol: udp, source: 10.0.0.0/8")),
        "p.yaml:4:9: protocol \"udp\" needs ports: add ports: a number, \"FROM-TO\", a service name or all"
    );
}

#[test]
fn error_icmp_fields_on_other_protocols() {
    assert_eq!(
        err(&inbound("protocol: tcp, ports: 1, icmp_type: 8, source: 10.0.0.0/8")),
        "p.yaml:4:36: icmp_type is not allowed with protocol \"tcp\": it applies to icmp and icmpv6 only"
    );
    assert_eq!(
        err(&inbound("protocol: all, icmp_code: 0, source: 10.0.0.0/8")),
        "p.yaml:4:26: icmp_code is not allowed with protocol \"all\": it applies to icmp and icmpv6 only"
    );
}

#[test]
fn error_icmp_code_without_type() {
    assert_eq!(
        err(&inbound("protocol: icmp, icmp_code: 4, source: 10.0.0.0/8")),
        "p.yaml:4:38: icmp_code \"4\" without icmp_type: give icmp_type too, or neither to match any ICMP message"
    );
}

#[test]
fn error_icmp_value() {
    assert_eq!(
        err(&inbound("protocol: icmp, icmp_type: 256, source: 10.0.0.0/8")),
        "p.yaml:4:38: invalid icmp_type \"256\": expected a number 0-255"
    );
}

#[test]
fn error_invalid_protocol() {
    assert_eq!(
        err(&inbound("protocol: sctp, source: 10.0.0.0/8")),
        "p.yaml:4:21: invalid protocol \"sctp\": expected tcp, udp, icmp, icmpv6, all, -1 or a protocol number 0-255"
    );
    assert_eq!(
        err(&inbound("protocol: 256, source: 10.0.0.0/8")),
        "p.yaml:4:21: invalid protocol \"256\": expected tcp, udp, icmp, icmpv6, all, -1 or a protocol number 0-255"
    );
}

#[test]
fn error_missing_protocol() {
    assert_eq!(
        err(&inbound("ports: 80, source: 10.0.0.0/8")),
        "p.yaml:4:9: missing key \"protocol\" in an inbound rule: tcp, udp, icmp, icmpv6, all or a protocol number"
    );
}

#[test]
fn error_missing_peer() {
    assert_eq!(
        err(&inbound("protocol: tcp, ports: 80")),
        "p.yaml:4:9: missing key \"source\" in an inbound rule: a CIDR, an address, sg:GROUP, pl:LIST or a list of these"
    );
}

#[test]
fn error_source_on_outbound_and_destination_on_inbound() {
    assert_eq!(
        err("groups:\n  a:\n    outbound:\n      - { protocol: all, source: 0.0.0.0/0 }\n"),
        "p.yaml:4:26: \"source\" is not allowed in an outbound rule: outbound rules match the destination"
    );
    assert_eq!(
        err(&inbound("protocol: all, destination: 0.0.0.0/0")),
        "p.yaml:4:26: \"destination\" is not allowed in an inbound rule: inbound rules match the source"
    );
}

#[test]
fn error_empty_lists() {
    assert_eq!(
        err(&inbound("protocol: tcp, ports: [], source: 10.0.0.0/8")),
        "p.yaml:4:33: empty list for \"ports\": a rule needs at least one value here"
    );
    assert_eq!(
        err(&inbound("protocol: all, source: []")),
        "p.yaml:4:34: empty list for \"source\": a rule needs at least one value here"
    );
}

#[test]
fn error_description_too_long() {
    let long = "x".repeat(256);
    assert_eq!(
        err(&inbound(&format!("protocol: all, source: 10.0.0.0/8, description: {long}"))),
        "p.yaml:4:59: description \"xxxxxxxxxxxxxxxxxxxx...\" is 256 characters long: at most 255 are allowed"
    );
    let max = "y".repeat(255);
    ok(&inbound(&format!("protocol: all, source: 10.0.0.0/8, description: {max}")));
}

#[test]
fn error_invalid_group_name() {
    assert_eq!(
        err("groups:\n  Web: {}\n"),
        "p.yaml:2:3: invalid group name \"Web\": names are 1-63 characters of a-z 0-9 . _ -, starting with a letter or digit"
    );
    assert_eq!(
        err(&inbound("protocol: all, source: sg:_x")),
        "p.yaml:4:34: invalid group name \"_x\": names are 1-63 characters of a-z 0-9 . _ -, starting with a letter or digit"
    );
}

#[test]
fn error_invalid_interface_name() {
    assert_eq!(
        err("groups:\n  a: {}\ninterfaces:\n  averyveryverylongname: [a]\n"),
        "p.yaml:4:3: invalid interface name \"averyveryverylongname\": 1-15 characters, no '/', ':' or whitespace"
    );
}

#[test]
fn error_invalid_member() {
    assert_eq!(
        err("groups:\n  a: {}\nmembers:\n  a: [10.0.0.1, sg:a]\n"),
        "p.yaml:4:17: invalid member \"sg:a\": expected an address or CIDR (sg: and pl: are not allowed here)"
    );
    assert_eq!(
        err("groups:\n  a: {}\nmembers:\n  a: [10.0.1.1/24]\n"),
        "p.yaml:4:7: CIDR \"10.0.1.1/24\" has host bits set: did you mean 10.0.1.0/24?"
    );
}

#[test]
fn error_invalid_prefix_list_entry() {
    assert_eq!(
        err("prefix_lists:\n  office: [192.0.2.0/24, office-net]\n"),
        "p.yaml:2:26: invalid prefix list entry \"office-net\": expected an address or CIDR"
    );
}

#[test]
fn error_duplicate_key_in_one_file() {
    assert_eq!(
        err("groups:\n  a: {}\n  a: {}\n"),
        "p.yaml:3:3: key \"a\" appears twice in the same map (first at p.yaml:2:3): keep one"
    );
}

#[test]
fn error_duplicate_definitions_across_files() {
    let two = |a: &str, b: &str| {
        let files = [("one.yaml".into(), a.into()), ("two.yaml".into(), b.into())];
        crate::testing::fuzzing::record_seed(&files);
        parse_sources(&files).expect_err("duplicate").to_string()
    };
    assert_eq!(
        two("groups:\n  web: {}\n", "groups:\n  db: {}\n  web: {}\n"),
        "two.yaml:3:3: group \"web\" is defined twice (first at one.yaml:2:3): each name may be defined once across all files"
    );
    assert_eq!(
        two("groups:\n  a: {}\nmembers:\n  a: [10.0.0.1]\n", "members:\n  a: [10.0.0.2]\n"),
        "two.yaml:2:3: members of group \"a\" is defined twice (first at one.yaml:4:3): each name may be defined once across all files"
    );
    assert_eq!(
        two("prefix_lists:\n  x: []\n", "prefix_lists:\n  x: []\n"),
        "two.yaml:2:3: prefix list \"x\" is defined twice (first at one.yaml:2:3): each name may be defined once across all files"
    );
    assert_eq!(
        two("groups:\n  a: {}\ninterfaces:\n  eth0: [a]\n", "interfaces:\n  eth0: [a]\n"),
        "two.yaml:2:3: interface \"eth0\" is defined twice (first at one.yaml:4:3): each name may be defined once across all files"
    );
    assert_eq!(
        two("conntrack:\n  udp_timeout: 40\n", "conntrack:\n  udp_timeout: 50\n"),
        "two.yaml:2:3: conntrack setting \"udp_timeout\" is defined twice (first at one.yaml:2:3): each name may be defined once across all files"
    );
}

#[test]
fn error_conntrack_out_of_range() {
    for (key, bad, min, max) in [
        ("tcp_established_timeout", "59", 60, 432_000),
        ("tcp_established_timeout", "432001", 60, 432_000),
        ("udp_stream_timeout", "181", 60, 180),
        ("udp_timeout", "29", 30, 60),
        ("max_entries", "1023", 1024, 4_194_304),
        ("max_entries", "lots", 1024, 4_194_304),
    ] {
        assert_eq!(
            err(&format!("conntrack:\n  {key}: {bad}\n")),
            format!("p.yaml:2:{}: invalid {key} \"{bad}\": expected a whole number {min}-{max}", key.len() + 5)
        );
    }
}

#[test]
fn error_wrong_types() {
    assert_eq!(
        err("groups:\n  a:\n    inbound: {protocol: all}\n"),
        "p.yaml:3:14: a map where a list of rules was expected: a list of rules; write [] for none"
    );
    assert_eq!(
        err("groups:\n  a:\n    outbound:\n"),
        "p.yaml:3:13: an empty value where a list of rules was expected: a list of rules; write [] for none"
    );
    assert_eq!(err("groups: [a, b]\n"), "p.yaml:1:9: a list where a map was expected: a map of group names to groups");
    assert_eq!(
        err(&inbound("protocol: [tcp], source: 10.0.0.0/8")),
        "p.yaml:4:21: a list where a protocol was expected: tcp, udp, icmp, icmpv6, all or a number 0-255"
    );
}

#[test]
fn error_yaml_syntax_and_unsupported() {
    assert_eq!(
        err("groups:\n  a: {inbound: [}\n"),
        "p.yaml:2:17: invalid YAML: while parsing a node, did not find expected node content"
    );
    assert_eq!(err("groups: !!map {}\n"), "p.yaml:1:9: YAML tags are not supported: write the value out in plain YAML");
    assert_eq!(
        err("groups: {}\n---\ngroups: {}\n"),
        "p.yaml:2:1: more than one YAML document in a file: put each policy in its own file"
    );
}

#[test]
fn error_unreadable_file() {
    let e = load_files(&["/nonexistent/sgctl-policy.yaml"]).expect_err("missing file");
    assert!(e.to_string().starts_with("/nonexistent/sgctl-policy.yaml:1:1: cannot read file: "), "{e}");
}

/// Every ```yaml block of the user documentation and the README parses as
/// a policy, as written there (examples of errors use plain ``` blocks).
#[test]
fn every_yaml_example_in_the_docs_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut examples = 0;
    for doc in ["docs/policy-format.md", "docs/semantics.md", "docs/cli.md", "README.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap_or_else(|e| panic!("{doc}: {e}"));
        for (i, block) in text.split("```yaml\n").skip(1).enumerate() {
            let yaml = block.split("```").next().unwrap_or_default();
            let name = format!("{doc}#{}", i + 1);
            if let Err(e) = parse_sources(&[(name.clone(), yaml.to_owned())]) {
                panic!("the example {name} does not parse: {e}\n{yaml}");
            }
            examples += 1;
        }
    }
    assert!(examples >= 3, "only {examples} YAML examples found");
}

#[test]
fn spec_examples_parse_verbatim() {
    // The two YAML blocks of docs/policy-format.md, as written there.
    let web = ok("groups:
  web-server:
    description: Basic web server
    inbound:
      - { protocol: tcp, ports: 22,  source: 203.0.113.10/32, description: SSH access }
      - { protocol: tcp, ports: 80,  source: 0.0.0.0/0,       description: Allow HTTP (web traffic) }
      - { protocol: tcp, ports: 443, source: [0.0.0.0/0, \"::/0\"], description: Allow HTTPS }
    outbound:
      - { protocol: all, destination: 0.0.0.0/0, description: Allow all outbound traffic }

interfaces:
  eth0: [web-server]
");
    assert_eq!(web.groups[0].inbound.len(), 3);
    let refs = ok("groups:
  load-balancer:
    inbound:
      - { protocol: tcp, ports: https, source: 0.0.0.0/0 }
  app-server:
    inbound:
      - { protocol: tcp, ports: 8080, source: sg:load-balancer, description: Allow only traffic from ALB }
    outbound:
      - { protocol: tcp, ports: 3306, destination: sg:database, description: Allow DB access }
      - { protocol: all, destination: 0.0.0.0/0, description: Allow other outbound (optional) }
  database:
    inbound:
      - { protocol: tcp, ports: 3306, source: sg:app-server, description: Allow DB access from app servers }
    outbound: []          # explicitly none: databases rarely initiate traffic

members:                  # who carries each group, to resolve sg: references
  load-balancer: [10.0.0.10]
  app-server:    [10.0.1.0/24]
  database:      [10.0.2.5, \"fd00:2::5\"]
");
    assert_eq!(refs.groups.len(), 3);
    assert_eq!(refs.group("load-balancer").expect("lb").outbound.len(), 1);
}

#[test]
fn unquoted_ipv6_peers() {
    let p = ok("groups:\n  a:\n    inbound:\n      - protocol: all\n        source: ::/0\n      - { protocol: all, source: [fd00::1, ::/0] }\n");
    assert_eq!(p.groups[0].inbound[1].peers.len(), 2);
}
