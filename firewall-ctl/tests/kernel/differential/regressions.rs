//! One explicit test per disagreement between kernel, `simulate` and the
//! model found so far (the differential test's minimal cases, made
//! readable): each packet through the real programs, `simulate` and the
//! model, which must all say what the test says.

use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr};

use firewall_ctl::{
    compile,
    model::{Model, Transport, Verdict},
    policy::{self, RuleDirection},
};

use crate::differential::{
    expected,
    generate::{PacketSpec, Shape},
    judge,
    kernel::{self, Hook, Kernel},
};

const PLAIN: Shape = Shape { vlan_tags: 0, ip_extra: 0, first_fragment: false };

pub(crate) fn packet(direction: RuleDirection, peer: &str, local: &str, transport: Transport) -> PacketSpec {
    let addr = |s: &str| -> IpAddr { s.parse().expect("test address") };
    PacketSpec::Ip { direction, peer: addr(peer), local: addr(local), transport, shape: PLAIN }
}

/// Runs each `(packet, verdict)` through every hook of its direction,
/// `simulate` and the model; `verdict` is a rule name, "drop" or
/// "unfiltered".
pub(crate) fn assert_cases(yaml: &str, groups: &[&str], cases: &[(PacketSpec, &str)]) {
    assert!(nix::unistd::Uid::effective().is_root(), "the differential test loads eBPF programs: run it as root");
    let policy = policy::parse_sources(&[("test.yaml".into(), yaml.into())]).expect("test policy parses");
    let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    let local = BTreeMap::new();
    let compiled = compile::compile_interface(&policy, &groups, &local).expect("compiles");
    let model = Model::new(&policy, &groups, &local).expect("known groups");
    let mut kernel = Kernel::load(compiled.clone()).expect("programs load and verify");
    for (i, (packet, want)) in cases.iter().enumerate() {
        let (direction, verdict, simulated) = judge(&model, &compiled, packet);
        let said = match &verdict {
            Verdict::Allowed(rule) => rule.to_string(),
            Verdict::Denied => "drop".to_owned(),
            Verdict::Unfiltered(_) => "unfiltered".to_owned(),
        };
        assert_eq!(said, *want, "model, case {i}: {packet:?}");
        if let Some(simulated) = simulated {
            assert_eq!(simulated.map_or_else(|| "drop".to_owned(), |r| r.to_string()), *want, "simulate, case {i}");
        }
        let hooks: &[Hook] = match direction {
            RuleDirection::Inbound => &[Hook::XdpIngress, Hook::TcIngress],
            RuleDirection::Outbound => &[Hook::TcEgress],
        };
        for &hook in hooks {
            let got = kernel.run(hook, &kernel::frame(packet, 40000 + i as u16)).expect("runs");
            assert_eq!(got, expected(&verdict, packet), "kernel ({hook:?}), case {i}: {packet:?}");
        }
    }
}

use RuleDirection::{Inbound as In, Outbound as Out};

/// Found by the differential test: the kernel read no type or code from
/// protocol 1 over IPv6 (or 58 over IPv4) and matched it as type 0 code 0,
/// so a rule for ICMP type 0 allowed every such packet and a rule for any
/// other type none. Fixed in firewall-ebpf/src/parse.rs.
#[test]
fn icmp_over_the_other_ip_version_is_matched_by_its_type_and_code() {
    let yaml = r#"groups:
  g0:
    inbound:
      - { protocol: icmpv6, icmp_type: 135, source: 0.0.0.0/0 }
      - { protocol: icmp, icmp_type: 0, source: "::/0" }
    outbound:
      - { protocol: icmp, icmp_type: 255, icmp_code: 0, destination: "::/0" }
"#;
    let icmp = |icmp_type, code| Transport::Icmp { icmp_type, code };
    let icmpv6 = |icmp_type, code| Transport::Icmpv6 { icmp_type, code };
    assert_cases(
        yaml,
        &["g0"],
        &[
            (packet(Out, "2001:db8::1", "2001:db8::2", icmp(255, 0)), "g0/outbound/0"),
            (packet(Out, "2001:db8::1", "2001:db8::2", icmp(0, 0)), "drop"),
            (packet(In, "2001:db8::1", "2001:db8::2", icmp(0, 0)), "g0/inbound/1"),
            (packet(In, "2001:db8::1", "2001:db8::2", icmp(8, 0)), "drop"),
            // Neighbour discovery only over IPv6: judged here, and allowed.
            (packet(In, "192.0.2.1", "10.0.0.1", icmpv6(135, 0)), "g0/inbound/0"),
            (packet(In, "192.0.2.1", "10.0.0.1", icmpv6(136, 0)), "drop"),
            (packet(In, "fe80::1", "ff02::1", icmpv6(136, 0)), "unfiltered"),
        ],
    );
}

/// The old reference matcher credited the most specific match at any
/// depth; the kernel tells 8 tiers apart: the 7 longest prefix lengths that
/// contain the peer, one each, then everything less specific (longer chains
/// and /0 peers) together, where the first allowing rule in file order
/// wins. The model says what the kernel does (docs/cli.md); this holds all
/// three to it on both sides of the cap.
#[test]
fn credit_past_the_kernels_walk_goes_to_the_first_rule_in_file_order() {
    for (udp_tiers, want) in [(6, "g/inbound/1"), (7, "g/inbound/0"), (8, "g/inbound/0")] {
        let mut yaml = String::from(
            "groups:\n  g:\n    inbound:\n      - { protocol: tcp, ports: 22, source: 0.0.0.0/0 }\n      - { protocol: tcp, ports: 22, source: 10.0.0.0/8 }\n",
        );
        for len in [16, 24, 25, 26, 27, 28, 29, 30, 31, 32].into_iter().take(udp_tiers) {
            let net = ipnet::Ipv4Net::new([10, 1, 1, 0].into(), len).expect("length").trunc();
            let _ = writeln!(yaml, "      - {{ protocol: udp, ports: 53, source: \"{net}\" }}");
        }
        let ssh = |peer| packet(In, peer, "192.0.2.1", Transport::Tcp { dport: 22 });
        assert_cases(&yaml, &["g"], &[(ssh("10.1.1.0"), want), (ssh("10.9.0.1"), "g/inbound/1")]);
    }
}

/// Seen on real hosts: a host sends its first MLD reports from `::`, while
/// its link-local address is still tentative (RFC 3590), and the kernel
/// judged them by the rules (dropped, `dropped_no_rule`). Reports from `::`
/// now pass like other link control; queries and done messages from `::`
/// are still judged, as a host would not take them.
#[test]
fn mld_reports_from_the_unspecified_address_pass_unjudged() {
    let yaml = "groups:\n  g0:\n    inbound: []\n    outbound: []\n";
    let icmpv6 = |icmp_type| Transport::Icmpv6 { icmp_type, code: 0 };
    assert_cases(
        yaml,
        &["g0"],
        &[
            (packet(Out, "ff02::16", "::", icmpv6(143)), "unfiltered"),
            (packet(In, "::", "ff02::16", icmpv6(143)), "unfiltered"),
            (packet(Out, "ff02::1:ff00:1", "::", icmpv6(131)), "unfiltered"),
            (packet(In, "::", "ff02::1", icmpv6(130)), "drop"),
            (packet(In, "::", "ff02::2", icmpv6(132)), "drop"),
            (packet(In, "2001:db8::1", "ff02::16", icmpv6(143)), "drop"),
        ],
    );
}
