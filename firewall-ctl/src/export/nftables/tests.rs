//! The exported text, line by line. That `nft -f` loads it and enforces the
//! same verdicts is `tests/e2e/nft_export.rs`.
use std::collections::BTreeMap;

use ipnet::IpNet;

use super::{ruleset, Options};
use crate::{
    export::{interfaces, local_members, ExportError, Interface},
    policy::{parse_sources, Policy},
};

const WEB: &str = include_str!("../../../../policies/web-server.yaml");
const APP: &str = include_str!("../../../../policies/app-server.yaml");
const DB: &str = include_str!("../../../../policies/database.yaml");

fn parse(files: &[(&str, &str)]) -> Policy {
    let sources: Vec<(String, String)> = files.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())).collect();
    parse_sources(&sources).unwrap_or_else(|e| panic!("{e}"))
}

fn iface(name: &str, groups: &[&str]) -> Interface {
    Interface { name: name.to_owned(), groups: groups.iter().map(|g| (*g).to_owned()).collect() }
}

fn export(policy: &Policy, extra: &[Interface], options: Options) -> String {
    ruleset(policy, &interfaces(policy, extra), &BTreeMap::new(), options).unwrap_or_else(|e| panic!("{e}"))
}

/// The lines of the chain `name`, trimmed, without its braces.
fn chain<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let start = format!("chain {name} {{");
    let mut lines = text.lines().map(str::trim).skip_while(|l| *l != start);
    assert!(lines.next().is_some(), "no chain {name} in:\n{text}");
    lines.take_while(|l| *l != "}").collect()
}

#[track_caller]
fn assert_has(text: &str, line: &str) {
    assert!(text.lines().any(|l| l.trim() == line), "no line {line:?} in:\n{text}");
}

#[test]
fn linear_web_server_rules_in_order_with_named_counters() {
    let text = export(&parse(&[("web-server.yaml", WEB)]), &[], Options { linear: true });
    let inbound = chain(&text, "eth0/inbound");
    assert_eq!(
        inbound,
        [
            "ip saddr 203.0.113.10/32 tcp dport 22 counter name eth0/web-server/inbound/0 return comment \
             \"web-server/inbound/0\"",
            "ip saddr 0.0.0.0/0 tcp dport 80 counter name eth0/web-server/inbound/1 return comment \
             \"web-server/inbound/1\"",
            "ip saddr 0.0.0.0/0 tcp dport 443 counter name eth0/web-server/inbound/2 return comment \
             \"web-server/inbound/2\"",
            "ip6 saddr ::/0 tcp dport 443 counter name eth0/web-server/inbound/2 return comment \
             \"web-server/inbound/2\"",
            "counter name eth0/inbound/dropped_no_rule drop",
        ]
    );
    assert_eq!(
        chain(&text, "eth0/outbound"),
        [
            "ip daddr 0.0.0.0/0 counter name eth0/web-server/outbound/0 return comment \"web-server/outbound/0\"",
            "counter name eth0/outbound/dropped_no_rule drop",
        ]
    );
    // Every rule has its counter, described as in the file.
    assert_has(&text, "counter eth0/web-server/inbound/0 {");
    assert_has(&text, "comment \"SSH access\"");
    assert_has(&text, "counter eth0/web-server/outbound/0 {");
    // Replaces only its own table.
    assert!(text.contains("table inet sgctl\ndelete table inet sgctl\ntable inet sgctl {\n"), "{text}");
    assert!(!text.contains("flush ruleset"), "{text}");
}

#[test]
fn base_chains_pass_established_and_link_control_then_jump_by_interface() {
    let text = export(&parse(&[("web-server.yaml", WEB)]), &[], Options::default());
    let input = chain(&text, "input");
    assert_eq!(input[0], "type filter hook input priority filter; policy accept;");
    assert_eq!(input[1], "ct state established,related accept");
    for t in ["mld-listener-query", "nd-neighbor-solicit", "nd-redirect", "mld2-listener-report"] {
        assert!(input[2].starts_with("icmpv6 type {") && input[2].contains(t), "{}", input[2]);
    }
    assert_eq!(input[3], "iifname vmap { \"eth0\" : jump eth0/inbound }");
    assert_eq!(input.len(), 4);
    let forward = chain(&text, "forward");
    assert_eq!(
        forward[3..],
        ["iifname vmap { \"eth0\" : jump eth0/inbound }", "oifname vmap { \"eth0\" : jump eth0/outbound }"]
    );
    let output = chain(&text, "output");
    assert_eq!(output[3..], ["oifname vmap { \"eth0\" : jump eth0/outbound }"]);
}

