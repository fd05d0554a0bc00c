//! Packet parsing: the link layer (Ethernet with up to two VLAN tags, or none
//! at all on tun, WireGuard, IP tunnels and PPP) → IPv4 / IPv6 (extension
//! headers walked) → TCP / UDP / ICMP / ICMPv6, including the header an ICMP
//! error quotes. Nothing here looks at a map.
//!
//! Whatever cannot be placed is `Malformed` (semantics.md item 13); the only
//! frames that pass unjudged are the non-IP EtherTypes of an Ethernet link
//! and IPv6 link control (semantics.md item 6).
// The flag bits are firewall-common's, shared with the frames the tests build.
pub use firewall_common::tcp::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use firewall_common::{policy::Addr6, proto, tcp::TCP_URG};

use crate::frame::{load32, read_at, Frame};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// VLAN tags skipped (802.1Q, and QinQ's 802.1ad outer tag); a frame with
/// more is dropped, never passed as "not IP".
const MAX_VLAN_TAGS: usize = 2;

/// IPv6 extension headers walked before giving up (docs/semantics.md item 15).
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// Steps of the TCP option walk: 40 bytes of options hold at most 40 options.
const MAX_TCP_OPTIONS: usize = 40;

const TCP_DOFF_MIN: u8 = 5;

/// The TCP flag combinations a TCP sends, PSH, ECE and CWR aside: one bit
/// per value of `flags & (URG|ACK|RST|SYN|FIN)`. Linux conntrack's
/// `tcp_valid_flags` table; anything else (SYN+FIN, SYN+RST, FIN alone, no
/// flag at all, ...) is a scan or an attack and is dropped.
const TCP_VALID_FLAGS: u64 = 1 << TCP_SYN
    | 1 << (TCP_SYN | TCP_URG)
    | 1 << (TCP_SYN | TCP_ACK)
    | 1 << TCP_RST
    | 1 << (TCP_RST | TCP_ACK)
    | 1 << (TCP_FIN | TCP_ACK)
    | 1 << (TCP_FIN | TCP_ACK | TCP_URG)
    | 1 << TCP_ACK
    | 1 << (TCP_ACK | TCP_URG);
const TCP_FLAGS_CHECKED: u8 = TCP_URG | TCP_ACK | TCP_RST | TCP_SYN | TCP_FIN;

/// [`Tcp::wscale`] of a SYN without a window scale option.
pub const NO_WSCALE: u8 = 0xff;

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

/// How connection tracking treats a packet (semantics.md item 8).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Track {
    /// TCP, UDP and other protocols: a flow of addresses and ports (0 for
    /// protocols without ports).
    Flow = 0,
    /// ICMP/ICMPv6 echo request: opens, or rides, the echo flow it names.
    EchoRequest = 1,
    /// Echo reply: rides the flow of its request, and opens nothing.
    EchoReply = 2,
    /// Any other ICMP message: never looked up, never opens a flow; a rule
    /// allows it, or it is an error related to a tracked flow.
    Never = 3,
    /// Quoted by an ICMP error only: a later IP fragment, which names its
    /// datagram (see `fragments`) instead of ports.
    Fragment = 4,
}

/// What conntrack needs of a TCP header.
pub struct Tcp {
    pub flags: u8,
    /// Window scale option of a SYN, or [`NO_WSCALE`].
    pub wscale: u8,
    pub window: u16,
    pub seq: u32,
    pub ack: u32,
    /// Payload bytes after the TCP header, as the IP length says.
    pub datalen: u32,
    /// Where the option walk stands (see `window_scale`).
    pub option_cursor: u8,
}

/// An IP packet the policy can judge. Filled in place (the BPF stack is
/// 512 bytes; returning it by value would copy it).
pub struct Packet {
    pub tuple: Tuple,
    /// What rules match besides the protocol: the destination port
    /// (network order), or `[type, code]` for ICMP/ICMPv6.
    pub rule_port: [u8; 2],
    pub track: Track,
    /// TCP only.
    pub tcp: Tcp,
    /// For an ICMP error: `related` holds the flow of the packet it reports
    /// on (a packet the error's receiver sent), `related_track` how to find it.
    pub has_related: bool,
    pub related_track: Track,
    pub related: Tuple,
    /// `related_track == Fragment`: the quoted datagram's identification.
    pub related_fragment_id: u32,
    /// The first fragment of a fragmented datagram (the rest follow its
    /// verdict), with `fragment_id`; `fragment_id` is also set for a later
    /// fragment.
    pub first_fragment: bool,
    pub fragment_id: u32,
    /// The protocol every fragment of the datagram names: the IPv4 protocol,
    /// or the IPv6 fragment header's next header (extension headers after it
    /// are in the first fragment only, so the L4 protocol is not).
    pub fragment_protocol: u8,
    /// Where the L4 header starts and the IP packet ends, passed from the IP
    /// header walk to the L4 parser through memory (see [`settle`]).
    pub l4_offset: u16,
    pub ip_end: u32,
}

