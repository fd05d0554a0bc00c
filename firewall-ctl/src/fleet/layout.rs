//! The fleet's keys under the prefix and what their values may hold
//! (docs/fleet.md, "Key layout"). Every key and value read from etcd
//! passes here before anything else sees it: what a hostile or broken
//! writer put there is refused here, with a reason, and changes nothing.
//!
//! ```text
//! PREFIX/v1/hosts/HOST/members/GROUP  {"addresses": ["10.0.1.5", "2001:db8::5"]}   HOST's agent, on its lease
//! PREFIX/v1/hosts/HOST/status         {"policy_generation": 7, "sgctl": "0.1.0"}    HOST's agent, on its lease
//! PREFIX/v1/policy                    {"generation": 7, "published_at": …, "sources": […]}   `sgctl publish`
//! ```
//!
//! Everything a host writes is under its own `PREFIX/v1/hosts/HOST/`, so
//! etcd's role-based access control can give each host's user write
//! access to that range alone.
use std::{collections::BTreeSet, fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::state::records::Source;

/// The layout's version, a path segment: a later layout gets its own
/// range, and agents of either read only theirs.
pub const VERSION: &str = "v1";
/// The largest value of a host's key that is read at all.
pub const MAX_HOST_VALUE_BYTES: usize = 64 * 1024;
/// The most addresses one host may publish for one group.
pub const MAX_ADDRESSES_PER_GROUP: usize = 1024;
/// The largest published policy read (etcd's own default request limit is
/// 1.5 MiB; a larger policy belongs in files applied on each host).
pub const MAX_POLICY_BYTES: usize = 1536 * 1024;

/// The keys of one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `PREFIX/v1/`.
    root: String,
}

/// What a key under the prefix is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// The addresses `host` publishes for `group`.
    Members { host: String, group: String },
    /// What `host` reports of itself.
    Status { host: String },
    /// The policy `sgctl publish` put.
    Policy,
}

/// Why a key or value under the prefix was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A key the layout does not have.
    UnknownKey,
    /// A host or group name outside the name grammar.
    BadName(String),
    TooLarge {
        bytes: usize,
        max: usize,
    },
    NotJson(String),
    NotAnAddress {
        index: usize,
        text: String,
    },
    /// An address that never names one host: loopback, link-local,
    /// multicast, unspecified, broadcast, IPv4-mapped.
    NotAHostAddress(IpAddr),
    TooMany {
        count: usize,
        max: usize,
    },
    /// A group the policy in force here does not define.
    UnknownGroup(String),
    /// A published policy that does not parse, or names interfaces.
    BadPolicy(String),
    /// A published generation not above the one in force.
    OlderGeneration {
        published: u64,
        in_force: u64,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKey => write!(f, "not a key of the v1 layout"),
            Self::BadName(name) => write!(f, "{name:?} is not a name of a-z 0-9 . _ - (at most 63)"),
            Self::TooLarge { bytes, max } => write!(f, "the value is {bytes} bytes, over the limit of {max}"),
            Self::NotJson(why) => write!(f, "not the expected JSON: {why}"),
            Self::NotAnAddress { index, text } => write!(f, "addresses[{index}]: {text:?} is not an IP address"),
            Self::NotAHostAddress(addr) => {
                write!(f, "{addr} is not the address of one host (loopback, link-local, multicast or the like)")
            }
            Self::TooMany { count, max } => write!(f, "{count} addresses, over the limit of {max} per host and group"),
            Self::UnknownGroup(group) => write!(f, "group {group:?} is not defined by the policy in force here"),
            Self::BadPolicy(why) => write!(f, "{why}"),
            Self::OlderGeneration { published, in_force } => {
                write!(f, "generation {published} is not newer than generation {in_force}, in force here")
            }
        }
    }
}

impl Layout {
    /// The layout under `prefix`: `/` followed by printable ASCII without
    /// spaces (a trailing `/` is dropped).
    pub fn new(prefix: &str) -> Result<Self, String> {
        let trimmed = prefix.trim_end_matches('/');
        if !prefix.starts_with('/') || !prefix.bytes().all(|b| b.is_ascii_graphic()) || prefix.len() > 256 {
            return Err(format!("{prefix:?}: an etcd prefix starts with / and holds printable ASCII only"));
        }
        Ok(Self { root: format!("{trimmed}/{VERSION}/") })
    }

    /// `PREFIX/v1/`: the range every agent watches.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `PREFIX/v1/hosts/HOST/`: everything `host` writes.
    pub fn host(&self, host: &str) -> String {
        format!("{}hosts/{host}/", self.root)
    }

    pub fn members(&self, host: &str, group: &str) -> String {
        format!("{}members/{group}", self.host(host))
    }

