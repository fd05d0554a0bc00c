//! The rules of one interface, direction and address family as disjoint
//! boxes of (address, protocol, destination port, source port), each
//! naming the one rule that a packet inside it is credited to: what a
//! concatenated interval map (`ip saddr . meta l4proto . th dport . th
//! sport vmap`) needs, since its elements must not overlap. Pure, so the
//! tests hold it to a plain loop over the rules.
//!
//! A rule becomes one [`Atom`] per address and port range. Where atoms
//! overlap, the packet is credited as sgctl credits a flow (docs/cli.md):
//! the atom with the longest prefix, then the first rule in file order
//! (sgctl tells 8 tiers of prefixes apart; this, any number).
use std::collections::{BTreeSet, HashMap};

/// An inclusive range.
pub type Span<T> = (T, T);

/// A (protocol, destination port, source port) box: the L4 part of a key.
/// ICMP's type and code are the first two bytes of its header, which is
/// where `th sport` reads: type T, code C is source port `T * 256 + C`.
pub type L4 = [Span<u32>; 3];

/// L4 boxes with the rule each credits, highest priority first.
type Boxes = Vec<(L4, usize)>;

/// One address range and L4 box that allows, and the rule it credits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Atom {
    /// Position of the rule among the interface's rules in file order.
    pub rule: usize,
    /// Prefix length of the address it came from (longer wins the credit).
    pub prefix: u8,
    pub addr: Span<u128>,
    pub l4: L4,
}

/// A disjoint element of the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub addr: Span<u128>,
    pub l4: L4,
    pub rule: usize,
}

/// Disjoint entries covering exactly what the atoms cover, each credited
/// to the atom of highest priority containing it. Consecutive address
/// ranges with the same L4 boxes and rules are merged.
pub fn partition(atoms: &[Atom]) -> Vec<Entry> {
    // Elementary address ranges: between consecutive starts and ends.
    let mut points: BTreeSet<u128> = BTreeSet::new();
    for a in atoms {
        points.insert(a.addr.0);
        if let Some(after) = a.addr.1.checked_add(1) {
            points.insert(after);
        }
    }
    let points: Vec<u128> = points.into_iter().collect();
    // Atoms by priority: longest prefix, then file order.
    let mut order: Vec<usize> = (0..atoms.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(atoms[i].prefix), atoms[i].rule, i));
    let rank: Vec<usize> = {
        let mut rank = vec![0; atoms.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r;
        }
        rank
    };

    let mut starting: HashMap<u128, Vec<usize>> = HashMap::new();
    let mut ending: HashMap<u128, Vec<usize>> = HashMap::new();
    for (i, a) in atoms.iter().enumerate() {
        starting.entry(a.addr.0).or_default().push(i);
        ending.entry(a.addr.1).or_default().push(i);
    }
    let mut boxes_of: HashMap<Boxes, Boxes> = HashMap::new();
    let mut active: BTreeSet<(usize, usize)> = BTreeSet::new(); // (rank, atom)
    let mut out: Vec<Entry> = Vec::new();
    let mut last: Option<(Span<u128>, Boxes)> = None;
    for (k, &lo) in points.iter().enumerate() {
        for &i in starting.get(&lo).into_iter().flatten() {
            active.insert((rank[i], i));
        }
        let hi = points.get(k + 1).map_or(u128::MAX, |next| next - 1);
        let boxes = if active.is_empty() {
            Vec::new()
        } else {
            let key: Boxes = active.iter().map(|&(_, i)| (atoms[i].l4, atoms[i].rule)).collect();
            boxes_of.entry(key.clone()).or_insert_with(|| disjoint(&key)).clone()
        };
        // Atoms ending at `hi` leave after this range.
        for &i in ending.get(&hi).into_iter().flatten() {
            active.remove(&(rank[i], i));
        }
        match &mut last {
            Some((span, prev)) if *prev == boxes && span.1.checked_add(1) == Some(lo) => span.1 = hi,
            _ => {
                if let Some((span, prev)) = last.take() {
                    emit(&mut out, span, prev);
                }
                last = Some(((lo, hi), boxes));
            }
        }
    }
    if let Some((span, prev)) = last {
        emit(&mut out, span, prev);
    }
    out
}

fn emit(out: &mut Vec<Entry>, addr: Span<u128>, boxes: Boxes) {
    out.extend(boxes.into_iter().map(|(l4, rule)| Entry { addr, l4, rule }));
}

