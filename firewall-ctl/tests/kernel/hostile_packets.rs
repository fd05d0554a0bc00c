//! The hostile-packet corpus (issue 6, item 7): every packet shape an
//! outsider can send, run through the real programs with BPF_PROG_TEST_RUN,
//! each with the verdict reason it must get (semantics.md items 6-15).
//!
//! The corpus is a table of named steps (direction, frame, expected
//! reason). Steps run in order, so a step can rely on the flows that
//! earlier ones opened; each flow gets ports of its own. The whole table
//! runs twice, on fresh maps each time: with inbound steps through the XDP
//! program, and through the tc ingress program (outbound steps always go
//! through tc egress). The reason a step got is the counter that moved.
//!
//! Devices without an Ethernet header (tun, WireGuard): `BPF_PROG_TEST_RUN`
//! always hands an skb program a frame that starts with an Ethernet header,
//! and takes `skb->protocol` from it. Those steps run on a copy loaded as
//! for such a device but with the network header at offset 14
//! (`Loaded::new_bare_ip`): the same code path as on a real tun device,
//! where the offset is 0. `tests/e2e/tun.rs` covers a real one end to end.
#![expect(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]
use std::{collections::BTreeMap, net::IpAddr};

use firewall_common::{
    conntrack::{FlowState, Table},
    counters::{reason_slot, Reason},
    proto,
    tcp::TCP_PSH,
    Direction,
};
use firewall_ctl::{
    compile, datapath, policy,
    testing::{
        frames::*,
        testrun::{Loaded, TC_ACT_SHOT, TC_ACT_UNSPEC, XDP_DROP, XDP_PASS},
    },
};
use Reason::*;

