//! Connection tracking (docs/semantics.md items 7-12).
//!
//! Expired entries: the datapath treats an entry idle past its timeout as
//! absent and reuses its slot in place for the same flow. When a new flow
//! finds the table full, the datapath sweeps every expired entry out
//! (`bpf_for_each_map_elem`, at most once per second, so a flood of new flows
//! against a table of live ones costs one sweep a second, not one a packet)
//! and tries again. `sgctl` also deletes expired entries whenever it updates
//! an interface, and on `sgctl conntrack gc`.
use core::{mem::MaybeUninit, ptr::addr_of_mut};

use aya_ebpf::{
    cty::c_void,
    helpers::generated::{bpf_for_each_map_elem, bpf_map_delete_elem},
};
use firewall_common::{
    conntrack::{FlowEntry, FlowKey, FlowState, Timeouts},
    counters::Reason,
    policy::Addr6,
    proto, Direction,
};

use crate::{
    clock, fragments,
    maps::{CONNTRACK, CONNTRACK_PREV, CT_SWEPT_AT, CT_TIMEOUTS, FRAGMENTS},
    parse::{Packet, Track, Tuple, TCP_ACK, TCP_RST, TCP_SYN},
    tcp, words,
};

// `last_seen` is rewritten at most once a second (`clock::ticks_per_sec`)
// unless the state changes: a write per packet would bounce the entry's
// cache line between CPUs. The datapath sweeps a full table at most once a
// second too.

const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;

/// A packet's flow: the key, and which endpoint of the key sent it.
pub struct FlowRef {
    pub key: FlowKey,
    pub sender_is_lo: bool,
}

