//! The command line (spec/cli.md).
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::state::{records::Mode, DEFAULT_STATE_DIR};

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
    /// Print one JSON document instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
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
        #[arg(long)]
        dry_run: bool,
    },
    /// Filter an interface with groups of the applied policy.
    Attach {
        #[arg(value_name = "IFACE")]
        iface: String,
        /// Groups to attach, comma-separated.
        #[arg(long, value_delimiter = ',', required = true, value_name = "A,B")]
        groups: Vec<String>,
        /// Ingress hook: XDP (native, real NICs), tcx (veth, virtual devices), or chosen per device.
        #[arg(long, value_enum, default_value_t = Mode::Auto)]
        mode: Mode,
    },
    /// Stop filtering an interface.
    Detach {
        #[arg(value_name = "IFACE")]
        iface: String,
    },
    /// Filtered interfaces, hooks, program ids, policy generation, conntrack use.
    Status,
    /// Per-rule and per-interface counters.
    Stats {
        /// Print again every SECS seconds.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
    },
    /// The connection-tracking table.
    Conntrack {
        #[command(subcommand)]
        action: ConntrackAction,
    },
    /// Say which rule allows a packet, or that nothing does.
    Explain(ExplainArgs),
    /// Write the policy in another firewall's format (changes nothing).
    Export {
        #[command(subcommand)]
        format: ExportFormat,
    },
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
    /// Forget every tracked flow (cuts open flows that no rule allows any more).
    Flush,
    /// Delete flows idle past their timeout (run from a timer to free slots early).
    Gc,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Filtered interface.
    #[arg(long, value_name = "IFACE")]
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
