//! Group memberships changed with `sgctl members`, kept beside the policy
//! files they amend (docs/cli.md, `sgctl members`).
//!
//! A group's `members:` are the addresses of instances that come and go, so
//! they change far more often than rules, one address at a time. `sgctl
//! members add|remove` records the net change per group and address here —
//! the policy in force is the files' text with these edits on top — and
//! puts it in force without reading the files again
//! (`control::member_change`). The next `sgctl apply` of files replaces the
//! policy, edits included: the files are the truth again.
//!
//! The fleet's members (`sgctl agent --etcd`, docs/fleet.md) ride here too,
//! as a layer of their own: the addresses other hosts publish for a group.
//! They join the group beside its `members:` (and local interfaces), are
//! changed in place the same way, and outlive an `apply` of files: the
//! agent owns them, not the files.
use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::policy::{Members, Policy};

/// The most addresses edits may name: each `sgctl members` rewrites them,
/// so they must stay small; many more belong in the policy files.
pub const MAX_EDITED_ADDRESSES: usize = 65_536;

/// Net changes to groups' members, by group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEdits {
    /// Addresses that carry the group, whatever the files say.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub added: BTreeMap<String, BTreeSet<IpNet>>,
    /// Addresses that do not carry the group, whatever the files say.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub removed: BTreeMap<String, BTreeSet<IpNet>>,
    /// Addresses other hosts of the fleet publish for each group (single
    /// addresses of groups the policy defines; `crate::fleet` checks them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fleet: BTreeMap<String, BTreeSet<IpNet>>,
}

impl MemberEdits {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.fleet.is_empty()
    }

    /// Addresses named by `sgctl members` edits (the fleet's layer apart).
    pub fn len(&self) -> usize {
        self.added.values().chain(self.removed.values()).map(BTreeSet::len).sum()
    }

    /// Records that `addresses` carry `group` (`add`) or do not.
    pub fn record(&mut self, group: &str, add: bool, addresses: &[IpNet]) {
        let (to, from) = if add { (&mut self.added, &mut self.removed) } else { (&mut self.removed, &mut self.added) };
        if let Some(set) = from.get_mut(group) {
            for a in addresses {
                set.remove(a);
            }
            if set.is_empty() {
                from.remove(group);
            }
        }
        to.entry(group.to_owned()).or_default().extend(addresses.iter().copied());
    }

    /// These edits without the fleet's layer: what the files and `sgctl
    /// members` say alone.
    #[must_use]
    pub fn without_fleet(&self) -> Self {
        Self { fleet: BTreeMap::new(), ..self.clone() }
    }

    /// The policy with the edits on top: the fleet's members and added
    /// addresses join the group's first `members:` list (or a new one at
    /// the group's definition) unless a list has them already; removed
    /// addresses leave every list, also the fleet's (what an operator
    /// removes with `sgctl members` stays removed whatever hosts publish).
    pub fn apply(&self, policy: &mut Policy) {
        Self::join(policy, &self.fleet);
        for (group, gone) in &self.removed {
            for m in policy.members.iter_mut().filter(|m| &m.group == group) {
                m.addresses.retain(|a| !gone.contains(a));
            }
        }
        Self::join(policy, &self.added);
    }

    fn join(policy: &mut Policy, joining: &BTreeMap<String, BTreeSet<IpNet>>) {
        for (group, new) in joining {
            let present: BTreeSet<IpNet> = policy.members_of(group).collect();
            let missing: Vec<IpNet> = new.iter().filter(|a| !present.contains(a)).copied().collect();
            if missing.is_empty() {
                continue;
            }
            if let Some(m) = policy.members.iter_mut().find(|m| &m.group == group) {
                m.addresses.extend(missing);
            } else if let Some(at) = policy.group(group).map(|g| g.at.clone()) {
                policy.members.push(Members { group: group.clone(), at, addresses: missing });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_sources;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test network")
    }

    #[test]
    fn edits_keep_the_net_change_and_amend_the_files() {
        let text = "groups:\n  web: {}\n  db: {}\nmembers:\n  web: [10.0.0.1, 10.0.0.2]\n";
        let mut policy = parse_sources(&[("p.yaml".into(), text.into())]).expect("parses");
        let mut edits = MemberEdits::default();
        edits.record("web", false, &[net("10.0.0.1/32")]);
        edits.record("web", true, &[net("10.0.0.3/32"), net("10.0.0.2/32")]);
        edits.record("db", true, &[net("10.0.1.1/32")]);
        // Adding back what was removed cancels the removal.
        edits.record("web", true, &[net("10.0.0.9/32")]);
        edits.record("web", false, &[net("10.0.0.9/32")]);
        assert_eq!(edits.len(), 5);
        edits.apply(&mut policy);
        let members = |g| policy.members_of(g).map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(members("web"), ["10.0.0.2/32", "10.0.0.3/32"]);
        assert_eq!(members("db"), ["10.0.1.1/32"]);
        // Applying twice changes nothing more.
        let before = format!("{:?}", policy.members);
        edits.apply(&mut policy);
        assert_eq!(format!("{:?}", policy.members), before);
        edits.record("db", false, &[net("10.0.1.1/32")]);
        assert!(!edits.added.contains_key("db"));
        let json = serde_json::to_string(&edits).expect("serializes");
        assert_eq!(serde_json::from_str::<MemberEdits>(&json).expect("parses"), edits);
    }

    #[test]
    fn the_fleets_members_join_after_the_edits() {
        let text = "groups:\n  web: {}\nmembers:\n  web: [10.0.0.1]\n";
        let mut policy = parse_sources(&[("p.yaml".into(), text.into())]).expect("parses");
        let mut edits = MemberEdits::default();
        edits.fleet.insert("web".into(), [net("10.0.0.2/32"), net("10.0.0.3/32"), net("10.0.0.4/32")].into());
        // An operator's removal beats what hosts publish.
        edits.record("web", false, &[net("10.0.0.4/32")]);
        // A group this policy does not define joins nothing.
        edits.fleet.insert("gone".into(), [net("10.0.0.9/32")].into());
        assert!(!edits.is_empty());
        assert_eq!(edits.len(), 1, "the fleet's layer is not counted against the edits' limit");
        edits.apply(&mut policy);
        let web: Vec<String> = policy.members_of("web").map(|n| n.to_string()).collect();
        assert_eq!(web, ["10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32"]);
        assert!(policy.members_of("gone").next().is_none());
        assert!(edits.without_fleet().fleet.is_empty());
        assert_eq!(edits.without_fleet().removed, edits.removed);
    }
}