impl Packet {
    /// Clears what parsing may leave unset. Field by field: assigning a
    /// whole empty `Packet` compiles to a byte-by-byte memset loop, paid
    /// on every packet. Addresses, protocol and family are always written
    /// before use; `related` only when `has_related` is set; `tcp` only
    /// for TCP.
    #[inline(always)]
    pub fn reset(&mut self) {
        self.tuple.sport = 0;
        self.tuple.dport = 0;
        self.rule_port = [0; 2];
        self.track = Track::Flow;
        self.has_related = false;
        self.first_fragment = false;
    }
}

pub enum Parsed {
    /// Not IP on an Ethernet link (ARP, LLDP, …): never filtered.
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
    load32(frame, offset)
}

/// `N` (a multiple of 4) packet bytes, read as `N / 4` words: a few loads
/// where reading a byte array costs one load per byte.
#[inline(always)]
fn bytes<const N: usize>(frame: &impl Frame, offset: usize) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    for i in 0..N / 4 {
        let w = load32(frame, offset + 4 * i)?.to_ne_bytes();
        out[4 * i] = w[0];
        out[4 * i + 1] = w[1];
        out[4 * i + 2] = w[2];
        out[4 * i + 3] = w[3];
    }
    Some(out)
}

#[inline(always)]
fn address6(frame: &impl Frame, offset: usize) -> Option<Addr6> {
    Some([word(frame, offset)?, word(frame, offset + 4)?, word(frame, offset + 8)?, word(frame, offset + 12)?])
}

#[inline(always)]
pub fn parse(frame: &impl Frame, out: &mut Packet) -> Parsed {
    let (ether_type, offset) = match frame.bare_ip() {
        // No Ethernet header: the device told the protocol. Anything but
        // IP cannot be judged there, and no rule of the spec lets it pass.
        Some((protocol @ (ETH_P_IP | ETH_P_IPV6), offset)) => (protocol, offset),
        Some(_) => return Parsed::Malformed,
        None => or_malformed!(ethernet(frame)),
    };
    // Each number of VLAN tags gives its own offset: see `settle`.
    let offset = or_malformed!(forget_offset(offset, &mut out.l4_offset));
    let ip = match ether_type {
        ETH_P_IP => or_malformed!(ipv4_header(frame, offset, &mut out.tuple, false)),
        ETH_P_IPV6 => or_malformed!(ipv6_header(frame, offset, &mut out.tuple, false, &mut out.l4_offset)),
        _ => return Parsed::NotIp,
    };
    match ip.fragment {
        Fragment::None => {
            let ip = or_malformed!(settle(ip, out));
            parse_l4(frame, &ip, out)
        }
        Fragment::First { id, protocol } => {
            out.first_fragment = true;
            out.fragment_id = id;
            out.fragment_protocol = protocol;
            let ip = or_malformed!(settle(ip, out));
            parse_l4(frame, &ip, out)
        }
        Fragment::Later { id } => {
            // RFC 1858: a TCP fragment at offset 8 can only be there to
            // overlap the flags of the first one (IPv6 forbids overlaps).
            if ip.tiny_offset && out.tuple.protocol == proto::TCP {
                return Parsed::Malformed;
            }
            out.fragment_id = id;
            out.fragment_protocol = out.tuple.protocol;
            Parsed::LaterFragment
        }
    }
}

/// The EtherType after the Ethernet header and its VLAN tags, and where the
/// network header starts. `None`: cut short, or more tags than we skip.
#[inline(always)]
fn ethernet(frame: &impl Frame) -> Option<(u16, usize)> {
    let mut ether_type = be16(frame, 12)?;
    let mut offset = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            return Some((ether_type, offset));
        }
        ether_type = be16(frame, offset + 2)?;
        offset += 4;
    }
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        return None;
    }
    Some((ether_type, offset))
}

