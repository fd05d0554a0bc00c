//! The policy decision for a packet that opens a new flow: three LPM lookups
//! and an AND of fixed-width rule sets. No loop over rules.
use aya_ebpf::maps::lpm_trie::Key;
use firewall_common::{
    policy::{l4_prefix, L4Key, RuleSet, RULE_WORDS},
    Direction,
};

use crate::{
    maps::{CIDR_RULES4, CIDR_RULES6, L4_RULES, SG_RULES4, SG_RULES6},
    parse::Packet,
};

/// The rule that allows `packet` in `direction`, or `None` (default deny).
/// When several do, the lowest rule id wins; `sgctl` numbers rules by
/// address specificity, then file order.
#[inline(always)]
pub fn allowed_rule(direction: Direction, packet: &Packet) -> Option<u32> {
    let tuple = &packet.tuple;
    let l4 = L4_RULES.get(Key::new(
        l4_prefix::FULL,
        L4Key { direction: direction as u8, protocol: tuple.protocol, port: packet.rule_port },
    ))?;
    // Inbound rules name the source, outbound rules the destination.
    let peer = match direction {
        Direction::Inbound => &tuple.src,
        Direction::Outbound => &tuple.dst,
    };
    let (cidr, sg) = if tuple.family == 4 {
        let addr = peer[0].to_ne_bytes();
        (CIDR_RULES4.get(Key::new(32, addr)), SG_RULES4.get(Key::new(32, addr)))
    } else {
        (CIDR_RULES6.get(Key::new(128, *peer)), SG_RULES6.get(Key::new(128, *peer)))
    };
    first_common(l4, cidr, sg)
}

/// Lowest rule id in `l4 & (cidr | sg)`.
#[inline(always)]
fn first_common(l4: &RuleSet, cidr: Option<&RuleSet>, sg: Option<&RuleSet>) -> Option<u32> {
    for word in 0..RULE_WORDS {
        let peers = cidr.map_or(0, |c| c.words[word]) | sg.map_or(0, |s| s.words[word]);
        let both = l4.words[word] & peers;
        if both != 0 {
            return Some(word as u32 * 64 + lowest_bit(both));
        }
    }
    None
}

/// Index of the lowest set bit of a non-zero word, by binary search (the BPF
/// instruction set has no count-trailing-zeros).
#[inline(always)]
fn lowest_bit(mut w: u64) -> u32 {
    let mut n = 0;
    if w & 0xffff_ffff == 0 {
        n += 32;
        w >>= 32;
    }
    if w & 0xffff == 0 {
        n += 16;
        w >>= 16;
    }
    if w & 0xff == 0 {
        n += 8;
        w >>= 8;
    }
    if w & 0xf == 0 {
        n += 4;
        w >>= 4;
    }
    if w & 0x3 == 0 {
        n += 2;
        w >>= 2;
    }
    if w & 0x1 == 0 {
        n += 1;
    }
    n
}
