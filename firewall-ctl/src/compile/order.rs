//! Rule ids: the bit of each rule in the rule sets, and the index of its
//! counters. Ids follow file order (file, line, column; an implicit
//! allow-all outbound rule, which is in no file, after the written rules),
//! so among equally specific matches the lowest id is the first in file
//! order, as docs/cli.md asks. Specificity itself is settled per packet by the
//! walk over address tries (see `firewall_common::policy::AddrRules`).

use crate::policy::Rule;

/// Sorts rules into id order. The sort is stable: rules that tie (an alias
/// repeating a rule) keep group order.
pub fn sort<T>(rules: &mut [(T, &Rule)]) {
    rules.sort_by_key(|(_, r)| (r.implicit, r.at.file_index, r.at.line, r.at.col));
}