    pub fn status(&self, host: &str) -> String {
        format!("{}status", self.host(host))
    }

    pub fn policy(&self) -> String {
        format!("{}policy", self.root)
    }

    /// What `key` is (`None`: not under the prefix at all).
    pub fn parse(&self, key: &[u8]) -> Option<Result<Key, Refusal>> {
        let rest = key.strip_prefix(self.root.as_bytes())?;
        let Ok(rest) = std::str::from_utf8(rest) else { return Some(Err(Refusal::UnknownKey)) };
        let name = |n: &str| {
            if crate::policy::is_valid_name(n) {
                Ok(n.to_owned())
            } else {
                Err(Refusal::BadName(n.to_owned()))
            }
        };
        let parts: Vec<&str> = rest.split('/').collect();
        Some(match parts.as_slice() {
            ["policy"] => Ok(Key::Policy),
            ["hosts", host, "status"] => name(host).map(|host| Key::Status { host }),
            ["hosts", host, "members", group] => {
                name(host).and_then(|host| Ok(Key::Members { host, group: name(group)? }))
            }
            _ => Err(Refusal::UnknownKey),
        })
    }
}

/// Whether a host name (`--host-id`) fits the layout.
pub fn valid_host_id(host: &str) -> bool {
    crate::policy::is_valid_name(host)
}

/// Whether `addr` can be one host's address on a network other hosts
/// share: what a host publishes and what a member value may hold.
pub fn is_host_address(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            !(a.is_unspecified() || a.is_loopback() || a.is_link_local() || a.is_multicast() || a.is_broadcast())
        }
        IpAddr::V6(a) => {
            let unicast_link_local = (a.segments()[0] & 0xffc0) == 0xfe80;
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || unicast_link_local
                || a.to_ipv4_mapped().is_some())
        }
    }
}

/// A member value as written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersText {
    addresses: Vec<String>,
}

/// The value of a members key: the addresses, or why it is refused.
pub fn parse_members(bytes: &[u8]) -> Result<BTreeSet<IpAddr>, Refusal> {
    if bytes.len() > MAX_HOST_VALUE_BYTES {
        return Err(Refusal::TooLarge { bytes: bytes.len(), max: MAX_HOST_VALUE_BYTES });
    }
    let text: MembersText = serde_json::from_slice(bytes).map_err(|e| Refusal::NotJson(e.to_string()))?;
    if text.addresses.len() > MAX_ADDRESSES_PER_GROUP {
        return Err(Refusal::TooMany { count: text.addresses.len(), max: MAX_ADDRESSES_PER_GROUP });
    }
    let mut out = BTreeSet::new();
    for (index, a) in text.addresses.iter().enumerate() {
        let addr: IpAddr = a.parse().map_err(|_| Refusal::NotAnAddress { index, text: a.clone() })?;
        if !is_host_address(addr) {
            return Err(Refusal::NotAHostAddress(addr));
        }
        out.insert(addr);
    }
    Ok(out)
}

/// The value a host writes for one group.
pub fn members_value(addresses: &BTreeSet<IpAddr>) -> Vec<u8> {
    let text = MembersText { addresses: addresses.iter().map(ToString::to_string).collect() };
    serde_json::to_vec(&text).unwrap_or_default()
}

/// What a host reports of itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostStatus {
    /// The published policy generation in force there (`None`: its own files).
    pub policy_generation: Option<u64>,
    /// Its sgctl's version.
    pub sgctl: String,
}

pub fn parse_status(bytes: &[u8]) -> Result<HostStatus, Refusal> {
    if bytes.len() > MAX_HOST_VALUE_BYTES {
        return Err(Refusal::TooLarge { bytes: bytes.len(), max: MAX_HOST_VALUE_BYTES });
    }
    serde_json::from_slice(bytes).map_err(|e| Refusal::NotJson(e.to_string()))
}

/// A policy `sgctl publish` put: its groups, prefix lists and conntrack
/// settings, as the files' text, and its generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedPolicy {
    /// Counts publications under the prefix, from 1.
    pub generation: u64,
    /// Seconds since the Unix epoch.
    pub published_at: u64,
    pub sources: Vec<Source>,
}

/// The value of the policy key, checked as far as it can be without
/// compiling it for this host's interfaces: size, form, a policy that
/// parses, names no interfaces and whose groups compile.
pub fn parse_policy(bytes: &[u8]) -> Result<(PublishedPolicy, crate::policy::Policy), Refusal> {
    if bytes.len() > MAX_POLICY_BYTES {
        return Err(Refusal::TooLarge { bytes: bytes.len(), max: MAX_POLICY_BYTES });
    }
    let published: PublishedPolicy = serde_json::from_slice(bytes).map_err(|e| Refusal::NotJson(e.to_string()))?;
    let parsed = check_policy(&published.sources).map_err(|e| Refusal::BadPolicy(format!("{e:#}")))?;
    Ok((published, parsed))
}

