//! Random policies and the packets that probe them.
//!
//! Policies are generated as a spec and written out as YAML (one or two
//! files), so the parser is exercised too. Addresses grow from a few
//! anchors with prefix lengths of every size, so CIDRs overlap and nest
//! deeply; ports come from a pool of edges, so ranges overlap and touch.
//! Packets aim at the policy's own prefix edges (first and last address,
//! one below and one past), its port edges and its ICMP types; a share are
//! fully random. Otherwise almost every packet would meet default deny.

use std::{
    fmt::{self, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use firewall_ctl::{model::Transport, policy::RuleDirection};
use ipnet::IpNet;
use proptest::{
    collection::vec,
    option,
    prelude::*,
    sample::{select, subsequence},
};

const V4_ANCHORS: [Ipv4Addr; 8] = [
    Ipv4Addr::new(10, 0, 0, 0),
    Ipv4Addr::new(10, 1, 1, 0),
    Ipv4Addr::new(10, 1, 1, 255),
    Ipv4Addr::new(10, 255, 255, 255),
    Ipv4Addr::new(192, 168, 0, 1),
    Ipv4Addr::new(203, 0, 113, 10),
    Ipv4Addr::new(0, 0, 0, 0),
    Ipv4Addr::new(255, 255, 255, 255),
];

const V6_ANCHORS: [Ipv6Addr; 7] = [
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0),
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 1, 0),
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 1, 0xffff),
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
    Ipv6Addr::new(0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff),
    // IPv4-mapped 10.1.1.0: must never meet an IPv4 rule.
    Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x0a01, 0x0100),
];

/// Ports where ranges start, end and touch.
const PORT_EDGES: [u16; 20] =
    [1, 2, 21, 22, 23, 53, 79, 80, 81, 443, 1023, 1024, 1025, 3306, 8000, 8080, 32767, 32768, 65534, 65535];

const SERVICES: [(&str, u16); 9] = [
    ("ssh", 22),
    ("ftp", 21),
    ("sftp", 22),
    ("http", 80),
    ("https", 443),
    ("rdp", 3389),
    ("dns", 53),
    ("mysql", 3306),
    ("postgres", 5432),
];

const ICMP_TYPES: [u8; 12] = [0, 3, 4, 8, 11, 13, 128, 129, 133, 135, 143, 255];

/// Bare protocol numbers: common ones, IPv6 extension header numbers
/// (valid in a rule, never an IPv6 packet's transport) and the extremes.
const NUMBERS: [u8; 14] = [0, 2, 4, 41, 43, 44, 47, 50, 51, 59, 60, 132, 253, 255];

#[derive(Clone, Debug)]
pub enum PortSpec {
    All,
    One(u16),
    Range(u16, u16),
    Service(&'static str),
}

#[derive(Clone, Debug)]
pub enum ProtoSpec {
    /// `numeric`: written as 6 / 17.
    Tcp {
        numeric: bool,
        ports: Vec<PortSpec>,
    },
    Udp {
        numeric: bool,
        ports: Vec<PortSpec>,
    },
    Icmp {
        v6: bool,
        numeric: bool,
        icmp_type: Option<u8>,
        code: Option<u8>,
    },
    /// `alias`: written as -1.
    All {
        alias: bool,
    },
    Number(u8),
}

#[derive(Clone, Debug)]
pub enum PeerSpec {
    Net(IpNet),
    Group(usize),
    List(usize),
}

#[derive(Clone, Debug)]
pub struct RuleSpec {
    pub proto: ProtoSpec,
    pub peers: Vec<PeerSpec>,
}

#[derive(Clone, Debug)]
pub struct GroupSpec {
    /// `None`: the key is absent (no inbound rule; the implicit allow-all
    /// outbound rule).
    pub inbound: Option<Vec<RuleSpec>>,
    pub outbound: Option<Vec<RuleSpec>>,
}

#[derive(Clone, Debug)]
pub struct PolicySpec {
    /// Named `g0`, `g1`, ….
    pub groups: Vec<GroupSpec>,
    /// `members:` per group.
    pub members: Vec<Vec<IpNet>>,
    /// `pl0`, `pl1`, ….
    pub lists: Vec<Vec<IpNet>>,
    /// The groups the interface carries (never none: an interface without
    /// groups is not filtered at all).
    pub attached: Vec<usize>,
    /// Local interface addresses carrying a group (`sg:` members besides
    /// `members:`).
    pub local: Option<(usize, Vec<IpNet>)>,
    /// Groups from this index on are written to the second file.
    pub split: usize,
}

fn group_name(i: usize) -> String {
    format!("g{i}")
}

impl PolicySpec {
    pub fn attached_names(&self) -> Vec<String> {
        self.attached.iter().map(|&i| group_name(i)).collect()
    }