/// Where a fragment stands in its datagram.
enum Fragment {
    /// Not fragmented (or an atomic fragment, RFC 6946).
    None,
    /// The first fragment: it carries the L4 header. `protocol`: see
    /// [`Packet::fragment_protocol`].
    First { id: u32, protocol: u8 },
    /// A later fragment: no L4 header; `id` names its datagram, and the
    /// tuple's protocol is [`Packet::fragment_protocol`].
    Later { id: u32 },
}

/// An IP header that checked out.
struct Ip {
    /// Offset of the L4 header (of a first fragment or whole packet).
    l4: usize,
    /// Offset just past the IP packet as its length field says (or past the
    /// quote, for the packet an ICMP error quotes).
    end: usize,
    fragment: Fragment,
    /// IPv4 fragment offset 1 (8 bytes): see RFC 1858.
    tiny_offset: bool,
    /// IPv6 hop limit (255 on neighbour discovery, 1 on MLD).
    hop_limit: u8,
}

/// Where a header may start at the latest (a mask, one bit short of a
/// `u16`): beyond the network header offset, 40 bytes of IPv6 header and
/// [`MAX_IPV6_EXT_HEADERS`] extension headers of at most 2,048 bytes each,
/// so no packet that we walk is refused; small enough that the verifier
/// accepts a packet pointer plus this much.
pub const MAX_L4_OFFSET: usize = 0x7fff;

/// The offsets of `ip` as the verifier sees a value read from a map: any
/// value of its type. Every path through the link layer and the IP header
/// walk (VLAN tags, IPv4 options, each combination of IPv6 extension
/// headers) computes its own exactly known offsets, and the verifier would
/// check the L4 parser, connection tracking and the policy once for each of
/// them; written to the scratch `Packet` and read back (volatile, so the
/// compiler does not pass them on in registers), they are the same unknown
/// values on every path, and it checks that code once. `None`: an L4 header
/// past [`MAX_L4_OFFSET`].
#[inline(always)]
fn settle(ip: Ip, out: &mut Packet) -> Option<Ip> {
    let l4 = forget_offset(ip.l4, &mut out.l4_offset)?;
    let end = u32::try_from(ip.end).ok()?;
    let end_slot: *mut u32 = &mut out.ip_end;
    // SAFETY: a field of the caller's scratch `Packet`.
    let end = unsafe {
        end_slot.write_volatile(end);
        end_slot.read_volatile()
    };
    Some(Ip { l4, end: end as usize, ..ip })
}

/// `offset` written to `slot` and read back: the same value, that the
/// verifier knows only as some offset up to [`MAX_L4_OFFSET`]. Volatile, so
/// the compiler does not pass it on in a register. `None` beyond that
/// bound, which no packet of at most [`MAX_IPV6_EXT_HEADERS`] extension
/// headers reaches.
#[inline(always)]
fn forget_offset(offset: usize, slot: &mut u16) -> Option<usize> {
    if offset > MAX_L4_OFFSET {
        return None;
    }
    let slot: *mut u16 = slot;
    // SAFETY: a field of the caller's scratch `Packet`.
    let offset = unsafe {
        slot.write_volatile(offset as u16);
        slot.read_volatile()
    } as usize;
    // The value written, which is within the mask; the verifier must know
    // the bound to add the offset to a packet pointer, and it does not know
    // what was written. (A comparison would not do: the compiler turns it
    // into a sign test on a copy, which tells the verifier nothing.)
    Some(offset & MAX_L4_OFFSET)
}

/// Checks an IPv4 header at `offset` and fills the addresses and protocol
/// of `tuple`. `None`: malformed. A `quoted` header (inside an ICMP error)
/// is cut short by design, so its length field is not held to the frame.
#[inline(always)]
fn ipv4_header(frame: &impl Frame, offset: usize, tuple: &mut Tuple, quoted: bool) -> Option<Ip> {
    let h = bytes::<12>(frame, offset)?;
    let ihl = (h[0] & 0x0f) as usize;
    if h[0] >> 4 != 4 || ihl < 5 {
        return None;
    }
    // The L4 offset comes from IHL, never a constant: options are legal.
    let header_len = ihl * 4;
    let total_len = u16::from_be_bytes([h[2], h[3]]) as usize;
    if total_len < header_len {
        return None;
    }
    let end = if quoted { frame.end() - frame.start() } else { offset + total_len };
    // Within the packet (so options and the L4 offset are too).
    if !quoted && end as u64 > frame.wire_len() {
        return None;
    }
    tuple.protocol = h[9];
    tuple.family = 4;
    tuple.src = [word(frame, offset + 12)?, 0, 0, 0];
    tuple.dst = [word(frame, offset + 16)?, 0, 0, 0];
    let id = u32::from(u16::from_be_bytes([h[4], h[5]]));
    let more_fragments = h[6] & 0x20 != 0;
    let fragment_offset = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
    let fragment = if fragment_offset != 0 {
        Fragment::Later { id }
    } else if more_fragments {
        Fragment::First { id, protocol: h[9] }
    } else {
        Fragment::None
    };
    Some(Ip { l4: offset + header_len, end, fragment, tiny_offset: fragment_offset == 1, hop_limit: 0 })
}