/// A policy for the fleet: it parses, names no interfaces (each host's
/// own), and each group compiles on its own.
pub fn check_policy(sources: &[Source]) -> anyhow::Result<crate::policy::Policy> {
    use crate::policy::{ErrorKind, PolicyError};
    let texts: Vec<(String, String)> = sources.iter().map(|s| (s.path.clone(), s.text.clone())).collect();
    let parsed = crate::policy::parse_sources(&texts)?;
    if let Some(a) = parsed.interfaces.first() {
        return Err(PolicyError::new(&a.at, ErrorKind::PublishedInterfaces).into());
    }
    for group in &parsed.groups {
        crate::compile::compile_interface(
            &parsed,
            std::slice::from_ref(&group.name),
            &std::collections::BTreeMap::new(),
        )
        .map_err(|e| crate::compile::locate(&parsed, e))?;
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_parsed_and_names_checked() {
        let layout = Layout::new("/sgctl/").expect("prefix");
        assert_eq!(layout.root(), "/sgctl/v1/");
        assert_eq!(layout.members("db1", "db"), "/sgctl/v1/hosts/db1/members/db");
        let parse = |k: &str| layout.parse(k.as_bytes());
        assert_eq!(
            parse("/sgctl/v1/hosts/db1/members/db"),
            Some(Ok(Key::Members { host: "db1".into(), group: "db".into() }))
        );
        assert_eq!(parse("/sgctl/v1/hosts/db1/status"), Some(Ok(Key::Status { host: "db1".into() })));
        assert_eq!(parse("/sgctl/v1/policy"), Some(Ok(Key::Policy)));
        assert_eq!(parse("/other/v1/policy"), None);
        assert_eq!(parse("/sgctl/v1/hosts/DB/status"), Some(Err(Refusal::BadName("DB".into()))));
        assert_eq!(parse("/sgctl/v1/hosts/a/members/b/c"), Some(Err(Refusal::UnknownKey)));
        assert_eq!(parse("/sgctl/v1/hosts/a/members/"), Some(Err(Refusal::BadName(String::new()))));
        assert!(Layout::new("sgctl").is_err());
        assert!(Layout::new("/a b").is_err());
    }

    #[test]
    fn member_values_hold_host_addresses_only() {
        let ok = parse_members(br#"{"addresses": ["10.0.0.3", "fd00::3", "10.0.0.3"]}"#).expect("valid");
        assert_eq!(ok.len(), 2);
        assert_eq!(parse_members(&members_value(&ok)), Ok(ok));
        assert!(matches!(parse_members(b"not json"), Err(Refusal::NotJson(_))));
        assert!(matches!(parse_members(br#"{"addresses": [], "extra": 1}"#), Err(Refusal::NotJson(_))));
        assert_eq!(
            parse_members(br#"{"addresses": ["10.0.0.3", "10.0.0.0/8"]}"#),
            Err(Refusal::NotAnAddress { index: 1, text: "10.0.0.0/8".into() })
        );
        for bad in ["127.0.0.1", "0.0.0.0", "255.255.255.255", "224.0.0.1", "169.254.1.1", "fe80::1", "::", "::1"] {
            let value = format!(r#"{{"addresses": ["{bad}"]}}"#);
            assert!(matches!(parse_members(value.as_bytes()), Err(Refusal::NotAHostAddress(_))), "{bad}");
        }
        let many: Vec<String> =
            (0..=MAX_ADDRESSES_PER_GROUP).map(|i| format!("\"10.1.{}.{}\"", i / 250, i % 250 + 1)).collect();
        let value = format!(r#"{{"addresses": [{}]}}"#, many.join(","));
        assert!(matches!(parse_members(value.as_bytes()), Err(Refusal::TooMany { .. })));
        let huge = vec![b' '; MAX_HOST_VALUE_BYTES + 1];
        assert!(matches!(parse_members(&huge), Err(Refusal::TooLarge { .. })));
    }

    #[test]
    fn a_published_policy_names_no_interfaces() {
        let source = |text: &str| vec![Source { path: "p.yaml".into(), text: text.into() }];
        assert!(check_policy(&source("groups:\n  web: {}\n")).is_ok());
        let err = check_policy(&source("groups:\n  web: {}\ninterfaces:\n  eth0: [web]\n")).expect_err("interfaces");
        assert!(err.to_string().starts_with("p.yaml:4:"), "{err}");
        assert!(check_policy(&source("groups: [")).is_err());
    }
}
