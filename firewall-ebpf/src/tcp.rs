//! TCP flow states and sequence windows (semantics.md item 10).
//!
//! A flow is established only when the handshake completes (SYN, SYN-ACK,
//! the opener's ACK); until then, and once it closes, the transitory
//! timeout applies. A packet changes the flow's state, and refreshes its
//! idle timer, only if it fits the sequence window its side last showed, as
//! Linux conntrack's `tcp_in_window` checks it (without SACK and
//! retransmission tracking): a blind RST or FIN with a guessed 4-tuple and
//! a wrong sequence number changes nothing.
//!
//! Only an exact RST cuts a flow (RFC 5961, section 3): one whose sequence
//! number is the next one the receiver expects — the sender's next byte as
//! its packets showed it, or the highest acknowledgement the receiver sent
//! (what Linux conntrack checks, `td_maxack`). The host's TCP answers any
//! other RST inside the window with a challenge ACK and stays connected; so
//! does the flow here. A SYN on a synchronized flow (established, or
//! closing but for a bare SYN that reopens it) likewise changes nothing
//! (RFC 5961, section 4).
//!
//! A flow picked up mid-stream (its first packet was not a SYN, e.g. after
//! `sgctl conntrack flush`) has no window to hold packets to; as in Linux
//! ("be liberal" for picked-up connections) every packet of it fits, and it
//! is established once the other side answers. Its sides' next sequence
//! numbers and acknowledgements are still recorded, so a RST must be exact
//! once they are known.
use firewall_common::conntrack::{tcp_seen, FlowEntry, FlowState, TcpSeen};