    pub fn local_members(&self) -> std::collections::BTreeMap<String, Vec<IpNet>> {
        self.local.iter().map(|(g, nets)| (group_name(*g), nets.clone())).collect()
    }

    /// The policy as YAML files, `(name, text)`.
    pub fn files(&self) -> Vec<(String, String)> {
        let mut first = String::from("groups:\n");
        let mut second = String::from("groups:\n");
        for (i, group) in self.groups.iter().enumerate() {
            let text = if i < self.split { &mut first } else { &mut second };
            let _ = writeln!(text, "  {}:", group_name(i));
            let _ = writeln!(text, "    description: generated group {i}");
            for (key, peer_key, rules) in
                [("inbound", "source", &group.inbound), ("outbound", "destination", &group.outbound)]
            {
                match rules {
                    None => {}
                    Some(rules) if rules.is_empty() => {
                        let _ = writeln!(text, "    {key}: []");
                    }
                    Some(rules) => {
                        let _ = writeln!(text, "    {key}:");
                        for (n, rule) in rules.iter().enumerate() {
                            let _ = writeln!(
                                text,
                                "      - {{ {}, {peer_key}: {}, description: r{n} }}",
                                rule.proto,
                                peers(&rule.peers)
                            );
                        }
                    }
                }
            }
        }
        let mut rest = String::from("members:\n");
        for (i, nets) in self.members.iter().enumerate() {
            let _ = writeln!(rest, "  {}: {}", group_name(i), net_list(nets));
        }
        rest += "prefix_lists:\n";
        for (i, nets) in self.lists.iter().enumerate() {
            let _ = writeln!(rest, "  pl{i}: {}", net_list(nets));
        }
        if self.split < self.groups.len() {
            // Definitions and references across files, as `apply a.yaml b.yaml` merges them.
            if self.split == 0 {
                first = String::new();
            }
            vec![("one.yaml".into(), first + &rest), ("two.yaml".into(), second)]
        } else {
            vec![("one.yaml".into(), first + &rest)]
        }
    }

    /// Every network the policy names (rules, members, prefix lists, local
    /// addresses): where packets aim.
    pub fn nets(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self.members.iter().chain(&self.lists).flatten().copied().collect();
        out.extend(self.local.iter().flat_map(|(_, nets)| nets.iter().copied()));
        for rule in self.rules() {
            out.extend(rule.peers.iter().filter_map(|p| match p {
                PeerSpec::Net(n) => Some(*n),
                _ => None,
            }));
        }
        out
    }

    fn rules(&self) -> impl Iterator<Item = &RuleSpec> {
        self.groups.iter().flat_map(|g| g.inbound.iter().chain(g.outbound.iter()).flatten())
    }

    /// Destination ports at the edges of the policy's port ranges.
    pub fn ports(&self) -> Vec<u16> {
        let mut out = vec![0, 1, 65535];
        for rule in self.rules() {
            let (ProtoSpec::Tcp { ports, .. } | ProtoSpec::Udp { ports, .. }) = &rule.proto else { continue };
            for p in ports {
                let (first, last) = match p {
                    PortSpec::All => continue,
                    PortSpec::One(p) => (*p, *p),
                    PortSpec::Range(a, b) => (*a, *b),
                    PortSpec::Service(name) => {
                        let port = SERVICES.iter().find(|(n, _)| n == name).map_or(22, |(_, p)| *p);
                        (port, port)
                    }
                };
                out.extend([first.saturating_sub(1), first, last, last.saturating_add(1)]);
            }
        }
        out
    }

    /// `(type, code)` pairs next to the policy's ICMP rules.
    pub fn icmp(&self) -> Vec<(u8, u8)> {
        let mut out = vec![(8, 0), (0, 0), (128, 0), (135, 0)];
        for rule in self.rules() {
            if let ProtoSpec::Icmp { icmp_type: Some(t), code, .. } = rule.proto {
                let c = code.unwrap_or(0);
                out.extend([(t, c), (t, c.wrapping_add(1)), (t.wrapping_add(1), c), (t.wrapping_sub(1), c)]);
            }
        }
        out
    }

