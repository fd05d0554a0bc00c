//! The host `sgctl` works on: entering a named network namespace, and facts
//! about its interfaces.
use std::{collections::BTreeMap, net::IpAddr, os::fd::AsRawFd as _};

use anyhow::Context as _;
use ipnet::IpNet;

/// Moves this (single-threaded) process into network namespace `name`, as
/// `ip -n NAME` does. The mount namespace stays, so state stays on the
/// host's bpffs.
pub fn enter(name: &str) -> anyhow::Result<()> {
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).map_err(|error| crate::InputError::NoSuchNetns {
        name: name.to_owned(),
        path: path.clone(),
        error,
    })?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).with_context(|| format!("entering netns {name}"))
}

/// Index of interface `name` in the current namespace, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// The index of every interface of the current namespace.
pub fn ifindexes() -> anyhow::Result<Vec<u32>> {
    Ok(nix::net::if_::if_nameindex().context("listing interfaces")?.iter().map(|i| i.index()).collect())
}

/// Addresses of every interface of the current namespace.
pub fn addresses() -> anyhow::Result<BTreeMap<String, Vec<IpNet>>> {
    let mut out: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
    for ifa in nix::ifaddrs::getifaddrs().context("getifaddrs")? {
        let Some(addr) = ifa.address else { continue };
        let ip: IpAddr = if let Some(v4) = addr.as_sockaddr_in() {
            v4.ip().into()
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            v6.ip().into()
        } else {
            continue;
        };
        // A member is a host: its own address, not its subnet.
        out.entry(ifa.interface_name).or_default().push(IpNet::from(ip));
    }
    Ok(out)
}

/// True when the interface sits on a bus (PCI, …): a real NIC, where native
/// XDP pays. veth, bridges, tunnels and dummies report no bus.
pub fn is_physical(name: &str) -> bool {
    drvinfo_bus(name).is_some_and(|bus| !bus.is_empty())
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x3;

/// struct ethtool_drvinfo.
#[repr(C)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

fn drvinfo_bus(name: &str) -> Option<String> {
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::empty(),
        None,
    )
    .ok()?;
    // SAFETY: plain-old-data, all zero is valid.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: as above.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = std::ptr::from_mut(&mut info).cast();
    // SAFETY: SIOCETHTOOL with a valid ifreq pointing at a drvinfo buffer.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, &mut ifr) };
    if ret < 0 {
        return None;
    }
    let end = info.bus_info.iter().position(|b| *b == 0).unwrap_or(info.bus_info.len());
    Some(String::from_utf8_lossy(&info.bus_info[..end]).into_owned())
}
