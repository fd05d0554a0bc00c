//! The legacy tc hook: the `clsact` qdisc and `cls_bpf` filters in
//! direct-action mode, over rtnetlink. Kernels before 6.6 have no tcx;
//! there sgctl's tc programs sit here (and anywhere with `--mode clsact`).
//!
//! A filter is not a link: nothing to pin, it stays on the device until it
//! is deleted (or the device goes), and it holds its program. So sgctl
//! pins the program (see `attach`) and knows its filter by the program's
//! id, which the kernel never reuses while the pin holds the program.
//! Filters run in the order of their priority (lower first), and all of
//! them after every tcx program of the hook.
use anyhow::Context as _;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::{
    tc::{TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption},
    AddressFamily, RouteNetlinkMessage,
};

use super::rtnetlink::{self, errno};

/// The two hooks of a clsact qdisc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// The filter parent: `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS/EGRESS)`.
    fn parent(self) -> TcHandle {
        let minor = match self {
            Self::Ingress => TcHandle::MIN_INGRESS,
            Self::Egress => TcHandle::MIN_EGRESS,
        };
        TcHandle { major: u16::MAX, minor }
    }
}

/// One filter of a clsact hook, as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub priority: u16,
    pub handle: u32,
    /// The classifier: `bpf`, `u32`, `flower`, `matchall`, …
    pub kind: String,
    /// For `bpf`: the program it runs, its name, and whether its verdict
    /// is the action (direct-action).
    pub prog_id: Option<u32>,
    pub prog_name: Option<String>,
    pub direct_action: bool,
    /// Filters of chains other than 0 run only when an action jumps there.
    pub chain: u32,
}

/// `ETH_P_ALL`, in network order as tcm_info carries it: every protocol.
const ETH_P_ALL_BE: u16 = 0x0003_u16.to_be();

/// The priority and handle sgctl's filter takes on a hook where nothing
/// else is: priority 1 runs before any other (0 asks the kernel to pick).
pub const PRIORITY: u16 = 1;
pub const HANDLE: u32 = 1;

impl Filter {
    pub fn slot(&self) -> Slot {
        Slot { priority: self.priority, handle: self.handle }
    }
}

fn message(ifindex: u32, parent: TcHandle, handle: u32, info: u32) -> TcMessage {
    let mut m = TcMessage::default();
    m.header = TcHeader { family: AddressFamily::Unspec, index: ifindex as i32, handle: handle.into(), parent, info };
    m
}

/// Adds the clsact qdisc to `ifindex` unless it has one.
pub fn ensure_qdisc(ifindex: u32) -> anyhow::Result<()> {
    let mut m = message(ifindex, TcHandle::CLSACT, u32::from(TcHandle { major: u16::MAX, minor: 0 }), 0);
    m.attributes.push(TcAttribute::Kind("clsact".into()));
    match rtnetlink::request(RouteNetlinkMessage::NewQueueDiscipline(m), NLM_F_CREATE | NLM_F_EXCL) {
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        other => other.map(|_| ()).context("adding the clsact qdisc"),
    }
}

