//! Packet parsing: Ethernet (up to two VLAN tags) → IPv4 / IPv6 (extension
//! headers walked) → TCP / UDP / ICMP / ICMPv6, including the header an ICMP
//! error carries. Nothing here looks at a map.
use firewall_common::{policy::Addr6, proto};

use crate::frame::{read_at, Frame};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// IPv6 extension headers walked before giving up (docs/semantics.md item 15).
const MAX_IPV6_EXT_HEADERS: usize = 4;

const TCP_DOFF_MIN: u8 = 5;

/// The 5-tuple a flow is known by. Addresses are `Addr6` words (network
/// byte order in memory); an IPv4 address is the first word, the rest zero.
#[derive(Clone, Copy)]
pub struct Tuple {
    pub src: Addr6,
    pub dst: Addr6,
    /// Host order. ICMP echo: the identifier in both; other ICMP and other
    /// protocols: 0.
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    pub family: u8,
}

/// An IP packet the policy can judge. Filled in place (the BPF stack is
/// 512 bytes; returning it by value would copy it).
pub struct Packet {
    pub tuple: Tuple,
    /// What rules match besides the protocol: the destination port
    /// (network order), or `[type, code]` for ICMP/ICMPv6.
    pub rule_port: [u8; 2],
    pub tcp_flags: u8,
    /// For an ICMP error: `related` holds the flow of the packet it reports on.
    pub has_related: bool,
    pub related: Tuple,
    /// The first fragment of a fragmented datagram (the rest follow its
    /// verdict), with `fragment_id`; also set for a later fragment.
    pub first_fragment: bool,
    pub fragment_id: u32,
}

impl Packet {
    /// Clears what parsing may leave unset. Field by field: assigning a
    /// whole empty `Packet` compiles to a byte-by-byte memset loop, paid
    /// on every packet. Addresses, protocol and family are always written
    /// before use; `related` only when `has_related` is set.
    #[inline(always)]
    pub fn reset(&mut self) {
        self.tuple.sport = 0;
        self.tuple.dport = 0;
        self.rule_port = [0; 2];
        self.tcp_flags = 0;
        self.has_related = false;
        self.first_fragment = false;
    }
}

pub enum Parsed {
    /// Not IP (ARP, LLDP, …): never filtered.
    NotIp,
    /// IPv6 neighbour discovery and multicast listener discovery: never
    /// filtered, or IPv6 breaks.
    Ipv6LinkControl,
    Malformed,
    /// A non-first fragment: it has no L4 header to judge.
    LaterFragment,
    /// The packet was written to the caller's [`Packet`].
    Ip,
}

macro_rules! or_malformed {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Parsed::Malformed,
        }
    };
}

#[inline(always)]
fn be16(frame: &impl Frame, offset: usize) -> Option<u16> {
    read_at::<[u8; 2]>(frame, offset).map(u16::from_be_bytes)
}

/// Four packet bytes as a word whose memory keeps their order.
#[inline(always)]
fn word(frame: &impl Frame, offset: usize) -> Option<u32> {
    read_at::<[u8; 4]>(frame, offset).map(u32::from_ne_bytes)
}

#[inline(always)]
fn address6(frame: &impl Frame, offset: usize) -> Option<Addr6> {
    Some([word(frame, offset)?, word(frame, offset + 4)?, word(frame, offset + 8)?, word(frame, offset + 12)?])
}

#[inline(always)]
pub fn parse(frame: &impl Frame, out: &mut Packet) -> Parsed {
    let mut ether_type = or_malformed!(be16(frame, 12));
    let mut offset = ETH_HLEN;
    // Two tags cover 802.1Q and QinQ; a tagged IP packet is still judged.
    for _ in 0..2 {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        ether_type = or_malformed!(be16(frame, offset + 2));
        offset += 4;
    }
    let l4 = match ether_type {
        ETH_P_IP => or_malformed!(ipv4_header(frame, offset, &mut out.tuple)),
        ETH_P_IPV6 => or_malformed!(ipv6_header(frame, offset, &mut out.tuple)),
        _ => return Parsed::NotIp,
    };
    match l4 {
        L4::At(l4) => parse_l4(frame, l4, out),
        L4::FirstFragment { l4, id } => {
            out.first_fragment = true;
            out.fragment_id = id;
            parse_l4(frame, l4, out)
        }
        L4::LaterFragment { id } => {
            out.fragment_id = id;
            Parsed::LaterFragment
        }
    }
}

