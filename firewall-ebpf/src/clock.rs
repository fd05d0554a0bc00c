//! The datapath's clock: `bpf_jiffies64`, which the verifier inlines into
//! one load of the kernel's `jiffies_64` (no helper call: on a CPU that
//! pays a return thunk per kernel call, the coarse ktime helper cost ~7 ns
//! a packet, three functions deep). It ticks `CONFIG_HZ` times a second;
//! `sgctl` tells each copy of the object how many (from
//! `clock_getres(CLOCK_MONOTONIC_COARSE)`, one tick) and converts for
//! `conntrack list`, `gc`, the agent's flow logs and `trace`.
use aya_ebpf::{helpers::generated::bpf_jiffies64, Global};

/// Clock ticks per second (the kernel's `HZ`), set by `sgctl` at load.
/// Read-only, so the verifier sees a constant.
#[no_mangle]
pub static TICKS_PER_SEC: Global<u64> = Global::new(250);

/// Now, in clock ticks.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: plain helper call, inlined by the verifier.
    unsafe { bpf_jiffies64() }
}

/// Clock ticks per second.
#[inline(always)]
pub fn ticks_per_sec() -> u64 {
    TICKS_PER_SEC.load()
}
