//! What the conntrack benchmarks (`ct_sweep`, `flowlog`) share: flows
//! built as the datapath would have stored them.
use std::net::Ipv4Addr;

use firewall_common::{
    conntrack::{FlowEntry, FlowKey, FlowState, Table, TcpSeen},
    Direction,
};
use firewall_ctl::datapath::conntrack::Tracked;

/// The host every flow goes to.
pub const HOST: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);

/// The `i`-th flow's remote end: from 10.0.0.0/8, port 1024 + the low bits.
pub fn remote(i: u32) -> (Ipv4Addr, u16) {
    (Ipv4Addr::from(0x0a00_0000 | (i >> 6)), 1024 + (i & 63) as u16)
}

/// The `i`-th flow of `protocol` from [`remote`] to HOST:`port`,
/// established, in the confirmed table, last seen and opened `now`.
pub fn flow(i: u32, protocol: u8, port: u16, now: u64) -> Tracked {
    let (src, sport) = remote(i);
    // Both directions share one key: the lower endpoint first, as the
    // datapath orders them (words compared as they are).
    let (a, b) = (u32::from_ne_bytes(src.octets()), u32::from_ne_bytes(HOST.octets()));
    let ((lo, lo_port), (hi, hi_port)) =
        if (a, sport) <= (b, port) { ((a, sport), (b, port)) } else { ((b, port), (a, sport)) };
    let key = FlowKey {
        addr_lo: [lo, 0, 0, 0],
        addr_hi: [hi, 0, 0, 0],
        port_lo: lo_port,
        port_hi: hi_port,
        protocol,
        family: 4,
        _pad: [0; 2],
    };
    let entry = FlowEntry {
        last_seen: now,
        slot: 0,
        state: FlowState::Established as u8,
        opened_by_lo: u8::from(lo == a),
        direction: Direction::Inbound as u8,
        flags: 0,
        // A flow picked up mid-stream: no window to hold packets to.
        tcp: [TcpSeen::default(); 2],
        opened: now,
        packets: [0; 2],
        bytes: [0; 2],
    };
    Tracked { key, entry, table: Table::Confirmed }
}