const POLICY: &str = "\
groups:
  g:
    inbound:
      - { protocol: tcp, ports: 80, source: [0.0.0.0/0, \"::/0\"] }
      - { protocol: udp, ports: 5000, source: [0.0.0.0/0, \"::/0\"] }
      - { protocol: icmp, icmp_type: 8, source: 0.0.0.0/0 }
      - { protocol: icmpv6, icmp_type: 128, source: \"::/0\" }
    outbound:
      - { protocol: all, destination: [0.0.0.0/0, \"::/0\"] }
";

const REMOTE4: &str = "198.51.100.7";
const HOST4: &str = "10.0.0.1";
const REMOTE6: &str = "2001:db8::7";
const HOST6: &str = "2001:db8::1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    In,
    Out,
}

/// Which ingress program a step may run through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hooks {
    Both,
    /// The kernel's skb test harness refuses an IPv4 or IPv6 header cut
    /// short (EINVAL) before any program sees it; XDP runs it. (Frames
    /// shorter than an Ethernet header no harness runs, and no NIC
    /// delivers; the parser drops them all the same.)
    XdpOnly,
}

struct Step {
    name: String,
    dir: Dir,
    hooks: Hooks,
    frame: Vec<u8>,
    want: Reason,
}

/// Builds the table; hands out ports so that flows never collide.
struct Corpus {
    steps: Vec<Step>,
    next_port: u16,
}

impl Corpus {
    fn port(&mut self) -> u16 {
        self.next_port += 1;
        self.next_port
    }

    fn step(&mut self, name: impl Into<String>, dir: Dir, frame: Vec<u8>, want: Reason) {
        self.steps.push(Step { name: name.into(), dir, hooks: Hooks::Both, frame, want });
    }

    fn xdp_only(&mut self, name: impl Into<String>, frame: Vec<u8>, want: Reason) {
        self.steps.push(Step { name: name.into(), dir: Dir::In, hooks: Hooks::XdpOnly, frame, want });
    }
}

fn a(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v6(s: &str) -> [u8; 16] {
    match a(s) {
        IpAddr::V6(v) => v.octets(),
        IpAddr::V4(_) => panic!("{s} is not IPv6"),
    }
}

fn v4(s: &str) -> [u8; 4] {
    match a(s) {
        IpAddr::V4(v) => v.octets(),
        IpAddr::V6(_) => panic!("{s} is not IPv4"),
    }
}

/// Ethernet + IPv4 header (with `options`) + `l4`, total length as given.
fn ipv4_with(protocol: u8, options: &[u8], l4: &[u8]) -> Vec<u8> {
    let mut f = ethernet(ETH_P_IP);
    f.extend_from_slice(&ipv4_header(protocol, v4(REMOTE4), v4(HOST4), l4.len(), options));
    f.extend_from_slice(l4);
    f
}

/// Ethernet + IPv6 header + extension headers (`(next header of the
/// header before, bytes)` pairs are built by the caller) + `l4`.
fn ipv6_chain(first_next: u8, chain: &[u8], l4: &[u8]) -> Vec<u8> {
    let mut f = ethernet(ETH_P_IPV6);
    f.extend_from_slice(&ipv6_header(first_next, v6(REMOTE6), v6(HOST6), chain.len() + l4.len()));
    f.extend_from_slice(chain);
    f.extend_from_slice(l4);
    f
}

/// An 8-byte extension header of the generic format (next header, length 0).
fn ext(next: u8) -> Vec<u8> {
    vec![next, 0, 1, 4, 0, 0, 0, 0]
}

/// An IPv6 fragment header.
fn frag_header(next: u8, offset_units: u16, more: bool, id: u32) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(&((offset_units << 3) | u16::from(more)).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h
}

/// `frame` with its IPv4 total length (or IPv6 payload length) overwritten.
fn with_ip_len(mut frame: Vec<u8>, len: u16) -> Vec<u8> {
    let at = if frame[12..14] == ETH_P_IP.to_be_bytes() { 14 + 2 } else { 14 + 4 };
    frame[at..at + 2].copy_from_slice(&len.to_be_bytes());
    frame
}

/// `frame` (Ethernet + IPv4 without options) as fragment: `offset` in 8-byte
/// units, more fragments or not, identification `id`.
fn v4_fragment(mut frame: Vec<u8>, id: u16, offset: u16, more: bool) -> Vec<u8> {
    frame[14 + 4..14 + 6].copy_from_slice(&id.to_be_bytes());
    frame[14 + 6..14 + 8].copy_from_slice(&(offset | if more { 0x2000 } else { 0 }).to_be_bytes());
    frame
}

fn tcp4(sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    ip(proto::TCP, a(REMOTE4), a(HOST4), &tcp_seq(sport, dport, flags, seq, ack))
}

fn tcp4_out(sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    ip(proto::TCP, a(HOST4), a(REMOTE4), &tcp_seq(sport, dport, flags, seq, ack))
}

fn link_layer(c: &mut Corpus) {
    let mut arp = ethernet(ETH_P_ARP);
    arp.extend_from_slice(&[0u8; 28]);
    c.step("ARP passes unfiltered", Dir::In, arp, PassUnfiltered);
    let mut lldp = ethernet(0x88cc);
    lldp.extend_from_slice(&[0u8; 32]);
    c.step("LLDP passes unfiltered", Dir::In, lldp, PassUnfiltered);

    let tagged = |tpids: &[u16], l3: &[u8]| {
        let mut f = ethernet(tpids.first().copied().unwrap_or(ETH_P_IP));
        for (i, _) in tpids.iter().enumerate() {
            f.extend_from_slice(&[0, 10]);
            let next = tpids.get(i + 1).copied().unwrap_or(ETH_P_IP);
            f.extend_from_slice(&next.to_be_bytes());
        }
        f.extend_from_slice(l3);
        f
    };
    for (name, tpids) in [
        ("802.1Q", vec![ETH_P_8021Q]),
        ("802.1ad", vec![0x88a8]),
        ("802.1ad + 802.1Q", vec![0x88a8, ETH_P_8021Q]),
        ("802.1Q + 802.1Q", vec![ETH_P_8021Q, ETH_P_8021Q]),
    ] {
        let p = c.port();
        let allowed = tcp4(p, 80, TCP_SYN, 1, 0);
        c.step(format!("{name}: allowed SYN is judged"), Dir::In, tagged(&tpids, &allowed[14..]), PassNewFlow);
        let denied = tcp4(p, 8080, TCP_SYN, 1, 0);
        c.step(format!("{name}: denied SYN is judged"), Dir::In, tagged(&tpids, &denied[14..]), DropNoRule);
    }
    let p = c.port();
    let allowed = tcp4(p, 80, TCP_SYN, 1, 0);
    c.step(
        "three VLAN tags: dropped",
        Dir::In,
        tagged(&[0x88a8, ETH_P_8021Q, ETH_P_8021Q], &allowed[14..]),
        DropMalformed,
    );
    let mut cut = ethernet(ETH_P_8021Q);
    cut.extend_from_slice(&[0, 10]);
    c.step("VLAN tag cut short", Dir::In, cut, DropMalformed);
}

fn ipv4(c: &mut Corpus) {
    let p = c.port();
    let syn = tcp4(p, 80, TCP_SYN, 1, 0);
    c.xdp_only("IPv4 header cut short", syn[..14 + 12].to_vec(), DropMalformed);
    for ihl in [0u8, 1, 4] {
        let mut f = syn.clone();
        f[14] = 0x40 | ihl;
        c.step(format!("IPv4 IHL {ihl} < 5"), Dir::In, f, DropMalformed);
    }
    let mut beyond = syn.clone();
    beyond[14] = 0x4f; // 60 bytes of header in a 40-byte packet
    c.step("IPv4 IHL beyond the packet", Dir::In, beyond, DropMalformed);
    let mut version = syn.clone();
    version[14] = 0x65;
    c.step("IPv6 version in an IPv4 EtherType", Dir::In, version, DropMalformed);
    c.step("IPv4 total length beyond the frame", Dir::In, with_ip_len(syn.clone(), 41), DropMalformed);
    c.step("IPv4 total length below the IP header", Dir::In, with_ip_len(syn.clone(), 19), DropMalformed);
    c.step("IPv4 total length 0", Dir::In, with_ip_len(syn.clone(), 0), DropMalformed);
    c.step("IPv4 total length below the TCP header", Dir::In, with_ip_len(syn.clone(), 30), DropMalformed);
    let mut padded = syn.clone();
    padded.extend_from_slice(&[0u8; 6]);
    c.step("IPv4 in a padded frame (total length below the frame)", Dir::In, padded, PassNewFlow);
    for options in [vec![1u8, 1, 1, 0], vec![7, 7, 4, 0, 0, 0, 0, 0], vec![1u8; 40]] {
        let p = c.port();
        let f = ipv4_with(proto::TCP, &options, &tcp_seq(p, 80, TCP_SYN, 1, 0));
        c.step(format!("IPv4 with {} bytes of options, allowed", options.len()), Dir::In, f, PassNewFlow);
        let f = ipv4_with(proto::TCP, &options, &tcp_seq(p, 8080, TCP_SYN, 1, 0));
        c.step(format!("IPv4 with {} bytes of options, denied", options.len()), Dir::In, f, DropNoRule);
    }
}

fn ipv6(c: &mut Corpus) {
    let p = c.port();
    let syn = ip(proto::TCP, a(REMOTE6), a(HOST6), &tcp_seq(p, 80, TCP_SYN, 1, 0));
    c.xdp_only("IPv6 header cut short", syn[..14 + 30].to_vec(), DropMalformed);
    c.step("IPv6 payload length beyond the frame", Dir::In, with_ip_len(syn.clone(), 21), DropMalformed);
    c.step("IPv6 payload length 0 (jumbogram)", Dir::In, with_ip_len(syn.clone(), 0), DropMalformed);
    c.step("IPv6 payload length below the TCP header", Dir::In, with_ip_len(syn, 12), DropMalformed);

    // Chains of 1 to 8 extension headers (destination options, routing,
    // hop-by-hop first), then TCP: judged; a ninth: dropped.
    for n in 1..=9usize {
        let p = c.port();
        let kinds: Vec<u8> = (0..n)
            .map(|i| {
                if i == 0 {
                    0
                } else if i % 2 == 1 {
                    60
                } else {
                    43
                }
            })
            .collect();
        let mut chain = Vec::new();
        for i in 0..n {
            chain.extend_from_slice(&ext(kinds.get(i + 1).copied().unwrap_or(proto::TCP)));
        }
        let want = if n <= 8 { PassNewFlow } else { DropMalformed };
        let f = ipv6_chain(kinds[0], &chain, &tcp_seq(p, 80, TCP_SYN, 1, 0));
        c.step(format!("IPv6 with {n} extension headers"), Dir::In, f, want);
        if n <= 8 {
            let f = ipv6_chain(kinds[0], &chain, &tcp_seq(p, 8080, TCP_SYN, 1, 0));
            c.step(format!("IPv6 with {n} extension headers, denied port"), Dir::In, f, DropNoRule);
        }
    }
    let p = c.port();
    let tcp = tcp_seq(p, 80, TCP_SYN, 1, 0);
    c.step(
        "IPv6 hop-by-hop after another header",
        Dir::In,
        ipv6_chain(60, &[ext(0), ext(proto::TCP)].concat(), &tcp),
        DropMalformed,
    );
    for unknown in [135u8, 139, 140, 253, 254] {
        c.step(
            format!("IPv6 extension header {unknown} (not walked)"),
            Dir::In,
            ipv6_chain(60, &ext(unknown), &[ext(proto::TCP), tcp.clone()].concat()),
            DropMalformed,
        );
    }
    let mut long = ext(proto::TCP);
    long[1] = 200; // 1608 bytes claimed
    c.step("IPv6 extension header longer than the packet", Dir::In, ipv6_chain(60, &long, &tcp), DropMalformed);
    c.step(
        "IPv6 atomic fragment header after destination options",
        Dir::In,
        ipv6_chain(60, &[ext(44), frag_header(proto::TCP, 0, false, 1)].concat(), &tcp),
        PassNewFlow,
    );
    let p = c.port();
    c.step(
        "IPv6 two fragment headers",
        Dir::In,
        ipv6_chain(
            44,
            &[frag_header(44, 0, false, 2), frag_header(proto::TCP, 0, false, 3)].concat(),
            &tcp_seq(p, 80, TCP_SYN, 1, 0),
        ),
        DropMalformed,
    );
    let p = c.port();
    c.step(
        "IPv6 fragment header before hop-by-hop",
        Dir::In,
        ipv6_chain(44, &[frag_header(0, 0, false, 4), ext(proto::TCP)].concat(), &tcp_seq(p, 80, TCP_SYN, 1, 0)),
        DropMalformed,
    );
    c.step("ESP is judged as protocol 50: no rule", Dir::In, ipv6_chain(50, &[], &[0u8; 16]), DropNoRule);
}

fn l4_headers(c: &mut Corpus) {
    let p = c.port();
    let syn = tcp4(p, 80, TCP_SYN, 1, 0);
    let cut = |f: &[u8], n: usize| with_ip_len(f[..14 + 20 + n].to_vec(), (20 + n) as u16);
    c.step("TCP header cut short (10 bytes)", Dir::In, cut(&syn, 10), DropMalformed);
    c.step("TCP header cut short (19 bytes)", Dir::In, cut(&syn, 19), DropMalformed);
    let mut doff = syn.clone();
    doff[14 + 20 + 12] = 0x40;
    c.step("TCP data offset 4", Dir::In, doff, DropMalformed);
    let mut doff = syn.clone();
    doff[14 + 20 + 12] = 0xf0;
    c.step("TCP data offset beyond the packet", Dir::In, doff, DropMalformed);
    let udp = ip(proto::UDP, a(REMOTE4), a(HOST4), &udp(p, 5000, b"x"));
    c.step("UDP header cut short", Dir::In, cut(&udp, 4), DropMalformed);
    let echo = ip(proto::ICMP, a(REMOTE4), a(HOST4), &icmp(8, 0, p, b""));
    c.step("ICMP header cut short", Dir::In, cut(&echo, 4), DropMalformed);
    let echo6 = ip(proto::ICMPV6, a(REMOTE6), a(HOST6), &icmp(128, 0, p, b""));
    let cut6 = with_ip_len(echo6[..14 + 40 + 4].to_vec(), 4);
    c.step("ICMPv6 header cut short", Dir::In, cut6, DropMalformed);
    // Window scale options are read on SYNs; odd options must not matter.
    for (name, options) in [
        ("window scale 7", vec![2u8, 4, 5, 0xb4, 1, 3, 3, 7]),
        ("window scale 200 (taken as 14)", vec![1u8, 3, 3, 200]),
        ("option length 0", vec![8u8, 0, 0, 0]),
        ("option length beyond the header", vec![1u8, 1, 3, 40]),
        ("40 NOPs", vec![1u8; 40]),
    ] {
        let p = c.port();
        let f = ip(proto::TCP, a(REMOTE4), a(HOST4), &tcp_with_options(p, 80, TCP_SYN, 1, 0, &options));
        c.step(format!("SYN with TCP options: {name}"), Dir::In, f, PassNewFlow);
    }
}

fn fragments(c: &mut Corpus) {
    let p = c.port();
    let udp_first = |id: u16, port: u16, payload: &[u8]| {
        v4_fragment(ip(proto::UDP, a(REMOTE4), a(HOST4), &udp(p, port, payload)), id, 0, true)
    };
    let later = |id: u16, offset: u16, more: bool| {
        let f = ipv4_with(proto::UDP, &[], &[7u8; 16]);
        v4_fragment(f, id, offset, more)
    };
    c.step("later fragment before its first", Dir::In, later(100, 3, false), DropFragment);
    c.step("first fragment, allowed port", Dir::In, udp_first(100, 5000, &[7u8; 16]), PassNewFlow);
    c.step("the later fragment sent again after the first", Dir::In, later(100, 3, false), PassFragment);
    c.step("a fragment overlapping the first (offset 1)", Dir::In, later(100, 1, true), PassFragment);
    c.step("first fragment, denied port", Dir::In, udp_first(101, 6000, &[7u8; 16]), DropNoRule);
    c.step("its later fragment", Dir::In, later(101, 3, false), DropFragment);
    let first_tiny = with_ip_len(
        v4_fragment(ip(proto::UDP, a(REMOTE4), a(HOST4), &udp(p, 5000, b"")), 102, 0, true)[..14 + 20 + 2].to_vec(),
        22,
    );
    c.step("first fragment too short for the ports", Dir::In, first_tiny, DropMalformed);
    let tcp_first = v4_fragment(tcp4(c.port(), 80, TCP_SYN, 1, 0), 103, 0, true);
    let tcp_first = with_ip_len(tcp_first[..14 + 20 + 8].to_vec(), 28);
    c.step("TCP first fragment without the whole TCP header", Dir::In, tcp_first, DropMalformed);
    let mut tiny = v4_fragment(ipv4_with(proto::TCP, &[], &[0u8; 16]), 104, 1, false);
    tiny[14 + 9] = proto::TCP;
    c.step("TCP fragment at offset 8 (RFC 1858)", Dir::In, tiny, DropMalformed);

    // IPv6: destination options after the fragment header (the first
    // fragment's L4 protocol is UDP, every fragment's next header is 60).
    let p = c.port();
    let first = ipv6_chain(44, &[frag_header(60, 0, true, 77), ext(proto::UDP)].concat(), &udp(p, 5000, &[1u8; 8]));
    c.step("IPv6 first fragment, extension header after the fragment header", Dir::In, first, PassNewFlow);
    let later = ipv6_chain(44, &frag_header(60, 3, false, 77), &[1u8; 16]);
    c.step("its later fragment (keyed by the same next header)", Dir::In, later, PassFragment);
    let unknown = ipv6_chain(44, &frag_header(60, 3, false, 78), &[1u8; 16]);
    c.step("IPv6 later fragment of no datagram", Dir::In, unknown, DropFragment);
    let first_short = ipv6_chain(44, &frag_header(proto::TCP, 0, true, 79), &[0u8; 8]);
    c.step("IPv6 first fragment without the whole TCP header", Dir::In, first_short, DropMalformed);
    let tiny = ipv6_chain(44, &frag_header(proto::TCP, 1, false, 80), &[0u8; 16]);
    c.step("IPv6 TCP fragment at offset 8", Dir::In, tiny, DropMalformed);
}

/// What a TCP flag combination must get: on a new flow to an allowed port,
/// and as the opener's next packet on an established flow.
fn tcp_flag_verdicts(flags: u8) -> (Reason, Reason) {
    let checked = flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK | 0x20);
    let valid = matches!(checked, 0x02 | 0x22 | 0x12 | 0x04 | 0x14 | 0x11 | 0x31 | 0x10 | 0x30);
    if !valid {
        return (DropMalformed, DropMalformed);
    }
    let new_flow = match checked & (TCP_SYN | TCP_RST | TCP_ACK) {
        // SYN-ACK and RST never open a flow.
        0x12 => PassUntracked,
        r if r & TCP_RST != 0 => PassUntracked,
        _ => PassNewFlow,
    };
    // A SYN on an established flow passes and changes nothing (RFC 5961
    // §4: the host answers with a challenge ACK; semantics.md item 10).
    let tracked = if checked & TCP_SYN != 0 { PassOutOfWindow } else { PassTracked };
    (new_flow, tracked)
}

fn tcp_flags(c: &mut Corpus) {
    for flags in 0..=255u8 {
        let (new_flow, tracked) = tcp_flag_verdicts(flags);
        let p = c.port();
        c.step(format!("TCP flags {flags:#04x} on a new flow"), Dir::In, tcp4(p, 80, flags, 1, 0), new_flow);
        let denied = if new_flow == DropMalformed { DropMalformed } else { DropNoRule };
        c.step(format!("TCP flags {flags:#04x} to a denied port"), Dir::In, tcp4(p, 8080, flags, 1, 0), denied);
        // An established flow of its own: SYN, SYN-ACK, ACK.
        let p = c.port();
        c.step("handshake: SYN", Dir::In, tcp4(p, 80, TCP_SYN, 1000, 0), PassNewFlow);
        c.step("handshake: SYN-ACK", Dir::Out, tcp4_out(80, p, TCP_SYN | TCP_ACK, 5000, 1001), PassTracked);
        c.step("handshake: ACK", Dir::In, tcp4(p, 80, TCP_ACK, 1001, 5001), PassTracked);
        c.step(
            format!("TCP flags {flags:#04x} on an established flow"),
            Dir::In,
            tcp4(p, 80, flags, 1001, 5001),
            tracked,
        );
    }
}

fn tcp_states(c: &mut Corpus) {
    let p = c.port();
    c.step("blind: SYN", Dir::In, tcp4(p, 80, TCP_SYN, 1000, 0), PassNewFlow);
    c.step(
        "blind: SYN-ACK that does not ack the SYN",
        Dir::Out,
        tcp4_out(80, p, TCP_SYN | TCP_ACK, 5000, 77),
        PassOutOfWindow,
    );
    c.step(
        "blind: RST that does not ack the SYN",
        Dir::Out,
        tcp4_out(80, p, TCP_RST | TCP_ACK, 0, 77),
        PassOutOfWindow,
    );
    c.step("blind: RST without ACK before the SYN-ACK", Dir::Out, tcp4_out(80, p, TCP_RST, 0, 0), PassOutOfWindow);
    c.step("blind: the real SYN-ACK", Dir::Out, tcp4_out(80, p, TCP_SYN | TCP_ACK, 5000, 1001), PassTracked);
    c.step("blind: ACK guessing the wrong number", Dir::In, tcp4(p, 80, TCP_ACK, 1001, 999_999), PassOutOfWindow);
    c.step("blind: the opener's ACK", Dir::In, tcp4(p, 80, TCP_ACK, 1001, 5001), PassTracked);
    c.step(
        "blind: RST far outside the window",
        Dir::In,
        tcp4(p, 80, TCP_RST | TCP_ACK, 2_000_000_000, 5001),
        PassOutOfWindow,
    );
    c.step(
        "blind: FIN far outside the window",
        Dir::In,
        tcp4(p, 80, TCP_FIN | TCP_ACK, 2_000_000_000, 5001),
        PassOutOfWindow,
    );
    c.step("blind: data of the flow", Dir::Out, tcp4_out(80, p, TCP_ACK, 5001, 1001), PassTracked);
    c.step("blind: a RST in the window", Dir::In, tcp4(p, 80, TCP_RST | TCP_ACK, 1001, 5001), PassTracked);
    c.step(
        "blind: a new SYN on the closing flow is judged again",
        Dir::In,
        tcp4(p, 80, TCP_SYN, 90_000, 0),
        PassNewFlow,
    );
    // A flow picked up mid-stream (no SYN seen): established once the
    // other side answers.
    let p = c.port();
    c.step("pickup: an ACK opens it", Dir::Out, tcp4_out(p, 443, TCP_ACK, 7, 9), PassNewFlow);
    c.step("pickup: the answer", Dir::In, tcp4(443, p, TCP_ACK, 9, 8), PassTracked);
}

fn icmp_flows(c: &mut Corpus) {
    // The host pings out (outbound: all), identifier 7: only the remote's
    // echo reply with that identifier rides the flow.
    let echo_out = ip(proto::ICMP, a(HOST4), a(REMOTE4), &icmp(8, 0, 7, b"ping"));
    c.step("host's echo request opens a flow", Dir::Out, echo_out.clone(), PassNewFlow);
    for t in 0..=255u8 {
        let f = ip(proto::ICMP, a(REMOTE4), a(HOST4), &icmp(t, 0, 7, b"ping"));
        let want = match t {
            0 => PassTracked,
            // The echo rule: a request the other way round is a flow of its own.
            8 => PassNewFlow,
            _ => DropNoRule,
        };
        c.step(format!("ICMP type {t} with the echo flow's identifier"), Dir::In, f, want);
    }
    c.step("the host's echo request again rides its flow", Dir::Out, echo_out, PassTracked);
    let other = ip(proto::ICMP, a(REMOTE4), a(HOST4), &icmp(0, 0, 8, b"ping"));
    c.step("an echo reply with another identifier", Dir::In, other, DropNoRule);

    // An allowed echo with identifier 0 opens nothing that other ICMP rides.
    let echo0 = ip(proto::ICMP, a(REMOTE4), a(HOST4), &icmp(8, 0, 0, b""));
    c.step("remote's echo request, identifier 0", Dir::In, echo0, PassNewFlow);
    for (t, name) in [(13u8, "timestamp request"), (5, "redirect"), (9, "router advertisement"), (0, "echo reply")] {
        let f = ip(proto::ICMP, a(REMOTE4), a(HOST4), &icmp(t, 0, 0, b""));
        c.step(format!("{name}, identifier 0, after it"), Dir::In, f, DropNoRule);
    }
    let reply0 = ip(proto::ICMP, a(HOST4), a(REMOTE4), &icmp(0, 0, 0, b""));
    c.step("the host's echo reply, identifier 0", Dir::Out, reply0, PassTracked);

    // ICMPv6 alike.
    let echo6 = ip(proto::ICMPV6, a(HOST6), a(REMOTE6), &icmp(128, 0, 9, b"ping"));
    c.step("host's ICMPv6 echo request", Dir::Out, echo6, PassNewFlow);
    for t in 0..=255u8 {
        let f = ip(proto::ICMPV6, a(REMOTE6), a(HOST6), &icmp(t, 0, 9, b"ping"));
        let want = match t {
            129 => PassTracked,
            128 => PassNewFlow,
            // Link control with hop limit 64 is not link control.
            _ => DropNoRule,
        };
        c.step(format!("ICMPv6 type {t} with the echo flow's identifier"), Dir::In, f, want);
    }
}

fn related_errors(c: &mut Corpus) {
    let router4 = "192.0.2.254";
    let router6 = "2001:db8::fe";
    // About a TCP flow the host opened.
    let p = c.port();
    let syn_out = tcp4_out(p, 443, TCP_SYN, 1, 0);
    c.step("host opens a TCP flow", Dir::Out, syn_out.clone(), PassNewFlow);
    let unreachable = |quoted: &[u8]| ip(proto::ICMP, a(router4), a(HOST4), &icmp(3, 4, 0, &quote(quoted)));
    c.step("fragmentation needed about it", Dir::In, unreachable(&syn_out), PassRelated);
    let forged = tcp4(p, 443, TCP_SYN, 1, 0); // "sent" by the remote, not the host
    c.step("an error about a packet the host did not send", Dir::In, unreachable(&forged), DropNoRule);
    // About the host's echo request.
    let echo_out = ip(proto::ICMP, a(HOST4), a(REMOTE4), &icmp(8, 0, 31, b"ping"));
    c.step("host pings", Dir::Out, echo_out.clone(), PassNewFlow);
    c.step("host unreachable about the ping", Dir::In, unreachable(&echo_out), PassRelated);
    // IPv6 Packet Too Big about a fragmented UDP datagram the host sent,
    // quoting its first fragment, then a later one.
    let p = c.port();
    let first = {
        let mut f = ethernet(ETH_P_IPV6);
        let body = [frag_header(proto::UDP, 0, true, 555), udp(p, 5353, &[0u8; 8])].concat();
        f.extend_from_slice(&ipv6_header(44, v6(HOST6), v6(REMOTE6), body.len()));
        f.extend_from_slice(&body);
        f
    };
    c.step("host sends a fragmented UDP datagram", Dir::Out, first.clone(), PassNewFlow);
    // Packet Too Big quotes as much of the packet as fits.
    let ptb = |quoted: &[u8]| ip(proto::ICMPV6, a(router6), a(HOST6), &icmp(2, 0, 0, &quoted[14..]));
    c.step("packet too big quoting its first fragment", Dir::In, ptb(&first), PassRelated);
    let later = {
        let mut f = ethernet(ETH_P_IPV6);
        let body = [frag_header(proto::UDP, 2, false, 555), vec![0u8; 16]].concat();
        f.extend_from_slice(&ipv6_header(44, v6(HOST6), v6(REMOTE6), body.len()));
        f.extend_from_slice(&body);
        f
    };
    c.step("host sends the later fragment", Dir::Out, later.clone(), PassFragment);
    c.step("packet too big quoting the later fragment", Dir::In, ptb(&later), PassRelated);
    // Behind extension headers.
    let p = c.port();
    let with_ext = {
        let mut f = ethernet(ETH_P_IPV6);
        let body = [ext(43), ext(proto::UDP), udp(p, 5353, &[0u8; 8])].concat();
        f.extend_from_slice(&ipv6_header(60, v6(HOST6), v6(REMOTE6), body.len()));
        f.extend_from_slice(&body);
        f
    };
    c.step("host sends UDP behind extension headers", Dir::Out, with_ext.clone(), PassNewFlow);
    c.step("packet too big quoting it", Dir::In, ptb(&with_ext), PassRelated);
}

fn corpus() -> Vec<Step> {
    let mut c = Corpus { steps: Vec::new(), next_port: 20000 };
    link_layer(&mut c);
    ipv4(&mut c);
    ipv6(&mut c);
    l4_headers(&mut c);
    fragments(&mut c);
    tcp_flags(&mut c);
    tcp_states(&mut c);
    icmp_flows(&mut c);
    related_errors(&mut c);
    c.steps
}

fn load(bare_ip: bool) -> Loaded {
    assert!(nix::unistd::Uid::effective().is_root(), "the corpus loads eBPF programs: run it as root");
    let policy = policy::parse_sources(&[("corpus.yaml".into(), POLICY.into())]).expect("policy parses");
    let compiled = compile::compile_interface(&policy, &["g".to_owned()], &BTreeMap::new()).expect("compiles");
    if bare_ip {
        Loaded::new_bare_ip(&compiled).expect("programs load and verify")
    } else {
        Loaded::new(&compiled).expect("programs load and verify")
    }
}

/// Runs `frame` through `program` and returns the one reason counter
/// (of `direction`) that moved.
fn run(loaded: &Loaded, program: &str, direction: Direction, frame: &[u8]) -> (u32, Reason) {
    let before = loaded.maps().reason_counters().unwrap();
    let (action, _) = loaded
        .run(program, frame, 1)
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {program} on {} bytes {frame:02x?}: {e:#}", frame.len()));
    let after = loaded.maps().reason_counters().unwrap();
    let moved: Vec<Reason> = Reason::ALL
        .into_iter()
        .filter(|r| {
            let i = reason_slot(direction, *r) as usize;
            after[i].packets != before[i].packets
        })
        .collect();
    assert_eq!(moved.len(), 1, "exactly one reason counter moves per packet, got {moved:?}");
    (action, moved[0])
}

fn drops(action: u32, program: &str) -> bool {
    match (program == datapath::PROG_INGRESS_XDP, action) {
        (true, XDP_DROP) | (false, TC_ACT_SHOT) => true,
        (true, XDP_PASS) | (false, TC_ACT_UNSPEC) => false,
        _ => panic!("{program}: unexpected action {action}"),
    }
}

/// Runs the corpus with inbound steps through `ingress`; returns the
/// failures, one line each.
fn run_corpus(ingress: &str) -> (usize, Vec<String>) {
    let loaded = load(false);
    let mut failures = Vec::new();
    let mut ran = 0;
    for step in corpus() {
        let (program, direction) = match step.dir {
            Dir::In if step.hooks == Hooks::XdpOnly && ingress != datapath::PROG_INGRESS_XDP => continue,
            Dir::In => (ingress, Direction::Inbound),
            Dir::Out => (datapath::PROG_EGRESS_TC, Direction::Outbound),
        };
        ran += 1;
        let (action, got) = run(&loaded, program, direction, &step.frame);
        if got != step.want || drops(action, program) != step.want.is_drop() {
            failures.push(format!(
                "{ingress}: {}: want {}, got {} (action {action})",
                step.name,
                step.want.name(),
                got.name()
            ));
        }
    }
    (ran, failures)
}

#[test]
fn every_hostile_packet_gets_its_reason_through_xdp() {
    let (ran, failures) = run_corpus(datapath::PROG_INGRESS_XDP);
    eprintln!("{ran} steps through XDP");
    assert!(failures.is_empty(), "{} of {ran} steps failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_hostile_packet_gets_its_reason_through_tc() {
    let (ran, failures) = run_corpus(datapath::PROG_INGRESS_TC);
    eprintln!("{ran} steps through tc");
    assert!(failures.is_empty(), "{} of {ran} steps failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn established_only_after_the_handshake_and_not_shortened_by_blind_packets() {
    let loaded = load(false);
    let state = |sport: u16| {
        let flows = loaded.maps().flows().unwrap();
        let flow = flows
            .iter()
            .find(|f| f.key.protocol == proto::TCP && (f.key.port_lo == sport || f.key.port_hi == sport))
            .unwrap_or_else(|| panic!("no flow with port {sport}"));
        FlowState::from_u8(flow.entry.state)
    };
    let xdp = datapath::PROG_INGRESS_XDP;
    let egress = datapath::PROG_EGRESS_TC;
    run(&loaded, xdp, Direction::Inbound, &tcp4(41000, 80, TCP_SYN, 1000, 0));
    assert_eq!(state(41000), FlowState::Opening, "SYN seen");
    run(&loaded, egress, Direction::Outbound, &tcp4_out(80, 41000, TCP_SYN | TCP_ACK, 5000, 1001));
    assert_eq!(state(41000), FlowState::SynReceived, "SYN-ACK seen: still not established");
    run(&loaded, xdp, Direction::Inbound, &tcp4(41000, 80, TCP_ACK, 1001, 5001));
    assert_eq!(state(41000), FlowState::Established, "the opener's ACK completes the handshake");
    for flags in [TCP_RST, TCP_RST | TCP_ACK, TCP_FIN | TCP_ACK] {
        let (_, reason) = run(&loaded, xdp, Direction::Inbound, &tcp4(41000, 80, flags, 3_000_000_000, 5001));
        assert_eq!(reason, PassOutOfWindow, "flags {flags:#x}");
        assert_eq!(state(41000), FlowState::Established, "a blind {flags:#x} changes nothing");
    }
    run(&loaded, xdp, Direction::Inbound, &tcp4(41000, 80, TCP_FIN | TCP_ACK, 1001, 5001));
    assert_eq!(state(41000), FlowState::Closing, "a FIN in the window closes it");

    // Window scaling: with both SYNs asking for shift 7, a window of 512
    // allows 64 KiB.
    let opts = [1u8, 3, 3, 7];
    let syn = ip(proto::TCP, a(REMOTE4), a(HOST4), &tcp_with_options(41001, 80, TCP_SYN, 10, 0, &opts));
    run(&loaded, xdp, Direction::Inbound, &syn);
    let syn_ack = ip(proto::TCP, a(HOST4), a(REMOTE4), &tcp_with_options(80, 41001, TCP_SYN | TCP_ACK, 70, 11, &opts));
    run(&loaded, egress, Direction::Outbound, &syn_ack);
    let mut ack = tcp4(41001, 80, TCP_ACK, 11, 71);
    ack[14 + 20 + 14..14 + 20 + 16].copy_from_slice(&512u16.to_be_bytes());
    run(&loaded, xdp, Direction::Inbound, &ack);
    assert_eq!(state(41001), FlowState::Established);
    let mut far = tcp4_out(80, 41001, TCP_ACK, 71 + 60_000, 11);
    far[14 + 20 + 14..14 + 20 + 16].copy_from_slice(&512u16.to_be_bytes());
    let (_, reason) = run(&loaded, egress, Direction::Outbound, &far);
    assert_eq!(reason, PassTracked, "60000 bytes ahead fits a window of 512 << 7");
}

#[test]
fn devices_without_ethernet_header_are_judged_through_tc() {
    let loaded = load(true);
    let ingress = datapath::PROG_INGRESS_TC;
    let egress = datapath::PROG_EGRESS_TC;
    let cases: Vec<(&str, Dir, Vec<u8>, Reason)> = vec![
        ("allowed SYN", Dir::In, tcp4(42000, 80, TCP_SYN, 1, 0), PassNewFlow),
        ("denied SYN", Dir::In, tcp4(42000, 8080, TCP_SYN, 1, 0), DropNoRule),
        ("the allowed flow's SYN-ACK", Dir::Out, tcp4_out(80, 42000, TCP_SYN | TCP_ACK, 9, 2), PassTracked),
        ("host's own connection out", Dir::Out, tcp4_out(42001, 22, TCP_SYN, 1, 0), PassNewFlow),
        ("its SYN-ACK", Dir::In, tcp4(22, 42001, TCP_SYN | TCP_ACK, 7, 2), PassTracked),
        (
            "IPv6 allowed",
            Dir::In,
            ip(proto::TCP, a(REMOTE6), a(HOST6), &tcp_seq(42002, 80, TCP_SYN, 1, 0)),
            PassNewFlow,
        ),
        ("IPv6 denied", Dir::In, ip(proto::UDP, a(REMOTE6), a(HOST6), &udp(1, 53, b"")), DropNoRule),
        (
            "ARP protocol on a bare-IP device",
            Dir::In,
            {
                let mut f = ethernet(ETH_P_ARP);
                f.extend_from_slice(&[0u8; 28]);
                f
            },
            DropMalformed,
        ),
        (
            "IPv6 header under protocol IPv4",
            Dir::In,
            {
                let mut f = ip(proto::TCP, a(REMOTE6), a(HOST6), &tcp_seq(42003, 80, TCP_SYN, 1, 0));
                f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
                f
            },
            DropMalformed,
        ),
        (
            "a VLAN tag is not parsed there",
            Dir::In,
            {
                let inner = tcp4(42004, 80, TCP_SYN, 1, 0);
                let mut f = ethernet(ETH_P_8021Q);
                f.extend_from_slice(&[0, 10, 0x08, 0]);
                f.extend_from_slice(&inner[14..]);
                f
            },
            DropMalformed,
        ),
        (
            "IPv4 total length beyond the packet",
            Dir::In,
            with_ip_len(tcp4(42005, 80, TCP_SYN, 1, 0), 60),
            DropMalformed,
        ),
    ];
    let mut failures = Vec::new();
    for (name, dir, frame, want) in &cases {
        let (program, direction) =
            if *dir == Dir::In { (ingress, Direction::Inbound) } else { (egress, Direction::Outbound) };
        let (action, got) = run(&loaded, program, direction, frame);
        if got != *want || drops(action, program) != want.is_drop() {
            failures.push(format!("{name}: want {}, got {} (action {action})", want.name(), got.name()));
        }
    }
    assert!(failures.is_empty(), "bare-IP device:\n{}", failures.join("\n"));
}

/// TCP states against a model of semantics.md items 10 and 12: a flow is
/// brought to each state (SYN seen, SYN-ACK seen, established, closing by
/// a FIN, closing by a RST), then one segment is injected, RST, RST-ACK,
/// SYN or SYN-ACK, from either side, with each sequence number an attacker
/// may try (the exact one, the receiver's last acknowledgement, just past
/// it, inside the window, just behind it, far out). The model says which
/// reason it gets, which state and table the flow is in afterwards, and an
/// established flow must still carry its next real packet.
#[test]
fn tcp_states_follow_the_model_for_every_rst_and_syn() {
    let loaded = load(false);
    let xdp = datapath::PROG_INGRESS_XDP;
    let egress = datapath::PROG_EGRESS_TC;
    let mut port = 45000u16;
    let mut checked = 0;
    let mut failures = Vec::new();
    for prefix in Prefix::ALL {
        for side in [Side::Opener, Side::Responder] {
            for flags in [TCP_RST, TCP_RST | TCP_ACK, TCP_SYN, TCP_SYN | TCP_ACK] {
                for seq in SeqChoice::ALL {
                    port += 1;
                    let mut flow = TcpFlow::new(port);
                    for (dir, frame) in flow.prefix(prefix) {
                        let program = if dir == Dir::In { xdp } else { egress };
                        let direction = if dir == Dir::In { Direction::Inbound } else { Direction::Outbound };
                        run(&loaded, program, direction, &frame);
                    }
                    let case = format!("{prefix:?}, {side:?} sends {flags:#04x} at {seq:?}");
                    let Some(want) = model(prefix, side, flags, flow.is_exact(side, seq)) else { continue };
                    checked += 1;
                    let (dir, frame) = flow.inject(side, flags, seq);
                    let (program, direction) =
                        if dir == Dir::In { (xdp, Direction::Inbound) } else { (egress, Direction::Outbound) };
                    let (_, reason) = run(&loaded, program, direction, &frame);
                    let got = flow_of(&loaded, port);
                    if reason != want.reason || got != Some((want.state, want.table)) {
                        failures.push(format!(
                            "{case}: want {} -> {:?} in {:?}, got {} -> {got:?}",
                            want.reason.name(),
                            want.state,
                            want.table,
                            reason.name()
                        ));
                        continue;
                    }
                    if want.state == FlowState::Established {
                        let (_, reason) = run(&loaded, xdp, Direction::Inbound, &flow.opener_data());
                        if reason != PassTracked {
                            failures.push(format!("{case}: the next real packet got {}", reason.name()));
                        }
                    }
                }
            }
        }
    }
    eprintln!("{checked} cases against the model");
    assert!(checked >= 150, "the model covers {checked} cases");
    assert!(failures.is_empty(), "{} cases differ from the model:\n{}", failures.len(), failures.join("\n"));
}

/// The states the model brings a flow to before the injected segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prefix {
    SynSeen,
    SynAckSeen,
    Established,
    ClosedByFin,
    ClosedByRst,
}

impl Prefix {
    const ALL: [Self; 5] = [Self::SynSeen, Self::SynAckSeen, Self::Established, Self::ClosedByFin, Self::ClosedByRst];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// The remote that sent the SYN (inbound).
    Opener,
    /// The host that answers it (outbound).
    Responder,
}

/// The sequence number of an injected segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeqChoice {
    /// The sender's next sequence number (RFC 5961's exact RST).
    Next,
    /// The highest acknowledgement the receiver sent (exact too).
    ReceiverAck,
    /// Just past the exact one.
    NextPlus1,
    /// Inside the window.
    NextPlus1000,
    /// Just behind it.
    NextMinus1,
    /// Half the sequence space away.
    Far,
}

impl SeqChoice {
    const ALL: [Self; 6] =
        [Self::Next, Self::ReceiverAck, Self::NextPlus1, Self::NextPlus1000, Self::NextMinus1, Self::Far];
}

/// One flow from a remote's port to the host's 80: the opener's initial
/// sequence number 1000, the responder's 5000.
struct TcpFlow {
    port: u16,
    /// Each side's next sequence number (the responder's before it spoke:
    /// its initial one) and the highest acknowledgement it sent (0: none).
    next: [u32; 2],
    acked: [u32; 2],
}

impl TcpFlow {
    fn new(port: u16) -> Self {
        Self { port, next: [1000, 5000], acked: [0, 0] }
    }

    fn segment(&mut self, side: Side, flags: u8, seq: u32, ack: u32, payload: usize) -> (Dir, Vec<u8>) {
        let i = side as usize;
        let consumed = payload as u32 + u32::from(flags & (TCP_SYN | TCP_FIN) != 0);
        if seq == self.next[i] {
            self.next[i] = seq.wrapping_add(consumed);
        }
        if flags & TCP_ACK != 0 {
            self.acked[i] = ack;
        }
        let l4 = [tcp_seq(self.port, 80, flags, seq, ack), vec![7u8; payload]].concat();
        match side {
            Side::Opener => (Dir::In, ip(proto::TCP, a(REMOTE4), a(HOST4), &l4)),
            Side::Responder => {
                let l4 = [tcp_seq(80, self.port, flags, seq, ack), vec![7u8; payload]].concat();
                (Dir::Out, ip(proto::TCP, a(HOST4), a(REMOTE4), &l4))
            }
        }
    }

    /// The segments that bring the flow to `prefix`. Once established, the
    /// responder has sent 100 bytes the opener has not acknowledged yet, so
    /// the responder's next sequence number and the opener's last
    /// acknowledgement differ (both are exact for a RST).
    fn prefix(&mut self, prefix: Prefix) -> Vec<(Dir, Vec<u8>)> {
        let mut out = vec![self.segment(Side::Opener, TCP_SYN, 1000, 0, 0)];
        if prefix == Prefix::SynSeen {
            return out;
        }
        out.push(self.segment(Side::Responder, TCP_SYN | TCP_ACK, 5000, 1001, 0));
        if prefix == Prefix::SynAckSeen {
            return out;
        }
        out.push(self.segment(Side::Opener, TCP_ACK, 1001, 5001, 0));
        out.push(self.segment(Side::Responder, TCP_ACK | TCP_PSH, 5001, 1001, 100));
        match prefix {
            Prefix::ClosedByFin => out.push(self.segment(Side::Opener, TCP_FIN | TCP_ACK, 1001, 5101, 0)),
            Prefix::ClosedByRst => out.push(self.segment(Side::Responder, TCP_RST, 5101, 0, 0)),
            _ => {}
        }
        out
    }

    fn seq(&self, side: Side, choice: SeqChoice) -> u32 {
        let next = self.next[side as usize];
        match choice {
            SeqChoice::Next => next,
            SeqChoice::ReceiverAck => match self.acked[1 - side as usize] {
                0 => next,
                ack => ack,
            },
            SeqChoice::NextPlus1 => next.wrapping_add(1),
            SeqChoice::NextPlus1000 => next.wrapping_add(1000),
            SeqChoice::NextMinus1 => next.wrapping_sub(1),
            SeqChoice::Far => next.wrapping_add(1 << 31),
        }
    }

    /// Whether a RST from `side` at `choice` is exact (RFC 5961): the
    /// sender's next sequence number, or the receiver's last acknowledgement
    /// (which other choices can fall on: after a FIN, one behind the next).
    fn is_exact(&self, side: Side, choice: SeqChoice) -> bool {
        let seq = self.seq(side, choice);
        let receiver_ack = self.acked[1 - side as usize];
        seq == self.next[side as usize] || (receiver_ack != 0 && seq == receiver_ack)
    }

    /// The injected segment, acknowledging what the other side sent.
    fn inject(&mut self, side: Side, flags: u8, choice: SeqChoice) -> (Dir, Vec<u8>) {
        let seq = self.seq(side, choice);
        let ack = if flags & TCP_ACK != 0 { self.next[1 - side as usize] } else { 0 };
        let before = (self.next, self.acked);
        let segment = self.segment(side, flags, seq, ack, 0);
        (self.next, self.acked) = before;
        segment
    }

    fn opener_data(&mut self) -> Vec<u8> {
        let (seq, ack) = (self.next[0], self.next[1]);
        self.segment(Side::Opener, TCP_ACK | TCP_PSH, seq, ack, 10).1
    }
}

struct Expected {
    reason: Reason,
    state: FlowState,
    table: Table,
}

/// What semantics.md items 10 and 12 say the injected segment does, or
/// `None` where they leave it to the sequence window (a SYN from a side
/// that is still in its handshake).
fn model(prefix: Prefix, side: Side, flags: u8, exact: bool) -> Option<Expected> {
    let (state, table) = match prefix {
        Prefix::SynSeen => (FlowState::Opening, Table::Pending),
        Prefix::SynAckSeen => (FlowState::SynReceived, Table::Pending),
        Prefix::Established => (FlowState::Established, Table::Confirmed),
        Prefix::ClosedByFin | Prefix::ClosedByRst => (FlowState::Closing, Table::Confirmed),
    };
    let unchanged = Expected { reason: PassOutOfWindow, state, table };
    let (syn, rst, ack) = (flags & TCP_SYN != 0, flags & TCP_RST != 0, flags & TCP_ACK != 0);
    // Before the SYN-ACK, the responder can only answer the SYN, with a
    // SYN-ACK or RST that acknowledges it (every injected ACK does).
    if prefix == Prefix::SynSeen && side == Side::Responder {
        return Some(match (syn, rst, ack) {
            (true, _, true) => Expected { reason: PassTracked, state: FlowState::SynReceived, table },
            (_, true, true) => Expected { reason: PassTracked, state: FlowState::Closing, table },
            _ => unchanged,
        });
    }
    if syn {
        return match state {
            // RFC 5961 §4: the host answers with a challenge ACK.
            FlowState::Established => Some(unchanged),
            // A bare SYN on a closing flow opens a new one (the rules allow
            // it both ways); a SYN-ACK changes nothing.
            FlowState::Closing if !ack => {
                Some(Expected { reason: PassNewFlow, state: FlowState::Opening, table: Table::Pending })
            }
            FlowState::Closing => Some(unchanged),
            _ => None,
        };
    }
    // Before the SYN-ACK, an opener's RST that acknowledges something
    // acknowledges what the responder never sent: out of the window.
    if prefix == Prefix::SynSeen && ack {
        return Some(unchanged);
    }
    // Only an exact RST cuts a flow.
    Some(if rst && exact { Expected { reason: PassTracked, state: FlowState::Closing, table } } else { unchanged })
}

/// The state and table of the flow of `port`, if tracked.
fn flow_of(loaded: &Loaded, port: u16) -> Option<(FlowState, Table)> {
    let flows = loaded.maps().flows().unwrap();
    let flow =
        flows.iter().find(|f| f.key.protocol == proto::TCP && (f.key.port_lo == port || f.key.port_hi == port))?;
    Some((FlowState::from_u8(flow.entry.state), flow.table))
}
