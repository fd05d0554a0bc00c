//! An IP packet as the rules see it: addresses, protocol, and the one
//! transport field a rule can match (semantics items 3-4).

use std::net::IpAddr;

use firewall_common::proto;

use crate::policy::RuleDirection;

/// What follows the IP header, reduced to what rules match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp {
        dport: u16,
    },
    Udp {
        dport: u16,
    },
    /// Protocol 1, over either IP version.
    Icmp {
        icmp_type: u8,
        code: u8,
    },
    /// Protocol 58, over either IP version.
    Icmpv6 {
        icmp_type: u8,
        code: u8,
    },
    /// Any other protocol number: rules match the number alone.
    Other(u8),
}

impl Transport {
    pub fn protocol(self) -> u8 {
        match self {
            Self::Tcp { .. } => proto::TCP,
            Self::Udp { .. } => proto::UDP,
            Self::Icmp { .. } => proto::ICMP,
            Self::Icmpv6 { .. } => proto::ICMPV6,
            Self::Other(n) => n,
        }
    }
}

/// A packet whose source and destination are of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPacket {
    src: IpAddr,
    dst: IpAddr,
    transport: Transport,
    /// IPv6 hop limit (IPv4 TTL): it decides whether neighbour and
    /// multicast listener discovery pass unjudged (semantics item 6).
    hop_limit: u8,
}

/// A packet that cannot exist on the wire.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("source {src} and destination {dst} are not of the same IP version")]
    MixedFamilies { src: IpAddr, dst: IpAddr },
    #[error("protocol {0} has its own form (tcp, udp, icmp, icmpv6)")]
    NamedProtocol(u8),
    #[error(
        "protocol {0} is an IPv6 extension header, not a transport: the datapath walks it to the header after it, \
         or drops the packet as malformed (semantics item 15)"
    )]
    Ipv6ExtensionHeader(u8),
}

/// IPv6 extension headers (firewall-ebpf/src/parse.rs): hop-by-hop,
/// routing, fragment and destination options are walked to the header after
/// them; mobility, HIP, shim6 and the experimental ones are not, and a
/// packet with one is dropped as malformed (semantics item 15).
const IPV6_EXTENSION_HEADERS: [u8; 9] = [0, 43, 44, 60, 135, 139, 140, 253, 254];

impl IpPacket {
    pub fn new(src: IpAddr, dst: IpAddr, transport: Transport) -> Result<Self, PacketError> {
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(PacketError::MixedFamilies { src, dst });
        }
        if let Transport::Other(n) = transport {
            if [proto::TCP, proto::UDP, proto::ICMP, proto::ICMPV6].contains(&n) {
                return Err(PacketError::NamedProtocol(n));
            }
            if src.is_ipv6() && IPV6_EXTENSION_HEADERS.contains(&n) {
                return Err(PacketError::Ipv6ExtensionHeader(n));
            }
        }
        Ok(Self { src, dst, transport, hop_limit: usual_hop_limit(src, transport) })
    }

    /// The same packet with another hop limit.
    #[must_use]
    pub fn with_hop_limit(self, hop_limit: u8) -> Self {
        Self { hop_limit, ..self }
    }

    pub fn hop_limit(&self) -> u8 {
        self.hop_limit
    }

    pub fn src(&self) -> IpAddr {
        self.src
    }

    pub fn dst(&self) -> IpAddr {
        self.dst
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The address rules match: the source of an inbound packet, the
    /// destination of an outbound one (semantics item 3).
    pub fn peer(&self, direction: RuleDirection) -> IpAddr {
        match direction {
            RuleDirection::Inbound => self.src,
            RuleDirection::Outbound => self.dst,
        }
    }

    /// `(protocol, what its rules match)`: the destination port in network
    /// order for tcp/udp, `[type, code]` for ICMP and ICMPv6 (over either IP
    /// version: an `icmp` rule matches the type and code of protocol 1
    /// wherever it is found), zero for other protocols.
    pub fn rule_key(&self) -> (u8, [u8; 2]) {
        let key = match self.transport {
            Transport::Tcp { dport } | Transport::Udp { dport } => dport.to_be_bytes(),
            Transport::Icmp { icmp_type, code } | Transport::Icmpv6 { icmp_type, code } => [icmp_type, code],
            Transport::Other(_) => [0, 0],
        };
        (self.transport.protocol(), key)
    }

    /// IPv6 link control, never filtered (semantics item 6): neighbour
    /// discovery (ICMPv6 133-137) with hop limit 255, and multicast listener
    /// discovery (130-132, 143) from a link-local address with hop limit 1,
    /// and its reports (131, 143) from `::` with hop limit 1, as a host
    /// sends them before its link-local address is usable (RFC 3590) —
    /// what the host itself accepts as such. Others of these types are
    /// judged by the rules.
    pub fn is_ipv6_link_control(&self) -> bool {
        let IpAddr::V6(src) = self.src else { return false };
        match self.transport {
            Transport::Icmpv6 { icmp_type: 133..=137, .. } => self.hop_limit == 255,
            Transport::Icmpv6 { icmp_type: 131 | 143, .. } if src.is_unspecified() => self.hop_limit == 1,
            Transport::Icmpv6 { icmp_type: 130..=132 | 143, .. } => src.is_unicast_link_local() && self.hop_limit == 1,
            _ => false,
        }
    }

    /// Whether the packet, when a rule allows it and no flow holds it, opens
    /// a flow (semantics item 8): TCP (as a SYN), UDP, other protocols, and
    /// an ICMP echo request of its own IP version do; other ICMP never does
    /// (it passes alone, `pass_untracked`, and nothing rides on it).
    pub fn opens_flow(&self) -> bool {
        match self.transport {
            Transport::Icmp { icmp_type, .. } => self.src.is_ipv4() && icmp_type == 8,
            Transport::Icmpv6 { icmp_type, .. } => self.src.is_ipv6() && icmp_type == 128,
            Transport::Tcp { .. } | Transport::Udp { .. } | Transport::Other(_) => true,
        }
    }
}

/// The hop limit a host sends `transport` with: 255 for neighbour
/// discovery, 1 for multicast listener discovery, 64 otherwise.
fn usual_hop_limit(src: IpAddr, transport: Transport) -> u8 {
    match (src, transport) {
        (IpAddr::V6(_), Transport::Icmpv6 { icmp_type: 133..=137, .. }) => 255,
        (IpAddr::V6(_), Transport::Icmpv6 { icmp_type: 130..=132 | 143, .. }) => 1,
        _ => 64,
    }
}
