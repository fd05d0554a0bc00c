//! Compiler tests: the seed examples, the map layout, rule-id order, limits,
//! and a property test holding `allowed` and `lookup` to the model's rules.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use firewall_common::policy::{l4_prefix, MAX_RULES};
use ipnet::IpNet;

use super::*;
use crate::{
    model::{RuleRef, Rules},
    policy::{parse_sources, Policy},
};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

fn example(names: &[&str]) -> Policy {
    let sources: Vec<(String, String)> = names
        .iter()
        .map(|n| {
            let path = format!("{}/../policies/{n}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).expect("example file");
            (format!("policies/{n}"), text)
        })
        .collect();
    parse_sources(&sources).expect("example parses")
}

fn policy(text: &str) -> Policy {
    let files = [("t.yaml".into(), text.into())];
    crate::testing::fuzzing::record_seed(&files);
    parse_sources(&files).expect("test policy parses")
}

fn compile(p: &Policy, groups: &[&str]) -> CompiledInterface {
    let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    compile_interface(p, &groups, &BTreeMap::new()).expect("compiles")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// The credited rule's name, as `sgctl explain` prints it.
fn who(c: &CompiledInterface, dir: RuleDirection, proto: u8, port: u16, peer: &str) -> String {
    lookup(c, dir, proto, port.to_be_bytes(), ip(peer))
        .map_or_else(|| "drop".to_owned(), |id| c.rules[id as usize].to_string())
}

use RuleDirection::{Inbound as In, Outbound as Out};

#[test]
fn web_server_example() {
    let p = example(&["web-server.yaml"]);
    assert_eq!(p.interfaces[0].interface, "eth0");
    let c = compile(&p, &["web-server"]);
    let names: Vec<String> = c.rules.iter().map(ToString::to_string).collect();
    // The /32 SSH rule is the most specific; the rest keep file order.
    assert_eq!(
        names,
        ["web-server/inbound/0", "web-server/inbound/1", "web-server/inbound/2", "web-server/outbound/0"]
    );
    assert_eq!(c.rules[2].description.as_deref(), Some("Allow HTTPS (secure web traffic)"));
    assert_eq!(who(&c, In, TCP, 22, "203.0.113.10"), "web-server/inbound/0");
    assert_eq!(who(&c, In, TCP, 22, "203.0.113.11"), "drop");
    assert_eq!(who(&c, In, TCP, 80, "198.51.100.1"), "web-server/inbound/1");
    assert_eq!(who(&c, In, TCP, 80, "2001:db8::1"), "drop");
    assert_eq!(who(&c, In, TCP, 443, "2001:db8::1"), "web-server/inbound/2");
    assert_eq!(who(&c, In, UDP, 443, "198.51.100.1"), "drop");
    assert_eq!(who(&c, Out, UDP, 53, "8.8.8.8"), "web-server/outbound/0");
    assert_eq!(who(&c, Out, TCP, 443, "2001:db8::1"), "drop");
    // 0.0.0.0/0 and ::/0 need no address lookup: they are the every-address
    // sets, and the tries hold only the /32.
    assert!(!c.any4.contains(0) && c.any4.contains(1) && c.any4.contains(2) && c.any4.contains(3));
    assert!(c.any6.contains(2) && !c.any6.contains(1));
    assert_eq!(c.addr4.entries.len(), 1);
    assert!(c.addr4.rules(&c.addr4.entries[0]).contains(0) && c.addr4.entries[0].prefix_len == 32);
    assert!(c.addr6.entries.is_empty());
    assert_eq!(c.timeouts, Timeouts::AWS_DEFAULT);
}

#[test]
fn app_server_and_database_examples() {
    let p = example(&["app-server.yaml", "database.yaml"]);
    assert!(p.interfaces.is_empty());

    let app = compile(&p, &["app-server"]);
    let names: Vec<String> = app.rules.iter().map(ToString::to_string).collect();
    assert_eq!(names, ["app-server/inbound/0", "app-server/outbound/0", "app-server/outbound/1"]);
    assert_eq!(app.rules[0].description.as_deref(), Some("Allow only traffic from ALB"));
    assert_eq!(who(&app, In, TCP, 8080, "10.0.0.10"), "app-server/inbound/0");
    assert_eq!(who(&app, In, TCP, 8080, "fd00::10"), "app-server/inbound/0");
    assert_eq!(who(&app, In, TCP, 8080, "10.0.0.11"), "drop");
    assert_eq!(who(&app, In, TCP, 8081, "10.0.0.10"), "drop");
    // Both outbound rules allow MySQL to the database; the sg: one is credited.
    assert_eq!(who(&app, Out, TCP, 3306, "10.0.2.5"), "app-server/outbound/0");
    assert_eq!(who(&app, Out, TCP, 3306, "fd00:2::5"), "app-server/outbound/0");
    assert_eq!(who(&app, Out, TCP, 443, "192.0.2.1"), "app-server/outbound/1");
    assert_eq!(who(&app, Out, TCP, 3306, "fd00:2::6"), "drop");

    let db = compile(&p, &["database"]);
    assert_eq!(db.rules.len(), 1);
    assert_eq!(who(&db, In, TCP, 3306, "10.0.1.77"), "database/inbound/0");
    assert_eq!(who(&db, In, TCP, 3306, "fd00:1::abcd"), "database/inbound/0");
    assert_eq!(who(&db, In, TCP, 3306, "10.0.2.5"), "drop");
    assert_eq!(who(&db, Out, TCP, 443, "10.0.1.77"), "drop");

    let lb = compile(&p, &["load-balancer"]);
    assert_eq!(who(&lb, In, TCP, 443, "192.0.2.1"), "load-balancer/inbound/0");
    assert_eq!(who(&lb, Out, UDP, 53, "fd00::53"), "load-balancer/outbound/0");
    assert_eq!(
        lb.rules[lb.rule_id("load-balancer", Out, 0).expect("implicit rule") as usize].description.as_deref(),
        Some("Allow all outbound traffic (default)")
    );
}

#[test]
fn local_interface_addresses_join_group_members() {
    let p = example(&["app-server.yaml", "database.yaml"]);
    let local = BTreeMap::from([("app-server".to_owned(), vec!["192.168.7.2/32".parse().expect("net")])]);
    let db = compile_interface(&p, &["database".to_owned()], &local).expect("compiles");
    let dir = In;
    assert!(lookup(&db, dir, TCP, 3306u16.to_be_bytes(), ip("192.168.7.2")).is_some());
    assert!(lookup(&db, dir, TCP, 3306u16.to_be_bytes(), ip("192.168.7.3")).is_none());
}

#[test]
fn l4_prefixes() {
    let p = policy(
        "groups:
  g:
    inbound:
      - { protocol: all, source: 10.0.0.0/8 }
      - { protocol: icmp, source: 10.0.0.0/8 }
      - { protocol: icmp, icmp_type: 8, source: 10.0.0.0/8 }
      - { protocol: icmpv6, icmp_type: 1, icmp_code: 4, source: \"::/0\" }
      - { protocol: 47, source: 10.0.0.0/8 }
      - { protocol: udp, ports: all, source: 10.0.0.0/8 }
      - { protocol: tcp, ports: \"1024-2047\", source: 10.0.0.0/8 }
    outbound: []
",
    );
    let c = compile(&p, &["g"]);
    let mut got: Vec<(u32, [u8; 4])> =
        c.l4.entries
            .iter()
            .map(|e| (e.prefix_len, [e.key.direction, e.key.protocol, e.key.port[0], e.key.port[1]]))
            .collect();
    got.sort_unstable();
    let mut want = vec![
        (l4_prefix::ANY_PROTOCOL, [0, 0, 0, 0]),
        (l4_prefix::ANY_PORT, [0, ICMP, 0, 0]),
        (l4_prefix::ICMP_TYPE, [0, ICMP, 8, 0]),
        (l4_prefix::FULL, [0, ICMPV6, 1, 4]),
        (l4_prefix::ANY_PORT, [0, 47, 0, 0]),
        (l4_prefix::ANY_PORT, [0, UDP, 0, 0]),
        (22, [0, TCP, 4, 0]),
    ];
    want.sort_unstable();
    assert_eq!(got, want);
    // A ping matches icmp-any and type 8; the lowest id in file order wins
    // among equally specific rules (all, then icmp).
    assert_eq!(who(&c, In, ICMP, u16::from_be_bytes([8, 0]), "10.1.1.1"), "g/inbound/0");
    assert_eq!(allowed(&c, In, ICMP, [8, 0], ip("10.1.1.1")).words[0], 0b111);
    assert_eq!(who(&c, In, ICMPV6, u16::from_be_bytes([1, 4]), "fd00::1"), "g/inbound/3");
    assert_eq!(who(&c, In, ICMPV6, u16::from_be_bytes([1, 3]), "fd00::1"), "drop");
}

#[test]
fn most_specific_address_then_file_order_is_credited() {
    let p = policy(
        "groups:
  a:
    inbound:
      - { protocol: tcp, ports: 22, source: 0.0.0.0/0 }
      - { protocol: tcp, ports: 22, source: 10.0.0.0/8 }
      - { protocol: tcp, ports: 22, source: \"fd00::/8\" }
      - { protocol: tcp, ports: 22, source: 10.1.0.0/16 }
      - { protocol: tcp, ports: 22, source: sg:b }
  b:
    inbound:
      - { protocol: tcp, ports: 22, source: 10.1.2.0/24 }
members:
  b: [10.1.2.3]
",
    );
    let c = compile(&p, &["a", "b"]);
    let names: Vec<String> = c.rules.iter().map(ToString::to_string).collect();
    // Ids follow file order; the implicit outbound rules come last.
    assert_eq!(
        names,
        [
            "a/inbound/0",
            "a/inbound/1",
            "a/inbound/2",
            "a/inbound/3",
            "a/inbound/4",
            "b/inbound/0",
            "a/outbound/0",
            "b/outbound/0"
        ]
    );
    assert_eq!(who(&c, In, TCP, 22, "10.1.2.3"), "a/inbound/4");
    assert_eq!(who(&c, In, TCP, 22, "10.1.2.4"), "b/inbound/0");
    assert_eq!(who(&c, In, TCP, 22, "10.1.3.4"), "a/inbound/3");
    assert_eq!(who(&c, In, TCP, 22, "10.2.0.1"), "a/inbound/1");
    assert_eq!(who(&c, In, TCP, 22, "11.0.0.1"), "a/inbound/0");
}

#[test]
fn credit_follows_the_peer_that_matched_not_the_rules_best_peer() {
    let p = policy(
        "groups:
  a:
    inbound:
      - { protocol: tcp, ports: 80, source: [10.0.0.0/8, 192.168.1.5/32] }
      - { protocol: tcp, ports: 80, source: 10.1.0.0/16 }
      - { protocol: tcp, ports: 80, source: sg:b }
      - { protocol: tcp, ports: 80, source: 10.9.9.9/32 }
  b: {}
members:
  b: [10.9.9.0/24]
",
    );
    let c = compile(&p, &["a"]);
    assert_eq!(who(&c, In, TCP, 80, "10.1.2.3"), "a/inbound/1", "/16 beats the /8 of a multi-peer rule");
    assert_eq!(who(&c, In, TCP, 80, "192.168.1.5"), "a/inbound/0");
    assert_eq!(who(&c, In, TCP, 80, "10.2.0.1"), "a/inbound/0");
    assert_eq!(who(&c, In, TCP, 80, "10.9.9.1"), "a/inbound/2", "member /24 beats the /8");
    assert_eq!(who(&c, In, TCP, 80, "10.9.9.9"), "a/inbound/3", "a /32 CIDR beats a /24 member");
}

#[test]
fn prefix_lists_expand_into_the_cidr_maps() {
    let p = policy(
        "groups:
  a:
    inbound:
      - { protocol: udp, ports: dns, source: pl:office }
    outbound: []
prefix_lists:
  office: [192.0.2.0/24, \"2001:db8::/32\"]
",
    );
    let c = compile(&p, &["a"]);
    assert_eq!(c.addr4.entries.len(), 1);
    assert_eq!(c.addr6.entries.len(), 1);
    assert_eq!(who(&c, In, UDP, 53, "192.0.2.9"), "a/inbound/0");
    assert_eq!(who(&c, In, UDP, 53, "2001:db8:1::9"), "a/inbound/0");
    assert_eq!(who(&c, In, UDP, 53, "192.0.3.9"), "drop");
}

#[test]
fn groups_attached_twice_count_once() {
    let p = example(&["web-server.yaml"]);
    let c = compile(&p, &["web-server", "web-server"]);
    assert_eq!(c.rules.len(), 4);
}

#[test]
fn unknown_group_is_an_error() {
    let p = example(&["web-server.yaml"]);
    let e = compile_interface(&p, &["nope".to_owned()], &BTreeMap::new()).expect_err("unknown");
    assert_eq!(e.to_string(), "unknown group \"nope\": it is not defined in the policy");
}

#[test]
fn too_many_rules_names_the_interface() {
    // One group holds at most MAX_RULES (the parser refuses more); two
    // groups together can exceed what one interface holds.
    let mut text = String::from("groups:\n  small: {}\n  big:\n    outbound: []\n    inbound:\n");
    for i in 0..MAX_RULES {
        let _ = writeln!(text, "      - {{ protocol: tcp, ports: {}, source: 10.0.0.0/8 }}", i + 1);
    }
    let p = policy(&text);
    assert_eq!(compile(&p, &["big"]).rules.len(), MAX_RULES);
    // MAX_RULES inbound + small's implicit outbound rule.
    let groups = ["big".to_owned(), "small".to_owned()];
    let e = compile_interface(&p, &groups, &BTreeMap::new()).expect_err("too many").on_interface("eth0");
    assert_eq!(
        e.to_string(),
        "interface eth0: groups big, small have 1025 rules together: at most 1024 fit on one interface"
    );
}

#[test]
fn summary_counts_groups_rules_and_entries() {
    let p = example(&["web-server.yaml"]);
    let s = summarize(&p).expect("compiles");
    let c = compile(&p, &["web-server"]);
    assert_eq!(s, Summary { groups: 1, rules: 4, map_entries: c.map_entries() });
    assert_eq!(c.map_entries(), 4 + 1);
}

#[test]
fn conntrack_settings_reach_the_compiled_interface() {
    let p = policy("groups:\n  a: {}\nconntrack:\n  udp_timeout: 60\n  max_entries: 2048\n");
    let c = compile(&p, &["a"]);
    assert_eq!(c.timeouts.udp_single, 60_000_000_000);
    assert_eq!(c.conntrack_capacity, 2048);
}

#[test]
fn rule_info_serialises_with_lowercase_direction() {
    let info = RuleInfo { group: "g".into(), direction: Out, index: 2, description: None, identity: 0 };
    let json = serde_json::to_string(&info).expect("serialises");
    assert_eq!(json, r#"{"group":"g","direction":"outbound","index":2,"description":null,"identity":0}"#);
}

// ---- property test: the compiled maps agree with the model ----

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Addresses from a small space, so random prefixes overlap often.
fn random_addr(rng: &mut Rng) -> IpAddr {
    let low = rng.next();
    if rng.chance(60) {
        IpAddr::V4(Ipv4Addr::new(10, 0, (low % 4) as u8, (low >> 8) as u8))
    } else {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, (low % 4) as u16, (low >> 16) as u16 & 0x1ff))
    }
}

fn random_net(rng: &mut Rng) -> IpNet {
    let addr = random_addr(rng);
    let len = match addr {
        IpAddr::V4(_) => *rng.pick(&[0u8, 8, 16, 22, 23, 24, 25, 28, 31, 32]),
        IpAddr::V6(_) => *rng.pick(&[0u8, 16, 64, 110, 111, 112, 120, 127, 128]),
    };
    IpNet::new(addr, len).expect("valid length").trunc()
}

const PORT_POOL: &[u16] = &[1, 21, 22, 53, 79, 80, 81, 443, 1023, 1024, 3306, 8000, 8080, 65535];

fn random_ports(rng: &mut Rng) -> String {
    let one = |rng: &mut Rng| match rng.below(6) {
        0 => "all".to_owned(),
        1 => (*rng.pick(&["ssh", "http", "https", "dns", "mysql"])).to_owned(),
        2 | 3 => {
            let (a, b) = (*rng.pick(PORT_POOL), *rng.pick(PORT_POOL));
            format!("\"{}-{}\"", a.min(b), a.max(b))
        }
        _ => rng.pick(PORT_POOL).to_string(),
    };
    let n = 1 + rng.below(3);
    let items: Vec<String> = (0..n).map(|_| one(rng)).collect();
    format!("[{}]", items.join(", "))
}

fn random_rule(rng: &mut Rng, key: &str, groups: &[String]) -> String {
    let proto = *rng.pick(&["tcp", "udp", "icmp", "icmpv6", "all", "47"]);
    let mut rule = format!("protocol: {proto}");
    match proto {
        "tcp" | "udp" => rule += &format!(", ports: {}", random_ports(rng)),
        "icmp" | "icmpv6" if rng.chance(60) => {
            rule += &format!(", icmp_type: {}", rng.pick(&[0u8, 3, 8, 128]));
            if rng.chance(50) {
                rule += &format!(", icmp_code: {}", rng.pick(&[0u8, 1, 4]));
            }
        }
        _ => {}
    }
    let peers: Vec<String> = (0..1 + rng.below(3))
        .map(|_| match rng.below(10) {
            0 | 1 => format!("sg:{}", rng.pick(groups)),
            2 => "pl:list".to_owned(),
            _ => format!("\"{}\"", random_net(rng)),
        })
        .collect();
    format!("{{ {rule}, {key}: [{}] }}", peers.join(", "))
}

fn random_policy(rng: &mut Rng) -> (String, Vec<String>) {
    let groups: Vec<String> = (0..2 + rng.below(3)).map(|i| format!("g{i}")).collect();
    let mut text = String::from("groups:\n");
    for g in &groups {
        let _ = writeln!(text, "  {g}:");
        for (dir, key) in [("inbound", "source"), ("outbound", "destination")] {
            if dir == "outbound" && rng.chance(20) {
                continue; // the implicit allow-all rule
            }
            let _ = writeln!(text, "    {dir}:");
            if rng.chance(10) {
                text.truncate(text.len() - 1);
                text += " []\n";
                continue;
            }
            for _ in 0..1 + rng.below(6) {
                let _ = writeln!(text, "      - {}", random_rule(rng, key, &groups));
            }
        }
    }
    text += "members:\n";
    for g in &groups {
        let nets: Vec<String> = (0..rng.below(3)).map(|_| format!("\"{}\"", random_net(rng))).collect();
        let _ = writeln!(text, "  {g}: [{}]", nets.join(", "));
    }
    let nets: Vec<String> = (0..rng.below(3)).map(|_| format!("\"{}\"", random_net(rng))).collect();
    let _ = writeln!(text, "prefix_lists:\n  list: [{}]", nets.join(", "));
    (text, groups)
}

#[test]
fn lookup_agrees_with_the_model() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut allowed_count = 0;
    for round in 0..150 {
        let (text, groups) = random_policy(&mut rng);
        let p = parse_sources(&[("random.yaml".into(), text.clone())])
            .unwrap_or_else(|e| panic!("round {round}: {e}\n{text}"));
        let attached: Vec<String> = groups.iter().filter(|_| rng.chance(60)).cloned().collect();
        let mut local = BTreeMap::new();
        if rng.chance(50) {
            local.insert(rng.pick(&groups).clone(), vec![random_net(&mut rng)]);
        }
        let c = compile_interface(&p, &attached, &local).expect("compiles");
        let model = Rules::new(&p, &attached, &local).expect("known groups");
        for _ in 0..300 {
            let dir = *rng.pick(&[In, Out]);
            let proto = *rng.pick(&[TCP, UDP, ICMP, ICMPV6, 47, 50]);
            let port = if proto == ICMP || proto == ICMPV6 {
                [*rng.pick(&[0u8, 3, 8, 128, 129]), *rng.pick(&[0u8, 1, 4])]
            } else {
                let p = *rng.pick(PORT_POOL);
                rng.pick(&[p, p.saturating_add(1), p.saturating_sub(1), 0]).to_be_bytes()
            };
            let peer = random_addr(&mut rng);
            let mut want = model.matching(dir, proto, port, peer);
            want.sort();
            let got = allowed(&c, dir, proto, port, peer);
            let name = |id: u32| {
                let r = &c.rules[id as usize];
                RuleRef { group: r.group.clone(), direction: r.direction, index: r.index }
            };
            let mut got_names: Vec<RuleRef> =
                (0..c.rules.len() as u32).filter(|id| got.contains(*id)).map(name).collect();
            got_names.sort();
            let ctx = || format!("{dir} proto {proto} port {port:?} peer {peer}\n{text}");
            assert_eq!(got_names, want, "{}", ctx());
            let credit = model.credited(dir, proto, port, peer);
            let got = lookup(&c, dir, proto, port, peer).map(name);
            assert_eq!(got, credit, "credited rule: {}", ctx());
            if got.is_some() {
                allowed_count += 1;
            }
        }
    }
    // The generator must exercise both verdicts.
    assert!(allowed_count > 5_000 && allowed_count < 40_000, "{allowed_count}");
}
