//! Packet floods from one lab namespace to another, made by netsniff-ng's
//! `trafgen` (AF_PACKET TX_RING, one process pinned to CPU 0), and the
//! receiving end's counters. Every flood is bounded in packets and in
//! time, and stops when its [`Flood`] is dropped.
use std::{
    fmt::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use testlab::LabHost;

use super::harness;

/// A running `trafgen`, interrupted when dropped.
pub struct Flood {
    child: Child,
}

/// What the flood sends: the Ethernet addresses and the receiver's IPv4 address.
pub struct Wire {
    pub src_mac: String,
    pub dst_mac: String,
    pub dst_ip: &'static str,
}

/// UDP to `dport` from 198.18.0.0-255 × 17 source ports (4,352 flows,
/// round robin), 64-byte frames.
pub fn udp_config(path: &Wire, dport: u16) -> String {
    let mut c = String::new();
    let _ = writeln!(
        c,
        "{{ eth(da={}, sa={}), ipv4(sa=198.18.0.1, da={}, ttl=64, sa[3]=dinc()), udp(sp=dinc(1024, 1040), \
         dp={dport}), fill(0, 18) }}",
        path.dst_mac, path.src_mac, path.dst_ip
    );
    c
}

/// TCP SYNs to `dport` from random addresses of 198.18.0.0/16 and random
/// source ports: a new connection attempt with (almost) every packet.
/// trafgen recomputes the IPv4 and TCP checksums of each packet itself
/// (an explicit `csumtcp()` came out wrong here, and a SYN with a bad
/// checksum is `invalid` to nf_conntrack and never tracked).
pub fn syn_config(path: &Wire, dport: u16) -> String {
    format!(
        "{{ eth(da={}, sa={}), ipv4(sa=198.18.0.1, da={}, ttl=64, sa[2:2]=drnd()), tcp(sp=drnd(1024, 65535), \
         dp={dport}, seq=drnd(), syn, win=64240) }}\n",
        path.dst_mac, path.src_mac, path.dst_ip
    )
}

/// Joins `gen` (interface `g0`, 198.18.0.1/15) and `rcv` (interface
/// `rcv_if`, 198.19.0.1/15) with a veth pair, makes all of 198.18.0.0/16
/// local to `gen` (so every source address a flood uses is the generator's
/// own) and routes it from `rcv` through 198.18.0.1 (one neighbour entry,
/// not one per source). Returns the flood's Ethernet and IP addresses.
pub fn wire_up(lab: &testlab::Lab, gen: &LabHost, rcv: &LabHost, rcv_if: &str) -> anyhow::Result<Wire> {
    lab.link(gen, "g0", &["198.18.0.1/15"], rcv, rcv_if, &["198.19.0.1/15"])?;
    for (host, cmd) in [
        (gen, &["ip", "route", "add", "local", "198.18.0.0/16", "dev", "lo"][..]),
        (rcv, &["ip", "route", "add", "198.18.0.0/16", "via", "198.18.0.1", "dev", rcv_if][..]),
    ] {
        let out = host.run(cmd)?;
        anyhow::ensure!(out.status.success(), "{}: {}", cmd.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(Wire { src_mac: harness::mac(gen, "g0")?, dst_mac: harness::mac(rcv, rcv_if)?, dst_ip: "198.19.0.1" })
}

impl Flood {
    /// Starts sending `config` out of `iface` of `host`: at most `packets`
    /// packets and `limit` of time.
    pub fn start(
        work: &Path,
        host: &LabHost,
        iface: &str,
        config: &str,
        packets: u64,
        limit: Duration,
    ) -> anyhow::Result<Self> {
        let conf = work.join(format!("trafgen-{iface}.cfg"));
        std::fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
        let secs = limit.as_secs().max(1).to_string();
        let packets = packets.to_string();
        // `ip netns exec` execs `timeout`, which passes our SIGINT on.
        let child = Command::new("ip")
            .args(["netns", "exec", host.netns(), "timeout", "-s", "INT", &secs, "trafgen", "-o", iface, "-c"])
            .arg(&conf)
            // One process on CPU 0; leave the host's socket memory and IRQ settings alone.
            .args(["-P", "1", "--no-sock-mem", "-Q", "-n", &packets])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting trafgen (netsniff-ng)")?;
        Ok(Self { child })
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: signalling our own child process by its pid.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let _ = self.child.wait();
    }
}

/// Datagrams that reached the receiver's UDP layer (delivered, queue
/// full, no port), from its namespace's `/proc/net/snmp`.
pub fn udp_received(host: &LabHost) -> anyhow::Result<u64> {
    let snmp = harness::netns_proc(host, "snmp")?;
    Ok(["InDatagrams", "NoPorts", "InErrors"].iter().map(|f| harness::snmp(&snmp, "Udp", f)).sum())
}