/// IPv6 extension headers (IANA's list) that sgctl does not walk: mobility,
/// HIP, shim6 and the experimental ones. The kernel does not deliver them
/// either, so a packet carrying one is dropped (semantics.md item 15).
/// ESP (50), AH (51) and "no next header" (59) are judged as protocols.
#[inline(always)]
fn unwalked_extension(next: u8) -> bool {
    matches!(next, 135 | 139 | 140 | 253 | 254)
}

/// Same as [`ipv4_header`] for IPv6, walking extension headers (docs/semantics.md
/// item 15): hop-by-hop options (first only), routing, destination options
/// and one fragment header, at most [`MAX_IPV6_EXT_HEADERS`] of them.
#[inline(always)]
fn ipv6_header(frame: &impl Frame, offset: usize, tuple: &mut Tuple, quoted: bool, cursor: &mut u16) -> Option<Ip> {
    let h = bytes::<8>(frame, offset)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let payload_len = u16::from_be_bytes([h[4], h[5]]) as usize;
    let end = if quoted { frame.end() - frame.start() } else { offset + 40 + payload_len };
    // Payload length 0 is a jumbogram (or a GSO packet over 64 KB, "BIG
    // TCP"): its real length is in a hop-by-hop option we do not read.
    if !quoted && (payload_len == 0 || end as u64 > frame.wire_len()) {
        return None;
    }
    tuple.family = 6;
    tuple.src = address6(frame, offset + 8)?;
    tuple.dst = address6(frame, offset + 24)?;

    let mut next = h[6];
    let mut l4 = offset + 40;
    let mut fragment = Fragment::None;
    let mut seen_fragment_header = false;
    for i in 0..=MAX_IPV6_EXT_HEADERS {
        // The offset goes through memory (see `settle`), so the verifier
        // sees the same unknown offset on every path through the walk and
        // need not follow each combination of header lengths separately.
        l4 = forget_offset(l4, cursor)?;
        match next {
            // Hop-by-hop options come first or not at all (RFC 8200).
            0 if i != 0 => return None,
            // Hop-by-hop, routing, destination options: length in 8-byte units.
            0 | 43 | 60 => {
                if i == MAX_IPV6_EXT_HEADERS {
                    return None;
                }
                let ext = read_at::<[u8; 2]>(frame, l4)?;
                next = ext[0];
                l4 += (ext[1] as usize + 1) * 8;
            }
            // Fragment header: fixed 8 bytes, at most one.
            44 => {
                if i == MAX_IPV6_EXT_HEADERS || seen_fragment_header {
                    return None;
                }
                seen_fragment_header = true;
                let ext = bytes::<8>(frame, l4)?;
                next = ext[0];
                let id = u32::from_be_bytes([ext[4], ext[5], ext[6], ext[7]]);
                let fragment_offset = u16::from_be_bytes([ext[2], ext[3]]) >> 3;
                if fragment_offset != 0 {
                    // The rest is payload; the datagram is named by the
                    // next header here, which every fragment carries.
                    tuple.protocol = next;
                    let tiny_offset = fragment_offset == 1;
                    return Some(Ip { l4, end, fragment: Fragment::Later { id }, tiny_offset, hop_limit: h[7] });
                }
                if ext[3] & 1 != 0 {
                    fragment = Fragment::First { id, protocol: next };
                }
                l4 += 8;
            }
            n if unwalked_extension(n) => return None,
            _ => {
                if l4 > end {
                    return None;
                }
                tuple.protocol = next;
                return Some(Ip { l4, end, fragment, tiny_offset: false, hop_limit: h[7] });
            }
        }
    }
    // More extension headers than we walk: never pass what we cannot read.
    None
}

