//! Interfaces that come and go (WireGuard tunnels, containers' veths,
//! hot-plugged NICs, NICs renamed by udev), and links that someone else
//! detached or replaced: the agent listens to the kernel's link and address
//! notifications (rtnetlink) in the namespace it works on and, after each
//! burst of them and every [`RECONCILE_EVERY`] besides (level-triggered: a
//! lost notification or a change no notification tells, such as a
//! `BPF_LINK_DETACH`, is found all the same), brings the scope to what its
//! policy wants — through `control::commit`, under the state lock, like any
//! `sgctl` verb:
//!
//! - an interface the applied policy (or the policy saved on disk, see
//!   `sgctl restore`) names that exists and is not filtered — it appeared,
//!   was renamed to that name, or came back with a new ifindex — is
//!   attached;
//! - a filtered interface that vanished (or was renamed away) has its
//!   state removed;
//! - a link of a filtered interface that is detached, on another device,
//!   running another program or no longer first on its hook is put back;
//! - when addresses change, the groups that local interfaces carry follow
//!   (`sg:` members, docs/semantics.md item 5);
//! - an unconfirmed apply past its deadline is rolled back (if its helper
//!   did not).
//!
//! Each repair is logged and counted (`sgctl_agent_repairs_total`). A
//! commit that has nothing to do is not made, and the lock is taken only
//! when one is.
use std::{
    sync::{mpsc, Arc},
    time::Duration,
};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::Shared;
use crate::{
    control::{commit, IfaceChange, Target, Wanted},
    datapath::links,
    netns,
    state::{saved::LibDir, StateDir},
};

/// The multicast groups listened to: links (`RTMGRP_LINK`), IPv4 and IPv6
/// addresses (`RTMGRP_IPV4_IFADDR`, `RTMGRP_IPV6_IFADDR`).
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

/// How often the scope is compared with its policy without a notification.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// After a notification, how long to wait for more before acting (a veth
/// pair, or an interface renamed and brought up, is several messages).
const SETTLE: Duration = Duration::from_millis(50);

/// What a notification says changed.
enum Change {
    /// A link appeared, changed or vanished (or notifications were lost).
    Link,
    /// An address was added or removed.
    Address,
}

/// Watches and reconciles until the agent stops; `ready` is called once,
/// after the first reconcile. Returns an error only when the netlink
/// socket cannot be had (the agent starts this again).
pub fn run(shared: &Arc<Shared>, ready: &mut Option<fn()>) -> anyhow::Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&SocketAddr::new(0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))?;
    let (tx, rx) = mpsc::channel::<Change>();
    std::thread::Builder::new().name("netlink".into()).spawn(move || watch(&socket, &tx))?;
    act(shared, &rx, ready);
    Ok(())
}

/// Reads notifications, sending what changed.
fn watch(socket: &Socket, tx: &mpsc::Sender<Change>) {
    loop {
        let buf = match socket.recv_from_full() {
            Ok((buf, _)) => buf,
            Err(e) => {
                // ENOBUFS: notifications were lost; look at everything anew.
                let _ = e;
                if tx.send(Change::Address).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let mut at = 0;
        while at + 16 <= buf.len() {
            let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            if len < 16 || at + len > buf.len() {
                break;
            }
            if let Some(what) = describe(&buf[at..at + len]) {
                if tx.send(what).is_err() {
                    return;
                }
            }
            at += (len + 3) & !3;
        }
    }
}

/// What one netlink message says changed.
fn describe(bytes: &[u8]) -> Option<Change> {
    let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).ok()?;
    match message.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(_) | RouteNetlinkMessage::DelLink(_)) => {
            Some(Change::Link)
        }
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_)) => {
            Some(Change::Address)
        }
        _ => None,
    }
}

/// Reconciles at start, after each burst of notifications, and every
/// [`RECONCILE_EVERY`].
fn act(shared: &Shared, rx: &mpsc::Receiver<Change>, ready: &mut Option<fn()>) {
    // Once at start: what changed while no agent ran.
    report(shared, reconcile(shared, true));
    if let Some(ready) = ready.take() {
        ready();
    }
    loop {
        let mut addresses = false;
        match rx.recv_timeout(RECONCILE_EVERY) {
            Ok(first) => {
                addresses |= matches!(first, Change::Address);
                while let Ok(more) = rx.recv_timeout(SETTLE) {
                    addresses |= matches!(more, Change::Address);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if shared.stopping() {
            return;
        }
        report(shared, reconcile(shared, addresses));
    }
}

fn report(shared: &Shared, result: anyhow::Result<Vec<IfaceChange>>) {
    match result {
        Ok(changes) => {
            for change in changes {
                eprintln!("sgctl agent: {change}");
                shared.count_repair(change.interface(), change.kind());
            }
        }
        Err(e) => eprintln!("sgctl agent: interfaces: {e:#}"),
    }
}

/// Attaches what the policy wants and exists, forgets what vanished, puts
/// back broken links; with `addresses`, also recompiles for the local
/// interfaces' addresses (a commit that finds nothing changed writes
/// nothing). Does nothing (and takes no lock) when there is nothing to do.
pub fn reconcile(shared: &Shared, addresses: bool) -> anyhow::Result<Vec<IfaceChange>> {
    let place = &shared.place;
    let state = StateDir::open_read_only(&place.state_dir)?;
    let target =
        Target { state, lib: LibDir::open(&place.lib_dir)?, scope: place.scope(), memory_limit: place.memory_limit };
    let due = crate::control::restore::is_due(&target)?;
    if !due && !addresses && !wanted(&target)?.is_some_and(|(_, differs)| differs) {
        return Ok(Vec::new());
    }
    let (target, _lock) = place.open(true)?;
    let mut changes = crate::control::restore::roll_back_if_due(&target)?;
    // On an address change, a commit of what is wanted anyway (one that
    // finds the local members unchanged writes nothing).
    let wanted = match wanted(&target)? {
        Some((wanted, differs)) if differs || addresses => wanted,
        _ => return Ok(changes),
    };
    let Some((record, policy)) = target.parsed_policy()? else { return Ok(changes) };
    changes.extend(commit::commit(&target, &record, &policy, &wanted)?.interfaces);
    Ok(changes)
}

/// The interfaces the scope should filter now, and whether that differs
/// from what it filters (or a link is not as it should be); `None` when no
/// policy is in force.
fn wanted(target: &Target) -> anyhow::Result<Option<(Vec<Wanted>, bool)>> {
    if target.active()?.is_none() {
        return Ok(None);
    }
    let filtered = target.interfaces()?;
    let mut wanted = target.current_wanted()?;
    if let Some(saved) = target.lib.applied_head(&target.scope)? {
        for s in &saved.interfaces {
            if netns::ifindex(&s.ifname).is_some() && !wanted.iter().any(|w| w.ifname == s.ifname) {
                wanted.push(Wanted::from(s));
            }
        }
    }
    let stale = filtered.iter().any(|r| netns::ifindex(&r.ifname) != Some(r.ifindex));
    let missing = wanted.iter().any(|w| !filtered.iter().any(|r| r.ifname == w.ifname));
    let broken = filtered
        .iter()
        .any(|r| !links::check(&target.state.iface_dir(&target.scope, &r.ifname), r.ifindex, &r.ifname).is_ok());
    Ok(Some((wanted, stale || missing || broken)))
}
