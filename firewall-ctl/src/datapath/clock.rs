//! The datapath's clock as `sgctl` reads it. The kernel programs stamp
//! flows, events and trace leases with `bpf_jiffies64` (the verifier
//! inlines it: one load instead of a helper call per packet), which counts
//! the kernel's timer ticks (`CONFIG_HZ` a second) since boot, from an
//! offset. `sgctl` needs the same clock for `conntrack list` (idle and
//! expiry times), `conntrack gc`, the agent's flow-log timestamps and
//! `trace`'s lease:
//!
//! - the tick length is the resolution of `CLOCK_MONOTONIC_COARSE`
//!   (`clock_getres`: the kernel's `TICK_NSEC`), so `HZ` needs no kernel
//!   configuration file;
//! - "now" in ticks: the kernel advances jiffies from `CLOCK_MONOTONIC`
//!   one tick per `TICK_NSEC` (`tick_do_update_jiffies64`), so one pair of
//!   readings of both fixes the relation for the life of the process.
//!   `/proc/timer_list` (root only) prints both a few microseconds apart;
//!   without it, the boot value `INITIAL_JIFFIES` (2^32 - 300 HZ) plus the
//!   monotonic time is within a fraction of a second (the tick started a
//!   little after the monotonic clock), which is what `conntrack list` and
//!   `gc` can tolerate: `gc` keeps a margin ([`Clock::margin`]).
use std::{sync::OnceLock, time::Duration};

/// The datapath's clock: ticks per second, and its value at one instant
/// of `CLOCK_MONOTONIC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    hz: u64,
    tick_ns: u64,
    at_mono_ns: u64,
    at_ticks: u64,
    /// How far [`Clock::now`] may be off, in ticks.
    margin: u64,
}

/// The clock of this boot, measured once per process.
pub fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(Clock::measure)
}

impl Clock {
    fn measure() -> Self {
        let tick_ns = tick_ns();
        let from_timer_list = std::fs::read_to_string("/proc/timer_list").ok().and_then(|t| parse_timer_list(&t));
        match from_timer_list {
            // Read a few microseconds apart: a tick either way.
            Some((at_mono_ns, at_ticks)) => Self { margin: 2, ..Self::new(tick_ns, at_mono_ns, at_ticks) },
            None => {
                let mono = mono_ns();
                let clock = Self::new(tick_ns, mono, initial_jiffies(tick_ns) + mono / tick_ns);
                // The tick starts within the first second or so of boot.
                Self { margin: 2 * clock.hz, ..clock }
            }
        }
    }

    /// A clock whose ticks last `tick_ns` and read `at_ticks` when
    /// `CLOCK_MONOTONIC` read `at_mono_ns`.
    pub fn new(tick_ns: u64, at_mono_ns: u64, at_ticks: u64) -> Self {
        let tick_ns = tick_ns.max(1);
        Self { hz: (1_000_000_000 + tick_ns / 2) / tick_ns, tick_ns, at_mono_ns, at_ticks, margin: 0 }
    }

    /// How far past its timeout (in ticks) a flow must be before `sgctl`
    /// deletes it: more than [`Clock::now`] may be off by.
    pub fn margin(&self) -> u64 {
        self.margin
    }

    /// Ticks per second (the kernel's `HZ`).
    pub fn hz(&self) -> u64 {
        self.hz
    }

    /// The clock now.
    pub fn now(&self) -> u64 {
        self.at_mono(mono_ns())
    }

    /// The clock when `CLOCK_MONOTONIC` read `mono_ns`.
    pub fn at_mono(&self, mono_ns: u64) -> u64 {
        if mono_ns >= self.at_mono_ns {
            self.at_ticks + (mono_ns - self.at_mono_ns) / self.tick_ns
        } else {
            self.at_ticks.saturating_sub((self.at_mono_ns - mono_ns).div_ceil(self.tick_ns))
        }
    }

    /// `d` in ticks, rounded up.
    pub fn ticks(&self, d: Duration) -> u64 {
        u64::try_from(d.as_nanos().div_ceil(u128::from(self.tick_ns))).unwrap_or(u64::MAX)
    }

