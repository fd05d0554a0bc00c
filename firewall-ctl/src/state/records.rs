//! The records `sgctl` keeps beside the maps (see [`super::blob`]).
use serde::{Deserialize, Serialize};

use crate::{compile::RuleInfo, policy::Policy};

/// The policy applied to a scope.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// Counts applies, from 1.
    pub generation: u64,
    pub sources: Vec<String>,
    pub policy: Policy,
}

/// How the interface came to be filtered: `apply` detaches what it attached
/// when the policy stops naming it; `attach` attachments stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Policy,
    Command,
}

/// Which hook runs the ingress program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IngressHook {
    XdpNative,
    XdpGeneric,
    Tc,
}

impl std::fmt::Display for IngressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::XdpNative => "xdp (native)",
            Self::XdpGeneric => "xdp (generic)",
            Self::Tc => "tc (tcx)",
        })
    }
}

/// `--mode` of `sgctl attach`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// XDP on physical NICs, tcx on veth and other virtual devices.
    #[default]
    Auto,
    Xdp,
    Tc,
}

/// One filtered interface.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IfaceRecord {
    pub ifname: String,
    pub ifindex: u32,
    pub groups: Vec<String>,
    pub origin: Origin,
    pub mode: Mode,
    pub ingress: IngressHook,
    /// Policy generation last compiled into the maps.
    pub generation: u64,
    pub conntrack_capacity: u32,
    /// Rule id (bit and counter index) → rule identity.
    pub rules: Vec<RuleInfo>,
}