#[test]
fn group_references_fold_their_members_with_local_addresses_into_the_map() {
    let policy = parse(&[("app-server.yaml", APP), ("database.yaml", DB)]);
    let ifaces = interfaces(&policy, &[iface("eth0", &["database"])]);
    let addrs: BTreeMap<String, Vec<IpNet>> =
        [("eth0".to_owned(), vec!["10.0.2.6/32".parse().expect("net")])].into_iter().collect();
    let local = local_members(&ifaces, &addrs);
    let text = ruleset(&policy, &ifaces, &local, Options::default()).expect("exports");
    assert_eq!(
        chain(&text, "eth0/inbound"),
        [
            "ip saddr . meta l4proto . th dport . th sport vmap @eth0/inbound/v4",
            "ip6 saddr . meta l4proto . th dport . th sport vmap @eth0/inbound/v6",
            "counter name eth0/inbound/dropped_no_rule drop",
        ]
    );
    assert_has(&text, "elements = { 10.0.1.0/24 . 6 . 3306 . 0-65535 : goto eth0/database/inbound/0 }");
    assert_has(&text, "elements = { fd00:1::/64 . 6 . 3306 . 0-65535 : goto eth0/database/inbound/0 }");
    assert_eq!(
        chain(&text, "eth0/database/inbound/0"),
        ["counter name eth0/database/inbound/0 comment \"database/inbound/0\""]
    );
    // `outbound: []`: nothing but the default deny.
    assert_eq!(chain(&text, "eth0/outbound"), ["counter name eth0/outbound/dropped_no_rule drop"]);
    assert!(!text.contains("\tset "), "small groups need no set of their own:\n{text}");

    // app-server references database, whose members gain eth1's address.
    let ifaces = interfaces(&policy, &[iface("eth0", &["app-server"]), iface("eth1", &["database"])]);
    let addrs: BTreeMap<String, Vec<IpNet>> =
        [("eth1".to_owned(), vec!["10.0.2.6/32".parse().expect("net")])].into_iter().collect();
    let text = ruleset(&policy, &ifaces, &local_members(&ifaces, &addrs), Options::default()).expect("exports");
    // Both members, contiguous, in one element; the most specific rule (the
    // group reference, /32s) gets the credit over `all` to 0.0.0.0/0.
    assert!(text.contains("10.0.2.5-10.0.2.6 . 6 . 3306 . 0-65535 : goto eth0/app-server/outbound/0"), "{text}");
    assert!(text.contains("10.0.2.5-10.0.2.6 . 6 . 0-3305 . 0-65535 : goto eth0/app-server/outbound/1"), "{text}");
}

const LISTS: &str = r#"
groups:
  g:
    inbound:
      - { protocol: tcp, ports: [22, "8000-8100"], source: [10.0.0.0/8, 192.0.2.0/24, "2001:db8::/32"], description: "two \"quoted\" ports" }
      - { protocol: udp, ports: all, source: pl:nets }
      - { protocol: icmp, icmp_type: 8, source: [0.0.0.0/0, "::/0"] }
      - { protocol: icmpv6, icmp_type: 128, icmp_code: 0, source: [0.0.0.0/0, "::/0"] }
      - { protocol: 47, source: 198.51.100.0/24 }
    outbound: []
prefix_lists:
  nets: [10.1.0.0/16, 10.1.2.0/24, "2001:db8:1::/48"]
interfaces:
  eth0: [g]
"#;

