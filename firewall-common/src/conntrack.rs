//! Connection tracking (docs/semantics.md items 7-12): per filtered
//! interface and address family, two tables.
//!
//! - **Confirmed** (`CT4`, `CT6`): flows whose other side has shown it
//!   receives the opener's packets — a TCP handshake completed, or a reply
//!   to a flow the host opened. A plain hash: nothing evicts an entry; a
//!   flow leaves it only when it times out, closes, or `sgctl` removes it.
//! - **Pending** (`CT4_PENDING`, `CT6_PENDING`): every other flow, from its
//!   first packet. A BPF LRU hash: when it is full, a new flow evicts the
//!   flows least recently used, so a flood of flows nobody answers (spoofed
//!   SYNs, one-way UDP, echo requests) churns this table and never closes
//!   the host to new clients nor touches a confirmed flow.
//!
//! A flow is stored once, under a key whose two endpoints are put in a
//! fixed order (the lower `(address, port)` first), so a packet of either
//! direction finds it with one lookup per table. IPv4 keys are 16 bytes
//! (the kernel hashes and compares every byte of a key on every lookup),
//! IPv6 keys 40.

use crate::policy::Addr6;

/// Key of the IPv4 tables (`CT4`, `CT4_PENDING`). Addresses in network
/// order, ports in host order; see [`FlowKey`] for what identifies a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey4 {
    pub addr_lo: u32,
    pub addr_hi: u32,
    pub port_lo: u16,
    pub port_hi: u16,
    pub protocol: u8,
    pub _pad: [u8; 3],
}

/// Key of the IPv6 tables (`CT6`, `CT6_PENDING`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey6 {
    pub addr_lo: Addr6,
    pub addr_hi: Addr6,
    pub port_lo: u16,
    pub port_hi: u16,
    pub protocol: u8,
    pub _pad: [u8; 3],
}

/// A tracked flow as `sgctl` names it, either family; also the key of the
/// single table of sgctl before the two-table layout ([`legacy`]), which
/// had this very layout. Addresses are [`Addr6`] words; an IPv4 address is
/// the first word, the rest zero; `family` keeps the two apart.
///
/// Flow identity follows docs/semantics.md item 8: TCP and UDP use both ports;
/// other protocols use ports 0. An ICMP/ICMPv6 echo flow is the one
/// exception to the fixed endpoint order: `addr_lo` is the endpoint that sent
/// the echo request and `addr_hi` the one that answers, both ports the echo
/// identifier. Only the answering side's echo replies find it (a request the
/// other way round is another key), and no other ICMP message is ever
/// looked up.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub addr_lo: [u32; 4],
    pub addr_hi: [u32; 4],
    /// Ports in host order.
    pub port_lo: u16,
    pub port_hi: u16,
    pub protocol: u8,
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 2],
}

impl From<FlowKey4> for FlowKey {
    fn from(k: FlowKey4) -> Self {
        Self {
            addr_lo: [k.addr_lo, 0, 0, 0],
            addr_hi: [k.addr_hi, 0, 0, 0],
            port_lo: k.port_lo,
            port_hi: k.port_hi,
            protocol: k.protocol,
            family: 4,
            _pad: [0; 2],
        }
    }
}

impl From<FlowKey6> for FlowKey {
    fn from(k: FlowKey6) -> Self {
        Self {
            addr_lo: k.addr_lo,
            addr_hi: k.addr_hi,
            port_lo: k.port_lo,
            port_hi: k.port_hi,
            protocol: k.protocol,
            family: 6,
            _pad: [0; 2],
        }
    }
}

impl FlowKey {
    /// The key of the IPv4 tables, if this is an IPv4 flow.
    pub fn v4(&self) -> Option<FlowKey4> {
        (self.family == 4).then_some(FlowKey4 {
            addr_lo: self.addr_lo[0],
            addr_hi: self.addr_hi[0],
            port_lo: self.port_lo,
            port_hi: self.port_hi,
            protocol: self.protocol,
            _pad: [0; 3],
        })
    }

    /// The key of the IPv6 tables, if this is an IPv6 flow.
    pub fn v6(&self) -> Option<FlowKey6> {
        (self.family == 6).then_some(FlowKey6 {
            addr_lo: self.addr_lo,
            addr_hi: self.addr_hi,
            port_lo: self.port_lo,
            port_hi: self.port_hi,
            protocol: self.protocol,
            _pad: [0; 3],
        })
    }
}

