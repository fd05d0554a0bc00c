//! The validated policy. Every value here has passed the checks of
//! docs/policy-format.md, so later stages never re-validate; every definition
//! keeps its [`Location`] so later stages can still point at the source.
//!
//! (`sgctl apply` keeps the files' text, not this tree, beside the kernel
//! state: `state::records::PolicyRecord`; `attach`, `explain` and `restore`
//! parse it again.) Not to be confused with [`crate::model`], the oracle of
//! what a packet's verdict is.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::error::Location;

/// Description of the implicit outbound rule of a group with no `outbound` key.
pub const DEFAULT_OUTBOUND_DESCRIPTION: &str = "Allow all outbound traffic (default)";

/// Every file of one policy, merged.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Policy {
    /// The files, in the order given; [`Location::file_index`] points here.
    pub files: Vec<String>,
    /// In file order.
    pub groups: Vec<Group>,
    pub members: Vec<Members>,
    pub prefix_lists: Vec<PrefixList>,
    pub interfaces: Vec<Attachment>,
    pub conntrack: Conntrack,
}

impl Policy {
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn prefix_list(&self, name: &str) -> Option<&PrefixList> {
        self.prefix_lists.iter().find(|p| p.name == name)
    }

    /// The `members:` addresses of a group (without local interface addresses).
    pub fn members_of<'a>(&'a self, group: &'a str) -> impl Iterator<Item = IpNet> + 'a {
        self.members.iter().filter(move |m| m.group == group).flat_map(|m| m.addresses.iter().copied())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    /// Where the name is defined.
    pub at: Location,
    pub description: Option<String>,
    /// `mode:`; enforce unless the file says audit.
    #[serde(default)]
    pub mode: GroupMode,
    pub inbound: Vec<Rule>,
    /// Holds the implicit allow-all rule when the file has no `outbound` key.
    pub outbound: Vec<Rule>,
}

impl Group {
    pub fn rules(&self, direction: RuleDirection) -> &[Rule] {
        match direction {
            RuleDirection::Inbound => &self.inbound,
            RuleDirection::Outbound => &self.outbound,
        }
    }
}

/// A group's `mode:` (policy-format.md). In audit mode a packet that no rule
/// of the interface allows passes and is reported as `would_drop`
/// (docs/semantics.md item 18).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupMode {
    #[default]
    Enforce,
    Audit,
}

/// Inbound rules match the source, outbound rules the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleDirection {
    Inbound,
    Outbound,
}

impl RuleDirection {
    pub const BOTH: [Self; 2] = [Self::Inbound, Self::Outbound];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }

    /// The value the datapath uses (`firewall_common::Direction`).
    pub fn to_kernel(self) -> u8 {
        match self {
            Self::Inbound => firewall_common::Direction::Inbound as u8,
            Self::Outbound => firewall_common::Direction::Outbound as u8,
        }
    }
}

impl fmt::Display for RuleDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One source-file rule. Its ports and peers are lists that share the rule.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rule {
    /// Where the rule starts (for the implicit outbound rule: the group name).
    pub at: Location,
    pub protocol: Protocol,
    /// `Any` unless the protocol is tcp or udp.
    pub ports: Ports,
    /// Only for icmp/icmpv6; `None` matches any.
    pub icmp_type: Option<u8>,
    /// Only with `icmp_type`.
    pub icmp_code: Option<u8>,
    /// Sources of an inbound rule, destinations of an outbound one; never empty.
    pub peers: Vec<Peer>,
    pub description: Option<String>,
    /// True for the allow-all outbound rule added to a group with no `outbound` key.
    pub implicit: bool,
}

/// `protocol:`; numbers with a name (6, 17, 1, 58) are stored by name, so
/// `protocol: 6` needs ports exactly like `tcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    All,
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Other(u8),
}

