//! What an interface is and what runs on its hooks, asked of the kernel:
//! its link-layer type and XDP program over rtnetlink (RTM_GETLINK), its
//! tcx programs with BPF_PROG_QUERY, its clsact filters over rtnetlink.
//! `attach` uses this to refuse what sgctl cannot filter and to stay first
//! in line; `status` (and anything that checks the hooks) to see whether
//! sgctl's programs are still there, first, and what runs beside them.
use std::path::Path;

use anyhow::{bail, Context as _};
use aya::programs::{tc::TcAttachType, SchedClassifier};
use netlink_packet_route::{
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage, LinkXdp, XdpAttached},
    RouteNetlinkMessage,
};
use serde::{Deserialize, Serialize};

use crate::{
    datapath::{
        attach::{self, Placement},
        clsact::{self, Direction},
        kernel, rtnetlink,
    },
    InputError,
};

/// How the programs find the network header on a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkLayer {
    /// An Ethernet header (and maybe VLAN tags) comes first.
    Ethernet,
    /// The packet starts with its IP header; the device gives the protocol
    /// (tun, WireGuard, IP-in-IP and IPv6 tunnels, PPP). Only tc can judge
    /// it: XDP has no protocol to go by.
    BareIp,
}

/// What rtnetlink says of one interface.
#[derive(Clone, Debug)]
pub struct LinkFacts {
    /// `ARPHRD_*`.
    pub link_type: u16,
    /// The driver kind (`veth`, `tun`, `wireguard`, …), when it has one.
    pub kind: Option<String>,
    /// The XDP program attached, and how.
    pub xdp: Option<XdpProgram>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct XdpProgram {
    pub id: u32,
    /// `native`, `generic`, `offload` or `multi`.
    pub mode: &'static str,
}

const ARPHRD_ETHER: u16 = 1;
const ARPHRD_PPP: u16 = 512;
const ARPHRD_RAWIP: u16 = 519;
const ARPHRD_TUNNEL: u16 = 768;
const ARPHRD_TUNNEL6: u16 = 769;
const ARPHRD_LOOPBACK: u16 = 772;
const ARPHRD_SIT: u16 = 776;
const ARPHRD_IPGRE: u16 = 778;
const ARPHRD_IP6GRE: u16 = 823;
const ARPHRD_NONE: u16 = 0xfffe;

/// How sgctl parses `ifname`'s packets, or why it cannot (an [`InputError`]
/// naming the link type).
pub fn link_layer(ifname: &str, facts: &LinkFacts) -> anyhow::Result<LinkLayer> {
    match facts.link_type {
        // The loopback device carries an (all-zero) Ethernet header.
        ARPHRD_ETHER | ARPHRD_LOOPBACK => Ok(LinkLayer::Ethernet),
        ARPHRD_NONE | ARPHRD_RAWIP | ARPHRD_TUNNEL | ARPHRD_TUNNEL6 | ARPHRD_SIT | ARPHRD_PPP => Ok(LinkLayer::BareIp),
        ARPHRD_IPGRE | ARPHRD_IP6GRE => Err(InputError::GreDevice { ifname: ifname.to_owned() }.into()),
        link_type => {
            Err(InputError::LinkType { ifname: ifname.to_owned(), link_type, kind: facts.kind.clone() }.into())
        }
    }
}

/// rtnetlink's view of `ifname` in the current network namespace.
pub fn link_facts(ifname: &str) -> anyhow::Result<LinkFacts> {
    let ifindex = crate::netns::ifindex(ifname).ok_or_else(|| InputError::InterfaceNotFound(ifname.to_owned()))?;
    let mut request = LinkMessage::default();
    request.header.index = ifindex;
    let message = rtnetlink_get(request).with_context(|| format!("asking rtnetlink about {ifname}"))?;
    let mut facts = LinkFacts { link_type: message.header.link_layer_type.into(), kind: None, xdp: None };
    for attribute in message.attributes {
        match attribute {
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        facts.kind = Some(kind_name(&kind));
                    }
                }
            }
            LinkAttribute::Xdp(xdp) => facts.xdp = xdp_program(&xdp),
            _ => {}
        }
    }
    Ok(facts)
}

