//! What this agent knows of the prefix: every other host's members and
//! status, the published policy, and its own keys as etcd holds them —
//! built from a full read and kept up by the watch's events. Pure: the
//! etcd session feeds it, the scope side reads it.
//!
//! Fail static, key by key: a value that is refused (see [`layout`]) is
//! reported and leaves what the key held before in force, so a corrupt or
//! hostile write never takes a member away or adds one; only a deleted key
//! (its host's lease expired, or someone deleted it) takes its members
//! away. A full read replaces the view, keeping the last good value of a
//! key still there whose value is now refused.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::layout::{self, HostStatus, Key, Layout, PublishedPolicy, Refusal};

/// A key's value, as this agent keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Members each other host publishes, by (host, group): the last good value.
    pub members: BTreeMap<(String, String), BTreeSet<IpAddr>>,
    /// What each other host reports.
    pub statuses: BTreeMap<String, HostStatus>,
    /// The latest good published policy.
    pub policy: Option<PublishedPolicy>,
    /// This host's own keys as etcd holds them: key → (value, lease).
    pub own: BTreeMap<String, (Vec<u8>, i64)>,
    /// Keys whose current value is refused, and why.
    pub refused: BTreeMap<String, String>,
    /// The etcd revision the view reflects.
    pub revision: i64,
}

/// What one event did, for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing this agent acts on changed.
    None,
    /// Members, statuses or the policy changed.
    Changed,
    /// This host's own keys changed (perhaps someone else's write).
    Own,
    /// The value was refused; what the key held stays.
    Refused(String),
}

impl View {
    /// The view a full read gives: `kvs` (key, value, lease) at `revision`,
    /// keeping the last good value of keys whose value is now refused.
    pub fn after_read(&self, layout: &Layout, me: &str, kvs: &[(Vec<u8>, Vec<u8>, i64)], revision: i64) -> Self {
        let keys: BTreeSet<&[u8]> = kvs.iter().map(|(k, _, _)| k.as_slice()).collect();
        let still = |host: &str, group: &str| keys.contains(layout.members(host, group).as_bytes());
        let mut next = Self {
            members: self
                .members
                .iter()
                .filter(|((h, g), _)| still(h, g))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            statuses: BTreeMap::new(),
            policy: self.policy.clone().filter(|_| keys.contains(layout.policy().as_bytes())),
            own: BTreeMap::new(),
            refused: BTreeMap::new(),
            revision,
        };
        for (key, value, lease) in kvs {
            next.put(layout, me, key, value, *lease);
        }
        next.revision = revision;
        next
    }

    /// A key was put.
    pub fn put(&mut self, layout: &Layout, me: &str, key: &[u8], value: &[u8], lease: i64) -> Effect {
        let Some(parsed) = layout.parse(key) else { return Effect::None };
        let name = String::from_utf8_lossy(key).into_owned();
        let outcome = match parsed {
            Err(refusal) => Err(refusal),
            Ok(Key::Members { host, .. } | Key::Status { host }) if host == me => {
                self.own.insert(name.clone(), (value.to_vec(), lease));
                self.refused.remove(&name);
                return Effect::Own;
            }
            Ok(Key::Members { host, group }) => layout::parse_members(value).map(|addresses| {
                self.members.insert((host, group), addresses);
            }),
            Ok(Key::Status { host }) => layout::parse_status(value).map(|status| {
                self.statuses.insert(host, status);
            }),
            Ok(Key::Policy) => layout::parse_policy(value).and_then(|(published, _)| match &self.policy {
                Some(p) if p.generation >= published.generation && *p != published => {
                    Err(Refusal::OlderGeneration { published: published.generation, in_force: p.generation })
                }
                _ => {
                    self.policy = Some(published);
                    Ok(())
                }
            }),
        };
        match outcome {
            Ok(()) => {
                self.refused.remove(&name);
                Effect::Changed
            }
            Err(refusal) => {
                let why = refusal.to_string();
                self.refused.insert(name, why.clone());
                Effect::Refused(why)
            }
        }
    }

    /// A key was deleted (or its lease expired).
    pub fn delete(&mut self, layout: &Layout, me: &str, key: &[u8]) -> Effect {
        let name = String::from_utf8_lossy(key).into_owned();
        let refused = self.refused.remove(&name).is_some();
        let changed = match layout.parse(key) {
            Some(Ok(Key::Members { host, .. } | Key::Status { host })) if host == me => {
                self.own.remove(&name);
                return Effect::Own;
            }
            Some(Ok(Key::Members { host, group })) => self.members.remove(&(host, group)).is_some(),
            Some(Ok(Key::Status { host })) => self.statuses.remove(&host).is_some(),
            // A deleted policy key unpublishes nothing: hosts keep the
            // generation they run.
            Some(Ok(Key::Policy) | Err(_)) | None => false,
        };
        if changed || refused {
            Effect::Changed
        } else {
            Effect::None
        }
    }