/// Which table holds a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Confirmed,
    Pending,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Pending => "pending",
        }
    }
}

/// Value of every conntrack table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEntry {
    /// The datapath's clock (`bpf_jiffies64`, ticks) at the last packet.
    pub last_seen: u64,
    /// Counter slot of the rule that allowed the first packet (see
    /// `policy::COUNTER_SLOTS`): its counters get the flow's traffic, and
    /// it names the rule across policy changes.
    pub slot: u32,
    /// One of [`FlowState`].
    pub state: u8,
    /// 1 when the `lo` endpoint of the key sent the first packet.
    pub opened_by_lo: u8,
    /// [`crate::Direction`] of the first packet.
    pub direction: u8,
    /// [`entry_flags`] bits.
    pub flags: u8,
    /// TCP only: what each side has sent, `[opener, other side]`, for the
    /// sequence-window checks of semantics.md item 10. Zero for other
    /// protocols.
    pub tcp: [TcpSeen; 2],
    /// The datapath's clock at the flow's first packet: tells a flow from a
    /// later one that reuses its key (the agent's flow logs).
    pub opened: u64,
    /// With accounting on (`conntrack: { accounting: true }`, the policy's
    /// [`crate::policy::slot_flags::ACCOUNTING`]): the packets each side
    /// sent since the flow opened, `[opener, other side]`, every packet the
    /// flow passed (out-of-window TCP packets included). Zero without.
    pub packets: [u64; 2],
    /// As `packets`, their bytes: the frame length the hook saw (Ethernet
    /// header included, as the rule counters count).
    pub bytes: [u64; 2],
}

impl FlowEntry {
    /// Whether the flow belongs in the confirmed table: its other side has
    /// shown it receives the opener's packets. TCP: the handshake completed
    /// (its last ACK acknowledged the responder's initial sequence number,
    /// which a sender of spoofed SYNs never sees), or a flow picked up
    /// mid-stream was answered. Other protocols: a reply to a flow the host
    /// opened. A reply to a flow a remote opened proves nothing (the host
    /// answers a spoofed DNS query or echo request too), so such a flow
    /// stays pending, evictable.
    #[inline(always)]
    pub fn is_confirmable(&self, protocol: u8) -> bool {
        self.state == FlowState::Established as u8
            && (protocol == crate::proto::TCP || self.direction == crate::Direction::Outbound as u8)
    }
}

/// Bits of [`FlowEntry::flags`].
pub mod entry_flags {
    /// The flow qualified for the confirmed table when it was full: it
    /// stays pending (counted once as `promotion_refused`), and moves over
    /// when room is made, tried at most once a second.
    pub const PROMOTION_REFUSED: u8 = 1;
    /// The flow began closing (state `Closing`) on a FIN, or on a RST: the
    /// flow logs' `end-reason`.
    pub const CLOSED_BY_FIN: u8 = 2;
    pub const CLOSED_BY_RST: u8 = 4;
}

/// One side of a TCP flow as its packets showed it: the window a packet of
/// this side must fall into to change the flow's state, in the manner of
/// Linux conntrack's `tcp_in_window` (without SACK and retransmission
/// tracking). Sequence numbers compare modulo 2^32.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSeen {
    /// One past the last sequence number this side sent (SYN and FIN count one).
    pub end: u32,
    /// The highest `end` the other side has allowed (its ACK plus its window).
    pub max_end: u32,
    /// The largest window this side advertised, scaled; 0 until it sent.
    pub max_win: u32,
    /// The highest acknowledgement this side sent (its `RCV.NXT` as it
    /// announced it), valid once [`tcp_seen::ACKED`] is set: with `end`, what
    /// makes a RST exact (RFC 5961).
    pub max_ack: u32,
    /// Window scale shift this side announced in its SYN (RFC 7323); applies
    /// only when both sides announced one.
    pub scale: u8,
    /// [`tcp_seen`] bits.
    pub flags: u8,
    pub _pad: [u8; 2],
}

/// Bits of [`TcpSeen::flags`].
pub mod tcp_seen {
    /// The side's SYN carried a window scale option.
    pub const SCALE: u8 = 1;
    /// The flow began with this side's SYN (not picked up mid-stream).
    pub const SYN: u8 = 2;
    /// `max_ack` holds an acknowledgement this side sent.
    pub const ACKED: u8 = 4;
}

