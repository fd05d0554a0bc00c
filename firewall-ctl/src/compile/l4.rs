//! A rule's protocol and ports → `L4_RULES` prefixes (see
//! `firewall_common::policy::L4Key` for the layout).

use firewall_common::policy::{l4_prefix, L4Key};

use crate::policy::{Ports, Rule, RuleDirection};

/// The `(prefix length, key)` pairs that together match exactly the
/// protocol, ports and ICMP type/code of `rule`.
pub fn keys(rule: &Rule, direction: RuleDirection) -> Vec<(u32, L4Key)> {
    let direction = direction.to_kernel();
    let key = |protocol, port| L4Key::new(direction, protocol, port);
    let Some(protocol) = rule.protocol.number() else {
        return vec![(l4_prefix::ANY_PROTOCOL, key(0, [0, 0]))];
    };
    match (&rule.ports, rule.icmp_type, rule.icmp_code) {
        (Ports::Ranges(ranges), _, _) => ranges
            .iter()
            .flat_map(|r| port_blocks(r.first, r.last))
            .map(|(len, port)| (l4_prefix::ANY_PORT + len, key(protocol, port.to_be_bytes())))
            .collect(),
        (Ports::Any, Some(t), Some(c)) if rule.protocol.is_icmp() => {
            vec![(l4_prefix::FULL, key(protocol, [t, c]))]
        }
        (Ports::Any, Some(t), None) if rule.protocol.is_icmp() => {
            vec![(l4_prefix::ICMP_TYPE, key(protocol, [t, 0]))]
        }
        (Ports::Any, _, _) => vec![(l4_prefix::ANY_PORT, key(protocol, [0, 0]))],
    }
}

/// The fewest aligned power-of-two blocks covering `first..=last` exactly,
/// as `(prefix bits of the 16-bit port, first port of the block)`. At most
/// 30 blocks for any range.
pub fn port_blocks(first: u16, last: u16) -> Vec<(u32, u16)> {
    let (mut lo, hi) = (u32::from(first), u32::from(last));
    let mut out = Vec::new();
    while lo <= hi {
        // The largest block that starts at `lo` (alignment) and ends by `hi`.
        let mut size_log = if lo == 0 { 16 } else { lo.trailing_zeros().min(16) };
        while lo + (1 << size_log) - 1 > hi {
            size_log -= 1;
        }
        // `lo` is at most 65535 here.
        out.push((16 - size_log, lo as u16));
        lo += 1 << size_log;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(blocks: &[(u32, u16)]) -> Vec<u32> {
        let mut ports: Vec<u32> = blocks
            .iter()
            .flat_map(|&(len, start)| {
                let start = u32::from(start);
                assert_eq!(start % (1 << (16 - len)), 0, "block {start}/{len} is not aligned");
                start..start + (1 << (16 - len))
            })
            .collect();
        ports.sort_unstable();
        ports
    }

    #[test]
    fn blocks_cover_ranges_exactly() {
        for (first, last) in [(1, 65535), (0, 65535), (22, 22), (8000, 8100), (1024, 2047), (65535, 65535), (3, 17)] {
            let blocks = port_blocks(first, last);
            assert!(blocks.len() <= 30, "{first}-{last}: {}", blocks.len());
            assert_eq!(covered(&blocks), (u32::from(first)..=u32::from(last)).collect::<Vec<_>>());
        }
        assert_eq!(port_blocks(0, 65535), [(0, 0)]);
        assert_eq!(port_blocks(1024, 2047), [(6, 1024)]);
        assert_eq!(port_blocks(1, 65535).len(), 16);
    }
}