fn kind_name(kind: &InfoKind) -> String {
    kind.to_string()
}

fn xdp_program(attrs: &[LinkXdp]) -> Option<XdpProgram> {
    let mut mode = None;
    let mut id = None;
    for attr in attrs {
        match attr {
            LinkXdp::Attached(XdpAttached::None) => return None,
            LinkXdp::Attached(XdpAttached::Driver) => mode = Some("native"),
            LinkXdp::Attached(XdpAttached::SocketBuffer) => mode = Some("generic"),
            LinkXdp::Attached(XdpAttached::Hardware) => mode = Some("offload"),
            LinkXdp::Attached(_) => mode = Some("multi"),
            LinkXdp::ProgId(p) => id = Some(*p),
            _ => {}
        }
    }
    Some(XdpProgram { id: id?, mode: mode? })
}

/// One RTM_GETLINK request and its answer.
fn rtnetlink_get(request: LinkMessage) -> anyhow::Result<LinkMessage> {
    match rtnetlink::request(RouteNetlinkMessage::GetLink(request), 0)?.into_iter().next() {
        Some(RouteNetlinkMessage::NewLink(link)) => Ok(link),
        other => bail!("unexpected RTM_GETLINK answer: {other:?}"),
    }
}

/// A program (or classifier) on one of the interface's hooks that is not sgctl's.
#[derive(Clone, Debug, Serialize)]
pub struct OtherProgram {
    /// `xdp`, `tcx ingress`, `tcx egress`, `clsact ingress` or `clsact egress`.
    pub hook: &'static str,
    /// The program's id; 0 for a clsact filter that runs no program
    /// (`u32`, `flower`, … with actions).
    pub id: u32,
    /// The program's name, or a clsact filter's classifier.
    pub name: String,
    /// A clsact filter's priority (lower runs first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    /// Whether it runs before sgctl's program on that side: a program
    /// there that passes a packet early, or redirects it, takes it past
    /// sgctl. XDP runs before tcx, tcx before clsact.
    pub before_sgctl: bool,
}

/// Where sgctl's program of one side stands, as the kernel has it.
#[derive(Clone, Debug, Serialize)]
pub struct Standing {
    /// `xdp`, `tcx ingress`, `tcx egress`, `clsact ingress` or `clsact egress`.
    pub hook: &'static str,
    pub program_id: u32,
    /// The program is on its hook of this interface: its link holds the
    /// device, or a clsact filter of the device runs it.
    pub attached: bool,
    /// Attached, and no other program of that side runs before it.
    pub first: bool,
}

/// What runs on an interface's hooks: sgctl's two programs and the others.
#[derive(Clone, Debug, Serialize)]
pub struct Survey {
    pub ingress: Standing,
    pub egress: Standing,
    /// In the order they run, ingress first.
    pub others: Vec<OtherProgram>,
}

impl Survey {
    /// Both of sgctl's programs attached and first on their sides.
    pub fn first_everywhere(&self) -> bool {
        self.ingress.first && self.egress.first
    }
}

