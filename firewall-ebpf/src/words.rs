//! Copies and clears of keys and values, one 32-bit word at a time.
//!
//! The compiler turns a copy or clear of a struct or array of more than a
//! few bytes into a call to `memcpy`/`memset`: a byte loop that the
//! verifier walks byte by byte for every path reaching every call site
//! (a sixth of all it checked). Volatile word accesses stay as written.

use core::mem::{align_of, size_of};

/// `*dst = *src`.
///
/// # Safety
/// Both point to valid, 4-byte aligned `T`s that do not overlap.
#[inline(always)]
pub unsafe fn copy<T: Copy>(dst: *mut T, src: *const T) {
    const { assert!(size_of::<T>().is_multiple_of(4) && align_of::<T>() >= 4) };
    let (dst, src) = (dst.cast::<u32>(), src.cast::<u32>());
    for i in 0..size_of::<T>() / 4 {
        // SAFETY: within the two `T`s, as the caller promised.
        unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
    }
}

/// Sets every byte of `*dst` to zero.
///
/// # Safety
/// `dst` points to a valid, 4-byte aligned `T` for which all-zero bytes are
/// a valid value.
#[inline(always)]
pub unsafe fn zero<T>(dst: *mut T) {
    const { assert!(size_of::<T>().is_multiple_of(4) && align_of::<T>() >= 4) };
    let dst = dst.cast::<u32>();
    for i in 0..size_of::<T>() / 4 {
        // SAFETY: within the `T`, as the caller promised.
        unsafe { dst.add(i).write_volatile(0) };
    }
}