/// Boxes of `atoms` (highest priority first) made disjoint: each keeps
/// what no atom before it covers.
fn disjoint(atoms: &[(L4, usize)]) -> Boxes {
    let mut out: Boxes = Vec::new();
    for (k, &(l4, rule)) in atoms.iter().enumerate() {
        let mut pieces = vec![l4];
        for &(before, _) in &atoms[..k] {
            pieces = pieces.into_iter().flat_map(|p| subtract(p, before)).collect();
        }
        out.extend(pieces.into_iter().map(|p| (p, rule)));
    }
    out
}

/// `a` minus `b`: at most two boxes per dimension.
fn subtract(a: L4, b: L4) -> Vec<L4> {
    if (0..3).any(|d| a[d].1 < b[d].0 || b[d].1 < a[d].0) {
        return vec![a];
    }
    let mut out = Vec::new();
    let mut rest = a;
    for d in 0..3 {
        if rest[d].0 < b[d].0 {
            let mut below = rest;
            below[d] = (rest[d].0, b[d].0 - 1);
            out.push(below);
            rest[d].0 = b[d].0;
        }
        if rest[d].1 > b[d].1 {
            let mut above = rest;
            above[d] = (b[d].1 + 1, rest[d].1);
            out.push(above);
            rest[d].1 = b[d].1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY: L4 = [(0, 255), (0, 65535), (0, 65535)];

    fn tcp(port: u32) -> L4 {
        [(6, 6), (port, port), (0, 65535)]
    }

    /// The rule a plain loop over the atoms credits, by the same priority.
    fn brute(atoms: &[Atom], addr: u128, l4: [u32; 3]) -> Option<usize> {
        atoms
            .iter()
            .filter(|a| {
                a.addr.0 <= addr && addr <= a.addr.1 && (0..3).all(|d| a.l4[d].0 <= l4[d] && l4[d] <= a.l4[d].1)
            })
            .min_by_key(|a| (std::cmp::Reverse(a.prefix), a.rule))
            .map(|a| a.rule)
    }

    fn lookup(entries: &[Entry], addr: u128, l4: [u32; 3]) -> Option<usize> {
        let hits: Vec<&Entry> = entries
            .iter()
            .filter(|e| {
                e.addr.0 <= addr && addr <= e.addr.1 && (0..3).all(|d| e.l4[d].0 <= l4[d] && l4[d] <= e.l4[d].1)
            })
            .collect();
        assert!(hits.len() <= 1, "overlapping entries at {addr} {l4:?}: {hits:?}");
        hits.first().map(|e| e.rule)
    }

    #[test]
    fn nested_prefixes_credit_the_longest_and_stay_disjoint() {
        let atoms = vec![
            Atom { rule: 0, prefix: 8, addr: (10 << 24, (11 << 24) - 1), l4: tcp(22) },
            Atom { rule: 1, prefix: 16, addr: (10 << 24 | 1 << 16, (10 << 24 | 2 << 16) - 1), l4: ANY },
            Atom { rule: 2, prefix: 0, addr: (0, u128::from(u32::MAX)), l4: tcp(80) },
        ];
        let entries = partition(&atoms);
        for addr in [0, 10 << 24, 10 << 24 | 1 << 16 | 5, (11 << 24) - 1, 11 << 24, u128::from(u32::MAX)] {
            for l4 in [[6, 22, 0], [6, 80, 1], [17, 22, 0], [1, 0, 2048]] {
                assert_eq!(lookup(&entries, addr, l4), brute(&atoms, addr, l4), "{addr} {l4:?}");
            }
        }
    }

    #[test]
    fn random_policies_match_a_loop_over_their_atoms() {
        let mut state = 0x5eed_u64;
        let mut next = move |n: u64| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        for _ in 0..200 {
            let atoms: Vec<Atom> = (0..(1 + next(12)))
                .map(|i| {
                    let prefix = [0, 4, 6, 8, 8, 7, 6][next(7) as usize];
                    let base = next(256) as u128 & !((1_u128 << (8 - prefix.min(8))) - 1);
                    let span = if prefix == 0 { (0, 255) } else { (base, base + (1 << (8 - prefix)) - 1) };
                    let mut lo = |n: u64| next(n) as u32;
                    let (p0, d0, s0) = (lo(4), lo(40), lo(40));
                    Atom {
                        rule: i as usize,
                        prefix,
                        addr: span,
                        l4: [(p0, p0 + lo(3)), (d0, d0 + lo(20)), (s0, s0 + lo(20))],
                    }
                })
                .collect();
            let entries = partition(&atoms);
            for _ in 0..300 {
                let (addr, l4) = (next(256) as u128, [next(7) as u32, next(64) as u32, next(64) as u32]);
                assert_eq!(lookup(&entries, addr, l4), brute(&atoms, addr, l4), "{atoms:?} {addr} {l4:?}");
            }
        }
    }
}