/// Where sgctl's programs pinned in `dir` stand on `ifname` (in the
/// current network namespace), and what else runs on its hooks. `recorded`
/// tells native from generic XDP (the kernel's link info does not).
pub fn survey(ifname: &str, dir: &Path, recorded: IngressHook) -> anyhow::Result<Survey> {
    let ifindex = crate::netns::ifindex(ifname).ok_or_else(|| InputError::InterfaceNotFound(ifname.to_owned()))?;
    let hooks = attach::hooks(dir, recorded)?;
    let (ingress_id, egress_id) = attach::program_ids(dir)?;
    let links_alive = attach::links_alive(dir);
    let mut others = Vec::new();
    let mut standings = Vec::new();
    for (side, ours, hook) in [
        (Direction::Ingress, ingress_id, hooks.ingress),
        (
            Direction::Egress,
            egress_id,
            match hooks.egress {
                EgressHook::Tc => IngressHook::Tc,
                EgressHook::Clsact => IngressHook::Clsact,
            },
        ),
    ] {
        let mut attached = false;
        let mut before = 0;
        // XDP first (ingress only), then tcx, then clsact: the kernel's order.
        if side == Direction::Ingress {
            if let Some(xdp) = link_facts(ifname)?.xdp {
                if xdp.id == ours {
                    attached = true;
                } else {
                    before += 1;
                    others.push(other("xdp", xdp.id, program_name(xdp.id), None, true));
                }
            }
        }
        if kernel::has_tcx() {
            let (name, at) = match side {
                Direction::Ingress => ("tcx ingress", TcAttachType::Ingress),
                Direction::Egress => ("tcx egress", TcAttachType::Egress),
            };
            let (_, programs) =
                SchedClassifier::query_tcx(ifname, at).with_context(|| format!("querying {name} of {ifname}"))?;
            let ours_at = programs.iter().position(|p| p.id() == ours);
            attached |= ours_at.is_some() && links_alive;
            for (i, p) in programs.iter().enumerate().filter(|(i, _)| Some(*i) != ours_at) {
                // Before sgctl: ahead of it on tcx, or anywhere on tcx when sgctl is on clsact.
                let runs_before = ours_at.map_or(hook == IngressHook::Clsact, |at| i < at);
                before += usize::from(runs_before);
                others.push(other(name, p.id(), p.name_as_str().unwrap_or_default().to_owned(), None, runs_before));
            }
        }
        let name = match side {
            Direction::Ingress => "clsact ingress",
            Direction::Egress => "clsact egress",
        };
        let filters = clsact::filters(ifindex, side)?;
        let ours_at = filters.iter().position(|f| f.prog_id == Some(ours) && f.chain == 0);
        attached |= ours_at.is_some();
        for (i, f) in filters.iter().enumerate().filter(|(i, _)| Some(*i) != ours_at) {
            let runs_before = ours_at.is_some_and(|at| i < at) && f.chain == 0;
            before += usize::from(runs_before);
            let label = f.prog_name.clone().unwrap_or_else(|| f.kind.clone());
            others.push(other(name, f.prog_id.unwrap_or(0), label, Some(f.priority), runs_before));
        }
        standings.push(Standing {
            hook: hook_name(hook, side),
            program_id: ours,
            attached,
            first: attached && before == 0,
        });
    }
    let egress = standings.pop().context("egress standing")?;
    let ingress = standings.pop().context("ingress standing")?;
    Ok(Survey { ingress, egress, others })
}

fn other(hook: &'static str, id: u32, name: String, priority: Option<u16>, before_sgctl: bool) -> OtherProgram {
    OtherProgram { hook, id, name, priority, before_sgctl }
}

fn program_name(id: u32) -> String {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn hook_name(hook: IngressHook, side: Direction) -> &'static str {
    match (hook, side) {
        (IngressHook::XdpNative | IngressHook::XdpGeneric, _) => "xdp",
        (IngressHook::Tc, Direction::Ingress) => "tcx ingress",
        (IngressHook::Tc, Direction::Egress) => "tcx egress",
        (IngressHook::Clsact, Direction::Ingress) => "clsact ingress",
        (IngressHook::Clsact, Direction::Egress) => "clsact egress",
    }
}

/// Refuses, with one line that says why, a device sgctl cannot filter
/// with `mode`: one whose packets it cannot parse, or XDP on a device
/// without an Ethernet header. `apply` and `attach` check every interface
/// before they change anything.
pub fn check(ifname: &str, mode: Mode) -> anyhow::Result<()> {
    let facts = link_facts(ifname)?;
    ingress_hook(ifname, mode, &facts).map(|_| ())
}

