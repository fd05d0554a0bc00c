//! Hand-made packets from raw sockets: ICMP messages that `ping` does not
//! send, and spoofed packets an attacker on the segment could send.
use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::bail;

use crate::lab::LabHost;

/// The Internet checksum (RFC 1071) of `data`.
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn raw_socket(protocol: libc::c_int) -> anyhow::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, protocol) };
    if fd < 0 {
        bail!("raw socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(addr.octets()) },
        sin_zero: [0; 8],
    }
}

fn send_to(fd: &OwnedFd, bytes: &[u8], to: Ipv4Addr) -> anyhow::Result<()> {
    let sa = sockaddr(to);
    // SAFETY: valid buffer and sockaddr for the duration of the call.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
            std::ptr::from_ref(&sa).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 {
        bail!("sendto {to}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl LabHost {
    /// Sends an ICMP message of `icmp_type` (code 0, identifier `id`,
    /// sequence 1, `body`) to `to`, and waits up to `timeout` for an ICMP
    /// message of `answer_type` with identifier `id` from `to`. True if one
    /// came. (A timestamp request, type 13, needs a 12-byte body.)
    pub fn icmp_exchange(
        &self,
        to: Ipv4Addr,
        icmp_type: u8,
        id: u16,
        body: &[u8],
        answer_type: u8,
        timeout: Duration,
    ) -> anyhow::Result<bool> {
        self.in_netns(|| {
            let fd = raw_socket(libc::IPPROTO_ICMP)?;
            let mut msg = vec![icmp_type, 0, 0, 0];
            msg.extend_from_slice(&id.to_be_bytes());
            msg.extend_from_slice(&1u16.to_be_bytes());
            msg.extend_from_slice(body);
            let sum = inet_checksum(&msg);
            msg[2..4].copy_from_slice(&sum.to_be_bytes());
            send_to(&fd, &msg, to)?;
            let deadline = Instant::now() + timeout;
            let mut buf = [0u8; 2048];
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX).max(1);
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
                    continue;
                }
                // SAFETY: valid buffer.
                let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                let Ok(n) = usize::try_from(n) else { continue };
                // A raw ICMP socket reads the IP header too.
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                if n < ihl + 8 || buf[12..16] != to.octets() {
                    continue;
                }
                let icmp = &buf[ihl..n];
                if icmp[0] == answer_type && icmp[4..6] == id.to_be_bytes() {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    /// Sends `packet`, a whole IPv4 packet with a header of the caller's
    /// making (any source address: a spoofed packet), from this host.
    pub fn send_raw_ipv4(&self, packet: &[u8]) -> anyhow::Result<()> {
        anyhow::ensure!(packet.len() >= 20 && packet[0] >> 4 == 4, "not an IPv4 packet");
        let to = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        self.in_netns(|| send_to(&raw_socket(libc::IPPROTO_RAW)?, packet, to))
    }
}