#[test]
fn lists_ports_icmp_and_protocols_are_map_elements() {
    let text = export(&parse(&[("lists.yaml", LISTS)]), &[], Options::default());
    assert_eq!(
        chain(&text, "eth0/inbound"),
        [
            "ip saddr . meta l4proto . th dport . th sport vmap @eth0/inbound/v4",
            "ip saddr . meta l4proto vmap @eth0/inbound/v4/proto",
            "ip6 saddr . meta l4proto . th dport . th sport vmap @eth0/inbound/v6",
            "counter name eth0/inbound/dropped_no_rule drop",
        ]
    );
    for element in [
        // Port lists and overlapping CIDRs: one element per (address range, port range).
        "10.0.0.0/16 . 6 . 22 . 0-65535 : goto eth0/g/inbound/0",
        "10.2.0.0-10.255.255.255 . 6 . 8000-8100 . 0-65535 : goto eth0/g/inbound/0",
        // The prefix list's /16 (its /24 inside folds into it) inside the rule's /8.
        "10.1.0.0/16 . 17 . 0-65535 . 0-65535 : goto eth0/g/inbound/1",
        "10.1.0.0/16 . 6 . 22 . 0-65535 : goto eth0/g/inbound/0",
        "2001:db8::/48 . 6 . 22 . 0-65535 : goto eth0/g/inbound/0",
        "2001:db8:1::/48 . 17 . 0-65535 . 0-65535 : goto eth0/g/inbound/1",
        // ICMP type 8 (any code) in th sport; ICMPv6 128 code 0, for both families' peers.
        "0.0.0.0-9.255.255.255 . 1 . 0-65535 . 2048-2303 : goto eth0/g/inbound/2",
        "2001:db9::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff . 1 . 0-65535 . 2048-2303 : goto eth0/g/inbound/2",
        "0.0.0.0-9.255.255.255 . 58 . 0-65535 . 32768 : goto eth0/g/inbound/3",
        // A bare protocol number: the (address, protocol) map.
        "198.51.100.0/24 . 47 : goto eth0/g/inbound/4",
    ] {
        assert!(text.contains(element), "no element {element:?} in:\n{text}");
    }
    // Descriptions are the counters' comments; quotes cannot end them early.
    assert_has(&text, "comment \"two 'quoted' ports\"");
}

#[test]
fn large_named_peers_keep_their_own_set_and_rule() {
    let mut yaml = String::from(
        "groups:\n  g:\n    inbound:\n      - { protocol: tcp, ports: 80, source: pl:big }\n      \
         - { protocol: udp, ports: 53, source: 10.0.0.0/8 }\nprefix_lists:\n  big:\n",
    );
    for i in 0..=super::LARGE_NAMED_PEER {
        yaml.push_str(&format!("    - 172.{}.{}.0/24\n", 16 + i / 256, i % 256));
    }
    yaml.push_str("interfaces:\n  eth0: [g]\n");
    let text = export(&parse(&[("big.yaml", &yaml)]), &[], Options::default());
    assert_eq!(
        chain(&text, "eth0/inbound"),
        [
            "ip saddr . meta l4proto . th dport . th sport vmap @eth0/inbound/v4",
            "ip saddr @pl/big/v4 tcp dport 80 goto eth0/g/inbound/0 comment \"g/inbound/0\"",
            "counter name eth0/inbound/dropped_no_rule drop",
        ]
    );
    assert_has(&text, "elements = { 10.0.0.0/8 . 17 . 53 . 0-65535 : goto eth0/g/inbound/1 }");
    assert_has(&text, "set pl/big/v4 {");
}

#[test]
fn linear_writes_one_rule_per_cidr_and_port_range_without_sets() {
    let text = export(&parse(&[("lists.yaml", LISTS)]), &[], Options { linear: true });
    assert!(!text.contains("\tset "), "no sets with --linear:\n{text}");
    let inbound = chain(&text, "eth0/inbound");
    let rule0: Vec<&str> = inbound
        .iter()
        .filter(|l| l.contains("name eth0/g/inbound/0 "))
        .map(|l| l.split(" counter name").next().unwrap_or_default())
        .collect();
    assert_eq!(
        rule0,
        [
            "ip saddr 10.0.0.0/8 tcp dport 22",
            "ip saddr 10.0.0.0/8 tcp dport 8000-8100",
            "ip saddr 192.0.2.0/24 tcp dport 22",
            "ip saddr 192.0.2.0/24 tcp dport 8000-8100",
            "ip6 saddr 2001:db8::/32 tcp dport 22",
            "ip6 saddr 2001:db8::/32 tcp dport 8000-8100",
        ]
    );
    assert!(inbound.iter().any(|l| l.starts_with("ip saddr 10.1.2.0/24 meta l4proto udp counter")), "{text}");
}

