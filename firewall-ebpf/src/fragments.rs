//! Non-first IP fragments (docs/semantics.md item 14): they carry no ports, so
//! they follow the verdict of their datagram's first fragment, remembered
//! in `FRAGMENTS` when it passed. A later fragment that arrives before its
//! first, or whose first was dropped, is dropped.
use core::{mem::MaybeUninit, ptr::addr_of_mut};

use crate::{
    maps::{FragmentKey, FRAGMENTS},
    parse::{Packet, Tuple},
    words,
};

/// The key of `packet`'s datagram, written in `key`.
#[inline(always)]
fn key<'k>(packet: &Packet, key: &'k mut MaybeUninit<FragmentKey>) -> &'k FragmentKey {
    let t = &packet.tuple;
    // The protocol all fragments name (not the first fragment's L4 protocol).
    datagram_key(key, t, packet.fragment_id, packet.fragment_protocol)
}

/// The key of the datagram of `tuple`'s addresses and family, `id` and
/// `protocol`, written in `key` word by word (see `words`).
#[inline(always)]
pub fn datagram_key<'k>(key: &'k mut MaybeUninit<FragmentKey>, t: &Tuple, id: u32, protocol: u8) -> &'k FragmentKey {
    let k = key.as_mut_ptr();
    // SAFETY: every field of the key is written before it is read.
    unsafe {
        words::copy(addr_of_mut!((*k).src), &t.src);
        words::copy(addr_of_mut!((*k).dst), &t.dst);
        (*k).id = id;
        (*k).protocol = protocol;
        (*k).family = t.family;
        (*k)._pad = [0; 2];
        key.assume_init_ref()
    }
}

/// Records that the datagram of this first fragment passed, crediting
/// counter slot `counter`.
#[inline(always)]
pub fn remember(packet: &Packet, counter: u32) {
    let mut k = MaybeUninit::uninit();
    // Failure only loses this datagram's later fragments.
    let _ = FRAGMENTS.insert(key(packet, &mut k), &counter, 0);
}

/// The counter slot of this later fragment's datagram, if its first
/// fragment passed.
#[inline(always)]
pub fn counter_of(packet: &Packet) -> Option<u32> {
    let mut k = MaybeUninit::uninit();
    // SAFETY: a copy of the value, read at once.
    unsafe { FRAGMENTS.get(key(packet, &mut k)).copied() }
}