    /// Group → the addresses other hosts publish for it.
    pub fn membership(&self) -> BTreeMap<String, BTreeSet<IpAddr>> {
        let mut out: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        for ((_, group), addresses) in &self.members {
            out.entry(group.clone()).or_default().extend(addresses.iter().copied());
        }
        out
    }

    /// Other hosts that publish anything, with the groups they publish.
    pub fn hosts(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = self.statuses.keys().map(|h| (h.clone(), Vec::new())).collect();
        for (host, group) in self.members.keys() {
            out.entry(host.clone()).or_default().push(group.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (Vec<u8>, Vec<u8>, i64) {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec(), 7)
    }

    #[test]
    fn bad_values_keep_the_last_good_one_and_deletes_remove() {
        let layout = Layout::new("/p").expect("prefix");
        let mut view = View::default();
        let key = b"/p/v1/hosts/app1/members/app";
        assert_eq!(view.put(&layout, "db1", key, br#"{"addresses":["10.0.0.3"]}"#, 1), Effect::Changed);
        assert!(matches!(view.put(&layout, "db1", key, b"garbage", 1), Effect::Refused(_)));
        assert!(matches!(view.put(&layout, "db1", key, br#"{"addresses":["x"]}"#, 1), Effect::Refused(_)));
        let app: Vec<String> = view.membership()["app"].iter().map(ToString::to_string).collect();
        assert_eq!(app, ["10.0.0.3"]);
        assert_eq!(view.refused.len(), 1);
        // A good value clears the refusal.
        assert_eq!(view.put(&layout, "db1", key, br#"{"addresses":["10.0.0.4"]}"#, 1), Effect::Changed);
        assert!(view.refused.is_empty());
        assert_eq!(view.delete(&layout, "db1", key), Effect::Changed);
        assert!(view.membership().is_empty());
        // Our own keys are kept apart, never members.
        assert_eq!(
            view.put(&layout, "db1", b"/p/v1/hosts/db1/members/db", br#"{"addresses":["10.0.0.2"]}"#, 3),
            Effect::Own
        );
        assert!(view.membership().is_empty());
        assert_eq!(view.own.len(), 1);
        // Outside the prefix: not ours to judge.
        assert_eq!(view.put(&layout, "db1", b"/q/v1/policy", b"x", 0), Effect::None);
        assert!(matches!(view.put(&layout, "db1", b"/p/v1/junk", b"x", 0), Effect::Refused(_)));
    }

    #[test]
    fn a_full_read_replaces_the_view_but_keeps_last_good_values() {
        let layout = Layout::new("/p").expect("prefix");
        let mut view = View::default();
        view.put(&layout, "db1", b"/p/v1/hosts/a/members/app", br#"{"addresses":["10.0.0.3"]}"#, 1);
        view.put(&layout, "db1", b"/p/v1/hosts/b/members/app", br#"{"addresses":["10.0.0.4"]}"#, 1);
        // a's value is now corrupt, b's key is gone, c is new.
        let read =
            [kv("/p/v1/hosts/a/members/app", "{"), kv("/p/v1/hosts/c/members/app", r#"{"addresses":["10.0.0.5"]}"#)];
        let next = view.after_read(&layout, "db1", &read, 42);
        let app: Vec<String> = next.membership()["app"].iter().map(ToString::to_string).collect();
        assert_eq!(app, ["10.0.0.3", "10.0.0.5"]);
        assert_eq!(next.revision, 42);
        assert_eq!(next.refused.len(), 1);
    }

    #[test]
    fn policy_generations_only_go_up() {
        let layout = Layout::new("/p").expect("prefix");
        let mut view = View::default();
        let policy = |g: u64| {
            format!(
                r#"{{"generation":{g},"published_at":1,"sources":[{{"path":"p.yaml","text":"groups:\n  web: {{}}\n"}}]}}"#
            )
        };
        assert_eq!(view.put(&layout, "h", b"/p/v1/policy", policy(2).as_bytes(), 0), Effect::Changed);
        assert!(matches!(view.put(&layout, "h", b"/p/v1/policy", policy(1).as_bytes(), 0), Effect::Refused(_)));
        assert_eq!(view.policy.as_ref().map(|p| p.generation), Some(2));
        let bad = r#"{"generation":3,"published_at":1,"sources":[{"path":"p.yaml","text":"groups: ["}]}"#;
        assert!(matches!(view.put(&layout, "h", b"/p/v1/policy", bad.as_bytes(), 0), Effect::Refused(_)));
        assert_eq!(view.policy.as_ref().map(|p| p.generation), Some(2));
        assert_eq!(view.put(&layout, "h", b"/p/v1/policy", policy(3).as_bytes(), 0), Effect::Changed);
    }
}
