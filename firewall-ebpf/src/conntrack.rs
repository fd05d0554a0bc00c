//! Connection tracking (docs/semantics.md items 7-12), in two tables per
//! family (firewall_common::conntrack): a packet's flow is looked up in the
//! confirmed table, then in the pending one; a new flow enters the pending
//! table (an LRU: a flood of flows nobody answers evicts only its own kind
//! of entry), and moves to the confirmed table, which nothing evicts, once
//! the other side has shown it receives the opener's packets.
//!
//! Expired entries: the datapath treats an entry idle past its timeout as
//! absent; a new flow with its key replaces it. Nothing sweeps a table here:
//! the pending tables make room by themselves (LRU), and a full confirmed
//! table only leaves the flows that would enter it pending. `sgctl` deletes
//! expired confirmed flows (`conntrack gc`, every `apply`, and `sgctl agent`
//! periodically), in process context, so no packet pays for walking a table
//! of millions of entries (BENCHMARKS.md, B1, "what a sweep cost").
use core::{mem::MaybeUninit, ptr::addr_of_mut};

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    maps::{HashMap, LruHashMap},
};
use firewall_common::{
    conntrack::{entry_flags, legacy, FlowEntry, FlowKey, FlowKey4, FlowKey6, FlowState, Timeouts},
    counters::{CtEvent, Reason},
    policy::Addr6,
    proto, Direction,
};

use crate::{
    clock, fragments,
    maps::{
        CONNTRACK_PREV, CT4, CT4_PENDING, CT4_PEND_PREV, CT4_PREV, CT6, CT6_PENDING, CT6_PEND_PREV, CT6_PREV,
        CT_TIMEOUTS, FRAGMENTS, SCRATCH,
    },
    parse::{Packet, Track, Tuple, TCP_ACK, TCP_RST, TCP_SYN},
    stats, tcp, words,
};

const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;

/// A packet's flow: its key in the tables of its family (only that one is
/// written), and which endpoint of the key sent it; and working space for
/// an entry and a key of the old layout (in the per-CPU scratch map with
/// the rest, so the BPF stack keeps room for the calls below).
pub struct FlowRef {
    pub key4: FlowKey4,
    pub key6: FlowKey6,
    pub v6: bool,
    pub sender_is_lo: bool,
    entry: FlowEntry,
    legacy_key: FlowKey,
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
        let (lo, lo_port, hi, hi_port) =
            if self.sender_is_lo { (&t.src, t.sport, &t.dst, t.dport) } else { (&t.dst, t.dport, &t.src, t.sport) };
        self.v6 = t.family == 6;
        if self.v6 {
            let k = &mut self.key6;
            // SAFETY: word copies between two `Addr6`s.
            unsafe {
                words::copy(addr_of_mut!(k.addr_lo), lo);
                words::copy(addr_of_mut!(k.addr_hi), hi);
            }
            k.port_lo = lo_port;
            k.port_hi = hi_port;
            k.protocol = t.protocol;
            zero_pad(&mut k._pad);
        } else {
            let k = &mut self.key4;
            k.addr_lo = lo[0];
            k.addr_hi = hi[0];
            k.port_lo = lo_port;
            k.port_hi = hi_port;
            k.protocol = t.protocol;
            zero_pad(&mut k._pad);
        }
    }

    /// The key as the table of an sgctl before the two tables had it
    /// (`conntrack::legacy`), written in `legacy_key`.
    #[inline(always)]
    fn set_legacy_key(&mut self) {
        let k = addr_of_mut!(self.legacy_key);
        // SAFETY: every field is written.
        unsafe {
            if self.v6 {
                words::copy(addr_of_mut!((*k).addr_lo), &self.key6.addr_lo);
                words::copy(addr_of_mut!((*k).addr_hi), &self.key6.addr_hi);
                (*k).port_lo = self.key6.port_lo;
                (*k).port_hi = self.key6.port_hi;
                (*k).protocol = self.key6.protocol;
                (*k).family = 6;
            } else {
                (*k).addr_lo = [self.key4.addr_lo, 0, 0, 0];
                (*k).addr_hi = [self.key4.addr_hi, 0, 0, 0];
                (*k).port_lo = self.key4.port_lo;
                (*k).port_hi = self.key4.port_hi;
                (*k).protocol = self.key4.protocol;
                (*k).family = 4;
            }
            (*k)._pad = [0; 2];
        }
    }
}

