//! Verdict tests: the real kernel programs, run by BPF_PROG_TEST_RUN on
//! hand-built IPv4 and IPv6 frames, with maps filled by the real compiler.
//! Each test loads its own copy (own maps) under its own bpffs directory.
#![expect(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]
use std::{collections::BTreeMap, net::IpAddr};

use firewall_common::{
    conntrack::{FlowEntry, FlowKey4, FlowState, Table},
    counters::{reason_slot, CtEvent, Reason, RuleCounters},
    proto, Direction,
};
use firewall_ctl::{
    compile::{self, CompiledInterface},
    datapath::{self, maps::IfaceMaps},
    policy,
    testing::{
        frames::*,
        testrun::{Loaded, TC_ACT_SHOT, TC_ACT_UNSPEC, XDP_DROP, XDP_PASS},
    },
};

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Verdict {
    Pass,
    Drop,
}

/// One interface's programs and maps, loaded but not attached, with the
/// rule table to name counters by.
struct Datapath {
    loaded: Loaded,
    compiled: CompiledInterface,
}

impl Datapath {
    fn new(yaml: &str, groups: &[&str]) -> Self {
        Self::with(yaml, groups, |_| {})
    }

    /// Compiles `yaml` for an interface carrying `groups`, lets `tweak`
    /// adjust the result, and loads it.
    fn with(yaml: &str, groups: &[&str], tweak: impl FnOnce(&mut CompiledInterface)) -> Self {
        assert!(nix::unistd::Uid::effective().is_root(), "verdict tests load eBPF programs: run them as root");
        let policy = policy::parse_sources(&[("test.yaml".into(), yaml.into())]).expect("test policy parses");
        let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        let mut compiled = compile::compile_interface(&policy, &groups, &BTreeMap::new()).expect("compiles");
        tweak(&mut compiled);
        let loaded = Loaded::new(&compiled).expect("programs load and verify");
        Self { loaded, compiled }
    }

    fn action(&self, program: &str, frame: &[u8]) -> u32 {
        self.loaded.run(program, frame, 1).expect("BPF_PROG_TEST_RUN").0
    }

    /// Inbound through XDP and tc alike: both must agree.
    fn inbound(&self, frame: &[u8]) -> Verdict {
        let xdp = self.inbound_xdp(frame);
        let tc = self.tc(datapath::PROG_INGRESS_TC, frame);
        assert_eq!(xdp, tc, "XDP and tc ingress disagree");
        xdp
    }

    /// Inbound through the XDP program only (state changes once).
    fn inbound_xdp(&self, frame: &[u8]) -> Verdict {
        match self.action(datapath::PROG_INGRESS_XDP, frame) {
            XDP_PASS => Verdict::Pass,
            XDP_DROP => Verdict::Drop,
            other => panic!("unexpected XDP action {other}"),
        }
    }

    fn outbound(&self, frame: &[u8]) -> Verdict {
        self.tc(datapath::PROG_EGRESS_TC, frame)
    }

    fn tc(&self, program: &str, frame: &[u8]) -> Verdict {
        match self.action(program, frame) {
            TC_ACT_UNSPEC => Verdict::Pass,
            TC_ACT_SHOT => Verdict::Drop,
            other => panic!("unexpected tc action {other}"),
        }
    }

    fn maps(&self) -> IfaceMaps {
        self.loaded.maps()
    }

    fn rule(&self, identity: &str) -> RuleCounters {
        let id = self
            .compiled
            .rules
            .iter()
            .position(|r| r.to_string() == identity)
            .unwrap_or_else(|| panic!("no rule {identity}"));
        self.loaded.rule_counters().unwrap()[id]
    }

    fn reason(&self, direction: Direction, reason: Reason) -> u64 {
        self.maps().reason_counters().unwrap()[reason_slot(direction, reason) as usize].packets
    }
}

