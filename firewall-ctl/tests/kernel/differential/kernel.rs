//! The real programs of one generated policy, loaded and run with
//! BPF_PROG_TEST_RUN, and what each run did: the action, the reason it was
//! counted under and the rule credited with a new flow.

use std::net::IpAddr;

use anyhow::Context as _;
use firewall_common::{
    counters::{of_reason_slot, Reason},
    proto, Direction,
};
use firewall_ctl::{
    compile::CompiledInterface,
    datapath::{self, maps::IfaceMaps},
    model::{RuleRef, Transport},
    policy::RuleDirection,
    testing::{
        frames,
        testrun::{Loaded, TC_ACT_SHOT, TC_ACT_UNSPEC, XDP_DROP, XDP_PASS},
    },
};

use crate::differential::generate::{PacketSpec, Shape};

/// The program hooks a frame can cross.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    XdpIngress,
    TcIngress,
    TcEgress,
}

impl Hook {
    fn program(self) -> &'static str {
        match self {
            Self::XdpIngress => datapath::PROG_INGRESS_XDP,
            Self::TcIngress => datapath::PROG_INGRESS_TC,
            Self::TcEgress => datapath::PROG_EGRESS_TC,
        }
    }
}

/// What one program run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub passed: bool,
    pub reason: Reason,
    /// The rule whose flow counter moved, if one did.
    pub credited: Option<RuleRef>,
}

pub struct Kernel {
    loaded: Loaded,
    compiled: CompiledInterface,
    packets: Vec<u64>,
    reasons: Vec<u64>,
}

impl Kernel {
    pub fn load(compiled: CompiledInterface) -> anyhow::Result<Self> {
        let loaded = Loaded::new(&compiled)?;
        let maps = loaded.maps();
        let packets = packets_per_rule(&loaded)?;
        let reasons = packets_per_reason(&maps)?;
        Ok(Self { loaded, compiled, packets, reasons })
    }

    /// Runs `frame` through `hook` once, then forgets every flow it opened,
    /// so no later frame rides it: each frame is judged as the first of its
    /// flow, which is what the model describes.
    pub fn run(&mut self, hook: Hook, frame: &[u8]) -> anyhow::Result<Observed> {
        let (action, _) = self.loaded.run(hook.program(), frame, 1)?;
        let passed = match (hook, action) {
            (Hook::XdpIngress, XDP_PASS) | (Hook::TcIngress | Hook::TcEgress, TC_ACT_UNSPEC) => true,
            (Hook::XdpIngress, XDP_DROP) | (Hook::TcIngress | Hook::TcEgress, TC_ACT_SHOT) => false,
            (_, other) => anyhow::bail!("{hook:?} returned action {other}"),
        };
        let maps = self.loaded.maps();
        let packets = packets_per_rule(&self.loaded)?;
        let reasons = packets_per_reason(&maps)?;
        let credited: Vec<usize> = (0..packets.len()).filter(|&i| packets[i] != self.packets[i]).collect();
        let counted: Vec<usize> = (0..reasons.len()).filter(|&i| reasons[i] != self.reasons[i]).collect();
        self.packets = packets;
        self.reasons = reasons;
        maps.remove_flows(|_, _| true)?;
        let [counted] = counted[..] else { anyhow::bail!("{hook:?}: reason counters {counted:?} moved, not one") };
        let (direction, reason) = of_reason_slot(u32::try_from(counted)?).context("a known reason")?;
        let expected = if hook == Hook::TcEgress { Direction::Outbound } else { Direction::Inbound };
        anyhow::ensure!(direction == expected, "{hook:?} counted its packet in direction {direction:?}");
        let credited = match credited[..] {
            [] => None,
            [id] => Some(self.rule_ref(id)),
            _ => anyhow::bail!("{hook:?}: counters of rules {credited:?} moved, not one"),
        };
        Ok(Observed { passed, reason, credited })
    }

    fn rule_ref(&self, id: usize) -> RuleRef {
        let r = &self.compiled.rules[id];
        RuleRef { group: r.group.clone(), direction: r.direction, index: r.index }
    }
}

/// Packets let through by each rule, indexed by rule id (a packet that
/// opens a flow and one that passes alone both count): the one place that
/// knows how the kernel indexes rule counters (by the rule's stable counter
/// slot, which `Loaded` maps back to rule ids).
pub fn packets_per_rule(loaded: &Loaded) -> anyhow::Result<Vec<u64>> {
    Ok(loaded.rule_counters()?.iter().map(|c| c.packets).collect())
}