    /// Bare protocol numbers the policy names.
    pub fn numbers(&self) -> Vec<u8> {
        let mut out = vec![47];
        out.extend(self.rules().filter_map(|r| match r.proto {
            ProtoSpec::Number(n) => Some(n),
            _ => None,
        }));
        out
    }
}

fn quoted(net: &IpNet) -> String {
    format!("\"{net}\"")
}

fn net_list(nets: &[IpNet]) -> String {
    format!("[{}]", nets.iter().map(quoted).collect::<Vec<_>>().join(", "))
}

fn peers(peers: &[PeerSpec]) -> String {
    let one = |p: &PeerSpec| match p {
        PeerSpec::Net(n) => quoted(n),
        PeerSpec::Group(g) => format!("sg:{}", group_name(*g)),
        PeerSpec::List(l) => format!("pl:pl{l}"),
    };
    match peers {
        [p] => one(p),
        _ => format!("[{}]", peers.iter().map(one).collect::<Vec<_>>().join(", ")),
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::One(p) => write!(f, "{p}"),
            Self::Range(a, b) => write!(f, "\"{a}-{b}\""),
            Self::Service(name) => f.write_str(name),
        }
    }
}

impl fmt::Display for ProtoSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports = |ports: &[PortSpec]| match ports {
            [p] => p.to_string(),
            _ => format!("[{}]", ports.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
        };
        match self {
            Self::Tcp { numeric, ports: p } => {
                write!(f, "protocol: {}, ports: {}", if *numeric { "6" } else { "tcp" }, ports(p))
            }
            Self::Udp { numeric, ports: p } => {
                write!(f, "protocol: {}, ports: {}", if *numeric { "17" } else { "udp" }, ports(p))
            }
            Self::Icmp { v6, numeric, icmp_type, code } => {
                let name = match (v6, numeric) {
                    (false, false) => "icmp",
                    (false, true) => "1",
                    (true, false) => "icmpv6",
                    (true, true) => "58",
                };
                write!(f, "protocol: {name}")?;
                if let Some(t) = icmp_type {
                    write!(f, ", icmp_type: {t}")?;
                    if let Some(c) = code {
                        write!(f, ", icmp_code: {c}")?;
                    }
                }
                Ok(())
            }
            Self::All { alias } => write!(f, "protocol: {}", if *alias { "-1" } else { "all" }),
            Self::Number(n) => write!(f, "protocol: {n}"),
        }
    }
}

// ---- strategies: policies ----

/// A network around an anchor (so networks nest), of any prefix length.
/// One anchor per family is favoured, so that some addresses sit under
/// more nested prefixes than the kernel's crediting walk visits. Single
/// addresses (a /32, a /128) at or beside an anchor are favoured too: the
/// kernel keeps them in a hash of their own, apart from the trie that holds
/// the prefixes covering them, and must still find those prefixes' rules.
pub fn net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        3 => (0u8..=32).prop_map(|len| v4_net(V4_ANCHORS[1], len)),
        3 => (select(&V4_ANCHORS[..]), 0u8..=32).prop_map(|(a, len)| v4_net(a, len)),
        2 => (0u8..=128).prop_map(|len| v6_net(V6_ANCHORS[1], len)),
        2 => (select(&V6_ANCHORS[..]), 0u8..=128).prop_map(|(a, len)| v6_net(a, len)),
        1 => (any::<u32>(), 0u8..=32).prop_map(|(a, len)| v4_net(Ipv4Addr::from(a), len)),
        1 => (any::<u128>(), 0u8..=128).prop_map(|(a, len)| v6_net(Ipv6Addr::from(a), len)),
        2 => (select(&V4_ANCHORS[..]), 0u32..3)
            .prop_map(|(a, d)| v4_net(Ipv4Addr::from(u32::from(a).wrapping_add(d)), 32)),
        2 => (select(&V6_ANCHORS[..]), 0u128..3)
            .prop_map(|(a, d)| v6_net(Ipv6Addr::from(u128::from(a).wrapping_add(d)), 128)),
    ]
}

fn v4_net(addr: Ipv4Addr, len: u8) -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::new(addr, len).expect("length 0-32").trunc())
}

