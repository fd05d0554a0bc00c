//! What the running kernel can do, asked of it (never guessed from its
//! version alone: distributions backport).
use std::sync::OnceLock;

use crate::state::sys;

/// Whether the kernel has tcx (Linux 6.6 and later): asked with a
/// `BPF_PROG_QUERY` of tcx ingress on the loopback device (ifindex 1 in
/// every network namespace), which older kernels refuse with EINVAL.
pub fn has_tcx() -> bool {
    static TCX: OnceLock<bool> = OnceLock::new();
    *TCX.get_or_init(|| match sys::prog_query_count(1, sys::BPF_TCX_INGRESS) {
        Ok(_) => true,
        Err(e) => e.raw_os_error() != Some(libc::EINVAL),
    })
}