/// Where a flow stands; chooses its idle timeout.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// UDP, ICMP echo, other: only the opener has sent. TCP: the opener's SYN
    /// was seen (or, for a flow picked up mid-stream, its first packet), and
    /// the other side has not answered it yet.
    Opening = 0,
    /// UDP, ICMP echo, other: both sides have sent. TCP: the handshake
    /// completed (the opener's ACK of the SYN-ACK), or a flow picked up
    /// mid-stream was answered in its window.
    Established = 1,
    /// TCP: a FIN or RST inside the flow's sequence window was seen.
    Closing = 2,
    /// TCP: the other side's SYN-ACK answered the opener's SYN; the opener's
    /// ACK has not completed the handshake yet.
    SynReceived = 3,
}

impl FlowState {
    /// The state's name in every report (`conntrack list`, `trace`):
    /// a TCP handshake is `opening` until it completes, SYN-ACK seen or not.
    pub fn name(self) -> &'static str {
        match self {
            Self::Opening | Self::SynReceived => "opening",
            Self::Established => "established",
            Self::Closing => "closing",
        }
    }

    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Established,
            2 => Self::Closing,
            3 => Self::SynReceived,
            _ => Self::Opening,
        }
    }
}

/// Idle timeouts. Nanoseconds in `sgctl` (the policy's `conntrack:`
/// section, [`Timeouts::AWS_DEFAULT`]); clock ticks of the datapath in its
/// `CT_TIMEOUTS[0]`, which `sgctl apply` writes ([`Timeouts::in_ticks`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_established: u64,
    /// TCP while opening (handshake in progress) or closing (FIN/RST seen).
    pub tcp_transitory: u64,
    /// UDP seen in one direction only.
    pub udp_single: u64,
    /// UDP with replies seen.
    pub udp_stream: u64,
    pub icmp: u64,
    pub other: u64,
}

pub const SEC_NS: u64 = 1_000_000_000;

impl Timeouts {
    /// The AWS defaults (docs/semantics.md item 10), in nanoseconds.
    pub const AWS_DEFAULT: Self = Self {
        tcp_established: 432_000 * SEC_NS,
        tcp_transitory: 120 * SEC_NS,
        udp_single: 30 * SEC_NS,
        udp_stream: 180 * SEC_NS,
        icmp: 30 * SEC_NS,
        other: 600 * SEC_NS,
    };

    /// Whether `CT_TIMEOUTS[0]` holds no timeouts (zero: never written), so
    /// the AWS defaults apply.
    #[inline(always)]
    pub const fn is_unset(&self) -> bool {
        self.tcp_established == 0
    }

    /// These timeouts, given in nanoseconds, in ticks of a clock that ticks
    /// `hz` times a second, rounded up (never shorter than asked).
    #[inline(always)]
    pub const fn in_ticks(&self, hz: u64) -> Self {
        const fn ticks(ns: u64, hz: u64) -> u64 {
            // In two parts, so a timeout of days times a large HZ cannot overflow.
            (ns / SEC_NS) * hz + ((ns % SEC_NS) * hz).div_ceil(SEC_NS)
        }
        Self {
            tcp_established: ticks(self.tcp_established, hz),
            tcp_transitory: ticks(self.tcp_transitory, hz),
            udp_single: ticks(self.udp_single, hz),
            udp_stream: ticks(self.udp_stream, hz),
            icmp: ticks(self.icmp, hz),
            other: ticks(self.other, hz),
        }
    }

    /// The timeouts in force given what `CT_TIMEOUTS[0]` holds, in ticks of
    /// a clock of `hz`. By value: a reference to `AWS_DEFAULT` would be one
    /// into the object's `.rodata`, which the kernel side must not read on
    /// the per-packet path.
    pub fn in_force(configured: Option<Self>, hz: u64) -> Self {
        match configured {
            Some(t) if !t.is_unset() => t,
            _ => Self::AWS_DEFAULT.in_ticks(hz),
        }
    }

    /// Idle timeout of a flow of `protocol` in `state`.
    pub fn for_flow(&self, protocol: u8, state: FlowState) -> u64 {
        match (protocol, state) {
            (crate::proto::TCP, FlowState::Established) => self.tcp_established,
            (crate::proto::TCP, _) => self.tcp_transitory,
            (crate::proto::UDP, FlowState::Opening) => self.udp_single,
            (crate::proto::UDP, _) => self.udp_stream,
            (crate::proto::ICMP | crate::proto::ICMPV6, _) => self.icmp,
            _ => self.other,
        }
    }
}

