//! What an interface is and what else runs on its hooks, asked of the
//! kernel: its link-layer type and XDP program over rtnetlink (RTM_GETLINK),
//! its tcx programs with BPF_PROG_QUERY. `attach` uses this to refuse what
//! sgctl cannot filter and to stay first in line; `status` to show what
//! runs beside sgctl.
use anyhow::{bail, Context as _};
use aya::programs::{tc::TcAttachType, SchedClassifier};
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_route::{
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage, LinkXdp, XdpAttached},
    RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use serde::Serialize;

use crate::{datapath::attach::Placement, state::records::Mode, InputError};

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
    let mut socket = Socket::new(NETLINK_ROUTE).context("opening a NETLINK_ROUTE socket")?;
    socket.bind_auto().context("binding the netlink socket")?;
    socket.connect(&SocketAddr::new(0, 0)).context("connecting the netlink socket")?;
    let mut packet =
        NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(RouteNetlinkMessage::GetLink(request)));
    packet.header.flags = NLM_F_REQUEST;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).context("sending RTM_GETLINK")?;
    let mut answer = vec![0; 65536];
    let size = socket.recv(&mut &mut answer[..], 0).context("receiving the RTM_GETLINK answer")?;
    let message: NetlinkMessage<RouteNetlinkMessage> =
        NetlinkMessage::deserialize(&answer[..size]).context("parsing the RTM_GETLINK answer")?;
    match message.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => Ok(link),
        NetlinkPayload::Error(e) => Err(e.to_io()).context("RTM_GETLINK"),
        other => bail!("unexpected RTM_GETLINK answer: {other:?}"),
    }
}

/// A program on one of the interface's hooks that is not sgctl's.
#[derive(Clone, Debug, Serialize)]
pub struct OtherProgram {
    /// `xdp`, `tcx ingress` or `tcx egress`.
    pub hook: &'static str,
    pub id: u32,
    pub name: String,
    /// Whether it runs before sgctl's program on the same hook: a program
    /// there that passes a packet early, or redirects it, takes it past
    /// sgctl. XDP always runs before tcx.
    pub before_sgctl: bool,
}

/// The programs on `ifname`'s XDP and tcx hooks other than `ours`
/// (sgctl's ingress and egress program ids), in the order they run.
pub fn other_programs(ifname: &str, ours: &[u32]) -> anyhow::Result<Vec<OtherProgram>> {
    let mut others = Vec::new();
    if let Some(xdp) = link_facts(ifname)?.xdp {
        if !ours.contains(&xdp.id) {
            let name = aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .find(|p| p.id() == xdp.id)
                .and_then(|p| p.name_as_str().map(str::to_owned))
                .unwrap_or_default();
            others.push(OtherProgram { hook: "xdp", id: xdp.id, name, before_sgctl: true });
        }
    }
    for (hook, at) in [("tcx ingress", TcAttachType::Ingress), ("tcx egress", TcAttachType::Egress)] {
        let (_, programs) =
            SchedClassifier::query_tcx(ifname, at).with_context(|| format!("querying {hook} of {ifname}"))?;
        // Programs run in the order listed; with no sgctl program on the
        // hook (ingress by XDP), they all run after sgctl's verdict.
        let sgctl_at = programs.iter().position(|p| ours.contains(&p.id()));
        for (i, p) in programs.iter().enumerate() {
            if Some(i) == sgctl_at {
                continue;
            }
            let name = p.name_as_str().unwrap_or_default().to_owned();
            others.push(OtherProgram { hook, id: p.id(), name, before_sgctl: sgctl_at.is_some_and(|at| i < at) });
        }
    }
    Ok(others)
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
        Mode::Tc => false,
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
    Ok(Placement { link, xdp, mode })
}
