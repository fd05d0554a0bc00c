//! Single addresses (an IPv4 /32, an IPv6 /128) live in the kernel's
//! single-address hashes, apart from the tries that hold the prefixes
//! covering them: each packet below goes through the real programs,
//! `simulate` and the model, which must all say the same (the random
//! policies of the differential test favour such addresses too).

use std::fmt::Write as _;

use firewall_ctl::model::Transport;

use crate::differential::regressions::{assert_cases, packet};

const LOCAL4: &str = "192.0.2.1";
const LOCAL6: &str = "2001:db8:ffff::1";

fn tcp(dport: u16) -> Transport {
    Transport::Tcp { dport }
}

/// A host entry carries the rules of every prefix above it, and credits its
/// own rules first; the hash of one family never answers for the other,
/// IPv4-mapped IPv6 addresses included.
#[test]
fn host_entries_carry_the_prefixes_above_them_in_both_families() {
    let yaml = r#"groups:
  g:
    inbound:
      - { protocol: tcp, ports: 22, source: 10.1.1.0/24 }
      - { protocol: tcp, ports: 80, source: 10.1.1.7/32 }
      - { protocol: tcp, ports: [22, 80], source: 10.0.0.0/8 }
      - { protocol: tcp, ports: 22, source: "fd00::/64" }
      - { protocol: tcp, ports: 80, source: "fd00::7/128" }
      - { protocol: tcp, ports: 443, source: "::ffff:10.1.1.7/128" }
      - { protocol: tcp, ports: 443, source: 10.1.1.8/32 }
      - { protocol: tcp, ports: 8080, source: 0.0.0.0/0 }
"#;
    use firewall_ctl::policy::RuleDirection::Inbound as In;
    let v4 = |peer, port| packet(In, peer, LOCAL4, tcp(port));
    let v6 = |peer, port| packet(In, peer, LOCAL6, tcp(port));
    assert_cases(
        yaml,
        &["g"],
        &[
            // The host's own rule, then the /24's, then the /8's.
            (v4("10.1.1.7", 80), "g/inbound/1"),
            (v4("10.1.1.7", 22), "g/inbound/0"),
            (v4("10.1.1.6", 80), "g/inbound/2"),
            (v4("10.1.1.6", 22), "g/inbound/0"),
            (v4("10.1.1.7", 8080), "g/inbound/7"),
            (v4("10.1.1.7", 23), "drop"),
            // An IPv4-mapped /128 never matches an IPv4 packet, nor an IPv4 /32 an IPv6 one.
            (v4("10.1.1.7", 443), "drop"),
            (v6("::ffff:10.1.1.7", 443), "g/inbound/5"),
            (v6("::ffff:10.1.1.8", 443), "drop"),
            (v4("10.1.1.8", 443), "g/inbound/6"),
            (v6("::ffff:10.1.1.7", 80), "drop"),
            // IPv6: the host, its /64, a neighbour.
            (v6("fd00::7", 80), "g/inbound/4"),
            (v6("fd00::7", 22), "g/inbound/3"),
            (v6("fd00::8", 80), "drop"),
            (v6("fd00::8", 22), "g/inbound/3"),
        ],
    );
}

