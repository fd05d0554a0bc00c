//! Non-first IP fragments (docs/semantics.md item 14): they carry no ports, so
//! they follow the verdict of their datagram's first fragment, remembered
//! in `FRAGMENTS` when it passed. A later fragment that arrives before its
//! first, or whose first was dropped, is dropped.
use crate::{
    maps::{FragmentKey, FRAGMENTS},
    parse::Packet,
};

#[inline(always)]
fn key(packet: &Packet) -> FragmentKey {
    let t = &packet.tuple;
    FragmentKey { src: t.src, dst: t.dst, id: packet.fragment_id, protocol: t.protocol, family: t.family, _pad: [0; 2] }
}

/// Records that the datagram of this first fragment passed, crediting
/// counter slot `counter`.
#[inline(always)]
pub fn remember(packet: &Packet, counter: u32) {
    // Failure only loses this datagram's later fragments.
    let _ = FRAGMENTS.insert(&key(packet), &counter, 0);
}

/// The counter slot of this later fragment's datagram, if its first
/// fragment passed.
#[inline(always)]
pub fn counter_of(packet: &Packet) -> Option<u32> {
    // SAFETY: a copy of the value, read at once.
    unsafe { FRAGMENTS.get(&key(packet)).copied() }
}
