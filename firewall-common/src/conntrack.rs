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
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE) of the last packet.
    pub last_seen_ns: u64,
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

/// Idle timeouts in nanoseconds, one array entry (`CT_CONFIG[0]`), written by
/// `sgctl apply` from the policy's `conntrack:` section.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_established_ns: u64,
    /// TCP while opening (handshake in progress) or closing (FIN/RST seen).
    pub tcp_transitory_ns: u64,
    /// UDP seen in one direction only.
    pub udp_single_ns: u64,
    /// UDP with replies seen.
    pub udp_stream_ns: u64,
    pub icmp_ns: u64,
    pub other_ns: u64,
}

const SEC: u64 = 1_000_000_000;

impl Timeouts {
    /// The AWS defaults (docs/semantics.md item 10).
    pub const AWS_DEFAULT: Self = Self {
        tcp_established_ns: 432_000 * SEC,
        tcp_transitory_ns: 120 * SEC,
        udp_single_ns: 30 * SEC,
        udp_stream_ns: 180 * SEC,
        icmp_ns: 30 * SEC,
        other_ns: 600 * SEC,
    };

    /// Whether `CT_CONFIG[0]` holds no timeouts (zero: never written), so
    /// the AWS defaults apply.
    #[inline(always)]
    pub const fn is_unset(&self) -> bool {
        self.tcp_established_ns == 0
    }

    /// The timeouts in force given what `CT_CONFIG[0]` holds. By value: a
    /// reference to `AWS_DEFAULT` would be one into the object's `.rodata`,
    /// which the kernel side must not read on the per-packet path.
    pub fn in_force(configured: Option<Self>) -> Self {
        match configured {
            Some(t) if !t.is_unset() => t,
            _ => Self::AWS_DEFAULT,
        }
    }

    /// Idle timeout of a flow of `protocol` in `state`.
    pub fn for_flow(&self, protocol: u8, state: FlowState) -> u64 {
        match (protocol, state) {
            (crate::proto::TCP, FlowState::Established) => self.tcp_established_ns,
            (crate::proto::TCP, _) => self.tcp_transitory_ns,
            (crate::proto::UDP, FlowState::Opening) => self.udp_single_ns,
            (crate::proto::UDP, _) => self.udp_stream_ns,
            (crate::proto::ICMP | crate::proto::ICMPV6, _) => self.icmp_ns,
            _ => self.other_ns,
        }
    }
}

/// Default capacity of one interface's conntrack table (settable with
/// `conntrack: { max_entries: N }`).
pub const DEFAULT_CAPACITY: u32 = 65536;