/// Packets counted per `(direction, reason)`.
fn packets_per_reason(maps: &IfaceMaps) -> anyhow::Result<Vec<u64>> {
    Ok(maps.reason_counters()?.iter().map(|c| c.packets).collect())
}

/// The frame for `packet`, with `sport` as the TCP/UDP source port, the
/// ICMP echo identifier and the fragment id. TCP frames are SYNs.
pub fn frame(packet: &PacketSpec, sport: u16) -> Vec<u8> {
    let (direction, peer, local, transport, shape) = match packet {
        PacketSpec::Link { ether_type, .. } => {
            let mut f = frames::ethernet(*ether_type);
            f.extend_from_slice(&[0u8; 46]);
            return f;
        }
        PacketSpec::Ip { direction, peer, local, transport, shape } => (*direction, *peer, *local, transport, shape),
    };
    let (src, dst) = match direction {
        RuleDirection::Inbound => (peer, local),
        RuleDirection::Outbound => (local, peer),
    };
    let (protocol, l4) = match *transport {
        Transport::Tcp { dport } => (proto::TCP, frames::tcp(sport, dport, frames::TCP_SYN)),
        Transport::Udp { dport } => (proto::UDP, frames::udp(sport, dport, b"")),
        Transport::Icmp { icmp_type, code } => (proto::ICMP, frames::icmp(icmp_type, code, sport, b"")),
        Transport::Icmpv6 { icmp_type, code } => (proto::ICMPV6, frames::icmp(icmp_type, code, sport, b"")),
        Transport::Other(n) => (n, vec![0; 8]),
    };
    // The hop limit the model judges by (neighbour discovery 255, MLD 1).
    let hop_limit = crate::differential::ip_packet(direction, peer, local, *transport).hop_limit();
    let (ether_type, network) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = ipv4(protocol, s.octets(), d.octets(), &l4, shape, sport);
            h[8] = hop_limit;
            (frames::ETH_P_IP, h)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = ipv6(protocol, s.octets(), d.octets(), &l4, shape, sport);
            h[7] = hop_limit;
            (frames::ETH_P_IPV6, h)
        }
        _ => unreachable!("the generator keeps one family per packet"),
    };
    // Outermost tag first: 802.1ad, then 802.1Q.
    let tags: &[u16] = match shape.vlan_tags {
        0 => &[],
        1 => &[ETH_P_8021Q],
        _ => &[ETH_P_8021AD, ETH_P_8021Q],
    };
    let mut f = frames::ethernet(tags.first().copied().unwrap_or(ether_type));
    for (i, _) in tags.iter().enumerate() {
        f.extend_from_slice(&[0, 10 + i as u8]);
        f.extend_from_slice(&tags.get(i + 1).copied().unwrap_or(ether_type).to_be_bytes());
    }
    f.extend_from_slice(&network);
    f
}

const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

fn ipv4(protocol: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8], shape: &Shape, id: u16) -> Vec<u8> {
    // NOP options.
    let options = vec![1u8; 4 * usize::from(shape.ip_extra)];
    let mut h = frames::ipv4_header(protocol, src, dst, l4.len(), &options);
    h[4..6].copy_from_slice(&id.to_be_bytes());
    // Flags: DF, or MF with offset 0 for a first fragment.
    h[6] = if shape.first_fragment { 0x20 } else { 0x40 };
    h.extend_from_slice(l4);
    h
}

fn ipv6(protocol: u8, src: [u8; 16], dst: [u8; 16], l4: &[u8], shape: &Shape, id: u16) -> Vec<u8> {
    // Hop-by-hop must come first; destination options may repeat.
    let mut chain: Vec<u8> = [0u8, 60].into_iter().take(usize::from(shape.ip_extra)).collect();
    if shape.first_fragment {
        chain.push(44);
    }
    let mut h = frames::ipv6_header(chain.first().copied().unwrap_or(protocol), src, dst, 8 * chain.len() + l4.len());
    for (i, header) in chain.iter().enumerate() {
        let next = chain.get(i + 1).copied().unwrap_or(protocol);
        if *header == 44 {
            // Offset 0, M set, identification.
            h.extend_from_slice(&[next, 0, 0, 1, 0, 0]);
            h.extend_from_slice(&id.to_be_bytes());
        } else {
            // 8 bytes: next header, length 0 (in 8-byte units beyond the first), PadN.
            h.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
        }
    }
    h.extend_from_slice(l4);
    h
}