enum L4 {
    /// The L4 header's offset in an unfragmented packet.
    At(usize),
    /// The first fragment of a datagram: it carries the L4 header.
    FirstFragment { l4: usize, id: u32 },
    /// A later fragment: no L4 header; `id` names its datagram.
    LaterFragment { id: u32 },
}

/// Checks an IPv4 header at `offset` and fills the addresses and protocol
/// of `tuple`; returns where the L4 header starts. `None`: malformed.
#[inline(always)]
fn ipv4_header(frame: &impl Frame, offset: usize, tuple: &mut Tuple) -> Option<L4> {
    let h = read_at::<[u8; 10]>(frame, offset)?;
    let ihl = (h[0] & 0x0f) as usize;
    if h[0] >> 4 != 4 || ihl < 5 {
        return None;
    }
    // The L4 offset comes from IHL, never a constant: options are legal.
    let header_len = ihl * 4;
    if (u16::from_be_bytes([h[2], h[3]]) as usize) < header_len {
        return None;
    }
    read_at::<[u8; 1]>(frame, offset + header_len - 1)?;
    tuple.protocol = h[9];
    tuple.family = 4;
    tuple.src = [word(frame, offset + 12)?, 0, 0, 0];
    tuple.dst = [word(frame, offset + 16)?, 0, 0, 0];
    let id = u32::from(u16::from_be_bytes([h[4], h[5]]));
    let more_fragments = h[6] & 0x20 != 0;
    if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
        return Some(L4::LaterFragment { id });
    }
    if more_fragments {
        return Some(L4::FirstFragment { l4: offset + header_len, id });
    }
    Some(L4::At(offset + header_len))
}

/// Same as [`ipv4_header`] for IPv6, walking extension headers (docs/semantics.md
/// item 15).
#[inline(always)]
fn ipv6_header(frame: &impl Frame, offset: usize, tuple: &mut Tuple) -> Option<L4> {
    let h = read_at::<[u8; 8]>(frame, offset)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    tuple.protocol = h[6];
    tuple.family = 6;
    tuple.src = address6(frame, offset + 8)?;
    tuple.dst = address6(frame, offset + 24)?;

    let mut l4 = offset + 40;
    let mut first_fragment_id = None;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match tuple.protocol {
            // Hop-by-hop, routing, destination options: length in 8-byte units.
            0 | 43 | 60 => {
                let ext = read_at::<[u8; 2]>(frame, l4)?;
                tuple.protocol = ext[0];
                l4 += (ext[1] as usize + 1) * 8;
            }
            // Fragment header: fixed 8 bytes.
            44 => {
                let ext = read_at::<[u8; 8]>(frame, l4)?;
                tuple.protocol = ext[0];
                let id = u32::from_be_bytes([ext[4], ext[5], ext[6], ext[7]]);
                if u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0 {
                    return Some(L4::LaterFragment { id });
                }
                if ext[3] & 1 != 0 {
                    first_fragment_id = Some(id);
                }
                l4 += 8;
            }
            _ => {
                return Some(match first_fragment_id {
                    Some(id) => L4::FirstFragment { l4, id },
                    None => L4::At(l4),
                })
            }
        }
    }
    // Too many extension headers to walk: never pass what we cannot read.
    None
}

