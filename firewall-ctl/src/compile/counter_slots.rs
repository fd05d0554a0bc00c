//! Counter slots: which `RULE_STATS` entry counts each rule.
//!
//! Rule ids are bit positions in file order and shift whenever a rule is
//! added or removed before others; counter slots do not. A rule keeps its
//! slot for as long as a rule of the same identity (`RuleInfo::identity`:
//! what it matches, not where it stands) is in the policy, so its `flows`,
//! `packets` and `bytes` carry on across applies, and a tracked flow, which
//! stores the slot, keeps crediting the rule that opened it.
//!
//! A removed rule's slot is retired, not freed: its tracked flows still
//! credit it (and `sgctl conntrack list` names it as removed). A retired
//! slot is given to a new rule only when no tracked flow uses it any more;
//! there are twice as many slots as rules, so that is rare, and in the
//! worst case the still-tracked flows are moved to `SLOT_REMOVED`.

use std::collections::{BTreeMap, HashSet};

use firewall_common::policy::{COUNTER_SLOTS, SLOT_AUDIT};
use serde::{Deserialize, Serialize};

use crate::compile::RuleInfo;

/// What one counter slot counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotEntry {
    pub rule: RuleInfo,
    /// `None` while the rule is in the policy; the generation that removed it
    /// otherwise.
    pub retired_at: Option<u64>,
}

/// Slot → what it counts. Slots never used are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotTable(pub BTreeMap<u32, SlotEntry>);

/// The outcome of [`assign`].
#[derive(Debug)]
pub struct Assignment {
    pub table: SlotTable,
    /// Counter slot of each rule id.
    pub by_rule: Vec<u32>,
    /// Slots given to a new rule: their counters start from zero.
    pub fresh: Vec<u32>,
    /// Retired slots given to a new rule although tracked flows still used
    /// them: those flows must be moved to `SLOT_REMOVED` first.
    pub evicted: Vec<u32>,
}

/// Gives each rule of `rules` (in rule-id order) a counter slot, keeping
/// the slots of `previous` for rules of the same identity. `in_use` lists
/// the slots tracked flows still credit; it is asked only when a retired
/// slot has to be reused.
pub fn assign(
    previous: &SlotTable,
    rules: &[RuleInfo],
    generation: u64,
    in_use: impl FnOnce() -> HashSet<u32>,
) -> Assignment {
    let mut table = previous.clone();
    let live: BTreeMap<u64, u32> =
        table.0.iter().filter(|(_, e)| e.retired_at.is_none()).map(|(slot, e)| (e.rule.identity, *slot)).collect();
    let wanted: HashSet<u64> = rules.iter().map(|r| r.identity).collect();
    // Rules gone from the policy retire their slots.
    for entry in table.0.values_mut() {
        if entry.retired_at.is_none() && !wanted.contains(&entry.rule.identity) {
            entry.retired_at = Some(generation);
        }
    }
    let mut by_rule = Vec::with_capacity(rules.len());
    let mut fresh = Vec::new();
    let mut evicted = Vec::new();
    let mut free = FreeSlots::new(in_use);
    for rule in rules {
        let slot = match live.get(&rule.identity) {
            Some(slot) => *slot,
            None => {
                let (slot, was_in_use) = free.take(&table);
                if was_in_use {
                    evicted.push(slot);
                }
                fresh.push(slot);
                slot
            }
        };
        // The rule's place and description may have changed; its counters stay.
        table.0.insert(slot, SlotEntry { rule: rule.clone(), retired_at: None });
        by_rule.push(slot);
    }
    Assignment { table, by_rule, fresh, evicted }
}

/// Hands out slots: never-used ones first, then retired ones no flow
/// uses (oldest first), then the oldest retired ones whatever uses them.
struct FreeSlots<F: FnOnce() -> HashSet<u32>> {
    next_unused: u32,
    in_use: Option<F>,
    retired: Option<Vec<(u32, bool)>>,
}

impl<F: FnOnce() -> HashSet<u32>> FreeSlots<F> {
    fn new(in_use: F) -> Self {
        Self { next_unused: 0, in_use: Some(in_use), retired: None }
    }

