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
}

/// A packet that cannot exist on the wire.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("source {src} and destination {dst} are not of the same IP version")]
    MixedFamilies { src: IpAddr, dst: IpAddr },
    #[error("protocol {0} has its own form (tcp, udp, icmp, icmpv6)")]
    NamedProtocol(u8),
    #[error(
        "protocol {0} is an IPv6 extension header, not a transport: the datapath walks it to the header after it \
         (semantics item 15)"
    )]
    Ipv6ExtensionHeader(u8),
}

/// IPv6 extension headers the datapath walks (firewall-ebpf/src/parse.rs):
/// hop-by-hop, routing, fragment, destination options.
const IPV6_WALKED_HEADERS: [u8; 4] = [0, 43, 44, 60];

impl IpPacket {
    pub fn new(src: IpAddr, dst: IpAddr, transport: Transport) -> Result<Self, PacketError> {
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(PacketError::MixedFamilies { src, dst });
        }
        if let Transport::Other(n) = transport {
            if [proto::TCP, proto::UDP, proto::ICMP, proto::ICMPV6].contains(&n) {
                return Err(PacketError::NamedProtocol(n));
            }
            if src.is_ipv6() && IPV6_WALKED_HEADERS.contains(&n) {
                return Err(PacketError::Ipv6ExtensionHeader(n));
            }
        }
        Ok(Self { src, dst, transport })
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

    /// ICMPv6 neighbour discovery (133-137) and multicast listener
    /// discovery (130-132, 143) over IPv6: never filtered.
    pub fn is_ipv6_link_control(&self) -> bool {
        self.src.is_ipv6() && matches!(self.transport, Transport::Icmpv6 { icmp_type: 130..=137 | 143, .. })
    }
}