#[inline(always)]
fn parse_l4(frame: &impl Frame, ip: &Ip, out: &mut Packet) -> Parsed {
    let l4 = ip.l4;
    let tuple = &mut out.tuple;
    match (tuple.protocol, tuple.family) {
        (proto::TCP, _) => {
            let h = or_malformed!(bytes::<16>(frame, l4));
            let doff = h[12] >> 4;
            let header_end = l4 + doff as usize * 4;
            // Within the IP packet, and so within the frame (options are
            // read, on SYNs only, with checks of their own).
            if doff < TCP_DOFF_MIN || header_end > ip.end {
                return Parsed::Malformed;
            }
            let flags = h[13];
            if TCP_VALID_FLAGS >> (flags & TCP_FLAGS_CHECKED) & 1 == 0 {
                return Parsed::Malformed;
            }
            tuple.sport = u16::from_be_bytes([h[0], h[1]]);
            tuple.dport = u16::from_be_bytes([h[2], h[3]]);
            out.rule_port = [h[2], h[3]];
            let tcp = &mut out.tcp;
            tcp.flags = flags;
            tcp.seq = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            tcp.ack = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
            tcp.window = u16::from_be_bytes([h[14], h[15]]);
            tcp.datalen = (ip.end - header_end) as u32;
            tcp.wscale = if flags & TCP_SYN != 0 {
                frame.tcp_window_scale(l4, doff as usize * 4 - 20, &mut tcp.option_cursor)
            } else {
                NO_WSCALE
            };
        }
        (proto::UDP, _) => {
            if l4 + 8 > ip.end {
                return Parsed::Malformed;
            }
            let h = or_malformed!(bytes::<8>(frame, l4));
            tuple.sport = u16::from_be_bytes([h[0], h[1]]);
            tuple.dport = u16::from_be_bytes([h[2], h[3]]);
            out.rule_port = [h[2], h[3]];
        }
        (proto::ICMP, 4) | (proto::ICMPV6, 6) => {
            if l4 + 8 > ip.end {
                return Parsed::Malformed;
            }
            let h = or_malformed!(bytes::<8>(frame, l4));
            out.rule_port = [h[0], h[1]];
            out.track = Track::Never;
            match icmp_kind(tuple.family, h[0]) {
                IcmpKind::Ipv6LinkControl if is_link_control(tuple, h[0], ip.hop_limit) => {
                    return Parsed::Ipv6LinkControl
                }
                IcmpKind::EchoRequest => {
                    out.track = Track::EchoRequest;
                    tuple.sport = u16::from_be_bytes([h[4], h[5]]);
                    tuple.dport = tuple.sport;
                }
                IcmpKind::EchoReply => {
                    out.track = Track::EchoReply;
                    tuple.sport = u16::from_be_bytes([h[4], h[5]]);
                    tuple.dport = tuple.sport;
                }
                IcmpKind::Error => {
                    out.has_related = quoted_flow(frame, l4 + 8, out).is_some();
                }
                IcmpKind::Ipv6LinkControl | IcmpKind::Other => {}
            }
        }
        // ICMP over IPv6 or ICMPv6 over IPv4 is no message of that family
        // (no echo, no error, no neighbour discovery), but `icmp`/`icmpv6`
        // rules still match its type and code (semantics item 4). Left at
        // 0/0, a rule for type 0 would allow every such packet.
        (proto::ICMP | proto::ICMPV6, _) => {
            if l4 + 8 > ip.end {
                return Parsed::Malformed;
            }
            let h = or_malformed!(bytes::<8>(frame, l4));
            out.rule_port = [h[0], h[1]];
            out.track = Track::Never;
        }
        _ => {}
    }
    Parsed::Ip
}