#[inline(always)]
fn parse_l4(frame: &impl Frame, l4: usize, out: &mut Packet) -> Parsed {
    let tuple = &mut out.tuple;
    match (tuple.protocol, tuple.family) {
        (proto::TCP, _) => {
            let h = or_malformed!(read_at::<[u8; 14]>(frame, l4));
            if h[12] >> 4 < TCP_DOFF_MIN {
                return Parsed::Malformed;
            }
            or_malformed!(read_at::<[u8; 1]>(frame, l4 + 19));
            tuple.sport = u16::from_be_bytes([h[0], h[1]]);
            tuple.dport = u16::from_be_bytes([h[2], h[3]]);
            out.rule_port = [h[2], h[3]];
            out.tcp_flags = h[13];
        }
        (proto::UDP, _) => {
            let h = or_malformed!(read_at::<[u8; 8]>(frame, l4));
            tuple.sport = u16::from_be_bytes([h[0], h[1]]);
            tuple.dport = u16::from_be_bytes([h[2], h[3]]);
            out.rule_port = [h[2], h[3]];
        }
        (proto::ICMP, 4) | (proto::ICMPV6, 6) => {
            let h = or_malformed!(read_at::<[u8; 8]>(frame, l4));
            out.rule_port = [h[0], h[1]];
            match icmp_kind(tuple.family, h[0]) {
                IcmpKind::Ipv6LinkControl => return Parsed::Ipv6LinkControl,
                IcmpKind::Echo => {
                    tuple.sport = u16::from_be_bytes([h[4], h[5]]);
                    tuple.dport = tuple.sport;
                }
                IcmpKind::Error => {
                    out.has_related = quoted_tuple(frame, l4 + 8, tuple.family, &mut out.related).is_some();
                }
                IcmpKind::Other => {}
            }
        }
        // ICMP over IPv6 or ICMPv6 over IPv4 is no message of that family
        // (no echo, no error, no neighbour discovery), but `icmp`/`icmpv6`
        // rules still match its type and code (semantics item 4). Left at
        // 0/0, a rule for type 0 would allow every such packet.
        (proto::ICMP | proto::ICMPV6, _) => {
            let h = or_malformed!(read_at::<[u8; 8]>(frame, l4));
            out.rule_port = [h[0], h[1]];
        }
        _ => {}
    }
    Parsed::Ip
}

enum IcmpKind {
    Echo,
    Error,
    Ipv6LinkControl,
    Other,
}

#[inline(always)]
fn icmp_kind(family: u8, icmp_type: u8) -> IcmpKind {
    match (family, icmp_type) {
        // Echo request / reply.
        (4, 0 | 8) | (6, 128 | 129) => IcmpKind::Echo,
        // Destination unreachable (incl. fragmentation needed), time
        // exceeded, parameter problem; ICMPv6 packet too big.
        (4, 3 | 11 | 12) | (6, 1..=4) => IcmpKind::Error,
        // Router/neighbour solicitation and advertisement, redirect; and
        // multicast listener queries/reports (MLD, MLDv2): switches that
        // snoop MLD stop forwarding a host's solicited-node multicast, and
        // so its neighbour solicitations, when its reports are dropped.
        (6, 130..=137 | 143) => IcmpKind::Ipv6LinkControl,
        _ => IcmpKind::Other,
    }
}

/// Fills `tuple` with the flow of the packet an ICMP error quotes (its IP
/// header and the first 8 bytes of its L4 header). `None` if cut short.
#[inline(always)]
fn quoted_tuple(frame: &impl Frame, offset: usize, family: u8, tuple: &mut Tuple) -> Option<()> {
    tuple.sport = 0;
    tuple.dport = 0;
    let l4 = if family == 4 {
        ipv4_header(frame, offset, tuple)?
    } else {
        // The quoted header's own extension headers are not walked.
        let h = read_at::<[u8; 8]>(frame, offset)?;
        tuple.protocol = h[6];
        tuple.family = 6;
        tuple.src = address6(frame, offset + 8)?;
        tuple.dst = address6(frame, offset + 24)?;
        L4::At(offset + 40)
    };
    let (L4::At(l4) | L4::FirstFragment { l4, .. }) = l4 else { return None };
    match tuple.protocol {
        proto::TCP | proto::UDP => {
            let ports = read_at::<[u8; 4]>(frame, l4)?;
            tuple.sport = u16::from_be_bytes([ports[0], ports[1]]);
            tuple.dport = u16::from_be_bytes([ports[2], ports[3]]);
        }
        proto::ICMP | proto::ICMPV6 => {
            let h = read_at::<[u8; 8]>(frame, l4)?;
            if let IcmpKind::Echo = icmp_kind(family, h[0]) {
                tuple.sport = u16::from_be_bytes([h[4], h[5]]);
                tuple.dport = tuple.sport;
            }
        }
        _ => {}
    }
    Some(())
}