    /// A slot, and whether tracked flows still use it.
    fn take(&mut self, table: &SlotTable) -> (u32, bool) {
        while self.next_unused < SLOT_AUDIT {
            let slot = self.next_unused;
            self.next_unused += 1;
            if !table.0.contains_key(&slot) {
                return (slot, false);
            }
        }
        let retired = self.retired.get_or_insert_with(|| {
            let used = self.in_use.take().map(|f| f()).unwrap_or_default();
            let mut r: Vec<(u64, u32)> =
                table.0.iter().filter_map(|(slot, e)| e.retired_at.map(|g| (g, *slot))).collect();
            r.sort_unstable();
            // Unused ones first, each group oldest first; `pop` takes from the end.
            let (free, busy): (Vec<_>, Vec<_>) = r.into_iter().partition(|(_, s)| !used.contains(s));
            busy.into_iter()
                .rev()
                .map(|(_, s)| (s, true))
                .chain(free.into_iter().rev().map(|(_, s)| (s, false)))
                .collect()
        });
        // There are COUNTER_SLOTS - 2 usable slots (SLOT_AUDIT and SLOT_REMOVED are kept) and at most MAX_RULES live
        // rules, so a retired slot is always left.
        retired.pop().unwrap_or((SLOT_AUDIT - 1, true))
    }
}

const _: () = assert!(COUNTER_SLOTS as usize - 2 > firewall_common::policy::MAX_RULES);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RuleDirection;

    fn rule(identity: u64, index: u32) -> RuleInfo {
        RuleInfo { group: "g".into(), direction: RuleDirection::Inbound, index, description: None, identity }
    }

    #[test]
    fn unchanged_rules_keep_their_slots_when_one_is_inserted_first() {
        let first = assign(&SlotTable::default(), &[rule(10, 0), rule(11, 1)], 1, HashSet::new);
        assert_eq!(first.by_rule, vec![0, 1]);
        assert_eq!(first.fresh, vec![0, 1]);
        let second = assign(&first.table, &[rule(99, 0), rule(10, 1), rule(11, 2)], 2, HashSet::new);
        assert_eq!(second.by_rule, vec![2, 0, 1]);
        assert_eq!(second.fresh, vec![2]);
        assert_eq!(second.table.0[&0].rule.index, 1, "the rule's new position is recorded");
    }

    #[test]
    fn removed_rules_retire_and_their_slots_are_reused_last() {
        let first = assign(&SlotTable::default(), &[rule(10, 0), rule(11, 1)], 1, HashSet::new);
        let second = assign(&first.table, &[rule(11, 0)], 2, HashSet::new);
        assert_eq!(second.table.0[&0].retired_at, Some(2));
        let third = assign(&second.table, &[rule(11, 0), rule(12, 1)], 3, HashSet::new);
        assert_eq!(third.by_rule, vec![1, 2], "a never-used slot before a retired one");
    }

    #[test]
    fn a_retired_slot_with_flows_is_reused_only_when_nothing_else_is_left() {
        let table = SlotTable(
            (0..SLOT_AUDIT)
                .map(|slot| (slot, SlotEntry { rule: rule(u64::from(slot), 0), retired_at: Some(u64::from(slot % 7)) }))
                .collect(),
        );
        let new = [rule(u64::MAX, 0), rule(u64::MAX - 1, 1)];
        let quiet = assign(&table, &new, 9, || [3, 4].into_iter().collect());
        assert!(quiet.evicted.is_empty());
        assert!(
            quiet.by_rule.iter().all(|s| *s % 7 == 0 && ![3, 4].contains(s)),
            "oldest unused first: {:?}",
            quiet.by_rule
        );
        let busy = assign(&table, &new, 9, || (0..SLOT_AUDIT).collect());
        assert_eq!(busy.evicted, busy.by_rule, "every retired slot still had flows");
        assert!(busy.by_rule.iter().all(|s| *s < SLOT_AUDIT));
    }
}
