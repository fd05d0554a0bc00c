//! Whether an interface's links really filter it, asked of the kernel, one
//! link at a time: pinned links outlive anything done to them behind
//! sgctl's back (`BPF_LINK_DETACH`, `BPF_LINK_UPDATE` with another program,
//! another program attached first on the hook, the device deleted), and a
//! pin that still exists says nothing about any of that.
//!
//! Each link is checked for: the program it runs (sgctl's own, on this
//! interface's maps), the device it is attached to (the recorded ifindex),
//! and its place on the hook (first among the tcx programs; XDP holds one
//! program). A side on the legacy tc hook has no link: a clsact filter of
//! the interface must run its pinned program (one that runs after another
//! tool's filter is shown by `status`, but sgctl cannot take the other's
//! priority). `status` shows the result, and `apply` and the agent put
//! back what is not right (`attach::replace`).
use std::path::Path;

use aya::programs::{tc::TcAttachType, SchedClassifier};
use serde::Serialize;

use super::{
    attach::{self, Attachment},
    clsact::Direction,
    sys,
};

/// What is wrong with one link, if anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum LinkState {
    /// Attached to the interface, running sgctl's program, first on its hook.
    Ok,
    /// No pinned link (it was never made, or was removed).
    Missing,
    /// The link exists but holds no device (`BPF_LINK_DETACH`, or the device was deleted).
    Detached,
    /// The link is attached to another device.
    OtherDevice { ifindex: u32 },
    /// The link runs a program that is not sgctl's for this interface.
    OtherProgram { id: u32 },
    /// Other programs run before sgctl's on the hook.
    NotFirst { before: Vec<u32> },
}

impl LinkState {
    pub fn is_ok(&self) -> bool {
        *self == Self::Ok
    }
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ok => f.write_str("ok"),
            Self::Missing => f.write_str("missing"),
            Self::Detached => f.write_str("detached"),
            Self::OtherDevice { ifindex } => write!(f, "on another device (ifindex {ifindex})"),
            Self::OtherProgram { id } => write!(f, "replaced by program {id}"),
            Self::NotFirst { before } => {
                let ids: Vec<String> = before.iter().map(u32::to_string).collect();
                write!(f, "not first on its hook (program {} runs before)", ids.join(", "))
            }
        }
    }
}

/// Both links of an interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkHealth {
    pub ingress: LinkState,
    pub egress: LinkState,
}

impl LinkHealth {
    pub fn is_ok(&self) -> bool {
        self.ingress.is_ok() && self.egress.is_ok()
    }

    /// "ingress detached, egress replaced by program 7", for messages.
    pub fn problems(&self) -> Vec<String> {
        [("ingress", &self.ingress), ("egress", &self.egress)]
            .into_iter()
            .filter(|(_, s)| !s.is_ok())
            .map(|(which, s)| format!("{which} link {s}"))
            .collect()
    }
}

/// The attachments of the interface whose state is in `dir`, filtered as
/// its record says: the device `ifindex`, named `ifname`.
pub fn check(dir: &Path, ifindex: u32, ifname: &str) -> LinkHealth {
    let state = |side: Direction| match attach::attachment(dir, ifindex, side) {
        None => LinkState::Missing,
        Some(Attachment::Link(link)) => {
            if link.ifindex == 0 {
                return LinkState::Detached;
            }
            if link.ifindex != ifindex {
                return LinkState::OtherDevice { ifindex: link.ifindex };
            }
            if !attach::is_ours(dir, link.prog_id) {
                return LinkState::OtherProgram { id: link.prog_id };
            }
            match tcx_before(ifname, side, &link) {
                Ok(before) if !before.is_empty() => LinkState::NotFirst { before },
                // A hook that cannot be asked is no evidence against the link.
                _ => LinkState::Ok,
            }
        }
        // A clsact filter that runs sgctl's program is as good as it gets:
        // a filter another tool holds at a lower priority is shown by
        // `status` (`standing`), but sgctl cannot take its place.
        Some(Attachment::Filter { runs, .. }) => {
            if runs {
                LinkState::Ok
            } else {
                LinkState::Detached
            }
        }
    };
    LinkHealth { ingress: state(Direction::Ingress), egress: state(Direction::Egress) }
}

/// The programs that run before `link`'s on its hook: on a tcx hook, those
/// listed before it; XDP holds one program.
fn tcx_before(ifname: &str, side: Direction, link: &sys::LinkInfo) -> anyhow::Result<Vec<u32>> {
    if link.link_type != sys::BPF_LINK_TYPE_TCX {
        return Ok(Vec::new());
    }
    let hook = match side {
        Direction::Ingress => TcAttachType::Ingress,
        Direction::Egress => TcAttachType::Egress,
    };
    let (_, programs) = SchedClassifier::query_tcx(ifname, hook)?;
    Ok(programs.iter().map(aya::programs::ProgramInfo::id).take_while(|id| *id != link.prog_id).collect())
}
