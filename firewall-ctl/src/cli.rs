//! The command line (docs/cli.md).
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clap_complete::{ArgValueCompleter, Shell};

use crate::{
    completers::{group, interface},
    saved::DEFAULT_LIB_DIR,
    state::{records::Mode, DEFAULT_STATE_DIR},
};

/// AWS-style security groups enforced in the Linux kernel by eBPF.
#[derive(Debug, Parser)]
#[command(name = "sgctl", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
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
    /// How long a verb that changes state waits for another sgctl to finish, in seconds.
    #[arg(long, global = true, default_value_t = 60, value_name = "SECS")]
    pub wait: u64,
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
    Rollback {
        /// The generation the unconfirmed apply put in force.
        #[arg(long)]
        generation: u64,
        /// Seconds since the Unix epoch.
        #[arg(long)]
        deadline: u64,
    },
    /// Filter an interface with groups of the applied policy.
    Attach {
        #[arg(value_name = "IFACE", add = ArgValueCompleter::new(interface))]
        iface: String,
        /// Groups to attach, comma-separated.
        #[arg(long, value_delimiter = ',', required = true, value_name = "A,B", add = ArgValueCompleter::new(group))]
        groups: Vec<String>,
        /// Ingress hook: XDP (native, real NICs), tcx (veth, virtual devices), or chosen per device.
        #[arg(long, value_enum, default_value_t = Mode::Auto)]
        mode: Mode,
    },
    /// Stop filtering an interface.
    Detach {
        #[arg(value_name = "IFACE", add = ArgValueCompleter::new(interface))]
        iface: String,
    },
    /// Filtered interfaces, hooks, program ids, policy generation, conntrack use.
    Status,
    /// Per-rule and per-interface counters.
    Stats {
        /// Print again every SECS seconds.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
        /// Output: aligned tables, one JSON document (as --json), or the Prometheus/OpenMetrics text format
        /// (the agent's /metrics, for node_exporter's textfile collector).
        #[arg(long, value_enum, value_name = "FORMAT")]
        format: Option<StatsFormat>,
    },
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
    /// Write the policy in another firewall's format (changes nothing).
    Export {
        #[command(subcommand)]
        format: ExportFormat,
    },
}

/// `sgctl stats --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatsFormat {
    Table,
    Json,
    Prometheus,
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
