//! Connection tracking (semantics.md items 7-12).
//!
//! Expired entries are not swept by the kernel: the datapath treats an
//! entry idle past its timeout as absent and reuses its slot in place for
//! the same flow, and `sgctl` deletes expired entries whenever it opens the
//! table (every `apply`, `stats`, `status`, `conntrack list`, and
//! `conntrack gc`, which a timer can run).
use aya_ebpf::helpers::bpf_ktime_get_ns;
use firewall_common::{
    conntrack::{FlowEntry, FlowKey, FlowState, Timeouts},
    proto, Direction,
};

use crate::{
    maps::{CONNTRACK, CT_CONFIG},
    parse::Tuple,
};

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// `last_seen_ns` is rewritten at most this often unless the state changes:
/// a write per packet would bounce the entry's cache line between CPUs.
const REFRESH_NS: u64 = 1_000_000_000;

const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;

/// A packet's flow: the key, and which endpoint of the key sent it.
pub struct FlowRef {
    pub key: FlowKey,
    pub sender_is_lo: bool,
}

impl FlowRef {
    /// Writes the flow of `t` in place, ordering the endpoints so both
    /// directions share one key.
    #[inline(always)]
    pub fn set(&mut self, t: &Tuple) {
        self.sender_is_lo = endpoint_le(&t.src, t.sport, &t.dst, t.dport);
        let k = &mut self.key;
        if self.sender_is_lo {
            k.addr_lo = t.src;
            k.addr_hi = t.dst;
            k.port_lo = t.sport;
            k.port_hi = t.dport;
        } else {
            k.addr_lo = t.dst;
            k.addr_hi = t.src;
            k.port_lo = t.dport;
            k.port_hi = t.sport;
        }
        k.protocol = t.protocol;
        k.family = t.family;
        k._pad = [0; 2];
    }
}

/// `(a, a_port) <= (b, b_port)`, addresses compared as big-endian numbers.
#[inline(always)]
fn endpoint_le(a: &[u8; 16], a_port: u16, b: &[u8; 16], b_port: u16) -> bool {
    let (a_hi, b_hi) = (be64(a, 0), be64(b, 0));
    if a_hi != b_hi {
        return a_hi < b_hi;
    }
    let (a_lo, b_lo) = (be64(a, 8), be64(b, 8));
    if a_lo != b_lo {
        return a_lo < b_lo;
    }
    a_port <= b_port
}

#[inline(always)]
fn be64(a: &[u8; 16], at: usize) -> u64 {
    let mut v = 0u64;
    for i in 0..8 {
        v = (v << 8) | u64::from(a[at + i]);
    }
    v
}

pub enum Lookup {
    /// A live flow; the packet passes.
    Tracked { rule: u32 },
    /// No live flow: judge by the rules. `stale` is an expired (or closed and
    /// now reopened) entry of the same key whose slot can be reused.
    New { stale: Option<*mut FlowEntry> },
}

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

/// Idle timeout of a flow, from `CT_CONFIG` (AWS defaults until set).
#[inline(always)]
fn timeout_ns(protocol: u8, state: FlowState) -> u64 {
    match CT_CONFIG.get(0) {
        Some(t) if t.tcp_established_ns != 0 => t.for_flow(protocol, state),
        _ => Timeouts::AWS_DEFAULT.for_flow(protocol, state),
    }
}

/// Finds the packet's flow and, when it is live, records the packet in it.
#[inline(always)]
pub fn track(flow: &FlowRef, tcp_flags: u8, now: u64) -> Lookup {
    let Some(entry) = CONNTRACK.get_ptr_mut(&flow.key) else {
        return Lookup::New { stale: None };
    };
    // SAFETY: map value pointer, valid for this program run. Concurrent
    // updates from other CPUs only race on timestamps and state, which is benign.
    let e = unsafe { &mut *entry };
    let state = FlowState::from_u8(e.state);
    let protocol = flow.key.protocol;
    let idle = now.saturating_sub(e.last_seen_ns);
    let bare_syn = protocol == proto::TCP && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if idle > timeout_ns(protocol, state) || (bare_syn && state == FlowState::Closing) {
        // Expired, or a closed TCP flow reopened with the same ports: the
        // rules decide again.
        return Lookup::New { stale: Some(entry) };
    }
    let from_opener = u8::from(flow.sender_is_lo) == e.opened_by_lo;
    let mut next = state;
    if !from_opener && state == FlowState::Opening {
        next = FlowState::Established;
    }
    if protocol == proto::TCP && tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        next = FlowState::Closing;
    }
    if next != state || idle > REFRESH_NS {
        e.state = next as u8;
        e.last_seen_ns = now;
    }
    Lookup::Tracked { rule: e.rule }
}

pub struct TableFull;

/// Starts tracking a flow that `rule` allowed.
#[inline(always)]
pub fn open(
    flow: &FlowRef,
    stale: Option<*mut FlowEntry>,
    rule: u32,
    direction: Direction,
    now: u64,
) -> Result<(), TableFull> {
    let entry = FlowEntry {
        last_seen_ns: now,
        rule,
        state: FlowState::Opening as u8,
        opened_by_lo: u8::from(flow.sender_is_lo),
        direction: direction as u8,
        _pad: 0,
    };
    if let Some(slot) = stale {
        // SAFETY: map value pointer from this run's lookup of the same key.
        unsafe { *slot = entry };
        return Ok(());
    }
    match CONNTRACK.insert(&flow.key, &entry, BPF_NOEXIST) {
        Ok(()) => Ok(()),
        // Another CPU opened the same flow first: it is tracked either way.
        Err(e) if e == -EEXIST => Ok(()),
        // E2BIG when full; never evict a tracked flow to make room.
        Err(_) => Err(TableFull),
    }
}

/// The rule of the tracked flow an ICMP error reports on, if it is tracked
/// and live.
#[inline(always)]
pub fn related_rule(quoted: &Tuple, flow: &mut FlowRef, now: u64) -> Option<u32> {
    flow.set(quoted);
    // SAFETY: read-only copy of a map value; racing writers only move timestamps.
    let e = unsafe { *CONNTRACK.get_ptr(&flow.key)? };
    let idle = now.saturating_sub(e.last_seen_ns);
    if idle > timeout_ns(flow.key.protocol, FlowState::from_u8(e.state)) {
        return None;
    }
    Some(e.rule)
}
