//! Time as sgctl's userspace reads it: the wall clock (`unix_now*`, for
//! records, logs and deadlines shown to people), and where a command
//! spends its time: with `SGCTL_TIMINGS=1` in the environment, each
//! [`mark`] prints to stderr how long the phase that ends there took. A
//! profiling aid (B4 in BENCHMARKS.md uses it); silent and nearly free
//! otherwise.
use std::{
    sync::{Mutex, OnceLock},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

/// Nanoseconds since the Unix epoch (0 before it).
pub fn unix_now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    unix_now_ns() / 1_000_000
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    unix_now_ns() / 1_000_000_000
}

/// When the last phase ended, if timings are on.
fn last() -> Option<&'static Mutex<Instant>> {
    static LAST: OnceLock<Option<Mutex<Instant>>> = OnceLock::new();
    LAST.get_or_init(|| std::env::var_os("SGCTL_TIMINGS").map(|_| Mutex::new(Instant::now()))).as_ref()
}

/// Ends phase `what`: prints `sgctl: timing: WHAT MS ms` (if timings are on).
pub fn mark(what: &str) {
    let Some(last) = last() else { return };
    let Ok(mut last) = last.lock() else { return };
    let now = Instant::now();
    eprintln!("sgctl: timing: {what} {:.2} ms", now.duration_since(*last).as_secs_f64() * 1000.0);
    *last = now;
}
