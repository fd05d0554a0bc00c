//! The command line (docs/cli.md): its arguments here, one module per verb
//! in [`cmd`] (parse, call the library, print), and what they share:
//! completion candidates, aligned output, the privilege check.
pub mod cmd;
pub mod completers;
pub(crate) mod output;
mod privilege;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clap_complete::{ArgValueCompleter, Shell};

use self::completers::{group, interface};
use crate::state::{records::Mode, saved::DEFAULT_LIB_DIR, DEFAULT_STATE_DIR};

/// AWS-style security groups enforced in the Linux kernel by eBPF.
#[derive(Debug, Parser)]
#[command(name = "sgctl", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Debug, Args)]
pub struct Global {
    /// Work on interfaces inside this network namespace (as `ip -n NAME`); state stays on the host's bpffs.
    #[arg(short = 'n', long, global = true, value_name = "NAME")]
    pub netns: Option<String>,
    /// State directory; must be on a bpffs mount.
    #[arg(long, global = true, env = "SGCTL_STATE_DIR", default_value = DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Where the applied policy is saved on disk, for `sgctl restore` after a reboot.
    #[arg(long, global = true, env = "SGCTL_LIB_DIR", default_value = DEFAULT_LIB_DIR, value_name = "DIR")]
    pub lib_dir: PathBuf,
    /// Print one JSON document instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// The most kernel memory a policy's maps may take while it is put in force (the two generations of its
    /// policy maps, conntrack, counters, records), per scope: a size (512M, 2G) or a share of the host's memory.
    #[arg(long, global = true, env = "SGCTL_MAX_KERNEL_MEMORY", default_value = "25%", value_name = "SIZE")]
    pub max_kernel_memory: crate::datapath::memory::Limit,
    /// How long a verb that changes state waits for another sgctl to finish, in seconds.
    #[arg(long, global = true, default_value_t = 60, value_name = "SECS")]
    pub wait: u64,
}