fn a(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const WEB: &str = include_str!("../../../policies/web-server.yaml");

#[test]
fn allowed_port_passes_and_counts_a_flow_on_its_rule() {
    let dp = Datapath::new(WEB, &["web-server"]);
    let syn = ip(proto::TCP, a("198.51.100.7"), a("10.0.0.1"), &tcp(40000, 80, TCP_SYN));
    assert_eq!(dp.inbound_xdp(&syn), Verdict::Pass);
    let http = dp.rule("web-server/inbound/1");
    assert_eq!((http.flows, http.packets, http.bytes), (1, 1, syn.len() as u64));
    assert_eq!(dp.rule("web-server/inbound/0").packets, 0, "SSH rule carried nothing");
    assert_eq!(dp.reason(Direction::Inbound, Reason::PassNewFlow), 1);
}

#[test]
fn port_without_rule_is_dropped_and_counted() {
    let dp = Datapath::new(WEB, &["web-server"]);
    for family in [("198.51.100.7", "10.0.0.1"), ("2001:db8::7", "2001:db8::1")] {
        let syn = ip(proto::TCP, a(family.0), a(family.1), &tcp(40000, 8080, TCP_SYN));
        assert_eq!(dp.inbound(&syn), Verdict::Drop, "{family:?}");
    }
    // Twice per frame: through XDP and through tc.
    assert_eq!(dp.reason(Direction::Inbound, Reason::DropNoRule), 4);
}

#[test]
fn audit_mode_passes_what_no_rule_allows_as_would_drop_and_tracks_it() {
    let audit =
        WEB.replacen("    description: Basic web server\n", "    description: Basic web server\n    mode: audit\n", 1);
    assert_ne!(audit, WEB, "the example's group description moved");
    let dp = Datapath::new(&audit, &["web-server"]);
    let syn = ip(proto::TCP, a("198.51.100.7"), a("10.0.0.1"), &tcp_seq(40000, 8080, TCP_SYN, 1, 0));
    assert_eq!(dp.inbound_xdp(&syn), Verdict::Pass, "no rule allows it, audit lets it through");
    assert_eq!(dp.reason(Direction::Inbound, Reason::PassAudit), 1);
    assert_eq!(dp.reason(Direction::Inbound, Reason::DropNoRule), 0);
    // Its reply rides the flow audit opened, with no outbound rule needed.
    let reply = ip(proto::TCP, a("10.0.0.1"), a("198.51.100.7"), &tcp_seq(8080, 40000, TCP_SYN | TCP_ACK, 900, 2));
    assert_eq!(dp.outbound(&reply), Verdict::Pass);
    assert_eq!(dp.reason(Direction::Outbound, Reason::PassTracked), 1);
    // What a rule allows is the rule's, as in enforce mode.
    let http = ip(proto::TCP, a("198.51.100.7"), a("10.0.0.1"), &tcp(40001, 80, TCP_SYN));
    assert_eq!(dp.inbound_xdp(&http), Verdict::Pass);
    assert_eq!(dp.rule("web-server/inbound/1").flows, 1);
    assert_eq!(dp.reason(Direction::Inbound, Reason::PassAudit), 1, "an allowed flow is no would-drop");
    // Malformed packets are still dropped.
    let mut short = ip(proto::TCP, a("198.51.100.7"), a("10.0.0.1"), &tcp(40002, 8080, TCP_SYN));
    short.truncate(14 + 20 + 8);
    assert_eq!(dp.inbound_xdp(&short), Verdict::Drop);
}

#[test]
fn source_cidr_is_enforced_for_ssh() {
    let dp = Datapath::new(WEB, &["web-server"]);
    let from = |src: &str| ip(proto::TCP, a(src), a("10.0.0.1"), &tcp(40000, 22, TCP_SYN));
    assert_eq!(dp.inbound(&from("203.0.113.10")), Verdict::Pass);
    assert_eq!(dp.inbound(&from("203.0.113.11")), Verdict::Drop);
}

#[test]
fn ipv4_cidr_never_matches_ipv6_and_v6_rule_does() {
    let dp = Datapath::new(WEB, &["web-server"]);
    let v6 = |port| ip(proto::TCP, a("2001:db8::7"), a("2001:db8::1"), &tcp(40000, port, TCP_SYN));
    assert_eq!(dp.inbound(&v6(80)), Verdict::Drop, "80 allows 0.0.0.0/0 only");
    assert_eq!(dp.inbound(&v6(443)), Verdict::Pass, "443 allows ::/0");
}

#[test]
fn replies_of_an_inbound_flow_pass_outbound_even_with_no_outbound_rule() {
    let dp = Datapath::new(
        "groups:\n  db:\n    inbound:\n      - { protocol: tcp, ports: 3306, source: 10.0.1.0/24 }\n    outbound: []\n",
        &["db"],
    );
    let syn = ip(proto::TCP, a("10.0.1.5"), a("10.0.2.5"), &tcp_seq(40000, 3306, TCP_SYN, 1, 0));
    let syn_ack = ip(proto::TCP, a("10.0.2.5"), a("10.0.1.5"), &tcp_seq(3306, 40000, TCP_SYN | TCP_ACK, 900, 2));
    let own = ip(proto::TCP, a("10.0.2.5"), a("10.0.1.5"), &tcp(40001, 22, TCP_SYN));
    assert_eq!(dp.outbound(&syn_ack), Verdict::Drop, "no flow yet, outbound: []");
    assert_eq!(dp.inbound_xdp(&syn), Verdict::Pass);
    assert_eq!(dp.outbound(&syn_ack), Verdict::Pass, "reply of a tracked flow");
    assert_eq!(dp.outbound(&own), Verdict::Drop, "the database cannot open flows");
    let rule = dp.rule("db/inbound/0");
    assert_eq!((rule.flows, rule.packets), (1, 2), "both directions count on the rule");
    assert_eq!(dp.reason(Direction::Outbound, Reason::PassTracked), 1);
}

#[test]
fn replies_of_an_outbound_flow_pass_inbound_in_both_families() {
    let dp = Datapath::new(WEB, &["web-server"]);
    let out = ip(proto::UDP, a("10.0.0.1"), a("192.0.2.53"), &udp(5353, 53, b"q"));
    let back = ip(proto::UDP, a("192.0.2.53"), a("10.0.0.1"), &udp(53, 5353, b"a"));
    assert_eq!(dp.inbound_xdp(&back), Verdict::Drop, "unsolicited");
    assert_eq!(dp.outbound(&out), Verdict::Pass);
    assert_eq!(dp.inbound(&back), Verdict::Pass);
    // IPv6 has no outbound rule in this group: nothing goes out, nothing comes back.
    let out6 = ip(proto::UDP, a("2001:db8::1"), a("2001:db8::53"), &udp(5353, 53, b"q"));
    assert_eq!(dp.outbound(&out6), Verdict::Drop);
}

#[test]
fn icmp_echo_is_tracked_by_identifier() {
    let dp = Datapath::new(WEB, &["web-server"]);
    let request = ip(proto::ICMP, a("10.0.0.1"), a("192.0.2.9"), &icmp(8, 0, 77, b"ping"));
    let reply = ip(proto::ICMP, a("192.0.2.9"), a("10.0.0.1"), &icmp(0, 0, 77, b"ping"));
    let other_reply = ip(proto::ICMP, a("192.0.2.9"), a("10.0.0.1"), &icmp(0, 0, 78, b"ping"));
    assert_eq!(dp.outbound(&request), Verdict::Pass);
    assert_eq!(dp.inbound(&reply), Verdict::Pass);
    assert_eq!(dp.inbound(&other_reply), Verdict::Drop, "another identifier is another flow");
}

#[test]
fn icmp_rules_match_type_and_code_and_never_icmpv6() {
    let dp = Datapath::new(
        "groups:\n  g:\n    inbound:\n      - { protocol: icmp, icmp_type: 8, source: 0.0.0.0/0 }\n      - { protocol: icmpv6, icmp_type: 128, icmp_code: 0, source: \"::/0\" }\n",
        &["g"],
    );
    let v4 = |t| ip(proto::ICMP, a("192.0.2.9"), a("10.0.0.1"), &icmp(t, 0, 1, b""));
    // Distinct echo identifiers: each probe is a new flow, judged by the rules.
    let v6 = |t, c, id| ip(proto::ICMPV6, a("2001:db8::9"), a("2001:db8::1"), &icmp(t, c, id, b""));
    assert_eq!(dp.inbound(&v4(8)), Verdict::Pass);
    assert_eq!(dp.inbound(&v4(13)), Verdict::Drop, "timestamp request: another type");
    assert_eq!(dp.inbound(&v6(128, 0, 1)), Verdict::Pass);
    assert_eq!(dp.inbound(&v6(128, 1, 2)), Verdict::Drop, "another code");
    // An ICMPv4 frame inside IPv6 is protocol 1, not ICMPv6: no rule.
    let confused = ip(proto::ICMP, a("2001:db8::9"), a("2001:db8::1"), &icmp(8, 0, 1, b""));
    assert_eq!(dp.inbound(&confused), Verdict::Drop);
}

#[test]
fn related_icmp_errors_pass_for_tracked_flows_only() {
    let dp = Datapath::new(WEB, &["web-server"]);
    for (host, remote, router, error_type) in
        [("10.0.0.1", "192.0.2.80", "192.0.2.254", 3), ("2001:db8::1", "2001:db8:1::80", "2001:db8::fe", 2)]
    {
        let protocol = if error_type == 3 { proto::ICMP } else { proto::ICMPV6 };
        let syn = ip(proto::TCP, a(host), a(remote), &tcp(41000, 443, TCP_SYN));
        let untracked = ip(proto::TCP, a(host), a(remote), &tcp(41001, 443, TCP_SYN));
        let error = |quoted: &[u8]| ip(protocol, a(router), a(host), &icmp(error_type, 4, 0, &quote(quoted)));
        if host.contains(':') {
            // IPv6 has no outbound rule here: open the flow inbound instead;
            // the error is about the host's answer.
            let syn_in = ip(proto::TCP, a(remote), a(host), &tcp_seq(41000, 443, TCP_SYN, 1, 0));
            let answer = ip(proto::TCP, a(host), a(remote), &tcp_seq(443, 41000, TCP_SYN | TCP_ACK, 700, 2));
            assert_eq!(dp.inbound_xdp(&syn_in), Verdict::Pass);
            let err = ip(protocol, a(router), a(host), &icmp(error_type, 0, 0, &quote(&answer)));
            assert_eq!(dp.inbound(&err), Verdict::Pass, "packet too big about a tracked flow");
        } else {
            assert_eq!(dp.outbound(&syn), Verdict::Pass);
            assert_eq!(dp.inbound(&error(&syn)), Verdict::Pass, "fragmentation needed about a tracked flow");
        }
        assert_eq!(dp.inbound(&error(&untracked)), Verdict::Drop, "error about no flow");
    }
    assert!(dp.reason(Direction::Inbound, Reason::PassRelated) >= 4);
}

#[test]
fn group_references_follow_members_not_rules() {
    let yaml = "groups:\n  lb: {}\n  app:\n    inbound:\n      - { protocol: tcp, ports: 8080, source: sg:lb }\nmembers:\n  lb: [10.0.0.10, \"fd00::10\"]\n";
    let dp = Datapath::new(yaml, &["app"]);
    let from = |src: &str| {
        let dst = if src.contains(':') { "fd00:1::10" } else { "10.0.1.10" };
        ip(proto::TCP, a(src), a(dst), &tcp(40000, 8080, TCP_SYN))
    };
    assert_eq!(dp.inbound(&from("10.0.0.10")), Verdict::Pass);
    assert_eq!(dp.inbound(&from("fd00::10")), Verdict::Pass);
    assert_eq!(dp.inbound(&from("10.0.0.11")), Verdict::Drop);
}

#[test]
fn union_of_groups_and_prefix_lists_and_port_ranges() {
    let yaml = "prefix_lists:\n  office: [192.0.2.0/24, \"2001:db8:aa::/48\"]\ngroups:\n  a:\n    inbound:\n      - { protocol: udp, ports: \"8000-8100\", source: pl:office }\n  b:\n    inbound:\n      - { protocol: 47, source: 0.0.0.0/0 }\n";
    let dp = Datapath::new(yaml, &["a", "b"]);
    let udp_to = |src: &str, port| {
        let dst = if src.contains(':') { "2001:db8::1" } else { "10.0.0.1" };
        ip(proto::UDP, a(src), a(dst), &udp(1000, port, b""))
    };
    assert_eq!(dp.inbound(&udp_to("192.0.2.3", 8000)), Verdict::Pass);
    assert_eq!(dp.inbound(&udp_to("192.0.2.3", 8100)), Verdict::Pass);
    assert_eq!(dp.inbound(&udp_to("192.0.2.3", 8101)), Verdict::Drop);
    assert_eq!(dp.inbound(&udp_to("192.0.3.3", 8050)), Verdict::Drop);
    assert_eq!(dp.inbound(&udp_to("2001:db8:aa:1::3", 8050)), Verdict::Pass);
    let gre = ip(47, a("198.51.100.1"), a("10.0.0.1"), &[0u8; 8]);
    assert_eq!(dp.inbound(&gre), Verdict::Pass, "group b: protocol 47 from anywhere");
}

#[test]
fn unfiltered_frames_pass_and_malformed_ones_drop() {
    let dp = Datapath::new(WEB, &["web-server"]);
    let mut arp = ethernet(ETH_P_ARP);
    arp.extend_from_slice(&[0u8; 28]);
    assert_eq!(dp.inbound(&arp), Verdict::Pass, "ARP");
    let ns = ip(proto::ICMPV6, a("fe80::1"), a("ff02::1:ff00:1"), &icmp(135, 0, 0, &[0u8; 16]));
    assert_eq!(dp.inbound(&with_hop_limit(ns.clone(), 255)), Verdict::Pass, "neighbour solicitation");
    assert_eq!(dp.inbound(&ns), Verdict::Drop, "hop limit not 255: not neighbour discovery, no rule");
    let mld = ip(proto::ICMPV6, a("fe80::1"), a("ff02::16"), &icmp(143, 0, 0, &[0u8; 20]));
    assert_eq!(dp.outbound(&with_hop_limit(mld, 1)), Verdict::Pass, "MLDv2 report");
    // RFC 3590: reports from `::` while the link-local address is tentative.
    let tentative = ip(proto::ICMPV6, a("::"), a("ff02::16"), &icmp(143, 0, 0, &[0u8; 20]));
    assert_eq!(dp.outbound(&with_hop_limit(tentative.clone(), 1)), Verdict::Pass, "MLDv2 report from ::");
    assert_eq!(dp.inbound(&tentative), Verdict::Drop, "from ::, hop limit not 1: no rule");
    let query = ip(proto::ICMPV6, a("::"), a("ff02::1"), &icmp(130, 0, 0, &[0u8; 20]));
    assert_eq!(dp.inbound(&with_hop_limit(query, 1)), Verdict::Drop, "an MLD query from :: is judged");
    let echo6 = ip(proto::ICMPV6, a("2001:db8::7"), a("2001:db8::1"), &icmp(128, 0, 5, b""));
    assert_eq!(dp.inbound(&echo6), Verdict::Drop, "other ICMPv6 is filtered");

    let syn = ip(proto::TCP, a("198.51.100.7"), a("10.0.0.1"), &tcp(40000, 80, TCP_SYN));
    let mut bad_ihl = syn.clone();
    bad_ihl[14] = 0x44; // IHL 4 < 5
    let truncated_ip = syn[..14 + 12].to_vec();
    let truncated_tcp = syn[..14 + 20 + 10].to_vec();
    let mut bad_doff = syn.clone();
    bad_doff[14 + 20 + 12] = 0x40; // data offset 4 < 5
                                   // XDP only: the kernel's skb test harness refuses some of these frames
                                   // before the tc program could see them.
    for (name, frame) in [("IHL", bad_ihl), ("IP", truncated_ip), ("TCP", truncated_tcp), ("doff", bad_doff)] {
        assert_eq!(dp.inbound_xdp(&frame), Verdict::Drop, "malformed {name}");
    }
    assert_eq!(dp.reason(Direction::Inbound, Reason::DropMalformed), 4);
}

#[test]
fn ip_options_vlan_tags_and_ipv6_extension_headers_are_walked() {
    let dp = Datapath::new(WEB, &["web-server"]);
    // IPv4 with 4 bytes of options: the L4 offset comes from IHL.
    let l4 = tcp(40000, 80, TCP_SYN);
    let mut with_options = ethernet(ETH_P_IP);
    with_options.extend_from_slice(&ipv4_header(proto::TCP, [198, 51, 100, 7], [10, 0, 0, 1], l4.len(), &[1, 1, 1, 0]));
    with_options.extend_from_slice(&l4);
    assert_eq!(dp.inbound(&with_options), Verdict::Pass);

    // A VLAN tag does not let a denied packet through.
    let denied = ip(proto::TCP, a("198.51.100.7"), a("10.0.0.1"), &tcp(40000, 8080, TCP_SYN));
    let mut tagged = ethernet(ETH_P_8021Q);
    tagged.extend_from_slice(&[0, 10]);
    tagged.extend_from_slice(&ETH_P_IP.to_be_bytes());
    tagged.extend_from_slice(&denied[14..]);
    assert_eq!(dp.inbound(&tagged), Verdict::Drop);

    // Hop-by-hop options then TCP 443 over IPv6.
    let l4 = tcp(40000, 443, TCP_SYN);
    let mut v6 = ethernet(ETH_P_IPV6);
    let (src, dst) = (
        [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
        [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    );
    v6.extend_from_slice(&ipv6_header(0, src, dst, 8 + l4.len()));
    v6.extend_from_slice(&[proto::TCP, 0, 1, 4, 0, 0, 0, 0]);
    v6.extend_from_slice(&l4);
    assert_eq!(dp.inbound(&v6), Verdict::Pass);
    // Unknown-length chains beyond the walk limit are dropped.
    let mut deep = ethernet(ETH_P_IPV6);
    deep.extend_from_slice(&ipv6_header(60, src, dst, 8 * 5 + l4.len()));
    for _ in 0..5 {
        deep.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
    }
    deep.extend_from_slice(&l4);
    assert_eq!(dp.inbound(&deep), Verdict::Drop);
}

/// IPv4 fragment of `first` (a whole frame): the first one keeps its L4
/// header and gets MF; a later one gets `offset` (8-byte units) and a
/// payload instead. `id` is the IP identification.
fn fragment_v4(first: &[u8], id: u16, offset: u16, more: bool) -> Vec<u8> {
    let mut f = if offset == 0 { first.to_vec() } else { [&first[..14 + 20], &[0u8; 16][..]].concat() };
    let total_len = (f.len() - 14) as u16;
    f[14 + 2..14 + 4].copy_from_slice(&total_len.to_be_bytes());
    f[14 + 4..14 + 6].copy_from_slice(&id.to_be_bytes());
    let flags_offset = offset | if more { 0x2000 } else { 0 };
    f[14 + 6..14 + 8].copy_from_slice(&flags_offset.to_be_bytes());
    f
}

/// IPv6 fragment: a fragment header after the fixed header.
fn fragment_v6(src: [u8; 16], dst: [u8; 16], l4: &[u8], id: u32, offset: u16, more: bool) -> Vec<u8> {
    let mut f = ethernet(ETH_P_IPV6);
    f.extend_from_slice(&ipv6_header(44, src, dst, 8 + l4.len()));
    let offset_flags = (offset << 3) | u16::from(more);
    f.extend_from_slice(&[proto::UDP, 0]);
    f.extend_from_slice(&offset_flags.to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(l4);
    f
}

#[test]
fn later_fragments_follow_their_first_fragment() {
    let yaml = "groups:\n  g:\n    inbound:\n      - { protocol: udp, ports: 5000, source: [0.0.0.0/0, \"::/0\"] }\n";
    let dp = Datapath::new(yaml, &["g"]);
    let to = |port| ip(proto::UDP, a("198.51.100.7"), a("10.0.0.1"), &udp(4000, port, &[7u8; 16]));
    assert_eq!(dp.inbound(&fragment_v4(&to(5000), 77, 0, true)), Verdict::Pass, "first fragment, allowed port");
    assert_eq!(dp.inbound(&fragment_v4(&to(5000), 77, 3, true)), Verdict::Pass, "a middle fragment follows it");
    assert_eq!(dp.inbound(&fragment_v4(&to(5000), 77, 6, false)), Verdict::Pass, "the last one too");
    assert_eq!(dp.inbound(&fragment_v4(&to(5000), 78, 3, false)), Verdict::Drop, "another datagram: no first seen");
    assert_eq!(dp.inbound(&fragment_v4(&to(6000), 79, 0, true)), Verdict::Drop, "first fragment, no rule");
    assert_eq!(dp.inbound(&fragment_v4(&to(6000), 79, 3, false)), Verdict::Drop, "its later fragments too");

    let (src, dst) = (
        [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
        [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    );
    let udp6 = udp(4000, 5000, &[7u8; 16]);
    assert_eq!(dp.inbound(&fragment_v6(src, dst, &udp6, 9, 0, true)), Verdict::Pass, "IPv6 first fragment");
    assert_eq!(dp.inbound(&fragment_v6(src, dst, &[7u8; 24], 9, 3, false)), Verdict::Pass, "IPv6 later fragment");
    assert_eq!(dp.inbound(&fragment_v6(src, dst, &[7u8; 24], 10, 3, false)), Verdict::Drop, "unknown datagram");

    // Through XDP and tc: two of each.
    assert_eq!(dp.reason(Direction::Inbound, Reason::PassFragment), 6);
    assert_eq!(dp.reason(Direction::Inbound, Reason::DropFragment), 6);
    let rule = dp.rule("g/inbound/0");
    assert_eq!(rule.flows, 2, "one per family: the first fragments opened them");
}

/// A TCP handshake from `client:sport` to the web server's port 80,
/// through XDP ingress and tc egress: SYN, SYN-ACK, ACK.
fn handshake(dp: &Datapath, client: IpAddr, sport: u16) -> [Verdict; 3] {
    let host = a("10.0.0.1");
    [
        dp.inbound_xdp(&ip(proto::TCP, client, host, &tcp_seq(sport, 80, TCP_SYN, 1000, 0))),
        dp.outbound(&ip(proto::TCP, host, client, &tcp_seq(80, sport, TCP_SYN | TCP_ACK, 5000, 1001))),
        dp.inbound_xdp(&ip(proto::TCP, client, host, &tcp_seq(sport, 80, TCP_ACK, 1001, 5001))),
    ]
}

/// The client's next data packet on a flow [`handshake`] opened.
fn data(client: IpAddr, sport: u16) -> Vec<u8> {
    ip(proto::TCP, client, a("10.0.0.1"), &tcp_seq(sport, 80, TCP_ACK, 1001, 5001))
}

fn v4(i: u32) -> IpAddr {
    IpAddr::from(std::net::Ipv4Addr::from(0xc612_0000 + i))
}

fn ct_event(dp: &Datapath, event: CtEvent) -> u64 {
    dp.maps().ct_events().unwrap()[event as usize]
}

#[test]
fn a_flood_of_flows_nobody_answers_evicts_pending_flows_and_never_a_confirmed_one() {
    const CAPACITY: u32 = 1024;
    let dp = Datapath::with(WEB, &["web-server"], |c| c.conntrack_capacity = CAPACITY);
    let held: Vec<IpAddr> = (0..8).map(|i| v4(100_000 + i)).collect();
    for client in &held {
        assert_eq!(handshake(&dp, *client, 40000), [Verdict::Pass; 3], "{client}");
    }
    let confirmed =
        |dp: &Datapath| dp.maps().flows().unwrap().into_iter().filter(|f| f.table == Table::Confirmed).count();
    assert_eq!(confirmed(&dp), 8, "completed handshakes are confirmed");
    assert_eq!(ct_event(&dp, CtEvent::Promoted), 8);

    // Ten times the table in SYNs from sources nobody answers for.
    let flood = 10 * CAPACITY;
    for i in 0..flood {
        let syn = ip(proto::TCP, v4(i), a("10.0.0.1"), &tcp_seq(1024 + (i % 60000) as u16, 80, TCP_SYN, i, 0));
        assert_eq!(dp.inbound_xdp(&syn), Verdict::Pass, "SYN {i} is admitted: the pending table makes room");
    }
    assert_eq!(dp.reason(Direction::Inbound, Reason::DropConntrackFull), 0);
    assert_eq!(confirmed(&dp), 8, "no confirmed flow was evicted");
    let tracked_before = dp.reason(Direction::Inbound, Reason::PassTracked);
    for client in &held {
        assert_eq!(dp.inbound_xdp(&data(*client, 40000)), Verdict::Pass);
    }
    assert_eq!(dp.reason(Direction::Inbound, Reason::PassTracked), tracked_before + 8, "the held flows are tracked");
    let usage = dp.maps().conntrack_usage().unwrap();
    assert!(usage.pending <= u64::from(CAPACITY), "{usage:?}");
    assert_eq!(usage.pending_opened, u64::from(flood) + 8);
    assert!(usage.pending_evicted >= u64::from(flood - CAPACITY), "evictions counted: {usage:?}");
    // The newest flood flow is still pending: its SYN-ACK rides it.
    let last = flood - 1;
    let syn_ack = ip(
        proto::TCP,
        a("10.0.0.1"),
        v4(last),
        &tcp_seq(80, 1024 + (last % 60000) as u16, TCP_SYN | TCP_ACK, 7, last + 1),
    );
    assert_eq!(dp.outbound(&syn_ack), Verdict::Pass);
    assert_eq!(dp.reason(Direction::Outbound, Reason::PassTracked), 8 + 1, "8 handshakes' SYN-ACKs and this one");
}

#[test]
fn a_full_confirmed_table_keeps_new_flows_pending_and_counts_it() {
    const CAPACITY: u32 = 1024;
    let dp = Datapath::with(WEB, &["web-server"], |c| c.conntrack_capacity = CAPACITY);
    for i in 0..CAPACITY {
        assert_eq!(handshake(&dp, v4(i), 40000), [Verdict::Pass; 3], "handshake {i}");
    }
    let usage = dp.maps().conntrack_usage().unwrap();
    assert_eq!((usage.confirmed, usage.pending, usage.promotion_refused), (u64::from(CAPACITY), 0, 0), "{usage:?}");

    // One more completes its handshake: it stays pending, counted once.
    let late = v4(CAPACITY);
    assert_eq!(handshake(&dp, late, 40000), [Verdict::Pass; 3]);
    assert_eq!(dp.inbound_xdp(&data(late, 40000)), Verdict::Pass);
    let usage = dp.maps().conntrack_usage().unwrap();
    assert_eq!((usage.confirmed, usage.pending, usage.promotion_refused), (u64::from(CAPACITY), 1, 1), "{usage:?}");
    let flows = dp.maps().flows().unwrap();
    let pending = flows.iter().find(|f| f.table == Table::Pending).unwrap();
    assert_eq!(FlowState::from_u8(pending.entry.state), FlowState::Established, "established, but pending");

    // Room made: within a second its next packet moves it over.
    assert_eq!(dp.maps().remove_flows(|k, _| k.addr_lo[0] == u32::from_ne_bytes([198, 18, 0, 0])).unwrap(), 1);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(dp.inbound_xdp(&data(late, 40000)), Verdict::Pass);
    let usage = dp.maps().conntrack_usage().unwrap();
    assert_eq!((usage.confirmed, usage.pending, usage.promotion_refused), (u64::from(CAPACITY), 0, 1), "{usage:?}");
}

#[test]
fn idle_flows_expire_after_their_timeout() {
    let dp = Datapath::with(WEB, &["web-server"], |c| c.timeouts.udp_single = 50_000_000);
    let out = ip(proto::UDP, a("10.0.0.1"), a("192.0.2.53"), &udp(5353, 53, b"q"));
    let back = ip(proto::UDP, a("192.0.2.53"), a("10.0.0.1"), &udp(53, 5353, b"a"));
    assert_eq!(dp.outbound(&out), Verdict::Pass);
    std::thread::sleep(std::time::Duration::from_millis(120));
    assert_eq!(dp.inbound_xdp(&back), Verdict::Drop, "the one-way UDP flow timed out");
    assert_eq!(dp.maps().expire_flows().unwrap(), 1, "sgctl's sweep removes it");
}

/// Issue 15: `conntrack gc` listed the expired flows, then deleted them by
/// key; a flow reused in between (an expired entry that a new packet
/// replaced with a live flow of the same key) was deleted with them. Shown
/// here with the old way, then not happening with gc's.
#[test]
fn gc_never_removes_a_flow_reused_between_its_listing_and_its_removal() {
    // The reply below makes the flow a stream: it expires as fast.
    let dp = Datapath::with(WEB, &["web-server"], |c| {
        c.timeouts.udp_single = 50_000_000;
        c.timeouts.udp_stream = 50_000_000;
    });
    let out = ip(proto::UDP, a("10.0.0.1"), a("192.0.2.53"), &udp(5353, 53, b"q"));
    let back = ip(proto::UDP, a("192.0.2.53"), a("10.0.0.1"), &udp(53, 5353, b"a"));
    let expire = |dp: &Datapath| {
        assert_eq!(dp.outbound(&out), Verdict::Pass);
        std::thread::sleep(std::time::Duration::from_millis(120));
    };

    // The old way: list the expired flows, then delete each by key.
    expire(&dp);
    let listed: Vec<_> = dp.maps().flows().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(dp.outbound(&out), Verdict::Pass, "the flow is reused: a new packet replaces the expired entry");
    let pending = aya::maps::Map::LruHashMap(dp.maps().data(datapath::maps::CT4_PENDING).unwrap());
    let mut table: aya::maps::HashMap<_, FlowKey4, FlowEntry> = aya::maps::HashMap::try_from(pending).unwrap();
    table.remove(&listed[0].key.v4().unwrap()).unwrap();
    assert_eq!(dp.inbound_xdp(&back), Verdict::Drop, "the live flow went with the expired one: its reply is dropped");

    // gc: what it removes is what it checked.
    expire(&dp);
    let gc = dp.maps().expire_flows_with(|| {
        assert_eq!(dp.outbound(&out), Verdict::Pass, "reused between listing and removal");
    });
    assert_eq!(gc.unwrap(), 0, "the reused flow is not expired any more");
    assert_eq!(dp.inbound_xdp(&back), Verdict::Pass, "and its reply rides it");
    expire(&dp);
    assert_eq!(dp.maps().expire_flows().unwrap(), 1, "an expired flow nobody reused goes");
}

#[test]
fn a_reply_turns_udp_into_a_stream_with_the_longer_timeout() {
    let dp = Datapath::with(WEB, &["web-server"], |c| c.timeouts.udp_single = 50_000_000);
    let out = ip(proto::UDP, a("10.0.0.1"), a("192.0.2.53"), &udp(5353, 53, b"q"));
    let back = ip(proto::UDP, a("192.0.2.53"), a("10.0.0.1"), &udp(53, 5353, b"a"));
    assert_eq!(dp.outbound(&out), Verdict::Pass);
    assert_eq!(dp.inbound_xdp(&back), Verdict::Pass);
    std::thread::sleep(std::time::Duration::from_millis(120));
    assert_eq!(dp.inbound_xdp(&back), Verdict::Pass, "stream timeout (180 s) applies now");
}

#[test]
fn the_most_specific_address_match_is_credited_with_the_flow() {
    let yaml = "groups:\n  a:\n    inbound:\n      - { protocol: tcp, ports: 80, source: [10.0.0.0/8, 192.168.1.5/32] }\n      - { protocol: tcp, ports: 80, source: 10.1.0.0/16 }\n      - { protocol: tcp, ports: 80, source: sg:b }\n      - { protocol: tcp, ports: 80, source: \"fd00::/16\" }\n      - { protocol: tcp, ports: 80, source: \"fd00:1::/64\" }\n  b: {}\nmembers:\n  b: [10.9.9.0/24]\n";
    let dp = Datapath::new(yaml, &["a"]);
    let syn = |src: &str, sport| {
        let dst = if src.contains(':') { "fd00:9::1" } else { "10.0.0.1" };
        ip(proto::TCP, a(src), a(dst), &tcp(sport, 80, TCP_SYN))
    };
    for (src, rule) in [
        ("10.1.2.3", "a/inbound/1"),  // the /16 beats the /8 of the multi-peer rule
        ("10.2.0.1", "a/inbound/0"),  // only the /8
        ("10.9.9.1", "a/inbound/2"),  // a /24 member beats the /8
        ("fd00:1::7", "a/inbound/4"), // /64 beats /16
        ("fd00:2::7", "a/inbound/3"),
    ] {
        let before = dp.rule(rule).flows;
        assert_eq!(dp.inbound_xdp(&syn(src, 1000)), Verdict::Pass, "{src}");
        assert_eq!(dp.rule(rule).flows, before + 1, "{src} credits {rule}");
    }
}

/// `conntrack: { accounting: true }`: every packet a tracked flow passes
/// counts on its entry, per side, from the packet that opened it
/// (handshake, data both ways, and the close); without, nothing counts.
#[test]
fn accounting_counts_each_sides_packets_and_bytes_on_the_flow() {
    let (client, host) = (a("198.51.100.7"), a("10.0.0.1"));
    let frames_from_client = [
        ip(proto::TCP, client, host, &tcp_seq(40000, 80, TCP_SYN, 1000, 0)),
        ip(proto::TCP, client, host, &tcp_seq(40000, 80, TCP_ACK, 1001, 5001)),
        ip(proto::TCP, client, host, &[tcp_seq(40000, 80, TCP_ACK, 1001, 5001), vec![1; 300]].concat()),
        ip(proto::TCP, client, host, &tcp_seq(40000, 80, TCP_FIN | TCP_ACK, 1301, 5001)),
    ];
    let frames_from_host = [
        ip(proto::TCP, host, client, &tcp_seq(80, 40000, TCP_SYN | TCP_ACK, 5000, 1001)),
        ip(proto::TCP, host, client, &[tcp_seq(80, 40000, TCP_ACK, 5001, 1301), vec![2; 1200]].concat()),
    ];
    for accounting in [true, false] {
        let dp = Datapath::with(WEB, &["web-server"], |c| c.accounting = accounting);
        let [syn, ack, data, fin] = &frames_from_client;
        let [syn_ack, reply] = &frames_from_host;
        for (frame, inbound) in [(syn, true), (syn_ack, false), (ack, true), (data, true), (reply, false), (fin, true)]
        {
            let verdict = if inbound { dp.inbound_xdp(frame) } else { dp.outbound(frame) };
            assert_eq!(verdict, Verdict::Pass);
        }
        let flows = dp.maps().flows().unwrap();
        assert_eq!(flows.len(), 1, "{flows:?}");
        let e = flows[0].entry;
        let bytes = |frames: &[&Vec<u8>]| frames.iter().map(|f| f.len() as u64).sum::<u64>();
        if accounting {
            assert_eq!(e.packets, [4, 2], "the opener's four packets, the host's two: {e:?}");
            assert_eq!(e.bytes, [bytes(&[syn, ack, data, fin]), bytes(&[syn_ack, reply])], "{e:?}");
            assert_eq!(FlowState::from_u8(e.state), FlowState::Closing);
            assert_eq!(e.flags & firewall_common::conntrack::entry_flags::CLOSED_BY_FIN, 2, "closed by a FIN: {e:?}");
        } else {
            assert_eq!((e.packets, e.bytes), ([0; 2], [0; 2]), "off: nothing counted: {e:?}");
        }
        assert!(e.opened > 0 && e.opened <= e.last_seen, "{e:?}");
    }
}