/// Clears a key's three bytes of padding. Byte by byte and volatile: a
/// plain `= [0; 3]` compiles to a call to `memset`, a third frame under the
/// program and `sg_ct_track` on Linux 6.1's 512-byte limit for the stack
/// of a call chain (each frame rounded up to 32 bytes).
#[inline(always)]
fn zero_pad(pad: &mut [u8; 3]) {
    let p = pad.as_mut_ptr();
    // SAFETY: the three bytes of `pad`.
    unsafe {
        p.write_volatile(0);
        p.add(1).write_volatile(0);
        p.add(2).write_volatile(0);
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

/// The tables of one address family.
trait Family {
    type Key: 'static;
    fn key(flow: &FlowRef) -> &Self::Key;
    fn confirmed() -> &'static HashMap<Self::Key, FlowEntry>;
    fn pending() -> &'static LruHashMap<Self::Key, FlowEntry>;
    /// While `sgctl` moves the flows into tables of another size: the
    /// entry of `key` in the previous confirmed or pending table.
    fn previous(key: &Self::Key) -> Option<*const FlowEntry>;
}

struct V4;
struct V6;

impl Family for V4 {
    type Key = FlowKey4;
    #[inline(always)]
    fn key(flow: &FlowRef) -> &FlowKey4 {
        &flow.key4
    }
    #[inline(always)]
    fn confirmed() -> &'static HashMap<FlowKey4, FlowEntry> {
        &CT4
    }
    #[inline(always)]
    fn pending() -> &'static LruHashMap<FlowKey4, FlowEntry> {
        &CT4_PENDING
    }
    #[inline(always)]
    fn previous(key: &FlowKey4) -> Option<*const FlowEntry> {
        if let Some(e) = CT4_PREV.get(0).and_then(|t| t.get_ptr(key)) {
            return Some(e);
        }
        CT4_PEND_PREV.get(0).and_then(|t| t.get_ptr(key))
    }
}

impl Family for V6 {
    type Key = FlowKey6;
    #[inline(always)]
    fn key(flow: &FlowRef) -> &FlowKey6 {
        &flow.key6
    }
    #[inline(always)]
    fn confirmed() -> &'static HashMap<FlowKey6, FlowEntry> {
        &CT6
    }
    #[inline(always)]
    fn pending() -> &'static LruHashMap<FlowKey6, FlowEntry> {
        &CT6_PENDING
    }
    #[inline(always)]
    fn previous(key: &FlowKey6) -> Option<*const FlowEntry> {
        if let Some(e) = CT6_PREV.get(0).and_then(|t| t.get_ptr(key)) {
            return Some(e);
        }
        CT6_PEND_PREV.get(0).and_then(|t| t.get_ptr(key))
    }
}

/// Where a packet's flow was found.
#[derive(Clone, Copy)]
struct Found {
    entry: *mut FlowEntry,
    pending: bool,
}

/// An entry of the packet's key that no longer holds a live flow (expired,
/// or a closed TCP flow reopened with the same ports): the new flow
/// replaces it.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stale {
    None = 0,
    /// In a pending table: reused in place.
    Pending = 1,
    /// In a confirmed table: deleted, the new flow starts pending.
    Confirmed = 2,
}

pub enum Lookup {
    /// A live flow; the packet passes, counted on the flow's counter slot under `reason`
    /// (`PassTracked`, or `PassOutOfWindow` for a TCP packet that does not
    /// fit the flow's sequence window and so changed nothing).
    Tracked { slot: u32, reason: Reason },
    /// No live flow: judge by the rules.
    New { stale: Stale },
}