impl FlowRef {
    /// Writes the flow of `t` in place. Endpoints go in a fixed order so both
    /// directions share one key, except for an ICMP echo flow, whose `lo`
    /// endpoint is the one that sent the request (see `FlowKey`): a reply
    /// finds its request's flow, a request the other way round does not.
    #[inline(always)]
    pub fn set(&mut self, t: &Tuple, track: Track) {
        self.sender_is_lo = match track {
            Track::EchoRequest => true,
            Track::EchoReply => false,
            _ => endpoint_le(&t.src, t.sport, &t.dst, t.dport),
        };
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

/// `(a, a_port) <= (b, b_port)`. Any fixed total order works (it only has
/// to put both directions of a flow the same way round), so the words are
/// compared as they are, without byte swapping.
#[inline(always)]
fn endpoint_le(a: &Addr6, a_port: u16, b: &Addr6, b_port: u16) -> bool {
    for i in 0..4 {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
    }
    a_port <= b_port
}

pub enum Lookup {
    /// A live flow; the packet passes, counted on the flow's counter slot under `reason`
    /// (`PassTracked`, or `PassOutOfWindow` for a TCP packet that does not
    /// fit the flow's sequence window and so changed nothing).
    Tracked { slot: u32, reason: Reason },
    /// No live flow: judge by the rules. `stale` is an expired (or closed and
    /// now reopened) entry of the same key whose slot can be reused.
    New { stale: Option<*mut FlowEntry> },
}

/// Idle timeout of a flow in clock ticks, from `CT_TIMEOUTS` (AWS
/// defaults until set).
#[inline(always)]
fn timeout(protocol: u8, state: FlowState) -> u64 {
    match CT_TIMEOUTS.get(0) {
        Some(t) if !t.is_unset() => t.for_flow(protocol, state),
        _ => Timeouts::AWS_DEFAULT.in_ticks(clock::ticks_per_sec()).for_flow(protocol, state),
    }
}

/// The entry of `key`: in `CONNTRACK`, or, while `sgctl` moves the flows
/// into a table of another size, taken over from the previous table.
#[inline(always)]
fn find(key: &FlowKey) -> Option<*mut FlowEntry> {
    if let Some(entry) = CONNTRACK.get_ptr_mut(key) {
        return Some(entry);
    }
    let previous = CONNTRACK_PREV.get(0)?;
    // SAFETY: the value is copied by the kernel at once, in place.
    let entry = unsafe { previous.get(key)? };
    // Full, or another CPU took it over first: either way look again.
    let _ = CONNTRACK.insert(key, entry, BPF_NOEXIST);
    CONNTRACK.get_ptr_mut(key)
}

/// Finds the packet's flow (into `flow`) and, when it is live, records the
/// packet in it. ICMP other than echo is never looked up.
#[inline(always)]
pub fn track(flow: &mut FlowRef, packet: &Packet, now: u64) -> Lookup {
    if packet.track == Track::Never {
        return Lookup::New { stale: None };
    }
    flow.set(&packet.tuple, packet.track);
    let Some(entry) = find(&flow.key) else {
        return Lookup::New { stale: None };
    };
    // SAFETY: map value pointer, valid for this program run. Concurrent
    // updates from other CPUs only race on timestamps, state and sequence
    // windows, which is benign: at worst a packet is taken as out of window.
    let e = unsafe { &mut *entry };
    let state = FlowState::from_u8(e.state);
    let protocol = flow.key.protocol;
    let idle = now.saturating_sub(e.last_seen);
    let is_tcp = protocol == proto::TCP;
    // `packet.tcp` is only written for TCP.
    let bare_syn = is_tcp && packet.tcp.flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if idle > timeout(protocol, state) || (bare_syn && state == FlowState::Closing) {
        // Expired, or a closed TCP flow reopened with the same ports: the
        // rules decide again.
        return Lookup::New { stale: Some(entry) };
    }
    let from_opener = u8::from(flow.sender_is_lo) == e.opened_by_lo;
    let next = if is_tcp {
        match tcp::next_state(e, &packet.tcp, from_opener, state) {
            Some(next) => next,
            None => return Lookup::Tracked { slot: e.slot, reason: Reason::PassOutOfWindow },
        }
    } else if !from_opener && state == FlowState::Opening {
        FlowState::Established
    } else {
        state
    };
    if next != state || idle > clock::ticks_per_sec() {
        e.state = next as u8;
        e.last_seen = now;
    }
    Lookup::Tracked { slot: e.slot, reason: Reason::PassTracked }
}

/// Whether a packet that a rule allowed and that belongs to no live flow
/// opens one (semantics.md item 8). Echo replies, ICMP other than echo, and
/// TCP RSTs and SYN-ACKs pass alone: nothing may ride on them.
#[inline(always)]
pub fn opens_flow(packet: &Packet) -> bool {
    match packet.track {
        Track::Flow if packet.tuple.protocol == proto::TCP => {
            // A SYN opens; a RST or SYN-ACK never does; any other packet
            // picks a flow up mid-stream.
            let flags = packet.tcp.flags;
            flags & TCP_RST == 0 && flags & (TCP_SYN | TCP_ACK) != TCP_SYN | TCP_ACK
        }
        Track::Flow | Track::EchoRequest => true,
        Track::EchoReply | Track::Never | Track::Fragment => false,
    }
}

pub struct TableFull;

/// Starts tracking the packet's flow (set in `flow` by [`track`]), which
/// the rule of counter slot `slot` allowed.
#[inline(always)]
pub fn open(
    flow: &FlowRef,
    packet: &Packet,
    stale: Option<*mut FlowEntry>,
    slot: u32,
    direction: Direction,
    now: u64,
) -> Result<(), TableFull> {
    // Built field by field and copied word by word (see `words`).
    let mut entry = MaybeUninit::<FlowEntry>::uninit();
    let e = entry.as_mut_ptr();
    // SAFETY: every field is written before the entry is read; all-zero
    // `TcpSeen`s are valid.
    let entry = unsafe {
        (*e).last_seen = now;
        (*e).slot = slot;
        (*e).state = FlowState::Opening as u8;
        (*e).opened_by_lo = u8::from(flow.sender_is_lo);
        (*e).direction = direction as u8;
        (*e)._pad = 0;
        words::zero(addr_of_mut!((*e).tcp));
        // A flow that begins with a SYN gets sequence windows; one picked up
        // mid-stream does not (see `tcp`).
        if packet.tuple.protocol == proto::TCP && packet.tcp.flags & TCP_SYN != 0 {
            let seen = tcp::opener_of_syn(&packet.tcp);
            words::copy(addr_of_mut!((*e).tcp[0]), &seen);
        }
        entry.assume_init_ref()
    };
    if let Some(old) = stale {
        // SAFETY: map value pointer from this run's lookup of the same key.
        unsafe { words::copy(old, entry) };
        return Ok(());
    }
    match insert(flow, entry) {
        // E2BIG when full: make room from expired flows only, never by
        // evicting a live one.
        Err(TableFull) if sweep_expired(now) => insert(flow, entry),
        result => result,
    }
}

#[inline(always)]
fn insert(flow: &FlowRef, entry: &FlowEntry) -> Result<(), TableFull> {
    match CONNTRACK.insert(&flow.key, entry, BPF_NOEXIST) {
        Ok(()) => Ok(()),
        // Another CPU opened the same flow first: it is tracked either way.
        Err(e) if e == -EEXIST => Ok(()),
        Err(_) => Err(TableFull),
    }
}

/// What the sweep callback needs; lives on the caller's stack. It carries
/// no count of removed entries: a value that changes on every callback
/// keeps the verifier from ever seeing the loop converge.
#[repr(C)]
struct Sweep {
    now: u64,
}

/// Deletes every expired flow, unless the last sweep was less than a
/// second ago; returns whether it swept.
#[inline(always)]
fn sweep_expired(now: u64) -> bool {
    let Some(swept_at) = CT_SWEPT_AT.get_ptr_mut(0) else { return false };
    // SAFETY: array value pointer; racing CPUs at worst both sweep.
    unsafe {
        if now.saturating_sub(*swept_at) < clock::ticks_per_sec() {
            return false;
        }
        *swept_at = now;
    }
    let mut sweep = Sweep { now };
    // SAFETY: the map pointer is CONNTRACK's definition (relocated to its
    // fd by the loader); the callback has the signature the helper expects.
    unsafe {
        bpf_for_each_map_elem(
            core::ptr::addr_of!(CONNTRACK).cast_mut().cast(),
            sweep_one as *mut c_void,
            core::ptr::from_mut(&mut sweep).cast(),
            0,
        );
    }
    true
}

/// `bpf_for_each_map_elem` callback: deletes the entry if it expired.
/// Deleting the current element of a hash map during the walk is allowed.
#[inline(never)]
extern "C" fn sweep_one(map: *mut c_void, key: *mut FlowKey, value: *mut FlowEntry, ctx: *mut Sweep) -> i64 {
    // SAFETY: the helper passes valid key, value and our context.
    unsafe {
        let (key_ref, entry, sweep) = (&*key, &*value, &*ctx);
        let idle = sweep.now.saturating_sub(entry.last_seen);
        if idle > timeout(key_ref.protocol, FlowState::from_u8(entry.state)) {
            bpf_map_delete_elem(map, key.cast());
        }
    }
    0
}

/// The counter slot of the tracked flow (or of the fragmented datagram that
/// passed) an ICMP error reports on, if it is tracked and live.
#[inline(always)]
pub fn related_counter(packet: &Packet, flow: &mut FlowRef, now: u64) -> Option<u32> {
    let quoted = &packet.related;
    match packet.related_track {
        Track::Never => None,
        Track::Fragment => {
            let mut key = MaybeUninit::uninit();
            let key = fragments::datagram_key(&mut key, quoted, packet.related_fragment_id, quoted.protocol);
            // SAFETY: a copy of the value, read at once.
            unsafe { FRAGMENTS.get(key).copied() }
        }
        track => {
            flow.set(quoted, track);
            let e = find(&flow.key)?;
            // SAFETY: map value pointer, read at once; racing writers only
            // move timestamps and states.
            let (last_seen, state, slot) = unsafe { ((*e).last_seen, (*e).state, (*e).slot) };
            let idle = now.saturating_sub(last_seen);
            if idle > timeout(flow.key.protocol, FlowState::from_u8(state)) {
                return None;
            }
            Some(slot)
        }
    }
}
