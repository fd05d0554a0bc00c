//! Invalid input that is not a policy file's: the one error type every
//! layer of the library uses for names, addresses, flags and the state a
//! command finds ([`InputError`]). Whose fault each error is, and the exit
//! status it ends `sgctl` with, is [`crate::fault`]'s.
use std::{io, path::PathBuf};

use ipnet::IpNet;

use crate::compile::CompileError;

/// Invalid input that is not a policy file's (those are [`PolicyError`](crate::policy::PolicyError)s):
/// names, addresses and flags on the command line, the scope's state as
/// the command finds it.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("no policy applied in {scope}: run `sgctl apply FILE...` first")]
    NoPolicyApplied { scope: String },
    /// As [`InputError::NoPolicyApplied`], for verbs that read the policy in force.
    #[error("no policy applied in {scope}")]
    NoPolicyInForce { scope: String },
    #[error("interface {ifname:?} does not exist in {scope}")]
    NoSuchInterface { ifname: String, scope: String },
    /// rtnetlink was asked about an interface that is not there.
    #[error("no interface {0:?}")]
    InterfaceNotFound(String),
    #[error("interface {ifname:?} is not filtered in {scope}")]
    NotFiltered { ifname: String, scope: String },
    #[error("no filtered interface in {scope}: nothing to trace")]
    NothingToTrace { scope: String },
    #[error("unknown group {group:?}: expected one of {}", known.join(", "))]
    UnknownGroup { group: String, known: Vec<String> },
    #[error("unknown group {group:?}: the policy in force defines {}", known.join(", "))]
    GroupNotInForce { group: String, known: Vec<String> },
    #[error("interface {ifname}: group {group:?} is not defined by the applied policy")]
    GroupNotDefined { ifname: String, group: String },
    /// The policy in force no longer compiles (e.g. for `explain`); `error`
    /// names the interface.
    #[error("{error} (in the applied policy)")]
    AppliedPolicy { error: CompileError },
    /// `range`: the numbers the verb takes (`0-255`, or `1-255` where 0 means any).
    #[error("invalid protocol {value:?}: expected tcp, udp, icmp, icmpv6 or a number {range}")]
    InvalidProtocol { value: String, range: &'static str },
    #[error("--src {src} and --dst {dst} are of different IP versions")]
    MixedFamilies { src: IpNet, dst: IpNet },
    #[error("invalid address {text:?}: {why}")]
    InvalidAddress { text: String, why: &'static str },
    #[error("invalid address {text:?}: host bits are set; did you mean {network}?")]
    AddressHostBits { text: String, network: IpNet },
    #[error(
        "sgctl members keeps at most {max} changed addresses beside the policy files: write the memberships into \
         the files and apply them"
    )]
    TooManyMemberEdits { max: usize },
    /// `what`: `group "NAME"` or `rule "GROUP/DIRECTION/N"`.
    #[error(
        "no filtered interface has {what} (rules are named GROUP/inbound/N or GROUP/outbound/N, as `sgctl stats` \
         shows them)"
    )]
    NoSuchRule { what: String },
    /// `sgctl agent --etcd` and `sgctl publish`: options that cannot reach etcd.
    #[error("{0}")]
    EtcdOptions(String),
    #[error("export prints a ruleset, not JSON: drop --json")]
    ExportAsJson,
    #[error("`-` (standard input) given twice")]
    StdinTwice,
    #[error("{}: cannot read: {error}", path.display())]
    Unreadable { path: PathBuf, error: io::Error },
    #[error("no flow log at {}: is `sgctl agent` running (with --flow-log {})?", path.display(), path.display())]
    NoFlowLog { path: PathBuf },
    #[error("state directory {} is not on a bpffs mount (mount -t bpf bpf DIR)", dir.display())]
    NotBpffs { dir: PathBuf },
    #[error(
        "{what} directory {} is writable by others (owner uid {uid}, mode {mode:o}): it must be root's, mode 0700 \
         (chmod 700 {})",
        dir.display(),
        dir.display()
    )]
    StateDirNotPrivate { what: &'static str, dir: PathBuf, uid: u32, mode: u32 },
    #[error(
        "{what} directory {} belongs to uid {uid}, not root: someone else made it, and nothing in it can be trusted; \
         remove it (rm -r {}) and run sgctl again, which makes it afresh (mode 0700), or give another with --{what}-dir",
        dir.display(),
        dir.display()
    )]
    DirNotRoots { what: &'static str, dir: PathBuf, uid: u32 },
    #[error(
        "{what} directory {} is a symbolic link (to {}): sgctl does not follow it; remove the link (rm {}) and run \
         sgctl again, or give the real directory with --{what}-dir",
        dir.display(),
        target.display(),
        dir.display()
    )]
    DirIsSymlink { what: &'static str, dir: PathBuf, target: PathBuf },
    #[error("network namespace {name:?} not found ({path}: {error})")]
    NoSuchNetns { name: String, path: String, error: io::Error },
    #[error(
        "{ifname}: GRE devices are not supported: in NBMA mode the kernel puts a GRE header where sgctl expects the \
         IP header; filter the interface that carries the tunnel, or use an ip6tnl/ipip/WireGuard device"
    )]
    GreDevice { ifname: String },
    #[error(
        "{ifname}: link type {link_type}{} is not supported: sgctl parses Ethernet devices and devices that carry \
         bare IP packets (tun, WireGuard, IP tunnels, PPP)",
        kind.as_deref().map(|k| format!(" ({k})")).unwrap_or_default()
    )]
    LinkType { ifname: String, link_type: u16, kind: Option<String> },
    #[error(
        "{ifname}: XDP cannot filter a device without an Ethernet header (link type {link_type}): use --mode tc or \
         auto"
    )]
    XdpWithoutEthernet { ifname: String, link_type: u16 },
    #[error(
        "{ifname} already runs XDP program {id} ({mode}); sgctl does not replace it: remove it (`ip link set dev \
         {ifname} xdp off`) or use --mode tc"
    )]
    XdpHookTaken { ifname: String, id: u32, mode: &'static str },
}