// The conntrack work is done in global functions (`extern "C"`, exported:
// BTF linkage global), each checked once by the verifier for any arguments
// of their types, which return scalars: inlined, the two families' tables
// doubled every path of the programs after them (the verifier processed
// 108,000 instructions and the stack ran out). They take no pointers (but
// `tcp::sg_tcp_next_state`, which hands its entry to no helper):
// each finds the packet and its flow in the per-CPU scratch map itself
// (`maps::Scratch`, the very memory the caller filled), so every key they
// hand a map helper is a map value, which Linux 6.1's verifier requires of
// a helper's key (it refuses a global function's pointer argument there).

/// [`Lookup`] as one scalar: bits 0-31 the slot, 32-39 the reason, 40-47
/// 0 for tracked or 1 + [`Stale`] for new.
const NEW_SHIFT: u32 = 40;

/// The packet being judged and its flow, as the program filled them in the
/// per-CPU scratch map (see the comment above).
#[inline(always)]
pub(crate) fn scratch() -> Option<(&'static Packet, &'static mut FlowRef)> {
    let s = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch entry; the program runs to completion on
    // this CPU, and the caller holds no reference into it across the call.
    let s = unsafe { &mut *s };
    Some((&s.packet, &mut s.flow))
}

/// Finds the packet's flow (into `flow`) and, when it is live, records the
/// packet in it; `counted` is the packet's length when the policy has
/// accounting on (added to the flow's counters), else 0. ICMP other than
/// echo is never looked up.
#[inline(always)]
pub fn track(_flow: &mut FlowRef, _packet: &Packet, now: u64, counted: u64) -> Lookup {
    let v = sg_ct_track(now, counted);
    match (v >> NEW_SHIFT) as u8 {
        0 => Lookup::Tracked {
            slot: v as u32,
            reason: if (v >> 32) as u8 == Reason::PassTracked as u8 {
                Reason::PassTracked
            } else {
                Reason::PassOutOfWindow
            },
        },
        2 => Lookup::New { stale: Stale::Pending },
        3 => Lookup::New { stale: Stale::Confirmed },
        _ => Lookup::New { stale: Stale::None },
    }
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn sg_ct_track(now: u64, counted: u64) -> u64 {
    let Some((packet, flow)) = scratch() else {
        return 1 << NEW_SHIFT;
    };
    let found = match track_flow(flow, packet, now, counted) {
        Lookup::Tracked { slot, reason } => return u64::from(slot) | (reason as u64) << 32,
        Lookup::New { stale } => stale,
    };
    (1 + found as u64) << NEW_SHIFT
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

#[inline(always)]
fn track_flow(flow: &mut FlowRef, packet: &Packet, now: u64, counted: u64) -> Lookup {
    if packet.track == Track::Never {
        return Lookup::New { stale: Stale::None };
    }
    flow.set(&packet.tuple, packet.track);
    if flow.v6 {
        track_in::<V6>(flow, packet, now, counted)
    } else {
        track_in::<V4>(flow, packet, now, counted)
    }
}

#[inline(always)]
fn track_in<F: Family>(flow: &mut FlowRef, packet: &Packet, now: u64, counted: u64) -> Lookup {
    let Some(found) = find::<F>(flow, now) else {
        return Lookup::New { stale: Stale::None };
    };
    // SAFETY: map value pointer, valid for this program run. Concurrent
    // updates from other CPUs only race on timestamps, state and sequence
    // windows, which is benign: at worst a packet is taken as out of window.
    let e = unsafe { &mut *found.entry };
    let state = FlowState::from_u8(e.state);
    let protocol = packet.tuple.protocol;
    let idle = now.saturating_sub(e.last_seen);
    let is_tcp = protocol == proto::TCP;
    // `packet.tcp` is only written for TCP.
    let bare_syn = is_tcp && packet.tcp.flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if idle > timeout(protocol, state) || (bare_syn && state == FlowState::Closing) {
        // Expired, or a closed TCP flow reopened with the same ports: the
        // rules decide again.
        let stale = if found.pending { Stale::Pending } else { Stale::Confirmed };
        return Lookup::New { stale };
    }
    let from_opener = u8::from(flow.sender_is_lo) == e.opened_by_lo;
    if counted != 0 {
        account(found.entry, from_opener, counted);
    }
    let next = if is_tcp {
        let how = u64::from(from_opener) | (state as u64) << 8;
        match tcp::sg_tcp_next_state(found.entry, how) {
            tcp::OUT_OF_WINDOW => return Lookup::Tracked { slot: e.slot, reason: Reason::PassOutOfWindow },
            next => FlowState::from_u8(next as u8),
        }
    } else if !from_opener && state == FlowState::Opening {
        FlowState::Established
    } else {
        state
    };
    let slot = e.slot;
    if next != state || idle > clock::ticks_per_sec() {
        if next == FlowState::Closing && state != FlowState::Closing {
            e.flags |=
                if packet.tcp.flags & TCP_RST != 0 { entry_flags::CLOSED_BY_RST } else { entry_flags::CLOSED_BY_FIN };
        }
        e.state = next as u8;
        e.last_seen = now;
        // On the change, or once a second for a flow that found the
        // confirmed table full.
        let due = next != state || e.flags & entry_flags::PROMOTION_REFUSED != 0;
        if found.pending && due && e.is_confirmable(protocol) {
            promote::<F>(flow, e);
        }
    }
    Lookup::Tracked { slot, reason: Reason::PassTracked }
}

/// Adds one packet of `bytes` to the flow's counters of the side that sent
/// it. Atomic adds: both sides of a flow may be judged on two CPUs at once,
/// and a plain add would lose counts.
#[inline(always)]
fn account(entry: *mut FlowEntry, from_opener: bool, bytes: u64) {
    let side = usize::from(!from_opener);
    // SAFETY: a map value pointer, valid for this program run; `side` is 0 or 1.
    unsafe {
        atomic_add(addr_of_mut!((*entry).packets[side]), 1);
        atomic_add(addr_of_mut!((*entry).bytes[side]), bytes);
    }
}

/// `*p += v`, atomically, as BPF's `lock xadd` (no result read back, so
/// every kernel that runs BPF has it; core's `fetch_add` needs a
/// compare-and-swap the BPF target does not declare).
///
/// # Safety
/// `p` points to a writable, 8-byte aligned `u64` in a map value.
#[inline(always)]
unsafe fn atomic_add(p: *mut u64, v: u64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: the caller's promise.
    unsafe {
        core::arch::asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) p, in(reg) v, options(nostack, preserves_flags));
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: the caller's promise.
    unsafe {
        *p += v;
    }
}

/// Moves a pending flow to the confirmed table, or leaves it pending when
/// that is full (counted once per flow, tried again once a second). The
/// pending entry is gone afterwards: `e` must not be used again.
#[inline(always)]
fn promote<F: Family>(flow: &FlowRef, e: &mut FlowEntry) {
    let refused_before = e.flags & entry_flags::PROMOTION_REFUSED != 0;
    e.flags &= !entry_flags::PROMOTION_REFUSED;
    let key = F::key(flow);
    match F::confirmed().insert(key, &*e, BPF_NOEXIST) {
        Ok(()) => {
            let _ = F::pending().remove(key);
            stats::count_ct(CtEvent::Promoted);
        }
        // Another CPU moved it first.
        Err(err) if err == -EEXIST => {
            let _ = F::pending().remove(key);
        }
        Err(_) => {
            e.flags |= entry_flags::PROMOTION_REFUSED;
            if !refused_before {
                stats::count_ct(CtEvent::PromotionRefused);
            }
        }
    }
}

/// The entry of the packet's key: in the confirmed table, in the pending
/// one, or taken over from the tables `sgctl` is moving flows out of.
#[inline(always)]
fn find<F: Family>(flow: &mut FlowRef, now: u64) -> Option<Found> {
    let key = F::key(flow);
    if let Some(entry) = F::confirmed().get_ptr_mut(key) {
        return Some(Found { entry, pending: false });
    }
    if let Some(entry) = F::pending().get_ptr_mut(key) {
        return Some(Found { entry, pending: true });
    }
    if !take_over::<F>(flow, now) {
        return None;
    }
    // Placed, or another CPU took it over first: either way look again.
    let key = F::key(flow);
    if let Some(entry) = F::confirmed().get_ptr_mut(key) {
        return Some(Found { entry, pending: false });
    }
    F::pending().get_ptr_mut(key).map(|entry| Found { entry, pending: true })
}

/// While `sgctl` moves an interface's flows into new tables (another size,
/// or the layout of an older sgctl): a flow found only in the old tables
/// is copied into the new ones, where this and every later packet finds
/// it. Returns whether it found one.
#[inline(always)]
fn take_over<F: Family>(flow: &mut FlowRef, now: u64) -> bool {
    let entry = addr_of_mut!(flow.entry);
    if let Some(previous) = F::previous(F::key(flow)) {
        // SAFETY: a map value, copied at once into scratch memory.
        unsafe { words::copy(entry, previous) };
    } else {
        flow.set_legacy_key();
        let Some(old) = CONNTRACK_PREV.get(0).and_then(|t| t.get_ptr(&flow.legacy_key)) else {
            return false;
        };
        // SAFETY: a map value of the old layout, read at once.
        unsafe { upgrade(&*old, entry, now) };
    }
    let (key, entry) = (F::key(flow), &flow.entry);
    // A full confirmed table keeps it pending.
    if !entry.is_confirmable(flow_protocol(flow)) || F::confirmed().insert(key, entry, BPF_NOEXIST).is_err() {
        let _ = F::pending().insert(key, entry, BPF_NOEXIST);
    }
    true
}

#[inline(always)]
fn flow_protocol(flow: &FlowRef) -> u8 {
    if flow.v6 {
        flow.key6.protocol
    } else {
        flow.key4.protocol
    }
}

/// An entry of the old layout in today's, its coarse-ktime stamp moved to
/// this clock (ms precision).
#[inline(always)]
unsafe fn upgrade(old: &legacy::FlowEntry, out: *mut FlowEntry, now: u64) {
    // SAFETY: plain helper call (only on this rare path).
    let now_ns = unsafe { bpf_ktime_get_coarse_ns() };
    // Capped at 2^40 ms (decades), so the product cannot overflow (and
    // needs no 128-bit multiply, which BPF lacks).
    let idle_ms = (now_ns.saturating_sub(old.last_seen_ns) / 1_000_000).min(1 << 40);
    let idle = idle_ms * clock::ticks_per_sec() / 1000;
    // SAFETY: `out` points to a writable entry; every field is written.
    unsafe { legacy::upgrade_into(old, out, now.saturating_sub(idle)) };
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

/// The pending table refused a new flow: the kernel's LRU found nothing to
/// evict (memory pressure), so the flow cannot be tracked.
pub struct TableFull;

/// Starts tracking the packet's flow (set in `flow` by [`track`]), which
/// the rule of counter slot `slot` allowed, in the pending table.
/// `counted` as for [`track`]: the first packet's length with accounting on.
#[inline(always)]
pub fn open(
    flow: &mut FlowRef,
    packet: &Packet,
    stale: Stale,
    slot: u32,
    direction: Direction,
    now: u64,
    counted: u64,
) -> Result<(), TableFull> {
    let how = u64::from(slot) | (stale as u64) << 32 | (direction as u64) << 40;
    let _ = (flow, packet);
    if sg_ct_open(how, now, counted) == 0 {
        Ok(())
    } else {
        Err(TableFull)
    }
}

/// [`open`]: `how` holds the slot (bits 0-31), the [`Stale`] (32-39) and
/// the direction (40-47). Returns 0 when the flow is tracked.
#[no_mangle]
#[inline(never)]
pub extern "C" fn sg_ct_open(how: u64, now: u64, counted: u64) -> u32 {
    let Some((packet, flow)) = scratch() else { return 1 };
    let e = addr_of_mut!(flow.entry);
    // Built field by field in scratch memory (see `words`).
    // SAFETY: every field is written; all-zero `TcpSeen`s are valid.
    unsafe {
        (*e).last_seen = now;
        (*e).slot = how as u32;
        (*e).state = FlowState::Opening as u8;
        (*e).opened_by_lo = u8::from(flow.sender_is_lo);
        (*e).direction = if (how >> 40) as u8 == Direction::Outbound as u8 { 1 } else { 0 };
        (*e).flags = 0;
        words::zero(addr_of_mut!((*e).tcp));
        (*e).opened = now;
        (*e).packets[0] = u64::from(counted != 0);
        (*e).packets[1] = 0;
        (*e).bytes[0] = counted;
        (*e).bytes[1] = 0;
        // A flow that begins with a SYN gets sequence windows; one picked up
        // mid-stream does not (see `tcp`).
        if packet.tuple.protocol == proto::TCP && packet.tcp.flags & TCP_SYN != 0 {
            let seen = tcp::opener_of_syn(&packet.tcp);
            words::copy(addr_of_mut!((*e).tcp[0]), &seen);
        }
    }
    let stale = (how >> 32) as u8;
    let opened = if flow.v6 { open_in::<V6>(flow, stale) } else { open_in::<V4>(flow, stale) };
    u32::from(!opened)
}

#[inline(always)]
fn open_in<F: Family>(flow: &FlowRef, stale: u8) -> bool {
    let (key, entry) = (F::key(flow), &flow.entry);
    if stale == Stale::Pending as u8 {
        if let Some(old) = F::pending().get_ptr_mut(key) {
            // SAFETY: map value pointer of the same key, found just now.
            unsafe { words::copy(old, entry) };
            return true;
        }
    } else if stale == Stale::Confirmed as u8 {
        let _ = F::confirmed().remove(key);
    }
    match F::pending().insert(key, entry, BPF_NOEXIST) {
        Ok(()) => {
            stats::count_ct(CtEvent::Opened);
            true
        }
        // Another CPU opened the same flow first: it is tracked either way.
        Err(e) => e == -EEXIST,
    }
}

/// The state of the packet's flow (set in `flow` by [`track`]) after the
/// packet, as `FlowState + 1`, or 0 when it has none (for `sgctl trace`).
#[no_mangle]
#[inline(never)]
pub extern "C" fn sg_ct_state() -> u32 {
    let Some((_, flow)) = scratch() else { return 0 };
    let entry = if flow.v6 { lookup::<V6>(flow) } else { lookup::<V4>(flow) };
    // SAFETY: a copy of one byte of a map value, read at once.
    entry.map_or(0, |e| u32::from(unsafe { (*e).state }) + 1)
}

#[inline(always)]
fn lookup<F: Family>(flow: &FlowRef) -> Option<*mut FlowEntry> {
    let key = F::key(flow);
    F::confirmed().get_ptr_mut(key).or_else(|| F::pending().get_ptr_mut(key))
}

/// The counter slot of the tracked flow (or of the fragmented datagram that
/// passed) an ICMP error reports on, if it is tracked and live.
#[inline(always)]
pub fn related_counter(packet: &Packet, flow: &mut FlowRef, now: u64) -> Option<u32> {
    let _ = (flow, packet);
    let v = sg_ct_related(now);
    (v <= u64::from(u32::MAX)).then_some(v as u32)
}

/// [`related_counter`]; above `u32::MAX` for none.
#[no_mangle]
#[inline(never)]
pub extern "C" fn sg_ct_related(now: u64) -> u64 {
    const NONE: u64 = 1 << 32;
    let Some((packet, flow)) = scratch() else { return NONE };
    let quoted = &packet.related;
    match packet.related_track {
        Track::Never => NONE,
        Track::Fragment => {
            let mut key = MaybeUninit::uninit();
            let key = fragments::datagram_key(&mut key, quoted, packet.related_fragment_id, quoted.protocol);
            // SAFETY: a copy of the value, read at once.
            unsafe { FRAGMENTS.get(key).copied() }.map_or(NONE, u64::from)
        }
        track => {
            flow.set(quoted, track);
            let Some(found) = (if flow.v6 { find::<V6>(flow, now) } else { find::<V4>(flow, now) }) else {
                return NONE;
            };
            let e = found.entry;
            // SAFETY: map value pointer, read at once; racing writers only
            // move timestamps and states.
            let (last_seen, state, slot) = unsafe { ((*e).last_seen, (*e).state, (*e).slot) };
            let idle = now.saturating_sub(last_seen);
            if idle > timeout(quoted.protocol, FlowState::from_u8(state)) {
                return NONE;
            }
            u64::from(slot)
        }
    }
}
