//! The records `sgctl` keeps beside the maps (see [`super::blob`]). Each
//! exists once per generation slot, like the policy maps: the scope's
//! `ACTIVE` value says which slot's records describe what is in force, so
//! records and kernel switch together and never disagree.
use serde::{Deserialize, Serialize};

pub use crate::datapath::hooks::{EgressHook, IngressHook, Mode};
use crate::{
    compile::{
        counter_slots::SlotTable,
        image::{ClassInfo, Digests},
        RuleInfo,
    },
    state::member_edits::MemberEdits,
};

/// The policy applied to a scope: its source files, as they were read, so
/// it can be recompiled (by `attach`, `detach`, `explain`, `restore`)
/// whatever happened to the files since.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// Counts applies that changed something, from 1.
    pub generation: u64,
    pub sources: Vec<Source>,
    /// Memberships changed since with `sgctl members`: the policy is the
    /// sources with these on top. Kept in a record of its own
    /// (`members-SLOT`), so that changing them rewrites no source text.
    #[serde(skip)]
    pub member_edits: MemberEdits,
}

/// One policy file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Absolute path when applied (for reports and error locations).
    pub path: String,
    pub text: String,
}

impl PolicyRecord {
    /// The files' paths, as `status` shows them.
    pub fn paths(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.path.clone()).collect()
    }

    /// A digest of the sources (paths and texts), to tell a change without
    /// keeping or comparing the texts.
    pub fn digest(&self) -> u64 {
        // Eight bytes a step (FNV-1a's prime, on words): a million-CIDR
        // policy is 32 MiB of text, hashed on every apply.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            h = (h ^ bytes.len() as u64).wrapping_mul(0x0100_0000_01b3);
            let mut words = bytes.chunks_exact(8);
            for w in &mut words {
                h = (h ^ u64::from_le_bytes(w.try_into().unwrap_or_default())).wrapping_mul(0x0100_0000_01b3);
                h ^= h >> 29;
            }
            for b in words.remainder() {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        for s in &self.sources {
            eat(s.path.as_bytes());
            eat(s.text.as_bytes());
        }
        h
    }

    /// A record of `sources` with no membership edits.
    pub fn of(sources: Vec<Source>) -> Self {
        Self { generation: 0, sources, member_edits: MemberEdits::default() }
    }

    /// The policy, parsed again from the recorded text, with the membership
    /// edits on top.
    pub fn parse(&self) -> Result<crate::policy::Policy, crate::policy::PolicyError> {
        let sources: Vec<(String, String)> = self.sources.iter().map(|s| (s.path.clone(), s.text.clone())).collect();
        let mut policy = crate::policy::parse_sources(&sources)?;
        self.member_edits.apply(&mut policy);
        Ok(policy)
    }
}

/// What a change needs to know of the policy in force without reading its
/// text (a record per generation slot, `summary-SLOT`, beside the policy's):
/// for a policy of a million CIDRs, reading and parsing the text again
/// costs a second.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySummary {
    pub generation: u64,
    /// [`PolicyRecord::digest`].
    pub digest: u64,
    /// Each group with a hash of each of its rules (what it matches and its
    /// description), for `apply`'s report of rules added and removed.
    pub groups: Vec<(String, Vec<u64>)>,
}

impl PolicySummary {
    pub fn of(record: &PolicyRecord, parsed: &crate::policy::Policy) -> Self {
        Self { generation: record.generation, digest: record.digest(), groups: Self::groups_of(parsed) }
    }

    /// Each group of `parsed` and the hashes of its rules.
    pub fn groups_of(parsed: &crate::policy::Policy) -> Vec<(String, Vec<u64>)> {
        parsed
            .groups
            .iter()
            .map(|g| {
                let rules = crate::policy::RuleDirection::BOTH
                    .iter()
                    .flat_map(|d| g.rules(*d).iter().map(move |r| rule_hash(*d, r)))
                    .collect();
                (g.name.clone(), rules)
            })
            .collect()
    }
}

/// A rule's content and description, hashed: two rules alike hash alike.
fn rule_hash(direction: crate::policy::RuleDirection, r: &crate::policy::Rule) -> u64 {
    let peers: Vec<String> = r.peers.iter().map(|p| format!("{:?}", p.target)).collect();
    let text = format!(
        "{direction} {:?} {:?} {:?} {:?} {peers:?} {:?}",
        r.protocol, r.ports, r.icmp_type, r.icmp_code, r.description
    );
    crate::compile::identity::fnv1a(text.as_bytes())
}

/// How the interface came to be filtered: `apply` detaches what it attached
/// when the policy stops naming it; `attach` attachments stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Policy,
    Command,
}

/// Whether an interface is filtered in a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IfaceState {
    /// Its policy maps judge every packet.
    Enforce,
    /// Being detached: its programs pass everything until the links go.
    Detaching,
}

/// One filtered interface, in one generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceRecord {
    pub ifname: String,
    pub ifindex: u32,
    pub state: IfaceState,
    pub groups: Vec<String>,
    pub origin: Origin,
    pub mode: Mode,
    pub ingress: IngressHook,
    #[serde(default)]
    pub egress: EgressHook,
    /// Policy generation of this record.
    pub generation: u64,
    pub conntrack_capacity: u32,
    /// Rule id (bit position) → rule.
    pub rules: Vec<RuleInfo>,
    /// Counter slot → the rule it counts (also rules removed since, while
    /// tracked flows may still credit them).
    pub slots: SlotTable,
    /// The content of each policy map of this generation, to share the maps
    /// that the next generation leaves unchanged.
    pub digests: Digests,
    /// The eBPF object the programs were loaded from (a digest): a newer
    /// `sgctl` with other programs replaces them in place.
    pub object: u64,
    /// What `sgctl members` needs to change a group's membership in this
    /// generation's maps in place (absent in records of older versions:
    /// their next change is a full one).
    #[serde(default)]
    pub members: MemberIndex,
}

/// The groups whose `members:` reach an interface, and the classes of its
/// address entries (see `control::member_change`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberIndex {
    /// Each group an `sg:` peer of the interface names, with the ids of
    /// the rules naming it.
    pub groups: Vec<(String, Vec<u32>)>,
    /// Ids of the rules whose peer is every IPv4 address, and every IPv6 one.
    pub any4: Vec<u32>,
    pub any6: Vec<u32>,
    /// Every class of the generation's address entries.
    pub classes: Vec<ClassInfo>,
    /// Entries of the IPv4 and IPv6 single-address hashes, where `sgctl
    /// members` writes. `None` in the records of an sgctl that kept single
    /// addresses in the tries (whose programs do not look in the hashes):
    /// their interfaces take full changes only.
    pub hosts: Option<[u64; 2]>,
    /// Written by an sgctl that keeps this index (an older one's record
    /// has none: its interface takes full changes only).
    pub indexed: bool,
}

impl IfaceRecord {
    /// The rule counter slot `slot` counts, and whether it was removed from
    /// the policy since.
    pub fn rule_of_slot(&self, slot: u32) -> Option<(&RuleInfo, bool)> {
        self.slots.0.get(&slot).map(|e| (&e.rule, e.retired_at.is_some()))
    }

    /// The counter slot of each rule, in rule-id order.
    pub fn rule_slots(&self) -> Vec<u32> {
        let live: std::collections::HashMap<u64, u32> =
            self.slots.0.iter().filter(|(_, e)| e.retired_at.is_none()).map(|(s, e)| (e.rule.identity, *s)).collect();
        self.rules
            .iter()
            .map(|r| live.get(&r.identity).copied().unwrap_or(firewall_common::policy::SLOT_REMOVED))
            .collect()
    }
}
