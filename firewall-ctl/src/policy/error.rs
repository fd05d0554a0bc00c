//! The one error type of the policy stage: every message is a single line
//! `FILE:LINE:COL: <what is wrong, quoting the value>: <expected form>`, so
//! editors and CI logs can jump to it. Control characters (a newline inside
//! a quoted value or a file name) are written escaped, so the message stays
//! one line whatever the input.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A place in a policy file. `line` and `col` count from 1; `file_index` is
/// the file's position on the command line, so locations sort in file order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Location {
    pub file_index: u32,
    pub line: u32,
    pub col: u32,
    pub file: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// Invalid policy input, located where the offending value starts.
#[derive(Debug)]
pub struct PolicyError {
    pub file: String,
    pub line: u32,
    pub col: u32,
    pub kind: ErrorKind,
}

impl PolicyError {
    pub fn new(at: &Location, kind: ErrorKind) -> Self {
        Self { file: at.file.clone(), line: at.line, col: at.col, kind }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!("{}:{}:{}: {}", self.file, self.line, self.col, self.kind);
        for c in text.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// The message already says everything (the cause is quoted in it), so
/// there is no separate source to print after it.
impl std::error::Error for PolicyError {}

/// What is wrong. Each message quotes the offending value, then says what
/// was expected.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("cannot read file: {0}")]
    Read(#[source] std::io::Error),
    #[error("the file is not UTF-8 text: policies are UTF-8 YAML")]
    NotUtf8,
    #[error("character {} is not allowed in YAML: remove it, or write it as an escape in a \"double-quoted\" value", .0.escape_unicode())]
    Unprintable(char),
    #[error("a line that starts with % is a YAML directive, and directives are ASCII (%YAML 1.2): remove the line")]
    NonAsciiDirective,
    #[error("invalid YAML: {0}")]
    Syntax(String),
    #[error("{0} are not supported: write the value out in plain YAML")]
    UnsupportedYaml(&'static str),
    #[error(
        "YAML merge keys (<<) are not supported: write the keys out in each map (prefix_lists: share address lists)"
    )]
    MergeKey,
    #[error("the policy files are larger than {max} bytes together: that is the most sgctl reads for one policy")]
    TooLarge { max: usize },
    #[error(
        "the policy has more than {max} YAML values (lists, maps and scalars, aliases counted as what they repeat): \
         that is the most sgctl reads for one policy"
    )]
    TooManyNodes { max: usize },
    #[error("lists and maps nested more than {max} deep (aliases expanded): a policy needs 6 levels")]
    TooDeep { max: usize },
    #[error("value \"{start}...\" is {len} bytes long: values are at most {max} bytes")]
    ScalarTooLong { start: String, len: usize, max: usize },
    #[error("more than {max} {what}: {why}")]
    TooMany { what: String, max: usize, why: &'static str },
    #[error(
        "the rules name more than {max} addresses together (each pl: its entries, each sg: its members, each \
         counted once however many rules name it): that is the most one policy's rules name"
    )]
    TooManyAddresses { max: usize },
    #[error(
        "interfaces are each host's own: `sgctl publish` puts groups, prefix lists and conntrack settings for the \
         fleet; attach on each host (its own files, or `sgctl attach`)"
    )]
    PublishedInterfaces,
    #[error(
        "no group listed for interface \"{0}\": an interface without groups is not filtered, so remove the entry \
         to leave it unfiltered, or list the groups that filter it (eth0: [web-server])"
    )]
    EmptyAttachment(String),
    /// What the compiler refused for an interface (its message, which
    /// names the interface), located where the files attach it. Text, not
    /// the compiler's error type, so the policy layer does not depend on
    /// the compiler that reads it.
    #[error("{0}")]
    DoesNotFit(String),
    #[error("more than one YAML document in a file: put each policy in its own file")]
    MultipleDocuments,
    #[error("{found} where {what} was expected: {expected}")]
    WrongType { what: &'static str, found: &'static str, expected: &'static str },
    #[error("unknown key \"{key}\" {context}: expected one of {allowed}")]
    UnknownKey { key: String, context: String, allowed: String },
    #[error("key \"{key}\" appears twice in the same map (first at {first}): keep one")]
    DuplicateKey { key: String, first: Location },
    #[error("{what} \"{name}\" is defined twice (first at {first}): each name may be defined once across all files")]
    Duplicate { what: &'static str, name: String, first: Location },
    #[error("missing key \"{key}\" {context}: {expected}")]
    MissingKey { key: &'static str, context: String, expected: &'static str },
    #[error(
        "invalid {what} name \"{name}\": names are 1-63 characters of a-z 0-9 . _ -, starting with a letter or digit"
    )]
    InvalidName { what: &'static str, name: String },
    #[error("invalid interface name \"{0}\": 1-15 characters, no '/', ':' or whitespace")]
    InvalidInterfaceName(String),
    #[error("unknown group \"{name}\" {context}: define it under groups:")]
    UnknownGroup { name: String, context: &'static str },
    #[error("unknown prefix list \"pl:{0}\": define it under prefix_lists:")]
    UnknownPrefixList(String),
    #[error("group \"{group}\" is listed twice for interface \"{interface}\": list each group once")]
    RepeatedAttachment { interface: String, group: String },
    #[error("interface \"{0}\" does not exist on this host: check `ip link`")]
    NoSuchInterface(String),
    #[error("invalid protocol \"{0}\": expected tcp, udp, icmp, icmpv6, all, -1 or a protocol number 0-255")]
    InvalidProtocol(String),
    #[error("invalid port \"{0}\": expected a number 1-65535, \"FROM-TO\", all, or one of ssh ftp sftp http https rdp dns mysql postgres")]
    InvalidPort(String),
    #[error("port \"{0}\" is out of range: ports are 1-65535")]
    PortOutOfRange(String),
    #[error("port range \"{0}\" is reversed: write it low-high")]
    ReversedRange(String),
    #[error("ports are not allowed with protocol \"{0}\": ports apply to tcp and udp only (use icmp_type/icmp_code for ICMP)")]
    PortsNotAllowed(String),
    #[error("protocol \"{0}\" needs ports: add ports: a number, \"FROM-TO\", a service name or all")]
    MissingPorts(String),
    #[error("{key} is not allowed with protocol \"{protocol}\": it applies to icmp and icmpv6 only")]
    IcmpNotAllowed { key: &'static str, protocol: String },
    #[error("icmp_code \"{0}\" without icmp_type: give icmp_type too, or neither to match any ICMP message")]
    IcmpCodeWithoutType(String),
    #[error("invalid {key} \"{value}\": expected a number 0-255")]
    InvalidIcmp { key: &'static str, value: String },
    #[error("invalid CIDR \"{value}\": {reason}")]
    InvalidCidr { value: String, reason: &'static str },
    #[error("CIDR \"{value}\" has host bits set: did you mean {network}?")]
    HostBitsSet { value: String, network: String },
    #[error("invalid {key} \"{value}\": expected a CIDR (10.0.0.0/8, ::/0), an address, sg:GROUP or pl:LIST")]
    InvalidPeer { key: &'static str, value: String },
    #[error("invalid member \"{0}\": expected an address or CIDR (sg: and pl: are not allowed here)")]
    InvalidMember(String),
    #[error("invalid prefix list entry \"{0}\": expected an address or CIDR")]
    InvalidPrefixListEntry(String),
    #[error("\"{key}\" is not allowed in an {direction} rule: {direction} rules match the {expected}")]
    WrongPeerKey { key: &'static str, direction: &'static str, expected: &'static str },
    #[error("empty list for \"{0}\": a rule needs at least one value here")]
    EmptyList(&'static str),
    #[error("description \"{start}...\" is {len} characters long: at most 255 are allowed")]
    DescriptionTooLong { start: String, len: usize },
    #[error("invalid mode \"{0}\": expected enforce or audit")]
    InvalidMode(String),
    #[error("invalid {key} \"{value}\": expected a whole number {min}-{max}")]
    OutOfRange { key: &'static str, value: String, min: u64, max: u64 },
    #[error("invalid {key} \"{value}\": expected true or false")]
    InvalidBoolean { key: &'static str, value: String },
}