/// Default capacity of each of an interface's conntrack tables (settable
/// with `conntrack: { max_entries: N }`).
pub const DEFAULT_CAPACITY: u32 = 65536;

/// The layout of sgctl before the two tables: one plain hash per
/// interface, `CONNTRACK`, keyed by [`FlowKey`], whose values were
/// [`legacy::FlowEntry`] stamped by `bpf_ktime_get_coarse_ns`. An interface
/// an older sgctl filtered is moved to the new tables by the next `apply`
/// or `restore`, its flows with it.
pub mod legacy {
    /// The pinned name of the old table.
    pub const CONNTRACK: &str = "CONNTRACK";

    /// One side of a TCP flow, as the old layout kept it.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct TcpSeen {
        pub end: u32,
        pub max_end: u32,
        pub max_win: u32,
        pub scale: u8,
        pub flags: u8,
        pub _pad: [u8; 2],
    }

    /// Value of the old `CONNTRACK`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct FlowEntry {
        /// CLOCK_MONOTONIC_COARSE, ns, at the last packet.
        pub last_seen_ns: u64,
        pub slot: u32,
        pub state: u8,
        pub opened_by_lo: u8,
        pub direction: u8,
        pub _pad: u8,
        pub tcp: [TcpSeen; 2],
    }

    /// Writes `old` in today's layout into `out`, its timestamp
    /// `last_seen` in the datapath's ticks (the caller converts the
    /// clocks). What the old layout did not keep is taken as the most it
    /// can be: each side has acknowledged everything the other sent. Field
    /// by field, for the kernel side (a struct copy would be a byte loop
    /// for the verifier).
    ///
    /// # Safety
    /// `out` points to a writable `FlowEntry`.
    #[inline(always)]
    pub unsafe fn upgrade_into(old: &FlowEntry, out: *mut super::FlowEntry, last_seen: u64) {
        // SAFETY: the caller's promise; every field of `*out` is written.
        unsafe {
            (*out).last_seen = last_seen;
            (*out).slot = old.slot;
            (*out).state = old.state;
            (*out).opened_by_lo = old.opened_by_lo;
            (*out).direction = old.direction;
            (*out).flags = 0;
            for (i, other) in [(0, 1), (1, 0)] {
                let (s, r, t) = (&old.tcp[i], &old.tcp[other], &mut (*out).tcp[i]);
                t.end = s.end;
                t.max_end = s.max_end;
                t.max_win = s.max_win;
                t.max_ack = r.end;
                t.scale = s.scale;
                t.flags = if s.max_win != 0 { s.flags | super::tcp_seen::ACKED } else { s.flags };
                t._pad = [0; 2];
            }
            // The old layout counted nothing, nor kept when a flow opened.
            // Volatile: plain stores of zero merge into a call to
            // `memset`, one more frame on the kernel side's call chain.
            (*out).opened = last_seen;
            core::ptr::addr_of_mut!((*out).packets[0]).write_volatile(0);
            core::ptr::addr_of_mut!((*out).packets[1]).write_volatile(0);
            core::ptr::addr_of_mut!((*out).bytes[0]).write_volatile(0);
            core::ptr::addr_of_mut!((*out).bytes[1]).write_volatile(0);
        }
    }

    /// [`upgrade_into`], for `sgctl`.
    pub fn upgraded(old: &FlowEntry, last_seen: u64) -> super::FlowEntry {
        let mut out = core::mem::MaybeUninit::uninit();
        // SAFETY: `upgrade_into` writes every field.
        unsafe {
            upgrade_into(old, out.as_mut_ptr(), last_seen);
            out.assume_init()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_in_ticks_round_up_and_never_overflow() {
        let t = Timeouts { udp_single: 50_000_000, ..Timeouts::AWS_DEFAULT }.in_ticks(250);
        assert_eq!(t.udp_single, 13, "50 ms is 12.5 ticks of 4 ms: never shorter");
        assert_eq!(t.tcp_established, 432_000 * 250);
        assert_eq!(t.icmp, 30 * 250);
        assert_eq!(Timeouts::AWS_DEFAULT.in_ticks(1000).tcp_transitory, 120_000);
        assert_eq!(
            Timeouts { other: u64::MAX, ..Timeouts::AWS_DEFAULT }.in_ticks(1000).other / 1000,
            u64::MAX / SEC_NS
        );
    }
}