impl Protocol {
    pub fn from_number(n: u8) -> Self {
        match n {
            firewall_common::proto::TCP => Self::Tcp,
            firewall_common::proto::UDP => Self::Udp,
            firewall_common::proto::ICMP => Self::Icmp,
            firewall_common::proto::ICMPV6 => Self::Icmpv6,
            n => Self::Other(n),
        }
    }

    /// IP protocol number; `None` for `all`.
    pub fn number(self) -> Option<u8> {
        match self {
            Self::All => None,
            Self::Tcp => Some(firewall_common::proto::TCP),
            Self::Udp => Some(firewall_common::proto::UDP),
            Self::Icmp => Some(firewall_common::proto::ICMP),
            Self::Icmpv6 => Some(firewall_common::proto::ICMPV6),
            Self::Other(n) => Some(n),
        }
    }

    pub fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp)
    }

    pub fn is_icmp(self) -> bool {
        matches!(self, Self::Icmp | Self::Icmpv6)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.number()) {
            (Self::All, _) | (_, None) => f.write_str("all"),
            (Self::Other(n), _) => write!(f, "{n}"),
            (_, Some(n)) => match firewall_common::proto::name(n) {
                Some(name) => f.write_str(name),
                None => write!(f, "{n}"),
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ports {
    /// Every port, 0 included (`ports: all`, and every non-tcp/udp rule).
    Any,
    /// Inclusive ranges within 1-65535, in file order.
    Ranges(Vec<PortRange>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub at: Location,
    pub target: PeerTarget,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerTarget {
    /// Host bits are zero; a bare address is stored as /32 or /128.
    Cidr(IpNet),
    /// `sg:NAME`: the addresses that carry the group.
    Group(String),
    /// `pl:NAME`.
    PrefixList(String),
}

impl fmt::Display for PeerTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cidr(net) => write!(f, "{net}"),
            Self::Group(name) => write!(f, "sg:{name}"),
            Self::PrefixList(name) => write!(f, "pl:{name}"),
        }
    }
}

/// `members: GROUP: [...]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Members {
    pub group: String,
    pub at: Location,
    pub addresses: Vec<IpNet>,
}

/// `prefix_lists: NAME: [...]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PrefixList {
    pub name: String,
    pub at: Location,
    pub cidrs: Vec<IpNet>,
}

/// `interfaces: IFACE: [GROUP, ...]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attachment {
    pub interface: String,
    pub at: Location,
    pub groups: Vec<String>,
}

/// `conntrack:`, in seconds and entries, already range-checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conntrack {
    pub tcp_established_timeout: u32,
    pub udp_stream_timeout: u32,
    pub udp_timeout: u32,
    pub max_entries: u32,
    /// `accounting: true`: tracked flows count their packets and bytes.
    /// Absent from policies saved before the key existed: off.
    #[serde(default)]
    pub accounting: bool,
}

impl Default for Conntrack {
    fn default() -> Self {
        const NS: u64 = 1_000_000_000;
        let aws = firewall_common::conntrack::Timeouts::AWS_DEFAULT;
        Self {
            tcp_established_timeout: secs(aws.tcp_established / NS),
            udp_stream_timeout: secs(aws.udp_stream / NS),
            udp_timeout: secs(aws.udp_single / NS),
            max_entries: firewall_common::conntrack::DEFAULT_CAPACITY,
            accounting: false,
        }
    }
}

fn secs(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Conntrack {
    /// The idle timeouts in nanoseconds; the timeouts `conntrack:` cannot
    /// set keep the AWS defaults.
    pub fn timeouts(&self) -> firewall_common::conntrack::Timeouts {
        const NS: u64 = 1_000_000_000;
        firewall_common::conntrack::Timeouts {
            tcp_established: u64::from(self.tcp_established_timeout) * NS,
            udp_stream: u64::from(self.udp_stream_timeout) * NS,
            udp_single: u64::from(self.udp_timeout) * NS,
            ..firewall_common::conntrack::Timeouts::AWS_DEFAULT
        }
    }

    pub fn capacity(&self) -> u32 {
        self.max_entries
    }
}
