//! A point-to-point link between two hosts over TUN devices, for interfaces
//! without an Ethernet header (as WireGuard, PPP and IP tunnels are): each
//! host gets a tun device, and a relay (two threads of this process)
//! copies every packet one device sends into the other. ipip, GRE and
//! WireGuard modules may be missing; `/dev/net/tun` is there.
use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Write as _},
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

use anyhow::{bail, Context as _};

use crate::{lab::LabHost, netns::ip};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// The relay of a tun pair; dropping it stops the relay and deletes both
/// devices (they live as long as their file descriptors).
pub struct TunLink {
    stop: Arc<AtomicBool>,
    relays: Vec<JoinHandle<()>>,
}

impl Drop for TunLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for relay in self.relays.drain(..) {
            let _ = relay.join();
        }
    }
}

/// Creates tun device `name` in `host`'s namespace (no packet-info header:
/// the device carries bare IP packets) and returns its file.
fn open_tun(host: &LabHost, name: &str) -> anyhow::Result<File> {
    anyhow::ensure!(!name.is_empty() && name.len() < libc::IFNAMSIZ, "tun name {name:?}: 1-15 characters");
    host.in_netns(|| {
        let file = OpenOptions::new().read(true).write(true).open("/dev/net/tun").context("opening /dev/net/tun")?;
        // SAFETY: all-zero is a valid ifreq.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = IFF_TUN | IFF_NO_PI;
        // SAFETY: TUNSETIFF with a valid ifreq, on the tun file.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut ifr) } < 0 {
            bail!("TUNSETIFF {name}: {}", std::io::Error::last_os_error());
        }
        Ok(file)
    })
}

/// Copies packets from `from` to `to` until `stop`; polls so it notices.
fn relay(mut from: File, mut to: File, stop: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd { fd: from.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut pfd, 1, 20) } <= 0 {
            continue;
        }
        match from.read(&mut buf) {
            // A write to a device that is down fails; the packet is lost, as on a wire.
            Ok(n) if n > 0 => {
                let _ = to.write(&buf[..n]);
            }
            _ => {}
        }
    }
}

impl LabHost {
    /// Joins this host and `peer` with a pair of tun devices, `name` on
    /// each side, point to point: this side `addr`, the peer `peer_addr`
    /// (IPv4 or IPv6 host addresses, e.g. `10.99.0.1` / `10.99.0.2`). The
    /// link lasts as long as the returned relay.
    pub fn tun_link(&self, name: &str, addr: &str, peer: &LabHost, peer_addr: &str) -> anyhow::Result<TunLink> {
        let mine = open_tun(self, name)?;
        let theirs = open_tun(peer, name)?;
        for (host, local, remote) in [(self, addr, peer_addr), (peer, peer_addr, addr)] {
            ip(&["-n", host.netns(), "addr", "add", local, "peer", remote, "dev", name])?;
            ip(&["-n", host.netns(), "link", "set", name, "up"])?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let relays = vec![
            {
                let (from, to, stop) = (mine.try_clone()?, theirs.try_clone()?, stop.clone());
                std::thread::spawn(move || relay(from, to, stop))
            },
            {
                let stop = stop.clone();
                std::thread::spawn(move || relay(theirs, mine, stop))
            },
        ];
        Ok(TunLink { stop, relays })
    }
}