use crate::parse::{Tcp, NO_WSCALE, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// RFC 7323: shifts above 14 are taken as 14.
const MAX_WSCALE: u8 = 14;

/// Linux's `MAXACKWINDOW` for a side that has not advertised a window yet.
const MAX_ACK_WINDOW_UNKNOWN: u32 = 66000;

/// `a` comes before `b` in sequence space (modulo 2^32).
#[inline(always)]
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[inline(always)]
fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// One past the last sequence number the packet occupies.
#[inline(always)]
fn seq_end(t: &Tcp) -> u32 {
    t.seq
        .wrapping_add(t.datalen)
        .wrapping_add(u32::from(t.flags & TCP_SYN != 0))
        .wrapping_add(u32::from(t.flags & TCP_FIN != 0))
}

/// The opener's side of a flow that a SYN opens.
#[inline(always)]
pub fn opener_of_syn(t: &Tcp) -> TcpSeen {
    let mut seen = TcpSeen { flags: tcp_seen::SYN, ..TcpSeen::default() };
    from_syn(&mut seen, t, seq_end(t));
    seen
}

#[inline(always)]
fn from_syn(s: &mut TcpSeen, t: &Tcp, end: u32) {
    s.end = end;
    s.max_end = end;
    s.max_win = if t.window == 0 { 1 } else { u32::from(t.window) };
    if t.wscale == NO_WSCALE {
        s.scale = 0;
        s.flags &= !tcp_seen::SCALE;
    } else {
        s.scale = if t.wscale > MAX_WSCALE { MAX_WSCALE } else { t.wscale };
        s.flags |= tcp_seen::SCALE;
    }
}

/// The flow's next state after a packet from the opener (`from_opener`) or
/// the other side; `None` when the packet does not fit the flow's windows
/// and must change nothing. Records the packet in the windows when it fits.
///
/// Called through [`sg_tcp_next_state`], never inlined into its caller.
#[inline(always)]
fn next_state(e: &mut FlowEntry, t: &Tcp, from_opener: bool, state: FlowState) -> Option<FlowState> {
    let flags = t.flags;
    let (syn, ack, rst) = (flags & TCP_SYN != 0, flags & TCP_ACK != 0, flags & TCP_RST != 0);
    if syn && matches!(state, FlowState::Established | FlowState::Closing) {
        // RFC 5961 §4: the host answers with a challenge ACK.
        return None;
    }
    let picked_up = e.tcp[0].flags & tcp_seen::SYN == 0;
    let syn_end = e.tcp[0].end;
    let handshake = matches!(state, FlowState::Opening | FlowState::SynReceived);
    let [opener, other] = &mut e.tcp;
    let (s, r) = if from_opener { (opener, other) } else { (other, opener) };
    // Before the SYN-ACK, the other side can only answer the SYN: a SYN-ACK
    // or a RST that acknowledges it exactly (RFC 9293); that RST's
    // sequence number is whatever it is.
    let answering_syn = !picked_up && state == FlowState::Opening && !from_opener;
    if answering_syn && !(ack && (syn || rst) && t.ack == syn_end) {
        return None;
    }
    if rst && !answering_syn && !exact_rst(s, r, t) {
        return None;
    }
    if picked_up {
        record_liberally(s, t);
    } else if !in_window(s, r, t, handshake) {
        return None;
    }
    Some(match state {
        _ if rst || flags & TCP_FIN != 0 => FlowState::Closing,
        FlowState::Opening if picked_up => {
            if from_opener {
                FlowState::Opening
            } else {
                FlowState::Established
            }
        }
        // Checked above: the other side's SYN-ACK of the opener's SYN.
        FlowState::Opening if !from_opener => FlowState::SynReceived,
        FlowState::SynReceived if from_opener && ack && !syn => FlowState::Established,
        other => other,
    })
}

/// [`sg_tcp_next_state`]'s answer when the packet does not fit the windows.
pub const OUT_OF_WINDOW: u64 = 0x100;

/// [`next_state`] of the flow entry `e` for the packet in the scratch map,
/// as a global function: the verifier checks it once, for any entry and
/// any packet, instead of once for every state its caller reaches the call
/// in (inlined, or as a static call, the TCP checks' paths were walked
/// again for each of them: 150,000 to 300,000 instructions a program, 190
/// ms of every load). `how`: bit 0 set when the opener sent the packet,
/// bits 8-15 the flow's [`FlowState`]. Returns the next state, or
/// [`OUT_OF_WINDOW`].
///
/// Its frame is on the chain program → `sg_ct_track` → here, which Linux
/// 6.1 refuses past 512 bytes ("combined stack size of 3 calls"; today
/// 256 + 80 + 160, each rounded up to 32). Its one pointer is only read and
/// written, never handed to a helper (6.1 takes a global function's
/// pointer argument as plain memory, not as a map value).
#[no_mangle]
#[inline(never)]
pub extern "C" fn sg_tcp_next_state(e: *mut FlowEntry, how: u64) -> u64 {
    let Some((packet, _)) = crate::conntrack::scratch() else { return OUT_OF_WINDOW };
    if e.is_null() {
        return OUT_OF_WINDOW;
    }
    let state = FlowState::from_u8((how >> 8) as u8);
    // SAFETY: a flow entry (a map value) the caller found, valid for this
    // program run; not null (checked above).
    let e = unsafe { &mut *e };
    match next_state(e, &packet.tcp, how & 1 != 0, state) {
        Some(next) => next as u64,
        None => OUT_OF_WINDOW,
    }
}

/// Whether a RST from `s` (the receiver being `r`) carries exactly the next
/// sequence number expected: `s`'s next byte, or the highest
/// acknowledgement `r` has sent. A side that has shown neither (a flow
/// picked up whose sides never spoke) takes any RST.
#[inline(always)]
fn exact_rst(s: &TcpSeen, r: &TcpSeen, t: &Tcp) -> bool {
    let known_end = s.max_win != 0;
    let known_ack = r.flags & tcp_seen::ACKED != 0;
    (known_end && t.seq == s.end) || (known_ack && t.seq == r.max_ack) || (!known_end && !known_ack)
}

/// A packet of a flow picked up mid-stream: no window to check, but the
/// side's next sequence number and acknowledgement are kept for the RST
/// check. Written only when they change.
#[inline(always)]
fn record_liberally(s: &mut TcpSeen, t: &Tcp) {
    let end = seq_end(t);
    if s.max_win == 0 {
        s.max_win = u32::from(t.window).max(1);
        s.end = end;
    } else if after(end, s.end) {
        s.end = end;
    }
    record_ack(s, t);
}

/// The highest acknowledgement side `s` has sent.
#[inline(always)]
fn record_ack(s: &mut TcpSeen, t: &Tcp) {
    if t.flags & TCP_ACK != 0 && (s.flags & tcp_seen::ACKED == 0 || after(t.ack, s.max_ack)) {
        s.max_ack = t.ack;
        s.flags |= tcp_seen::ACKED;
    }
}

/// Whether a packet from `s` (the other side being `r`) fits the windows
/// seen so far; when it does, `s` and `r` record it. Linux's
/// `tcp_in_window`: I. the sequence number does not pass what `r` allowed;
/// II. the packet ends no further back than `r`'s largest window;
/// III. the acknowledgement does not pass what `r` sent; IV. nor lags it by
/// more than `s`'s largest window. A packet that does not fit leaves no trace.
#[inline(always)]
fn in_window(s: &mut TcpSeen, r: &mut TcpSeen, t: &Tcp, handshake: bool) -> bool {
    let syn = t.flags & TCP_SYN != 0;
    if s.max_win == 0 || (syn && handshake) {
        // The side's first packet, or a SYN during the handshake: rare, so
        // worked out on copies and written back only if the packet fits.
        let (mut s_new, mut r_new) = (*s, *r);
        if !first_or_syn(&mut s_new, &mut r_new, t) || !fits_and_record(&mut s_new, &mut r_new, t) {
            return false;
        }
        *s = s_new;
        *r = r_new;
        return true;
    }
    fits_and_record(s, r, t)
}

/// Takes in the side's first packet (its SYN-ACK, or the other side's
/// answer to a flow picked up) or a SYN sent again with a new initial
/// sequence number. `false`: nothing more to check, the packet fits.
#[inline(always)]
fn first_or_syn(s: &mut TcpSeen, r: &mut TcpSeen, t: &Tcp) -> bool {
    let syn = t.flags & TCP_SYN != 0;
    let end = seq_end(t);
    if s.max_win == 0 {
        if syn {
            // The SYN-ACK: window scaling holds only if both SYNs asked for it.
            from_syn(s, t, end);
            if s.flags & r.flags & tcp_seen::SCALE == 0 {
                s.scale = 0;
                r.scale = 0;
            }
        } else {
            let win = u32::from(t.window);
            s.end = end;
            s.max_win = if win == 0 { 1 } else { win };
            s.max_end = end.wrapping_add(s.max_win);
        }
    } else if syn && after(end, s.end) {
        from_syn(s, t, end);
    }
    true
}

/// The four checks of [`in_window`] and, when they pass, the update of both
/// sides. Fields are written only when they change: a write per packet
/// would bounce the entry's cache line between the CPUs of the two
/// directions.
#[inline(always)]
fn fits_and_record(s: &mut TcpSeen, r: &mut TcpSeen, t: &Tcp) -> bool {
    let flags = t.flags;
    let syn = flags & TCP_SYN != 0;
    let end = seq_end(t);
    let (s_end, s_max_end, s_max_win) = (s.end, s.max_end, s.max_win);
    let (r_end, r_max_end, r_max_win) = (r.end, r.max_end, r.max_win);
    // No ACK (or a RST with a zero one, as broken stacks send): as if it
    // acknowledged everything.
    let ack = if flags & TCP_ACK == 0 || (flags & TCP_RST != 0 && t.ack == 0) { r_end } else { t.ack };
    let max_ack_window = if s_max_win != 0 { s_max_win } else { MAX_ACK_WINDOW_UNKNOWN };
    let fits = !after(t.seq, s_max_end)
        && (r_max_win == 0 || !before(end, s_end.wrapping_sub(r_max_win)))
        && !after(ack, r_end)
        && !before(ack, r_end.wrapping_sub(max_ack_window));
    if !fits {
        return false;
    }
    let win = u32::from(t.window);
    let win = if syn { win } else { win << s.scale };
    if s_max_win < win {
        s.max_win = win;
    }
    if after(end, s_end) {
        s.end = end;
    }
    if r_max_win != 0 && after(end, s_max_end) {
        r.max_win = r_max_win.wrapping_add(end.wrapping_sub(s_max_end));
    }
    let allowed = ack.wrapping_add(win);
    if after(allowed, r_max_end.wrapping_sub(1)) {
        r.max_end = allowed.wrapping_add(u32::from(win == 0));
    }
    record_ack(s, t);
    true
}
