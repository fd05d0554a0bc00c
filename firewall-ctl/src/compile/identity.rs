//! A rule's identity: what it matches, hashed. Counters follow a rule across
//! policy changes by this value (`sgctl apply` keeps a rule's counter slot
//! while a rule of the same identity exists), so it leaves out what does not
//! change the rule's meaning: its position and its description. Peers are
//! sorted, so listing them in another order is the same rule.
//!
//! The hash is FNV-1a over a fixed text form, stable across sgctl versions:
//! identities are stored in the state and compared by the next `sgctl`.

use super::RuleInfo;
use crate::policy::{Ports, Protocol, Rule, RuleDirection};

/// The identity of `rule` of `group` in `direction`.
pub fn of(group: &str, direction: RuleDirection, rule: &Rule) -> u64 {
    let protocol = match rule.protocol {
        Protocol::All => "all".to_owned(),
        Protocol::Other(n) => n.to_string(),
        p => p.number().map_or_else(String::new, |n| n.to_string()),
    };
    let ports = match &rule.ports {
        Ports::Any => "any".to_owned(),
        Ports::Ranges(ranges) => {
            let mut r: Vec<(u16, u16)> = ranges.iter().map(|r| (r.first, r.last)).collect();
            r.sort_unstable();
            r.iter().map(|(a, b)| format!("{a}-{b}")).collect::<Vec<_>>().join(",")
        }
    };
    let mut peers: Vec<String> = rule.peers.iter().map(|p| p.target.to_string()).collect();
    peers.sort();
    peers.dedup();
    let text = format!(
        "v1|{group}|{direction}|{protocol}|{ports}|{:?}|{:?}|{}|{}",
        rule.icmp_type,
        rule.icmp_code,
        peers.join(","),
        u8::from(rule.implicit)
    );
    fnv1a(text.as_bytes())
}

/// Two rules of one identity in one table (the same rule written twice)
/// must still be told apart: the second and later get the occurrence
/// number mixed in, in table order, which is file order.
pub fn disambiguate(rules: &mut [RuleInfo]) {
    let mut seen: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for rule in rules {
        let n = seen.entry(rule.identity).or_insert(0);
        if *n > 0 {
            rule.identity = fnv1a(format!("{}#{n}", rule.identity).as_bytes());
        }
        *n += 1;
    }
}

/// FNV-1a, 64 bits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
