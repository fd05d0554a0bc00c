//! Hand-built Ethernet frames, for `BPF_PROG_TEST_RUN` verdict tests and
//! the per-packet benchmark. Checksums are left zero: the programs never
//! check them, and nothing past the program sees these frames.
use std::net::IpAddr;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;

pub use firewall_common::tcp::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// An Ethernet header with `ether_type`.
pub fn ethernet(ether_type: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

/// A whole frame: Ethernet + IP header for `src → dst` + `l4` bytes.
pub fn ip(protocol: u8, src: IpAddr, dst: IpAddr, l4: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut f = ethernet(ETH_P_IP);
            f.extend_from_slice(&ipv4_header(protocol, s.octets(), d.octets(), l4.len(), &[]));
            f.extend_from_slice(l4);
            f
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut f = ethernet(ETH_P_IPV6);
            f.extend_from_slice(&ipv6_header(protocol, s.octets(), d.octets(), l4.len()));
            f.extend_from_slice(l4);
            f
        }
        _ => panic!("mixed address families"),
    }
}

/// IPv4 header with `options` (a multiple of 4 bytes) and a payload of `payload_len`.
pub fn ipv4_header(protocol: u8, src: [u8; 4], dst: [u8; 4], payload_len: usize, options: &[u8]) -> Vec<u8> {
    let header_len = 20 + options.len();
    let total = (header_len + payload_len) as u16;
    let mut h = vec![0x40 | (header_len / 4) as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, protocol, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(options);
    h
}

/// IPv6 header, hop limit 64 (see [`with_hop_limit`]).
pub fn ipv6_header(next_header: u8, src: [u8; 16], dst: [u8; 16], payload_len: usize) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload_len as u16).to_be_bytes());
    h.extend_from_slice(&[next_header, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h
}

/// A TCP header with sequence number 1, acknowledgement 0 and window 65535.
pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    tcp_seq(sport, dport, flags, 1, 0)
}

/// A TCP header with the given sequence and acknowledgement numbers
/// (window 65535, no options).
pub fn tcp_seq(sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    tcp_with_options(sport, dport, flags, seq, ack, &[])
}

/// A TCP header with `options` (padded to a multiple of 4 bytes with
/// end-of-list bytes), window 65535.
pub fn tcp_with_options(sport: u16, dport: u16, flags: u8, seq: u32, ack: u32, options: &[u8]) -> Vec<u8> {
    let padded = options.len().div_ceil(4) * 4;
    let mut h = Vec::with_capacity(20 + padded);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&ack.to_be_bytes());
    h.extend_from_slice(&[(((20 + padded) / 4) as u8) << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    h.extend_from_slice(options);
    h.resize(20 + padded, 0);
    h
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(8 + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

/// ICMP or ICMPv6 header (`rest` = identifier for echo) followed by `body`.
pub fn icmp(icmp_type: u8, code: u8, rest: u16, body: &[u8]) -> Vec<u8> {
    let mut h = vec![icmp_type, code, 0, 0];
    h.extend_from_slice(&rest.to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(body);
    h
}

/// `frame` (Ethernet + IPv6) with its IPv6 hop limit set: neighbour
/// discovery is sent with 255, multicast listener discovery with 1.
pub fn with_hop_limit(mut frame: Vec<u8>, hop_limit: u8) -> Vec<u8> {
    frame[14 + 7] = hop_limit;
    frame
}

/// The IP header and first 8 L4 bytes of `frame`, as an ICMP error quotes them.
pub fn quote(frame: &[u8]) -> Vec<u8> {
    let ip_start = 14;
    let ip_len = if frame[ip_start] >> 4 == 4 { usize::from(frame[ip_start] & 0x0f) * 4 } else { 40 };
    frame[ip_start..(ip_start + ip_len + 8).min(frame.len())].to_vec()
}