/// The link layer and whether ingress goes to XDP (`auto` picks XDP on
/// real NICs), or why `mode` cannot work on the device.
fn ingress_hook(ifname: &str, mode: Mode, facts: &LinkFacts) -> anyhow::Result<(LinkLayer, bool)> {
    let link = link_layer(ifname, facts)?;
    let use_xdp = match mode {
        Mode::Auto => link == LinkLayer::Ethernet && crate::netns::is_physical(ifname),
        Mode::Xdp => true,
        Mode::Tc | Mode::Clsact => false,
    };
    if use_xdp && link == LinkLayer::BareIp {
        return Err(InputError::XdpWithoutEthernet { ifname: ifname.to_owned(), link_type: facts.link_type }.into());
    }
    Ok((link, use_xdp))
}

/// How to attach to `ifname` with `mode`: its link layer, and whether
/// ingress goes to XDP. On top of [`check`], refuses XDP where another
/// program holds the hook; `ours` are sgctl's own programs on the device
/// (replaced in place, not refused).
pub fn plan(ifname: &str, mode: Mode, ours: &[u32]) -> anyhow::Result<Placement> {
    let facts = link_facts(ifname)?;
    let (link, use_xdp) = ingress_hook(ifname, mode, &facts)?;
    let xdp = match facts.xdp.filter(|x| !ours.contains(&x.id)) {
        None => use_xdp,
        Some(_) if !use_xdp => false,
        // Another program holds the XDP hook: never replaced behind its
        // owner's back. `auto` takes tcx, which runs after it.
        Some(other) if mode == Mode::Auto => {
            eprintln!(
                "note: {ifname} already runs XDP program {} ({}); sgctl filters ingress with tcx, which runs after it",
                other.id, other.mode
            );
            false
        }
        Some(other) => {
            return Err(InputError::XdpHookTaken { ifname: ifname.to_owned(), id: other.id, mode: other.mode }.into())
        }
    };
    // Before tcx (Linux 6.6), the tc programs go on the legacy hook.
    let clsact = mode == Mode::Clsact || !kernel::has_tcx();
    Ok(Placement { link, xdp, mode, clsact })
}

/// Which hook runs the ingress program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IngressHook {
    XdpNative,
    XdpGeneric,
    /// tc ingress through tcx (6.6 and later): a pinned link, first in line.
    Tc,
    /// tc ingress through the legacy clsact qdisc: a cls_bpf filter,
    /// first among the clsact filters, after every tcx program.
    Clsact,
}

impl IngressHook {
    pub fn is_xdp(self) -> bool {
        matches!(self, Self::XdpNative | Self::XdpGeneric)
    }
}

impl std::fmt::Display for IngressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::XdpNative => "xdp (native)",
            Self::XdpGeneric => "xdp (generic)",
            Self::Tc => "tc (tcx)",
            Self::Clsact => "tc (clsact)",
        })
    }
}

/// Which hook runs the egress program: tc, through tcx or clsact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EgressHook {
    /// Records of an sgctl before clsact have no egress hook: it was tcx.
    #[default]
    Tc,
    Clsact,
}

impl std::fmt::Display for EgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tc => "tc (tcx)",
            Self::Clsact => "tc (clsact)",
        })
    }
}

/// `--mode` of `sgctl attach`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// XDP on physical NICs, tc on veth and other virtual devices.
    #[default]
    Auto,
    /// Ingress on XDP (native, else generic).
    Xdp,
    /// Ingress on tc: tcx where the kernel has it (6.6+), else clsact.
    Tc,
    /// Ingress and egress on the legacy tc hook (clsact qdisc, cls_bpf)
    /// even where the kernel has tcx.
    Clsact,
}