/// The filters on `ifindex`'s `direction` hook, in the order they run
/// (chain 0 by priority, then other chains). None without a clsact qdisc.
pub fn filters(ifindex: u32, direction: Direction) -> anyhow::Result<Vec<Filter>> {
    let request = message(ifindex, direction.parent(), 0, 0);
    let answers = match rtnetlink::request(RouteNetlinkMessage::GetTrafficFilter(request), NLM_F_DUMP) {
        // The device is gone (or never was): no filters.
        Err(e) if errno(&e) == Some(libc::ENODEV) => return Ok(Vec::new()),
        other => other.context("listing clsact filters")?,
    };
    let mut filters = Vec::new();
    for answer in answers {
        let RouteNetlinkMessage::NewTrafficFilter(m) = answer else { continue };
        let mut filter = Filter {
            priority: (m.header.info >> 16) as u16,
            handle: m.header.handle.into(),
            kind: String::new(),
            prog_id: None,
            prog_name: None,
            direct_action: false,
            chain: 0,
        };
        for attribute in m.attributes {
            match attribute {
                TcAttribute::Kind(kind) => filter.kind = kind,
                TcAttribute::Chain(chain) => filter.chain = chain,
                TcAttribute::Options(options) => {
                    for option in options {
                        match option {
                            TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => filter.prog_id = Some(id),
                            TcOption::Bpf(TcFilterBpfOption::ProgName(name)) => filter.prog_name = Some(name),
                            TcOption::Bpf(TcFilterBpfOption::Flags(flags)) => {
                                filter.direct_action = flags.contains(TcBpfFlags::DirectAction);
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        // The dump also lists each priority's classifier itself (handle 0).
        if filter.handle != 0 {
            filters.push(filter);
        }
    }
    filters.sort_by_key(|f| (f.chain, f.priority));
    Ok(filters)
}

/// What to put on a hook: a loaded program, by descriptor, and its name.
pub struct Program<'a> {
    pub fd: std::os::fd::BorrowedFd<'a>,
    pub name: &'a str,
}

fn filter_message(ifindex: u32, direction: Direction, slot: Slot, program: &Program<'_>) -> TcMessage {
    use std::os::fd::AsRawFd as _;
    let info = (u32::from(slot.priority) << 16) | u32::from(ETH_P_ALL_BE);
    let mut m = message(ifindex, direction.parent(), slot.handle, info);
    m.attributes.push(TcAttribute::Kind("bpf".into()));
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::Bpf(TcFilterBpfOption::ProgFd(program.fd.as_raw_fd() as u32)),
        TcOption::Bpf(TcFilterBpfOption::ProgName(program.name.to_owned())),
        TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
    ]));
    m
}

/// Where a filter sits on its hook: its priority (lower runs first) and
/// its handle among the filters of that priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub priority: u16,
    pub handle: u32,
}

/// How [`put`] treats a filter already at the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// A new filter; fails if one is there already (EEXIST).
    Add,
    /// The filter there runs `program` instead, in place: cls_bpf swaps the
    /// programs with one RCU pointer update, so every packet meets the old
    /// program or the new one, never neither. Without NLM_F_CREATE this
    /// never adds a filter: a filter that is gone is an error.
    Replace,
}

/// Puts a direct-action filter running `program` at `slot` of `ifindex`'s
/// `direction` hook.
pub fn put(ifindex: u32, direction: Direction, slot: Slot, program: &Program<'_>, how: Put) -> anyhow::Result<()> {
    let m = filter_message(ifindex, direction, slot, program);
    let flags = match how {
        Put::Add => NLM_F_CREATE | NLM_F_EXCL,
        Put::Replace => 0,
    };
    rtnetlink::request(RouteNetlinkMessage::NewTrafficFilter(m), flags)
        .with_context(|| format!("{how:?} the clsact {direction:?} filter at priority {}", slot.priority))?;
    Ok(())
}

/// Deletes the filter at `slot` (nothing if it is gone, or its device).
pub fn delete(ifindex: u32, direction: Direction, slot: Slot) -> anyhow::Result<()> {
    let (priority, handle) = (slot.priority, slot.handle);
    let info = (u32::from(priority) << 16) | u32::from(ETH_P_ALL_BE);
    let mut m = message(ifindex, direction.parent(), handle, info);
    m.attributes.push(TcAttribute::Kind("bpf".into()));
    match rtnetlink::request(RouteNetlinkMessage::DelTrafficFilter(m), 0) {
        Err(e) if matches!(errno(&e), Some(libc::ENOENT | libc::ENODEV | libc::EINVAL)) => Ok(()),
        other => other
            .map(|_| ())
            .with_context(|| format!("deleting the clsact {direction:?} filter at priority {priority}")),
    }
}

/// The priority for a new sgctl filter on a hook holding `filters`: 1 when
/// free (sgctl runs first); else the lowest free one, and the filters
/// before it are others' (shown by `status`).
pub fn free_priority(filters: &[Filter]) -> u16 {
    (PRIORITY..u16::MAX).find(|p| !filters.iter().any(|f| f.priority == *p)).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(priority: u16) -> Filter {
        Filter {
            priority,
            handle: 1,
            kind: "bpf".into(),
            prog_id: Some(7),
            prog_name: None,
            direct_action: true,
            chain: 0,
        }
    }

    #[test]
    fn sgctl_takes_priority_1_unless_another_filter_holds_it() {
        assert_eq!(free_priority(&[]), 1);
        assert_eq!(free_priority(&[at(49152)]), 1, "tc's default priority runs after sgctl's");
        assert_eq!(free_priority(&[at(1), at(2), at(49152)]), 3);
    }
}