    /// `ticks` as a duration.
    pub fn duration(&self, ticks: u64) -> Duration {
        Duration::from_nanos(ticks.saturating_mul(self.tick_ns))
    }

    /// Whole seconds in `ticks`.
    pub fn secs(&self, ticks: u64) -> u64 {
        ticks / self.hz
    }

    /// The Unix time (ns) of clock value `ticks`, by the wall clock now.
    pub fn unix_ns(&self, ticks: u64) -> u64 {
        let now = self.now();
        let wall = crate::timings::unix_now_ns();
        if ticks >= now {
            wall.saturating_add(self.duration(ticks - now).as_nanos() as u64)
        } else {
            wall.saturating_sub(self.duration(now - ticks).as_nanos() as u64)
        }
    }
}

/// The length of a tick: the resolution of `CLOCK_MONOTONIC_COARSE`,
/// which is `TICK_NSEC`. 4 ms (HZ 250, Debian's) if it cannot be read.
fn tick_ns() -> u64 {
    let mut res = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_getres writes one timespec we own.
    let ok = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &raw mut res) } == 0;
    match (ok, u64::try_from(res.tv_sec), u64::try_from(res.tv_nsec)) {
        (true, Ok(s), Ok(ns)) if s * 1_000_000_000 + ns > 0 => s * 1_000_000_000 + ns,
        _ => 4_000_000,
    }
}

fn mono_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0, |t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

/// The kernel's `INITIAL_JIFFIES` on a 64-bit machine: `(u32)(-300 * HZ)`,
/// so that 32-bit jiffies wrap five minutes after boot.
fn initial_jiffies(tick_ns: u64) -> u64 {
    let hz = (1_000_000_000 + tick_ns / 2) / tick_ns;
    (1_u64 << 32) - 300 * hz
}

/// `(monotonic ns, jiffies)` from `/proc/timer_list`: its `now at N nsecs`
/// line (`ktime_get()`) and the first `jiffies: N` line, printed a few
/// microseconds apart.
fn parse_timer_list(text: &str) -> Option<(u64, u64)> {
    let now = text.lines().find_map(|l| l.strip_prefix("now at ")?.strip_suffix(" nsecs")?.trim().parse().ok())?;
    let jiffies = text.lines().find_map(|l| l.trim().strip_prefix("jiffies: ")?.trim().parse().ok())?;
    Some((now, jiffies))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_clocks_from_timer_list() {
        let text = "Timer List Version: v0.9\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at 1202773426490 nsecs\n\ncpu: 0\n \
                    clock 0:\n  .idle_jiffies   : 4295191215\njiffies: 4295192926\n";
        assert_eq!(parse_timer_list(text), Some((1_202_773_426_490, 4_295_192_926)));
        assert_eq!(parse_timer_list("now at x nsecs\n"), None);
    }

    #[test]
    fn converts_between_ticks_and_time() {
        let c = Clock::new(4_000_000, 1_000_000_000, 5_000);
        assert_eq!(c.hz(), 250);
        assert_eq!(c.at_mono(2_000_000_000), 5_250);
        assert_eq!(c.at_mono(999_000_000), 4_999);
        assert_eq!(c.ticks(Duration::from_millis(50)), 13);
        assert_eq!(c.duration(250), Duration::from_secs(1));
        assert_eq!(c.secs(749), 2);
        assert_eq!(Clock::new(3_333_333, 0, 0).hz(), 300);
        assert_eq!(initial_jiffies(4_000_000), 4_294_892_296);
    }

    #[test]
    fn the_clock_of_this_boot_agrees_with_the_kernel() {
        let text = std::fs::read_to_string("/proc/timer_list").expect("reading /proc/timer_list needs root");
        let (mono, jiffies) = parse_timer_list(&text).expect("the kernel's timer_list format");
        let c = clock();
        let diff = c.at_mono(mono).abs_diff(jiffies);
        assert!(diff <= 1, "{c:?} says {} at {mono}, the kernel {jiffies}", c.at_mono(mono));
    }
}
