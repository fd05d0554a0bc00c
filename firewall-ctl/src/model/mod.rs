//! The model: what docs/semantics.md and docs/cli.md say happens to one
//! packet on a filtered interface that no tracked flow claims — passed
//! unjudged, allowed by a rule (and which rule is credited), or dropped by
//! default deny.
//!
//! It is the project's one yardstick. `sgctl explain` answers from it; the
//! compiler and its userspace twin `compile::simulate` are tested against
//! it (compile/tests.rs), and so is the kernel itself: the differential
//! test (firewall-ctl/tests/kernel/differential) runs random policies and packets
//! through the real programs with BPF_PROG_TEST_RUN and requires the same
//! verdict and the same credited rule. It is written for clarity, not
//! speed: a loop over rules, straight from the text of the semantics.
//!
//! What it does not cover: state (tracked flows, replies, related ICMP
//! errors, fragments) and malformed packets; those have their own tests.

mod packet;
mod rules;

use std::collections::BTreeMap;

use ipnet::IpNet;

pub use self::{
    packet::{IpPacket, PacketError, Transport},
    rules::{Credit, RuleRef, Rules, CREDIT_DEPTH},
};
use crate::{
    compile::CompileError,
    policy::{Policy, Rule, RuleDirection},
};

/// What happens to a packet that belongs to no tracked flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Passes without being judged (semantics item 6).
    Unfiltered(Unfiltered),
    /// A rule allows it and opens a flow; this rule is credited.
    Allowed(RuleRef),
    /// No rule allows it: dropped silently (default deny).
    Denied,
}

/// Why a packet passes unjudged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unfiltered {
    /// Not IP: ARP, LLDP and other link traffic.
    NotIp,
    /// IPv6 neighbour discovery (ICMPv6 133-137) or multicast listener
    /// discovery (130-132, 143): IPv6 breaks without them.
    Ipv6LinkControl,
}

impl Unfiltered {
    pub fn why(self) -> &'static str {
        match self {
            Self::NotIp => "not IP: link traffic is never filtered",
            Self::Ipv6LinkControl => {
                "IPv6 neighbour or multicast listener discovery (ICMPv6 130-137, 143) is never filtered"
            }
        }
    }
}

/// One interface's attached groups, as the model sees them.
pub struct Model<'a> {
    rules: Rules<'a>,
}

impl<'a> Model<'a> {
    /// The interface carrying `groups`; `local_members` maps a group to the
    /// addresses of the local interfaces it is attached to (they join its
    /// `members:` for `sg:` peers).
    pub fn new(
        policy: &'a Policy,
        groups: &[String],
        local_members: &'a BTreeMap<String, Vec<IpNet>>,
    ) -> Result<Self, CompileError> {
        Ok(Self { rules: Rules::new(policy, groups, local_members)? })
    }

    pub fn rules(&self) -> &Rules<'a> {
        &self.rules
    }

    /// The policy's rule that `rule` names.
    pub fn rule(&self, rule: &RuleRef) -> Option<&'a Rule> {
        self.rules.get(rule)
    }

    /// An IP packet crossing the interface in `direction`.
    pub fn judge(&self, direction: RuleDirection, packet: &IpPacket) -> Verdict {
        if packet.is_ipv6_link_control() {
            return Verdict::Unfiltered(Unfiltered::Ipv6LinkControl);
        }
        let (protocol, port_or_icmp) = packet.rule_key();
        match self.rules.credited(direction, protocol, port_or_icmp, packet.peer(direction)) {
            Some(rule) => Verdict::Allowed(rule),
            None => Verdict::Denied,
        }
    }

    /// An Ethernet frame that carries no IP packet (any EtherType but IPv4,
    /// IPv6 and VLAN tags).
    pub fn judge_link_frame(&self, _ether_type: u16) -> Verdict {
        Verdict::Unfiltered(Unfiltered::NotIp)
    }
}

#[cfg(test)]
mod tests;
