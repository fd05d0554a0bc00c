//! Bounds-checked access to the packet, the same for XDP and tc.
use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    programs::{TcContext, XdpContext},
};

use crate::{
    link::{LINK_BARE_IP, LINK_NET_OFFSET},
    parse,
};

/// A packet the programs can read: its bytes and its length on the wire.
pub trait Frame {
    fn start(&self) -> usize;
    fn end(&self) -> usize;
    /// Bytes counted in `bytes` counters: the whole frame (for tc, the whole
    /// skb, GSO aggregate included).
    fn wire_len(&self) -> u64;
    /// On a device without an Ethernet header: the L3 protocol (an
    /// EtherType, host order) the device gave the packet, and the offset of
    /// its network header. `None`: the frame starts with an Ethernet header.
    fn bare_ip(&self) -> Option<(u16, usize)>;
    /// [`parse::window_scale`] of the `options_len` (at most 40) bytes of
    /// options of the TCP header at `l4` (at most [`parse::MAX_L4_OFFSET`]).
    fn tcp_window_scale(&self, l4: usize, options_len: usize, cursor: &mut u8) -> u8;
}

// The TCP option walk is a loop of 40 steps; inlined, the verifier checks
// it again for every state a SYN can reach it in. As global functions
// (`extern "C"`, exported: BTF linkage global) the verifier checks each
// once, for any arguments of their types, and only the call at each site.
// The arguments are bounded again inside (masks that change no value the
// callers pass), as the verifier knows nothing of them there.

/// [`Frame::tcp_window_scale`] of an XDP program.
#[no_mangle]
#[inline(never)]
pub extern "C" fn sg_tcp_window_scale_xdp(ctx: *mut xdp_md, l4: u32, options_len: u32, cursor: *mut u8) -> u32 {
    // SAFETY: null, or the `cursor` field of the caller's scratch `Packet`.
    let Some(cursor) = (unsafe { cursor.as_mut() }) else { return u32::from(parse::NO_WSCALE) };
    let frame = XdpContext::new(ctx);
    u32::from(parse::window_scale(&frame, options_at(l4), options_len as usize & 0x3f, cursor))
}

/// [`Frame::tcp_window_scale`] of a tc program.
#[no_mangle]
#[inline(never)]
pub extern "C" fn sg_tcp_window_scale_tc(skb: *mut __sk_buff, l4: u32, options_len: u32, cursor: *mut u8) -> u32 {
    // SAFETY: as above.
    let Some(cursor) = (unsafe { cursor.as_mut() }) else { return u32::from(parse::NO_WSCALE) };
    let frame = TcContext::new(skb);
    u32::from(parse::window_scale(&frame, options_at(l4), options_len as usize & 0x3f, cursor))
}

/// Where the options of the TCP header at `l4` start.
#[inline(always)]
fn options_at(l4: u32) -> usize {
    (l4 as usize & parse::MAX_L4_OFFSET) + 20
}

impl Frame for XdpContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    #[inline(always)]
    fn wire_len(&self) -> u64 {
        (self.data_end() - self.data()) as u64
    }
    #[inline(always)]
    fn bare_ip(&self) -> Option<(u16, usize)> {
        None
    }
    #[inline(always)]
    fn tcp_window_scale(&self, l4: usize, options_len: usize, cursor: &mut u8) -> u8 {
        sg_tcp_window_scale_xdp(self.ctx, l4 as u32, options_len as u32, cursor) as u8
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    #[inline(always)]
    fn wire_len(&self) -> u64 {
        u64::from(self.len())
    }
    #[inline(always)]
    fn bare_ip(&self) -> Option<(u16, usize)> {
        if LINK_BARE_IP.load() == 0 {
            return None;
        }
        // `skb->protocol` is a big-endian 16-bit value in a 32-bit field.
        Some((u16::from_be(self.skb.protocol() as u16), LINK_NET_OFFSET.load() as usize))
    }
    #[inline(always)]
    fn tcp_window_scale(&self, l4: usize, options_len: usize, cursor: &mut u8) -> u8 {
        sg_tcp_window_scale_tc(self.skb.skb, l4 as u32, options_len as u32, cursor) as u8
    }
}

/// Most headers we read fit in this many bytes (Ethernet, 2 VLAN tags, IPv6
/// with a few extension headers, TCP, or an ICMP error's embedded header).
/// Headers beyond the linear part are not read: such a packet is dropped
/// as malformed, never passed.
const HEADROOM: u32 = 192;

/// tc may hand us an skb whose headers are not all in the linear part; pull
/// them in only then, as `bpf_skb_pull_data` may copy a cloned skb.
#[inline(always)]
pub fn linearize_headers(ctx: &TcContext) {
    let linear = (ctx.data_end() - ctx.data()) as u32;
    let want = if ctx.len() < HEADROOM { ctx.len() } else { HEADROOM };
    if linear < want {
        let _ = ctx.pull_data(want);
    }
}

/// Pointer to a `T` at `offset` bytes into the packet, or `None` when the
/// packet is shorter. `T` must be made of byte arrays (alignment 1).
#[inline(always)]
pub fn ptr_at<T>(frame: &impl Frame, offset: usize) -> Option<*const T> {
    let start = frame.start();
    if start + offset + core::mem::size_of::<T>() > frame.end() {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Copy of the `T` at `offset`, see [`ptr_at`].
#[inline(always)]
pub fn read_at<T: Copy>(frame: &impl Frame, offset: usize) -> Option<T> {
    // SAFETY: ptr_at checked that the whole T lies inside the packet.
    ptr_at::<T>(frame, offset).map(|p| unsafe { p.read_unaligned() })
}

/// The four packet bytes at `offset` as a word whose memory keeps their
/// order (`u32::from_ne_bytes`), or `None` when the packet is shorter.
/// One 32-bit load: the BPF backend splits a load that may be unaligned (as
/// packet fields are) into four byte loads, shifts and ORs, but the
/// verifier and the JITs allow unaligned packet loads (sgctl never asks for
/// BPF_F_STRICT_ALIGNMENT), so the load is written out.
#[inline(always)]
pub fn load32(frame: &impl Frame, offset: usize) -> Option<u32> {
    let p = ptr_at::<[u8; 4]>(frame, offset)?;
    #[cfg(target_arch = "bpf")]
    {
        let v: u64;
        // SAFETY: `ptr_at` checked that the four bytes lie inside the packet.
        // Not `pure`: the load must stay after that check.
        unsafe {
            core::arch::asm!(
                "{0} = *(u32 *)({1} + 0)",
                out(reg) v,
                in(reg) p,
                options(readonly, nostack, preserves_flags)
            );
        }
        Some(v as u32)
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        // SAFETY: as above.
        Some(u32::from_ne_bytes(unsafe { p.read_unaligned() }))
    }
}