fn v6_net(addr: Ipv6Addr, len: u8) -> IpNet {
    IpNet::V6(ipnet::Ipv6Net::new(addr, len).expect("length 0-128").trunc())
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![3 => select(&PORT_EDGES[..]), 1 => 1u16..=65535]
}

fn port_spec() -> impl Strategy<Value = PortSpec> {
    prop_oneof![
        1 => Just(PortSpec::All),
        3 => port().prop_map(PortSpec::One),
        4 => (port(), port()).prop_map(|(a, b)| PortSpec::Range(a.min(b), a.max(b))),
        1 => select(&SERVICES[..]).prop_map(|(name, _)| PortSpec::Service(name)),
    ]
}

fn icmp_type() -> impl Strategy<Value = u8> {
    prop_oneof![3 => select(&ICMP_TYPES[..]), 1 => any::<u8>()]
}

fn proto_spec() -> impl Strategy<Value = ProtoSpec> {
    let ports = || vec(port_spec(), 1..=3);
    prop_oneof![
        4 => (any::<bool>(), ports()).prop_map(|(n, ports)| ProtoSpec::Tcp { numeric: n && ports.len() == 1, ports }),
        3 => (any::<bool>(), ports()).prop_map(|(n, ports)| ProtoSpec::Udp { numeric: n && ports.len() == 1, ports }),
        3 => (any::<bool>(), any::<u8>(), option::of(icmp_type()), option::of(prop_oneof![Just(0u8), Just(1), Just(4), any::<u8>()]))
            .prop_map(|(v6, n, icmp_type, code)| ProtoSpec::Icmp { v6, numeric: n < 32, icmp_type, code }),
        1 => any::<bool>().prop_map(|alias| ProtoSpec::All { alias }),
        2 => prop_oneof![select(&NUMBERS[..]), any::<u8>().prop_filter_map("a named protocol", |n| {
                (![1, 6, 17, 58].contains(&n)).then_some(n)
            })]
            .prop_map(ProtoSpec::Number),
    ]
}

fn peer_spec(groups: usize, lists: usize) -> impl Strategy<Value = PeerSpec> {
    prop_oneof![
        6 => net().prop_map(PeerSpec::Net),
        2 => (0..groups).prop_map(PeerSpec::Group),
        1 => (0..lists).prop_map(PeerSpec::List),
    ]
}

/// A group's rules in one direction: usually a handful, sometimes enough
/// for the interface's rule sets to span several 64-bit words.
fn rules(groups: usize, lists: usize) -> impl Strategy<Value = Vec<RuleSpec>> {
    let rule = move || {
        (proto_spec(), vec(peer_spec(groups, lists), 1..=3)).prop_map(|(proto, peers)| RuleSpec { proto, peers })
    };
    prop_oneof![5 => vec(rule(), 0..=6), 1 => vec(rule(), 60..=90)]
}

pub fn policy() -> impl Strategy<Value = PolicySpec> {
    (1usize..=4, 1usize..=2).prop_flat_map(|(groups, lists)| {
        let group = (option::weighted(0.9, rules(groups, lists)), option::weighted(0.8, rules(groups, lists)))
            .prop_map(|(inbound, outbound)| GroupSpec { inbound, outbound });
        (
            vec(group, groups),
            vec(vec(net(), 0..=3), groups),
            vec(vec(net(), 0..=4), lists),
            subsequence((0..groups).collect::<Vec<_>>(), 1..=groups),
            option::weighted(0.4, (0..groups, vec(net(), 1..=2))),
            0..=groups,
        )
            .prop_map(|(groups, members, lists, attached, local, split)| PolicySpec {
                groups,
                members,
                lists,
                attached,
                local,
                split,
            })
    })
}

// ---- strategies: packets ----

/// One frame of a case.
#[derive(Clone, Debug)]
pub enum PacketSpec {
    Ip {
        direction: RuleDirection,
        /// The source of an inbound packet, the destination of an outbound one.
        peer: IpAddr,
        /// The host's own address; rules never look at it.
        local: IpAddr,
        transport: Transport,
        shape: Shape,
    },
    /// A frame that carries no IP packet.
    Link { direction: RuleDirection, ether_type: u16 },
}

