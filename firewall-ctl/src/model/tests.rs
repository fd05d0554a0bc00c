//! The model on hand-written cases: the seed example, crediting (file
//! order across files, the depth of the kernel's walk), what rules see of a
//! packet, and what passes unjudged.

use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr};

use ipnet::IpNet;
use RuleDirection::{Inbound as In, Outbound as Out};

use super::*;
use crate::{
    compile::{compile_interface, lookup},
    policy::parse_sources,
};

fn policy(files: &[&str]) -> Policy {
    let sources: Vec<(String, String)> =
        files.iter().enumerate().map(|(i, text)| (format!("f{i}.yaml"), (*text).to_owned())).collect();
    parse_sources(&sources).expect("test policy parses")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn packet(src: &str, dst: &str, transport: Transport) -> IpPacket {
    IpPacket::new(ip(src), ip(dst), transport).expect("valid packet")
}

fn tcp(dport: u16) -> Transport {
    Transport::Tcp { dport }
}

/// The verdict as `explain` words it: a rule name, "drop" or "unfiltered".
fn verdict(p: &Policy, groups: &[&str], direction: RuleDirection, packet: &IpPacket) -> String {
    let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    let local = BTreeMap::new();
    let model = Model::new(p, &groups, &local).expect("known groups");
    let verdict = model.judge(direction, packet);
    // `simulate` over the compiled maps must say the same.
    let compiled = compile_interface(p, &groups, &local).expect("compiles");
    let (protocol, key) = packet.rule_key();
    let simulated = lookup(&compiled, direction, protocol, key, packet.peer(direction)).map(|id| {
        let r = &compiled.rules[id as usize];
        RuleRef { group: r.group.clone(), direction: r.direction, index: r.index }
    });
    match verdict {
        Verdict::Allowed(rule) => {
            assert_eq!(simulated.as_ref(), Some(&rule), "simulate disagrees");
            rule.to_string()
        }
        Verdict::Denied => {
            assert_eq!(simulated, None, "simulate disagrees");
            "drop".to_owned()
        }
        Verdict::Unfiltered(_) => "unfiltered".to_owned(),
    }
}

const WEB: &str = include_str!("../../../policies/web-server.yaml");

#[test]
fn web_server_example() {
    let p = policy(&[WEB]);
    let web = |src, dst, transport| verdict(&p, &["web-server"], In, &packet(src, dst, transport));
    assert_eq!(web("203.0.113.10", "10.0.0.1", tcp(22)), "web-server/inbound/0");
    assert_eq!(web("203.0.113.11", "10.0.0.1", tcp(22)), "drop");
    assert_eq!(web("198.51.100.7", "10.0.0.1", tcp(80)), "web-server/inbound/1");
    assert_eq!(web("2001:db8::7", "2001:db8::1", tcp(80)), "drop", "an IPv4 CIDR never matches IPv6");
    assert_eq!(web("2001:db8::7", "2001:db8::1", tcp(443)), "web-server/inbound/2");
    assert_eq!(web("198.51.100.7", "10.0.0.1", Transport::Udp { dport: 80 }), "drop");
    let out = |transport| verdict(&p, &["web-server"], Out, &packet("10.0.0.1", "192.0.2.1", transport));
    assert_eq!(out(Transport::Other(47)), "web-server/outbound/0", "`all` matches any protocol");
    assert_eq!(out(Transport::Icmp { icmp_type: 13, code: 0 }), "web-server/outbound/0");
    assert_eq!(verdict(&p, &["web-server"], Out, &packet("2001:db8::1", "2001:db8::2", tcp(1))), "drop");
}

#[test]
fn equal_specificity_goes_to_the_first_rule_in_file_order_across_files() {
    // Group b's file comes first on the command line, so its rule is first
    // in file order although group a is attached first.
    let b = "groups:\n  b:\n    inbound:\n      - { protocol: tcp, ports: 22, source: 10.0.0.0/8 }\n";
    let a = "groups:\n  a:\n    inbound:\n      - { protocol: all, source: 10.0.0.0/8 }\n      - { protocol: tcp, ports: 22, source: 10.1.0.0/16 }\n";
    let p = policy(&[b, a]);
    let v = |src| verdict(&p, &["a", "b"], In, &packet(src, "192.0.2.1", tcp(22)));
    assert_eq!(v("10.2.0.1"), "b/inbound/0");
    assert_eq!(v("10.1.0.1"), "a/inbound/1", "the /16 is more specific");
}

/// A group whose tcp/22 rules sit at /0 and /8 under `udp_tiers` nested
/// udp-only prefixes of 10.1.1.0, /16 down to /32.
fn deep_policy(udp_tiers: usize) -> Policy {
    let mut text = String::from(
        "groups:\n  g:\n    inbound:\n      - { protocol: tcp, ports: 22, source: 0.0.0.0/0 }\n      - { protocol: tcp, ports: 22, source: 10.0.0.0/8 }\n",
    );
    for len in [16, 24, 25, 26, 27, 28, 29, 30, 31, 32].into_iter().take(udp_tiers) {
        let net = IpNet::new(ip("10.1.1.0"), len).expect("prefix length").trunc();
        let _ = writeln!(text, "      - {{ protocol: udp, ports: 53, source: {net} }}");
    }
    policy(&[&text])
}

#[test]
fn credit_looks_as_deep_as_the_kernels_walk() {
    let ssh = packet("10.1.1.0", "192.0.2.1", tcp(22));
    // With 7 or more udp tiers around 10.1.1.0, /8 is the 8th longest prefix
    // or later: it shares the last tier with /0, and the first in file order
    // wins.
    for udp_tiers in [7, 8, 10] {
        assert_eq!(verdict(&deep_policy(udp_tiers), &["g"], In, &ssh), "g/inbound/0", "{udp_tiers} udp tiers");
    }
    // 6 udp tiers, then /8 in a tier of its own: the most specific wins.
    for udp_tiers in [5, 6] {
        assert_eq!(verdict(&deep_policy(udp_tiers), &["g"], In, &ssh), "g/inbound/1", "{udp_tiers} udp tiers");
    }
    // Elsewhere in 10/8 the udp prefixes do not nest around the address.
    assert_eq!(verdict(&deep_policy(10), &["g"], In, &packet("10.9.0.1", "192.0.2.1", tcp(22))), "g/inbound/1");
    assert_eq!(CREDIT_DEPTH, 8);
}

#[test]
fn icmp_rules_match_type_and_code_of_protocol_1_over_either_ip_version() {
    let p = policy(&["groups:\n  g:\n    inbound:\n      - { protocol: icmp, icmp_type: 0, source: \"::/0\" }\n      - { protocol: icmpv6, icmp_type: 129, source: 0.0.0.0/0 }\n"]);
    let v = |src, dst, transport| verdict(&p, &["g"], In, &packet(src, dst, transport));
    assert_eq!(v("2001:db8::9", "2001:db8::1", Transport::Icmp { icmp_type: 0, code: 0 }), "g/inbound/0");
    assert_eq!(v("2001:db8::9", "2001:db8::1", Transport::Icmp { icmp_type: 8, code: 0 }), "drop");
    assert_eq!(v("192.0.2.9", "10.0.0.1", Transport::Icmpv6 { icmp_type: 129, code: 3 }), "g/inbound/1");
    assert_eq!(v("192.0.2.9", "10.0.0.1", Transport::Icmpv6 { icmp_type: 128, code: 0 }), "drop");
    assert_eq!(v("192.0.2.9", "10.0.0.1", Transport::Icmp { icmp_type: 129, code: 0 }), "drop", "icmp is not icmpv6");
}

#[test]
fn ipv6_link_control_passes_unjudged_and_only_over_ipv6() {
    let p = policy(&["groups:\n  g:\n    outbound: []\n"]);
    for icmp_type in [130, 131, 132, 133, 134, 135, 136, 137, 143] {
        let nd = packet("fe80::1", "ff02::1", Transport::Icmpv6 { icmp_type, code: 0 });
        assert_eq!(verdict(&p, &["g"], In, &nd), "unfiltered", "type {icmp_type}");
        assert_eq!(verdict(&p, &["g"], Out, &nd), "unfiltered", "type {icmp_type}");
    }
    for icmp_type in [1, 128, 129, 138, 142, 144] {
        let other = packet("fe80::1", "ff02::1", Transport::Icmpv6 { icmp_type, code: 0 });
        assert_eq!(verdict(&p, &["g"], In, &other), "drop", "type {icmp_type}");
    }
    // Reports from `::` (RFC 3590), and nothing else from `::`.
    for (icmp_type, expected) in
        [(131, "unfiltered"), (143, "unfiltered"), (130, "drop"), (132, "drop"), (135, "unfiltered")]
    {
        let tentative = packet("::", "ff02::16", Transport::Icmpv6 { icmp_type, code: 0 });
        assert_eq!(verdict(&p, &["g"], In, &tentative), expected, "type {icmp_type} from ::");
    }
    let over_ipv4 = packet("192.0.2.1", "10.0.0.1", Transport::Icmpv6 { icmp_type: 135, code: 0 });
    assert_eq!(verdict(&p, &["g"], In, &over_ipv4), "drop");
    let local = BTreeMap::new();
    let model = Model::new(&p, &["g".to_owned()], &local).expect("known group");
    assert_eq!(model.judge_link_frame(0x0806), Verdict::Unfiltered(Unfiltered::NotIp));
}

#[test]
fn packets_that_cannot_exist_are_refused() {
    let e = IpPacket::new(ip("10.0.0.1"), ip("::1"), tcp(1)).expect_err("mixed");
    assert_eq!(e, PacketError::MixedFamilies { src: ip("10.0.0.1"), dst: ip("::1") });
    assert_eq!(IpPacket::new(ip("::2"), ip("::1"), Transport::Other(43)), Err(PacketError::Ipv6ExtensionHeader(43)));
    assert!(IpPacket::new(ip("10.0.0.2"), ip("10.0.0.1"), Transport::Other(43)).is_ok(), "43 is a protocol in IPv4");
    assert_eq!(IpPacket::new(ip("::2"), ip("::1"), Transport::Other(6)), Err(PacketError::NamedProtocol(6)));
}

#[test]
fn unknown_groups_are_refused() {
    let p = policy(&[WEB]);
    let local = BTreeMap::new();
    let e = Model::new(&p, &["nope".to_owned()], &local).err().expect("unknown group");
    assert_eq!(e.to_string(), "unknown group \"nope\": it is not defined in the policy");
}
