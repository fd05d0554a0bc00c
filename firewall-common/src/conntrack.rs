//! Connection tracking: one table per filtered interface.
//!
//! A flow is stored once, under a key whose two endpoints are put in a fixed
//! order (the lower `(address, port)` first), so a packet of either
//! direction finds it with one lookup.

/// Key of `CONNTRACK`. Addresses are [`crate::policy::Addr6`] words; an IPv4
/// address is the first word, the rest zero; `family` keeps the two apart.
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

/// Value of `CONNTRACK`.
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
    pub _pad: u8,
    /// TCP only: what each side has sent, `[opener, other side]`, for the
    /// sequence-window checks of semantics.md item 10. Zero for other
    /// protocols.
    pub tcp: [TcpSeen; 2],
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

/// Default capacity of one interface's conntrack table (settable with
/// `conntrack: { max_entries: N }`).
pub const DEFAULT_CAPACITY: u32 = 65536;

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