/// The same address named by a prefix list, a group's members and a CIDR
/// rule is one entry holding all three (its rules in file order within the
/// host's tier); a member under a prefix-list network still gets the
/// network's rules; the outbound direction looks the destination up the
/// same way.
#[test]
fn one_host_named_by_lists_members_and_rules_is_one_entry() {
    let yaml = r#"groups:
  g:
    inbound:
      - { protocol: tcp, ports: 80, source: pl:hosts }
      - { protocol: tcp, ports: [80, 81], source: sg:fleet }
      - { protocol: tcp, ports: 82, source: 10.2.0.0/16 }
    outbound:
      - { protocol: udp, ports: 53, destination: sg:fleet }
      - { protocol: udp, ports: [53, 54], destination: "2001:db8::/32" }
  fleet: {}
members:
  fleet: [10.2.3.4, "2001:db8::53"]
prefix_lists:
  hosts: [10.2.3.4/32, 10.9.9.9/32, "2001:db8::53/128"]
"#;
    use firewall_ctl::policy::RuleDirection::{Inbound as In, Outbound as Out};
    let v4 = |peer, port| packet(In, peer, LOCAL4, tcp(port));
    let dns = |peer, port| packet(Out, peer, LOCAL6, Transport::Udp { dport: port });
    assert_cases(
        yaml,
        &["g"],
        &[
            (v4("10.2.3.4", 80), "g/inbound/0"),
            (v4("10.2.3.4", 81), "g/inbound/1"),
            (v4("10.2.3.4", 82), "g/inbound/2"),
            (v4("10.9.9.9", 80), "g/inbound/0"),
            (v4("10.9.9.9", 81), "drop"),
            (v4("10.2.3.5", 80), "drop"),
            (v4("10.2.3.5", 82), "g/inbound/2"),
            (dns("2001:db8::53", 53), "g/outbound/0"),
            (dns("2001:db8::53", 54), "g/outbound/1"),
            (dns("2001:db8::54", 53), "g/outbound/1"),
            (dns("2001:db9::53", 53), "drop"),
        ],
    );
}

/// A host under more nested prefixes than the kernel's crediting walk
/// visits: its own tier comes first, the rest as docs/cli.md says.
#[test]
fn a_host_under_deep_nesting_credits_as_a_prefix_would() {
    let mut yaml = String::from(
        "groups:\n  g:\n    inbound:\n      - { protocol: tcp, ports: 22, source: 0.0.0.0/0 }\n      - { protocol: tcp, ports: 22, source: 10.0.0.0/8 }\n",
    );
    for len in [16, 24, 25, 26, 27, 28, 29, 30, 31] {
        let net = ipnet::Ipv4Net::new([10, 1, 1, 0].into(), len).expect("length").trunc();
        let _ = writeln!(yaml, "      - {{ protocol: udp, ports: 53, source: \"{net}\" }}");
    }
    yaml += "      - { protocol: udp, ports: 53, source: 10.1.1.0/32 }\n";
    yaml += "      - { protocol: tcp, ports: 443, source: 10.1.1.0/32 }\n";
    use firewall_ctl::policy::RuleDirection::Inbound as In;
    let to = |peer, t| packet(In, peer, LOCAL4, t);
    let dns = Transport::Udp { dport: 53 };
    assert_cases(
        &yaml,
        &["g"],
        &[
            (to("10.1.1.0", dns), "g/inbound/11"),
            (to("10.1.1.1", dns), "g/inbound/10"),
            (to("10.1.1.0", tcp(443)), "g/inbound/12"),
            // Past the walk: the first allowing rule in file order.
            (to("10.1.1.0", tcp(22)), "g/inbound/0"),
        ],
    );
}

