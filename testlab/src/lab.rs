//! Labs and their hosts: namespaces, the bridge, veth pairs, addresses.
use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Output,
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _};

use crate::{
    bpffs,
    netns::{self, ip},
    sockets::{self, Listener, Outcome},
};

/// Every namespace a lab creates is named `tl-<pid>-<lab>-<random>-…`.
const TAG: &str = "tl-";
/// The bridge inside the switch namespace.
const BRIDGE: &str = "br0";
/// The host side of each host's veth.
const HOST_IFACE: &str = "eth0";

/// Labs made by this process so far (part of the unique prefix).
static LABS: AtomicU32 = AtomicU32::new(0);

/// One L2 segment of throwaway hosts. Dropping it deletes every namespace it
/// created (and with them the veths and the bridge).
pub struct Lab {
    prefix: String,
    switch: String,
    /// Namespaces to delete on drop, hosts first, the switch last.
    created: Mutex<Vec<String>>,
    /// Numbers the switch-side veth ends.
    ports: AtomicU32,
    /// The lab's sgctl state directory, once asked for; removed on drop.
    state_dir: Mutex<Option<PathBuf>>,
    /// The lab's directory for what sgctl saves on disk; removed on drop.
    lib_dir: Mutex<Option<PathBuf>>,
}

/// Where the labs' `sgctl --lib-dir` directories live, one per lab prefix.
const LIB_ROOT: &str = "/run/testlab-lib";

/// A host of a [`Lab`]: a namespace with `lo` and `eth0` up. A cheap handle
/// (it owns names only); it stops working once its lab is dropped.
#[derive(Clone, Debug)]
pub struct LabHost {
    name: String,
    netns: String,
}

fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() || name.len() > 16 || !ok_chars {
        bail!("{what} name {name:?}: use 1-16 characters of a-z, 0-9 and '-'");
    }
    Ok(())
}

