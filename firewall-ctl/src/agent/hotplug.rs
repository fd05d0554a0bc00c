//! Interfaces that come and go (WireGuard tunnels, containers' veths,
//! hot-plugged NICs): the agent listens to the kernel's link notifications
//! (rtnetlink, `RTNLGRP_LINK`) in the namespace it works on, and after each
//! burst of them brings the scope to what its policy wants — through
//! `control::commit`, under the state lock, like any `sgctl` verb:
//!
//! - an interface the applied policy (or the policy saved on disk, see
//!   `sgctl restore`) names that exists and is not filtered — it appeared,
//!   or came back with a new ifindex — is attached;
//! - a filtered interface that vanished has its state removed.
//!
//! A commit that has nothing to do is not made, and the lock is taken only
//! when one is.
use std::{
    sync::{mpsc, Arc},
    time::Duration,
};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{link::LinkAttribute, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::Shared;
use crate::{
    control::{commit, IfaceChange, Target, Wanted},
    netns,
    saved::LibDir,
    state::StateDir,
};

/// `RTMGRP_LINK`: the multicast group of link notifications.
const RTMGRP_LINK: u32 = 1;

/// After a notification, how long to wait for more before acting (a veth
/// pair, or an interface renamed and brought up, is several messages).
const SETTLE: Duration = Duration::from_millis(50);

/// Starts the watcher and the thread that acts on what it sees.
pub fn start(shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::Builder::new().name("netlink".into()).spawn(move || watch(&socket, &tx))?;
    std::thread::Builder::new().name("hotplug".into()).spawn(move || act(&shared, &rx))?;
    Ok(())
}

/// Reads link notifications, sending a line that says what changed.
fn watch(socket: &Socket, tx: &mpsc::Sender<String>) {
    loop {
        let buf = match socket.recv_from_full() {
            Ok((buf, _)) => buf,
            Err(e) => {
                // ENOBUFS: notifications were lost; look at everything anew.
                if tx.send(format!("netlink: {e}")).is_err() {
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

/// "eth1 (ifindex 7) appeared", from one netlink message.
fn describe(bytes: &[u8]) -> Option<String> {
    let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).ok()?;
    let (link, what) = match message.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => (l, "appeared or changed"),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => (l, "vanished"),
        _ => return None,
    };
    let name = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    });
    Some(format!("{} (ifindex {}) {what}", name.unwrap_or_else(|| "?".into()), link.header.index))
}

/// Waits for notifications; after each burst, reconciles.
fn act(shared: &Shared, rx: &mpsc::Receiver<String>) {
    // Once at start: what changed while no agent ran.
    report(reconcile(shared));
    while let Ok(_first) = rx.recv() {
        while rx.recv_timeout(SETTLE).is_ok() {}
        if shared.stop.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        report(reconcile(shared));
    }
}

fn report(result: anyhow::Result<Vec<IfaceChange>>) {
    match result {
        Ok(changes) => {
            for change in changes {
                eprintln!("sgctl agent: {change}");
            }
        }
        Err(e) => eprintln!("sgctl agent: interfaces: {e:#}"),
    }
}

/// Attaches what the policy wants and exists, forgets what vanished; does
/// nothing (and takes no lock) when that is already so.
pub fn reconcile(shared: &Shared) -> anyhow::Result<Vec<IfaceChange>> {
    let global = &shared.global;
    let state = StateDir::open_read_only(&global.state_dir)?;
    let target = Target {
        state,
        lib: LibDir::new(&global.lib_dir),
        scope: crate::cmd::scope_of(global),
        memory_limit: global.max_kernel_memory,
    };
    if wanted(&target)?.is_none() {
        return Ok(Vec::new());
    }
    let (target, _lock) = crate::cmd::open_target(global, true)?;
    let Some(wanted) = wanted(&target)? else { return Ok(Vec::new()) };
    let Some((record, policy)) = target.parsed_policy()? else { return Ok(Vec::new()) };
    Ok(commit::commit(&target, &record, &policy, &wanted)?.interfaces)
}

/// The interfaces the scope should filter now, when that differs from what
/// it filters; `None` when nothing is to be done.
fn wanted(target: &Target) -> anyhow::Result<Option<Vec<Wanted>>> {
    if target.policy()?.is_none() {
        return Ok(None);
    }
    let filtered = target.interfaces()?;
    let mut wanted = target.current_wanted()?;
    if let Some(saved) = target.lib.applied(&target.scope)? {
        for s in &saved.interfaces {
            if netns::ifindex(&s.ifname).is_some() && !wanted.iter().any(|w| w.ifname == s.ifname) {
                wanted.push(Wanted::from(s));
            }
        }
    }
    let stale = filtered.iter().any(|r| netns::ifindex(&r.ifname) != Some(r.ifindex));
    let missing = wanted.iter().any(|w| !filtered.iter().any(|r| r.ifname == w.ifname));
    Ok((stale || missing).then_some(wanted))
}