/// Where the entries really are: single addresses in the hashes, none in
/// the tries; a family without single addresses has no hash installed (the
/// datapath skips the lookup).
#[test]
fn single_addresses_are_in_the_hashes_and_only_there() {
    use aya::maps::{lpm_trie::Key, HashMap, LpmTrie, Map, MapData};
    use firewall_common::{
        map_names,
        policy::{Addr4, AddrEntry},
    };
    use firewall_ctl::{compile, policy, testing::testrun::Loaded};

    assert!(nix::unistd::Uid::effective().is_root(), "the differential test loads eBPF programs: run it as root");
    let yaml = "groups:\n  g:\n    inbound:\n      - { protocol: tcp, ports: 80, source: [10.1.1.7/32, 10.1.1.0/24, 10.1.1.9/32, \"fd00::/64\"] }\n";
    let policy = policy::parse_sources(&[("test.yaml".into(), yaml.into())]).expect("test policy parses");
    let compiled = compile::compile_interface(&policy, &["g".to_owned()], &Default::default()).expect("compiles");
    let loaded = Loaded::new(&compiled).expect("programs load and verify");
    let maps = loaded.maps();
    let inner = |name: &str| maps.outer(name).expect("outer map").get(&0, 0);
    let hosts: HashMap<MapData, Addr4, AddrEntry> =
        HashMap::try_from(Map::HashMap(inner(map_names::HOST4).expect("an IPv4 hash"))).expect("a hash");
    let mut keys: Vec<Addr4> = hosts.keys().map(|k| k.expect("key")).collect();
    keys.sort_unstable();
    assert_eq!(keys, [[10, 1, 1, 7], [10, 1, 1, 9]]);
    let trie: LpmTrie<MapData, Addr4, AddrEntry> =
        LpmTrie::try_from(Map::LpmTrie(inner(map_names::ADDR4).expect("the IPv4 trie"))).expect("a trie");
    let lengths: Vec<u32> = trie.keys().map(|k: Result<Key<Addr4>, _>| k.expect("key").prefix_len()).collect();
    assert_eq!(lengths, [24]);
    assert!(inner(map_names::HOST6).is_err(), "no IPv6 single address, no IPv6 hash");
}

/// Thousands of single addresses in both families, named by a prefix list
/// and a group's members, every other address of their networks left to
/// the trie: each host gets its own rule, the network's rule and, where it
/// is a member, the group's; each neighbour only the network's (the trie's
/// answer for an address the hash does not hold).
#[test]
fn many_hosts_each_find_their_entry_and_their_neighbours_the_trie() {
    const HOSTS: u16 = 3000;
    let v4 = |i: u16| format!("10.50.{}.{}", i / 100, (i % 100) * 2 + 1);
    let v4_neighbour = |i: u16| format!("10.50.{}.{}", i / 100, (i % 100) * 2 + 2);
    let v6 = |i: u16| format!("fd50::{:x}", u32::from(i) * 2 + 1);
    let v6_neighbour = |i: u16| format!("fd50::{:x}", u32::from(i) * 2 + 2);
    let member = |i: u16| i.is_multiple_of(7);
    let mut yaml = String::from(
        "groups:
  g:
    inbound:
      - { protocol: tcp, ports: 80, source: pl:many }
      - { protocol: tcp, ports: 22, source: [10.50.0.0/16, \"fd50::/64\"] }
      - { protocol: tcp, ports: 443, source: sg:fleet }
  fleet: {}
members:
  fleet:
",
    );
    for i in (0..HOSTS).filter(|i| member(*i)) {
        let _ = writeln!(yaml, "    - {}\n    - \"{}\"", v4(i), v6(i));
    }
    yaml += "prefix_lists:\n  many:\n";
    for i in 0..HOSTS {
        let _ = writeln!(yaml, "    - {}/32\n    - \"{}/128\"", v4(i), v6(i));
    }
    use firewall_ctl::policy::RuleDirection::Inbound as In;
    let mut cases = Vec::new();
    // Every 7th host is a member: a sample that holds members and others.
    for i in (0..HOSTS).step_by(3) {
        for (host, neighbour, local) in [(v4(i), v4_neighbour(i), LOCAL4), (v6(i), v6_neighbour(i), LOCAL6)] {
            let tls = if member(i) { "g/inbound/2" } else { "drop" };
            cases.push((packet(In, &host, local, tcp(80)), "g/inbound/0"));
            cases.push((packet(In, &host, local, tcp(22)), "g/inbound/1"));
            cases.push((packet(In, &host, local, tcp(443)), tls));
            cases.push((packet(In, &neighbour, local, tcp(80)), "drop"));
            cases.push((packet(In, &neighbour, local, tcp(22)), "g/inbound/1"));
        }
    }
    assert_cases(&yaml, &["g"], &cases);
}