/// The window scale option (kind 3, RFC 7323) among the `len` (at most 40)
/// bytes of TCP options at `offset`, or [`NO_WSCALE`]. Malformed options
/// end the walk, as they end the kernel's.
///
/// The position in the options lives in map memory (`cursor`, in the
/// per-CPU scratch), not in a register: the verifier knows nothing of a
/// value it reads back from a map, so every path through the walk reaches
/// the loop head in the same state and is checked once, instead of once per
/// combination of option lengths (2^40).
#[inline(always)]
pub fn window_scale(frame: &impl Frame, offset: usize, len: usize, cursor: &mut u8) -> u8 {
    // Volatile, or the compiler keeps the cursor in a register after all.
    let cursor: *mut u8 = cursor;
    let set = |at: usize| {
        // SAFETY: a field of the caller's scratch `Packet`.
        unsafe { cursor.write_volatile(at.min(0xff) as u8) }
    };
    set(0);
    for _ in 0..MAX_TCP_OPTIONS {
        // SAFETY: as above.
        let at = (unsafe { cursor.read_volatile() } & 0x3f) as usize;
        if at >= len {
            break;
        }
        // Reads are two bytes wide or more: a one-byte bounds check
        // compiles to a comparison the verifier cannot use. A lone last
        // byte (end of list or padding) cannot start a window scale option.
        let Some([kind, option_len]) = read_at::<[u8; 2]>(frame, offset + at) else { break };
        match kind {
            0 => break,
            1 => {
                set(at + 1);
                continue;
            }
            _ => {}
        }
        if option_len < 2 {
            break;
        }
        if kind == 3 && option_len == 3 {
            return match read_at::<[u8; 3]>(frame, offset + at) {
                Some([_, _, shift]) => shift,
                None => NO_WSCALE,
            };
        }
        set(at + option_len as usize);
    }
    NO_WSCALE
}

enum IcmpKind {
    EchoRequest,
    EchoReply,
    Error,
    Ipv6LinkControl,
    Other,
}

#[inline(always)]
fn icmp_kind(family: u8, icmp_type: u8) -> IcmpKind {
    match (family, icmp_type) {
        (4, 8) | (6, 128) => IcmpKind::EchoRequest,
        (4, 0) | (6, 129) => IcmpKind::EchoReply,
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

/// Whether an ICMPv6 link-control message is one the host would accept as
/// such: neighbour discovery with hop limit 255 (RFC 4861), MLD from a
/// link-local address with hop limit 1 (RFC 2710, 3810), and MLD reports
/// (131, 143) from the unspecified address `::` with hop limit 1, which a
/// host sends while its link-local address is still tentative (RFC 3590,
/// RFC 3810 5.2.13). Others are judged by the rules like any ICMPv6 message.
#[inline(always)]
fn is_link_control(tuple: &Tuple, icmp_type: u8, hop_limit: u8) -> bool {
    if (133..=137).contains(&icmp_type) {
        return hop_limit == 255;
    }
    let src = tuple.src[0].to_ne_bytes();
    let link_local = src[0] == 0xfe && src[1] & 0xc0 == 0x80;
    let unspecified = tuple.src[0] | tuple.src[1] | tuple.src[2] | tuple.src[3] == 0;
    hop_limit == 1 && (link_local || (unspecified && (icmp_type == 131 || icmp_type == 143)))
}

/// Fills `out.related` with the flow of the packet an ICMP error at
/// `offset` quotes (its IP header, extension headers included, and the
/// start of its L4 header), and `out.related_track`. `None` if cut short,
/// about no flow (another ICMP error), or about a packet that the error's
/// receiver did not send.
#[inline(always)]
fn quoted_flow(frame: &impl Frame, offset: usize, out: &mut Packet) -> Option<()> {
    let family = out.tuple.family;
    let related = &mut out.related;
    related.sport = 0;
    related.dport = 0;
    let ip = if family == 4 {
        ipv4_header(frame, offset, related, true)?
    } else {
        ipv6_header(frame, offset, related, true, &mut out.l4_offset)?
    };
    // An error reports on a packet its receiver sent.
    if related.src != out.tuple.dst {
        return None;
    }
    out.related_track = Track::Flow;
    match ip.fragment {
        Fragment::Later { id } => {
            out.related_track = Track::Fragment;
            out.related_fragment_id = id;
            return Some(());
        }
        Fragment::First { .. } | Fragment::None => {}
    }
    match related.protocol {
        proto::TCP | proto::UDP => {
            let ports = bytes::<4>(frame, ip.l4)?;
            related.sport = u16::from_be_bytes([ports[0], ports[1]]);
            related.dport = u16::from_be_bytes([ports[2], ports[3]]);
        }
        proto::ICMP | proto::ICMPV6 => {
            let h = bytes::<8>(frame, ip.l4)?;
            out.related_track = match icmp_kind(family, h[0]) {
                IcmpKind::EchoRequest => Track::EchoRequest,
                IcmpKind::EchoReply => Track::EchoReply,
                _ => return None,
            };
            related.sport = u16::from_be_bytes([h[4], h[5]]);
            related.dport = related.sport;
        }
        _ => {}
    }
    Some(())
}