#[test]
fn a_group_without_outbound_allows_all_outbound() {
    let policy = parse(&[("p.yaml", "groups:\n  g:\n    inbound: []\ninterfaces:\n  eth1: [g]\n")]);
    let text = export(&policy, &[], Options { linear: true });
    let out = chain(&text, "eth1/outbound");
    assert!(out[0].starts_with("ip daddr 0.0.0.0/0 counter name eth1/g/outbound/0 return"), "{text}");
    assert!(out[1].starts_with("ip6 daddr ::/0 counter name eth1/g/outbound/0 return"), "{text}");
}

#[test]
fn command_line_attachments_add_to_and_override_the_file() {
    let policy = parse(&[("app-server.yaml", APP), ("database.yaml", DB), ("web.yaml", WEB)]);
    let got = interfaces(&policy, &[iface("eth0", &["database"]), iface("eth9", &["app-server", "database"])]);
    assert_eq!(got, [iface("eth0", &["database"]), iface("eth9", &["app-server", "database"])]);
    // Named twice on the command line: the last one counts, once.
    let got = interfaces(&policy, &[iface("eth9", &["database"]), iface("eth9", &["app-server"])]);
    assert_eq!(got, [iface("eth0", &["web-server"]), iface("eth9", &["app-server"])]);
    let text = export(&policy, &[iface("eth9", &["app-server", "database", "app-server"])], Options { linear: true });
    // Two groups on one interface: both groups' rules, each once, in order.
    let inbound = chain(&text, "eth9/inbound");
    assert!(inbound[0].contains("eth9/app-server/inbound/0"), "{inbound:?}");
    assert!(inbound.iter().filter(|l| l.contains("eth9/database/inbound/0")).count() == 2, "{inbound:?}");
    assert_eq!(inbound.iter().filter(|l| l.contains("eth9/app-server/inbound/0")).count(), 2, "{inbound:?}");
    assert_has(&text, "iifname vmap { \"eth0\" : jump eth0/inbound, \"eth9\" : jump eth9/inbound }");
}

#[test]
fn no_interface_filters_nothing() {
    let policy = parse(&[("app-server.yaml", APP), ("database.yaml", DB)]);
    let text = export(&policy, &[], Options::default());
    assert!(text.contains("filters nothing"), "{text}");
    assert_eq!(chain(&text, "input").len(), 3, "{text}");
    assert!(!text.contains("vmap"), "{text}");
}

#[test]
fn bad_input_is_refused() {
    let policy = parse(&[("web.yaml", WEB)]);
    let err =
        ruleset(&policy, &[iface("eth0", &["nope"])], &BTreeMap::new(), Options::default()).expect_err("unknown group");
    assert!(matches!(err, ExportError::UnknownGroup { .. }), "{err}");
    assert_eq!(err.to_string(), "interface eth0: unknown group \"nope\": it is not defined in the policy");
    let err = ruleset(&policy, &[iface("a\"b", &["web-server"])], &BTreeMap::new(), Options::default())
        .expect_err("quote in name");
    assert!(matches!(err, ExportError::InterfaceName(_)), "{err}");
}

#[test]
fn odd_interface_names_get_safe_identifiers() {
    let policy = parse(&[("web.yaml", WEB)]);
    let text =
        ruleset(&policy, &[iface("0weird@x", &["web-server"])], &BTreeMap::new(), Options::default()).expect("exports");
    assert_has(&text, "iifname vmap { \"0weird@x\" : jump _if0/inbound }");
    assert_has(&text, "counter _if0/web-server/inbound/0 {");
}