/// How a packet is wrapped: none of it may change the verdict.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// VLAN tags, 0-2 (802.1ad outside 802.1Q).
    pub vlan_tags: u8,
    /// IPv4: 4-byte option words; IPv6: extension headers (hop-by-hop, then
    /// destination options). 0-2.
    pub ip_extra: u8,
    /// The first fragment of a datagram (MF set, offset 0): judged by its ports.
    pub first_fragment: bool,
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        3 => Just(Shape { vlan_tags: 0, ip_extra: 0, first_fragment: false }),
        1 => (0u8..=2, 0u8..=2, any::<bool>())
            .prop_map(|(vlan_tags, ip_extra, first_fragment)| Shape { vlan_tags, ip_extra, first_fragment }),
    ]
}

/// Where in (or next to) a network a probe lands.
#[derive(Clone, Copy, Debug)]
enum Edge {
    First,
    Last,
    BeforeFirst,
    AfterLast,
    Inside,
}

fn edge_addr(net: IpNet, edge: Edge, random: u128) -> IpAddr {
    let (first, last, bits) = match net {
        IpNet::V4(n) => (u128::from(u32::from(n.network())), u128::from(u32::from(n.broadcast())), 32),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast()), 128),
    };
    let max = if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 };
    let a = match edge {
        Edge::First => first,
        Edge::Last => last,
        Edge::BeforeFirst => first.wrapping_sub(1) & max,
        Edge::AfterLast => last.wrapping_add(1) & max,
        Edge::Inside => first + random % (last - first).saturating_add(1).max(1),
    };
    if bits == 32 {
        IpAddr::V4(Ipv4Addr::from(a as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(a))
    }
}

fn random_addr(v4: bool, random: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(random as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(random))
    }
}

fn peer(nets: Vec<IpNet>) -> impl Strategy<Value = IpAddr> {
    let edge = select(&[Edge::First, Edge::Last, Edge::BeforeFirst, Edge::AfterLast, Edge::Inside, Edge::Inside][..]);
    prop_oneof![
        8 => (select(nets), edge.clone(), any::<u128>()).prop_map(|(n, e, r)| edge_addr(n, e, r)),
        2 => (net(), edge, any::<u128>()).prop_map(|(n, e, r)| edge_addr(n, e, r)),
        1 => (any::<bool>(), any::<u128>()).prop_map(|(v4, r)| random_addr(v4, r)),
    ]
}

fn transport(spec: &PolicySpec) -> impl Strategy<Value = Transport> {
    let port = prop_oneof![4 => select(spec.ports()), 1 => any::<u16>()];
    let icmp = prop_oneof![4 => select(spec.icmp()), 1 => (icmp_type(), any::<u8>())];
    prop_oneof![
        3 => port.clone().prop_map(|dport| Transport::Tcp { dport }),
        3 => port.prop_map(|dport| Transport::Udp { dport }),
        2 => icmp.clone().prop_map(|(icmp_type, code)| Transport::Icmp { icmp_type, code }),
        2 => icmp.prop_map(|(icmp_type, code)| Transport::Icmpv6 { icmp_type, code }),
        2 => prop_oneof![select(spec.numbers()), select(&NUMBERS[..]), any::<u8>()].prop_map(Transport::Other),
    ]
}

fn direction() -> impl Strategy<Value = RuleDirection> {
    prop_oneof![Just(RuleDirection::Inbound), Just(RuleDirection::Outbound)]
}

/// A packet aimed at `spec`. Transports that cannot exist are replaced:
/// named protocols as numbers, and IPv6 extension header numbers (walked,
/// or dropped as malformed), by SCTP (132).
pub fn packet(spec: &PolicySpec) -> impl Strategy<Value = PacketSpec> {
    let mut nets = spec.nets();
    if nets.is_empty() {
        nets.push(v4_net(V4_ANCHORS[1], 24));
    }
    let ip = (direction(), peer(nets), any::<u128>(), transport(spec), shape()).prop_map(
        |(direction, peer, local, t, shape)| {
            let transport = match t {
                Transport::Other(1 | 6 | 17 | 58) => Transport::Other(132),
                Transport::Other(0 | 43 | 44 | 60 | 135 | 139 | 140 | 253 | 254) if peer.is_ipv6() => {
                    Transport::Other(132)
                }
                t => t,
            };
            PacketSpec::Ip { direction, peer, local: random_addr(peer.is_ipv4(), local), transport, shape }
        },
    );
    prop_oneof![
        40 => ip,
        1 => (direction(), select(&[0x0806u16, 0x88cc][..]))
            .prop_map(|(direction, ether_type)| PacketSpec::Link { direction, ether_type }),
    ]
}
