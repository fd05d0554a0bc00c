//! sgctl's kernel programs: entry points only.
//!
//! One policy logic ([`filter::judge`]) is compiled into three programs that
//! share one set of maps per interface:
//! - `sg_ingress_xdp`: inbound, as native XDP (physical NICs);
//! - `sg_ingress_tc`: inbound, as tcx ingress (veth and virtual devices, where
//!   XDP would cost most of the TCP throughput, see platform-notes.md);
//! - `sg_egress_tc`: outbound, as tcx egress.
#![no_std]
#![no_main]
// One 32-bit load for a 32-bit packet field (see `frame::load_be32`).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
// aya-ebpf's map calls take `impl Borrow<K>`; clippy would pass keys by
// value, which is one more copy of each key on the 512-byte BPF stack.
#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys are passed in place, not copied onto the BPF stack"
)]

mod clock;
mod conntrack;
mod events;
mod filter;
mod fragments;
mod frame;
mod link;
mod maps;
mod parse;
mod policy;
mod stats;
mod tcp;
mod words;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK, TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use firewall_common::Direction;

#[xdp]
pub fn sg_ingress_xdp(ctx: XdpContext) -> u32 {
    if filter::judge(&ctx, Direction::Inbound).is_drop() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Does nothing: the baseline `cargo xtask bench` measures the others
/// against, in the same run. Never attached.
#[xdp]
pub fn bench_empty_xdp(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Passes everything at once (TCX_PASS): the attach-order test attaches it
/// ahead of sgctl, as another tool might, to show that sgctl still judges
/// first. Never attached by sgctl.
#[classifier]
pub fn test_tcx_pass(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

#[classifier]
pub fn sg_ingress_tc(ctx: TcContext) -> i32 {
    tc_action(&ctx, Direction::Inbound)
}

#[classifier]
pub fn sg_egress_tc(ctx: TcContext) -> i32 {
    tc_action(&ctx, Direction::Outbound)
}

/// Passing returns TCX_NEXT (`TC_ACT_UNSPEC`) so programs attached after ours
/// still run; with none, the packet goes on.
#[inline(always)]
fn tc_action(ctx: &TcContext, direction: Direction) -> i32 {
    frame::linearize_headers(ctx);
    if filter::judge(ctx, direction).is_drop() {
        TC_ACT_SHOT
    } else {
        TC_ACT_UNSPEC
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