/// Fails clearly when namespaces cannot be made here.
fn preflight() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "testlab needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network namespaces; \
             run the tests as root, e.g. `cargo xtask test`"
        );
    }
    let out = netns::output("ip", &["netns", "list"])?;
    if !out.status.success() {
        bail!(
            "`ip netns list` failed, so `ip netns` is unusable here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A short random tag: the per-process random hasher keys, mixed with the time.
fn random_tag() -> String {
    format!("{:04x}", RandomState::new().hash_one(SystemTime::now()) & 0xffff)
}

/// True for names of labs whose process is gone (killed before its `Drop`).
fn owner_is_gone(name: &str) -> bool {
    let Some(pid) = name.strip_prefix(TAG).and_then(|r| r.split('-').next()) else {
        return false;
    };
    pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes what labs of dead processes left behind. Best effort.
fn remove_stale() {
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if owner_is_gone(&name) {
                let _ = ip(&["netns", "del", &name]);
            }
        }
    }
    for dir in bpffs::stale(owner_is_gone) {
        bpffs::remove(&dir);
    }
    if let Ok(entries) = std::fs::read_dir(LIB_ROOT) {
        for entry in entries.filter_map(Result::ok) {
            if owner_is_gone(&entry.file_name().to_string_lossy()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl Lab {
    /// Creates the lab's switch: a namespace with a bridge. `name` (1-16
    /// characters of a-z, 0-9, '-') only helps a human reading `ip netns`.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        check_name("lab", name)?;
        preflight()?;
        remove_stale();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{TAG}{}-{n}-{}-{name}", std::process::id(), random_tag());
        let switch = format!("{prefix}-sw");
        ip(&["netns", "add", &switch]).context("creating the lab's switch namespace")?;
        let lab = Self {
            prefix,
            switch: switch.clone(),
            created: Mutex::new(vec![switch]),
            ports: AtomicU32::new(0),
            state_dir: Mutex::new(None),
            lib_dir: Mutex::new(None),
        };
        // From here on, an error drops `lab`, which deletes what exists.
        let sw = lab.switch.as_str();
        ip(&["-n", sw, "link", "set", "lo", "up"])?;
        // The switch is layer 2 only: no IPv6 on its ports, whose duplicate
        // address detection would otherwise send MLD reports from `::`
        // into every host for their first second or two: traffic no test
        // sent, which would show in the counters of tests that count
        // exactly (it passes as link control).
        let no_ipv6 = "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6 \
                       && echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6";
        ip(&["netns", "exec", sw, "sh", "-c", no_ipv6]).context("turning IPv6 off in the lab's switch")?;
        ip(&["-n", sw, "link", "add", BRIDGE, "type", "bridge", "mcast_snooping", "0"])?;
        ip(&["-n", sw, "link", "set", BRIDGE, "up"])?;
        Ok(lab)
    }

    /// The prefix every namespace of this lab starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A directory for `sgctl --state-dir` that only this lab uses, on bpffs
    /// (`/sys/fs/bpf/testlab/PREFIX`, mounting bpffs on /sys/fs/bpf if needed).
    /// Created on first use; dropping the lab removes it and every pin in it.
    pub fn state_dir(&self) -> anyhow::Result<PathBuf> {
        let mut dir = self.state_dir.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = &*dir {
            return Ok(dir.clone());
        }
        let created = bpffs::create(&self.prefix)?;
        *dir = Some(created.clone());
        Ok(created)
    }

    /// A directory for `sgctl --lib-dir` (what sgctl saves on disk) that only
    /// this lab uses (`/run/testlab-lib/PREFIX`). Created on first use;
    /// dropping the lab removes it.
    pub fn lib_dir(&self) -> anyhow::Result<PathBuf> {
        let mut dir = self.lib_dir.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = &*dir {
            return Ok(dir.clone());
        }
        let created = Path::new(LIB_ROOT).join(&self.prefix);
        std::fs::create_dir_all(&created).with_context(|| format!("creating {}", created.display()))?;
        *dir = Some(created.clone());
        Ok(created)
    }

    /// The switch namespace (holding the bridge `br0` and the hosts' peers).
    pub fn switch_netns(&self) -> &str {
        &self.switch
    }

    /// Adds a host: a new namespace with `lo` up and `eth0`, a veth plugged
    /// into the bridge, up and carrying `addrs` (CIDRs such as `10.0.0.2/24`,
    /// `fd00::2/64`). IPv6 duplicate address detection is off, so every
    /// address is usable at once.
    pub fn host(&self, name: &str, addrs: &[&str]) -> anyhow::Result<LabHost> {
        check_name("host", name)?;
        let netns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &netns]).with_context(|| format!("creating host {name}"))?;
        self.created.lock().unwrap_or_else(|p| p.into_inner()).insert(0, netns.clone());
        let host = LabHost { name: name.to_owned(), netns };
        let ns = host.netns.as_str();

        let mut port = format!("v{}-{name}", self.ports.fetch_add(1, Ordering::Relaxed));
        port.truncate(15); // IFNAMSIZ - 1; unique through the number
        ip(&["-n", &self.switch, "link", "add", &port, "type", "veth", "peer", "name", HOST_IFACE, "netns", ns])?;
        ip(&["-n", &self.switch, "link", "set", &port, "master", BRIDGE, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        let dad_off = format!("/proc/sys/net/ipv6/conf/{HOST_IFACE}/accept_dad");
        host.in_netns(|| std::fs::write(&dad_off, "0")).with_context(|| format!("writing {dad_off} in {ns}"))?;
        for addr in addrs {
            host.add_addr(addr)?;
        }
        ip(&["-n", ns, "link", "set", HOST_IFACE, "up"])?;
        self.wait_ready(ns, &port)?;
        Ok(host)
    }

    /// Joins two hosts with a second, direct veth pair: `a_if` in `a` with
    /// `a_addrs`, `b_if` in `b` with `b_addrs` (no bridge, no DAD), for a
    /// host with several interfaces.
    pub fn link(
        &self,
        a: &LabHost,
        a_if: &str,
        a_addrs: &[&str],
        b: &LabHost,
        b_if: &str,
        b_addrs: &[&str],
    ) -> anyhow::Result<()> {
        for name in [a_if, b_if] {
            anyhow::ensure!(
                !name.is_empty() && name.len() < 16 && name != HOST_IFACE,
                "interface name {name:?}: 1-15 characters, not {HOST_IFACE}"
            );
        }
        ip(&["-n", a.netns(), "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.netns()])
            .with_context(|| format!("linking {}:{a_if} to {}:{b_if}", a.name(), b.name()))?;
        for (host, iface, addrs) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
            let dad_off = format!("/proc/sys/net/ipv6/conf/{iface}/accept_dad");
            host.in_netns(|| std::fs::write(&dad_off, "0"))
                .with_context(|| format!("writing {dad_off} in {}", host.netns()))?;
            for cidr in addrs.iter() {
                host.add_addr_on(iface, cidr)?;
            }
            ip(&["-n", host.netns(), "link", "set", iface, "up"])?;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (host, iface) in [(a, a_if), (b, b_if)] {
            while !netns::output("ip", &["-n", host.netns(), "-o", "link", "show", "dev", iface])
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("state UP"))
            {
                if Instant::now() > deadline {
                    bail!("{}: {iface} not up after 5 s", host.netns());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Waits until the host's `eth0` is up and its bridge port forwards.
    /// Carrier changes take effect asynchronously (in the kernel's linkwatch
    /// work), and a frame sent before would be lost, costing a 1 s retry.
    fn wait_ready(&self, netns: &str, port: &str) -> anyhow::Result<()> {
        let shows = |args: &[&str], what: &str| {
            netns::output("ip", args).is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(what))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let forwarding = shows(&["-n", &self.switch, "-d", "-o", "link", "show", "dev", port], "state forwarding");
            if forwarding && shows(&["-n", netns, "-o", "link", "show", "dev", HOST_IFACE], "state UP") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{netns}: {HOST_IFACE} or its bridge port {port} not up after 5 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(dir) = self.state_dir.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            bpffs::remove(&dir);
        }
        if let Some(dir) = self.lib_dir.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        let created = std::mem::take(self.created.get_mut().unwrap_or_else(|p| p.into_inner()));
        for netns in created {
            if let Err(e) = ip(&["netns", "del", &netns]) {
                eprintln!("testlab: cleaning up: {e:#}");
            }
        }
    }
}

impl LabHost {
    /// The name given to [`Lab::host`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's real name, for `ip netns exec` or `sgctl -n`.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Adds an address (CIDR) to `eth0`; IPv6 ones without DAD.
    pub fn add_addr(&self, cidr: &str) -> anyhow::Result<()> {
        self.add_addr_on(HOST_IFACE, cidr)
    }

    /// Adds an address (CIDR) to interface `iface`; IPv6 ones without DAD.
    pub fn add_addr_on(&self, iface: &str, cidr: &str) -> anyhow::Result<()> {
        let addr = cidr.split_once('/').map_or(cidr, |(a, _)| a);
        let addr: IpAddr = addr.parse().with_context(|| format!("invalid address {cidr:?}"))?;
        let mut args = vec!["-n", &self.netns, "addr", "add", cidr, "dev", iface];
        if addr.is_ipv6() {
            args.push("nodad");
        }
        ip(&args)
    }

    /// Runs a command inside the namespace (`ip netns exec`), returning its
    /// output whatever its exit status; an error only if it cannot start.
    pub fn run(&self, cmd: &[&str]) -> anyhow::Result<Output> {
        let mut args = vec!["netns", "exec", &self.netns];
        args.extend_from_slice(cmd);
        netns::output("ip", &args)
    }

    /// Runs `f` on a thread that has entered this namespace, and returns what
    /// it returns. Sockets `f` creates belong to the namespace for good.
    ///
    /// # Panics
    /// If the namespace cannot be entered (its lab was dropped), or if `f` panics.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            let thread = s.spawn(|| {
                if let Err(e) = netns::enter(&self.netns) {
                    panic!("testlab: cannot enter network namespace {}: {e}", self.netns);
                }
                f()
            });
            thread.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// A TCP server on `addr` that echoes what it reads, until dropped.
    pub fn tcp_listen(&self, addr: SocketAddr) -> anyhow::Result<Listener> {
        Listener::tcp(&self.netns, addr)
    }

    /// A UDP server on `addr` that sends every datagram back, until dropped.
    pub fn udp_echo(&self, addr: SocketAddr) -> anyhow::Result<Listener> {
        Listener::udp(&self.netns, addr)
    }

    /// Opens a TCP connection to an echo server ([`LabHost::tcp_listen`]) and
    /// round-trips a few bytes: `Connected` only if they came back.
    pub fn tcp_connect(&self, to: SocketAddr, timeout: Duration) -> Outcome {
        self.in_netns(|| sockets::tcp_exchange(None, to, timeout))
    }

    /// As [`LabHost::tcp_connect`], from the chosen source address (port 0: any).
    pub fn tcp_connect_from(&self, local: SocketAddr, to: SocketAddr, timeout: Duration) -> Outcome {
        self.in_netns(|| sockets::tcp_exchange(Some(local), to, timeout))
    }

    /// Sends one datagram to a UDP echo server ([`LabHost::udp_echo`]):
    /// `Connected` if it came back, `Refused` on ICMP port unreachable,
    /// `TimedOut` if nothing came back.
    pub fn udp_exchange(&self, to: SocketAddr, timeout: Duration) -> Outcome {
        self.in_netns(|| sockets::udp_exchange(to, timeout))
    }

    /// One echo request (`ping -c1`, IPv4 or IPv6); true if answered in time.
    pub fn ping(&self, to: IpAddr, timeout: Duration) -> bool {
        let secs = timeout.as_secs_f64().ceil().max(1.0).to_string();
        let to = to.to_string();
        self.run(&["ping", "-n", "-q", "-c1", "-W", &secs, &to]).is_ok_and(|out| out.status.success())
    }
}