impl Global {
    /// Where the verb works, as the library takes it.
    pub fn place(&self) -> crate::control::Place {
        crate::control::Place {
            netns: self.netns.clone(),
            state_dir: self.state_dir.clone(),
            lib_dir: self.lib_dir.clone(),
            wait: std::time::Duration::from_secs(self.wait),
            memory_limit: self.max_kernel_memory,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse, validate and compile policy files; change nothing.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Compile policy files and put them in force on the interfaces they name.
    Apply {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Show what would change, change nothing.
        #[arg(long, conflicts_with = "confirm_within")]
        dry_run: bool,
        /// Roll back to the policy in force before by itself unless `sgctl confirm` runs within SECS seconds
        /// (a policy that cuts your own SSH heals itself).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86400))]
        confirm_within: Option<u64>,
        /// Accept interfaces the files name that do not exist (yet): they are saved with the policy and
        /// attached when they appear (by `sgctl agent`, or the next `sgctl restore`).
        #[arg(long)]
        allow_missing: bool,
    },
    /// Keep the policy of the last `apply --confirm-within`: cancel its rollback.
    Confirm,
    /// Put the policy saved on disk back in force (at boot: bpffs does not survive a reboot).
    Restore {
        /// Every scope saved: the host and each named network namespace that exists.
        #[arg(long)]
        all: bool,
    },
    /// Wait for an unconfirmed apply's deadline and roll it back (started by `apply --confirm-within`).
    #[command(hide = true)]
    Rollback,
    /// Filter an interface with groups of the applied policy.
    Attach {
        #[arg(value_name = "IFACE", add = ArgValueCompleter::new(interface))]
        iface: String,
        /// Groups to attach, comma-separated.
        #[arg(long, value_delimiter = ',', required = true, value_name = "A,B", add = ArgValueCompleter::new(group))]
        groups: Vec<String>,
        /// Hooks: auto (XDP on real NICs, tc on virtual devices), xdp, tc (tcx where the kernel has it, else
        /// clsact), or clsact (ingress and egress on the legacy tc hook even where tcx exists).
        #[arg(long, value_enum, default_value_t = Mode::Auto)]
        mode: Mode,
    },
    /// Add addresses to a group's members, or remove them, without applying the files again.
    ///
    /// The change is made in the maps in force, address by address, when that judges every packet by the old
    /// membership or the new one; otherwise it is a full change (as apply). It lasts until the next `sgctl apply`
    /// of files, which puts the files' memberships back.
    Members {
        #[command(subcommand)]
        action: MembersAction,
    },
    /// Stop filtering an interface.
    Detach {
        #[arg(value_name = "IFACE", add = ArgValueCompleter::new(interface))]
        iface: String,
    },
    /// Filtered interfaces, hooks, program ids, policy generation, conntrack use.
    Status,
    /// What this kernel can do for sgctl (version, bpf, bpffs, BTF, tcx or clsact, memlock) and the hooks each
    /// interface gets; exits 1 when it lacks something sgctl needs.
    Doctor,
    /// Per-rule and per-interface counters.
    Stats {
        /// Print again every SECS seconds.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
        /// Output: aligned tables, one JSON document (as --json), the Prometheus text format 0.0.4 (for
        /// node_exporter's textfile collector), or OpenMetrics text (what the agent's /metrics gives a
        /// Prometheus server).
        #[arg(long, value_enum, value_name = "FORMAT")]
        format: Option<StatsFormat>,
    },
    /// Long-running: Prometheus metrics, flow logs, and interfaces that appear later (never needed for enforcement).
    Agent(crate::agent::AgentArgs),
    /// Recent flow-log records written by `sgctl agent`, filtered.
    Flows(FlowsArgs),
    /// Print each packet the datapath judges that matches, live: verdict, rule or reason, conntrack state.
    Trace(TraceArgs),
    /// The connection-tracking table.
    Conntrack {
        #[command(subcommand)]
        action: ConntrackAction,
    },
    /// Say which rule allows a packet, or that nothing does.
    Explain(ExplainArgs),
    /// Write a policy from another tool's security groups (needs no privilege).
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
    /// Print a shell completion script.
    ///
    /// bash: `sgctl completions bash > /etc/bash_completion.d/sgctl`;
    /// zsh: `sgctl completions zsh > "${fpath[1]}/_sgctl"`;
    /// fish: `sgctl completions fish > ~/.config/fish/completions/sgctl.fish`.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: Shell,
        /// A script that asks sgctl itself while completing, so it also offers
        /// interface names and the applied policy's group names.
        #[arg(long)]
        dynamic: bool,
    },
    /// Write man pages (sgctl.1, sgctl-apply.1, …) into DIR (what `cargo xtask man` runs).
    #[command(hide = true)]
    ManPages {
        #[arg(value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Put policy files' groups, prefix lists and conntrack settings in etcd for every `sgctl agent --etcd`.
    ///
    /// Checked first as each agent checks them (they parse, name no interfaces, each group compiles); published
    /// with the next generation, which every agent of the prefix puts in force, keeping its host's attachments.
    /// Needs no privilege on this host, only write access to the prefix.
    Publish {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        etcd: crate::fleet::EtcdArgs,
    },
    /// Write the policy in another firewall's format (changes nothing).
    Export {
        #[command(subcommand)]
        format: ExportFormat,
    },
}

#[derive(Clone, Debug, Args)]
pub struct FlowsArgs {
    /// The agent's flow log.
    #[arg(long, default_value = crate::flowlog::DEFAULT_FLOW_LOG, value_name = "FILE")]
    pub file: PathBuf,
    /// Only records of this interface (its name, or NAME@NETNS).
    #[arg(long, value_name = "IFACE")]
    pub iface: Option<String>,
    /// Only records credited to this rule (GROUP/inbound/N or GROUP/outbound/N) or of this group.
    #[arg(long, value_name = "ID")]
    pub rule: Option<String>,
    /// Only accepted, rejected, or would-be dropped (audit) records.
    #[arg(long, value_enum, value_name = "ACTION")]
    pub action: Option<FlowAction>,
    /// Only records with this source address.
    #[arg(long, value_name = "ADDR")]
    pub src: Option<std::net::IpAddr>,
    /// Only records with this destination address.
    #[arg(long, value_name = "ADDR")]
    pub dst: Option<std::net::IpAddr>,
    /// Only records with this source port.
    #[arg(long, value_name = "PORT")]
    pub sport: Option<u16>,
    /// Only records with this destination port.
    #[arg(long, value_name = "PORT")]
    pub dport: Option<u16>,
    /// The last N matching records.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub last: usize,
    /// Output: a table, the AWS default v2 lines, or the custom lines (v2 and sgctl's fields).
    #[arg(long, value_enum, default_value_t = FlowFormat::Table)]
    pub format: FlowFormat,
    /// Instead of records: the N flows that carried the most, summed over the matching records.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// What --top ranks by.
    #[arg(long, value_enum, default_value_t, requires = "top")]
    pub by: crate::flowlog::top::Rank,
    /// Only records whose window ended at most this long ago (N seconds, or Ns, Nm, Nh, Nd).
    #[arg(long, value_name = "DURATION", value_parser = crate::flowlog::top::parse_since)]
    pub since: Option<std::time::Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowAction {
    Accept,
    Reject,
    WouldDrop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowFormat {
    Table,
    V2,
    Custom,
}

#[derive(Clone, Debug, Args)]
pub struct TraceArgs {
    /// Filtered interface to trace (default: every filtered interface of the scope).
    #[arg(long, value_name = "IFACE", add = ArgValueCompleter::new(interface))]
    pub iface: Option<String>,
    /// tcp, udp, icmp, icmpv6 or a protocol number.
    #[arg(long, value_name = "P")]
    pub proto: Option<String>,
    /// Source address or CIDR.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub src: Option<ipnet::IpNet>,
    /// Destination address or CIDR.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub dst: Option<ipnet::IpNet>,
    /// Source port.
    #[arg(long, value_name = "PORT")]
    pub sport: Option<u16>,
    /// Destination port.
    #[arg(long, value_name = "PORT")]
    pub dport: Option<u16>,
    /// Stop after N packets.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
}

/// `10.0.0.0/8`, or a bare address as its /32 or /128.
fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("\"{text}\": expected an address or a CIDR (10.0.0.0/8, fd00::/64)"))
}

/// `sgctl stats --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatsFormat {
    Table,
    Json,
    /// The Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    Openmetrics,
}

#[derive(Debug, Subcommand)]
pub enum ImportFrom {
    /// From the JSON of `aws ec2 describe-security-groups` and related commands.
    ///
    /// Each FILE is the JSON output of `aws ec2 describe-security-groups`,
    /// `describe-security-group-rules` or `describe-network-interfaces` (which
    /// fills in the members of referenced groups), or one document holding
    /// several of their top-level keys. Groups and prefix lists referenced but
    /// not in the input become empty definitions, listed in warnings on stderr.
    Aws(ImportAwsArgs),
}

#[derive(Debug, Args)]
pub struct ImportAwsArgs {
    /// JSON documents to import; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Entries of a managed prefix list: the output of
    /// `aws ec2 get-managed-prefix-list-entries --prefix-list-id ID`, which does not name the list.
    #[arg(long = "prefix-list", value_name = "ID=FILE", value_parser = parse_prefix_list)]
    pub prefix_lists: Vec<(String, PathBuf)>,
    /// Write the policy to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `pl-0123=entries.json` → (`pl-0123`, `entries.json`).
fn parse_prefix_list(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((id, file)) if id.starts_with("pl-") && !file.is_empty() => Ok((id.to_owned(), PathBuf::from(file))),
        _ => Err(format!("\"{text}\": expected pl-ID=FILE, e.g. pl-0123abcd=entries.json")),
    }
}

#[derive(Debug, Subcommand)]
pub enum ExportFormat {
    /// An nftables ruleset (`table inet sgctl`) for `nft -f`, printed on stdout.
    Nftables(ExportNftablesArgs),
}

#[derive(Debug, Args)]
pub struct ExportNftablesArgs {
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// One rule per (CIDR, port range), without sets (for scaling comparisons).
    #[arg(long)]
    pub linear: bool,
    /// Also filter IFACE with these groups, as `sgctl attach` would (repeatable; replaces the file's groups for IFACE).
    #[arg(long, value_name = "IFACE=A,B", value_parser = parse_attachment)]
    pub attach: Vec<(String, Vec<String>)>,
}

/// `IFACE=A,B` → (IFACE, [A, B]).
fn parse_attachment(text: &str) -> Result<(String, Vec<String>), String> {
    let (iface, groups) = text.split_once('=').ok_or_else(|| format!("{text:?}: expected IFACE=GROUP[,GROUP...]"))?;
    let groups: Vec<String> = groups.split(',').filter(|g| !g.is_empty()).map(str::to_owned).collect();
    if iface.is_empty() || groups.is_empty() {
        return Err(format!("{text:?}: expected IFACE=GROUP[,GROUP...]"));
    }
    Ok((iface.to_owned(), groups))
}

#[derive(Debug, Subcommand)]
pub enum MembersAction {
    /// Make ADDRESS... carry GROUP (as if listed under `members: GROUP:`).
    Add {
        #[arg(value_name = "GROUP", add = ArgValueCompleter::new(group))]
        group: String,
        /// Addresses (10.0.1.5, 2001:db8::5) or networks (10.0.1.0/24).
        #[arg(required = true, value_name = "ADDRESS")]
        addresses: Vec<String>,
    },
    /// Make ADDRESS... stop carrying GROUP.
    Remove {
        #[arg(value_name = "GROUP", add = ArgValueCompleter::new(group))]
        group: String,
        #[arg(required = true, value_name = "ADDRESS")]
        addresses: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConntrackAction {
    /// List tracked flows.
    List,
    /// Forget tracked flows (cuts open flows that no rule allows any more): all of them, or those of a group or rule.
    Flush {
        /// Only the flows opened through a rule of this group.
        #[arg(long, value_name = "GROUP", conflicts_with = "rule")]
        group: Option<String>,
        /// Only the flows opened through this rule (GROUP/inbound/N or GROUP/outbound/N, as `sgctl stats` names it).
        #[arg(long, value_name = "ID")]
        rule: Option<String>,
    },
    /// Delete flows idle past their timeout (run from a timer to free slots early).
    Gc,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Filtered interface.
    #[arg(long, value_name = "IFACE", add = ArgValueCompleter::new(interface))]
    pub iface: String,
    /// Arriving on the interface.
    #[arg(long = "in", conflicts_with = "outbound", required_unless_present = "outbound")]
    pub inbound: bool,
    /// Leaving through the interface.
    #[arg(long = "out")]
    pub outbound: bool,
    /// tcp, udp, icmp, icmpv6 or a protocol number.
    #[arg(long, value_name = "P")]
    pub proto: String,
    /// Source address (what inbound rules match).
    #[arg(long, value_name = "ADDR")]
    pub src: std::net::IpAddr,
    /// Source port; accepted for completeness, no rule matches it.
    #[arg(long, value_name = "PORT")]
    pub sport: Option<u16>,
    /// Destination address (what outbound rules match).
    #[arg(long, value_name = "ADDR")]
    pub dst: std::net::IpAddr,
    /// Destination port (tcp/udp).
    #[arg(long, value_name = "PORT")]
    pub dport: Option<u16>,
    /// ICMP type (icmp/icmpv6; default: echo request).
    #[arg(long, value_name = "N")]
    pub icmp_type: Option<u8>,
    /// ICMP code (icmp/icmpv6).
    #[arg(long, value_name = "N")]
    pub icmp_code: Option<u8>,
}
