//! What crosses a host's interface, as `tcpdump` would see it: an
//! `AF_PACKET` socket in the host's namespace, read in a thread until
//! stopped. Only TCP over IPv4 is kept (what the tests read sequence
//! numbers from).
use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
};

use testlab::LabHost;

/// One TCP segment seen on the wire.
#[derive(Clone, Debug)]
pub struct Segment {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// The window scale option of a SYN, if any.
    pub wscale: Option<u8>,
    pub payload: u32,
}

impl Segment {
    /// One past the last sequence number it occupies.
    pub fn end(&self) -> u32 {
        self.seq.wrapping_add(self.payload).wrapping_add(u32::from(self.flags & 0x03 != 0))
    }
}

pub struct Capture {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Segment>>>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing every TCP/IPv4 segment in and out of `host`.
    pub fn start(host: &LabHost) -> Self {
        let fd = host.in_netns(|| {
            let all = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2); owned at once.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, libc::c_int::from(all)) };
            assert!(fd >= 0, "packet socket: {}", std::io::Error::last_os_error());
            // SAFETY: a descriptor we just opened.
            unsafe { OwnedFd::from_raw_fd(fd) }
        });
        super::flood::recv_timeout(&fd, std::time::Duration::from_millis(50));
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: recv into our buffer.
                    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                    let Ok(n) = usize::try_from(n) else { continue };
                    if let Some(segment) = parse(&buf[..n]) {
                        seen.lock().expect("capture").push(segment);
                    }
                }
            })
        };
        Self { stop, seen, thread: Some(thread) }
    }

    /// What was seen so far.
    pub fn segments(&self) -> Vec<Segment> {
        self.seen.lock().expect("capture").clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An Ethernet frame's TCP/IPv4 segment.
fn parse(frame: &[u8]) -> Option<Segment> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(14..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip.get(9)? != &6 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let tcp = ip.get(ihl..total)?;
    let doff = usize::from(tcp.get(12)? >> 4) * 4;
    let word = |at: usize| u32::from_be_bytes([tcp[at], tcp[at + 1], tcp[at + 2], tcp[at + 3]]);
    let mut wscale = None;
    let mut at = 20;
    while at < doff.min(tcp.len()) {
        match tcp[at] {
            0 => break,
            1 => at += 1,
            kind => {
                let len = usize::from(*tcp.get(at + 1)?).max(2);
                if kind == 3 {
                    wscale = tcp.get(at + 2).copied();
                }
                at += len;
            }
        }
    }
    Some(Segment {
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        sport: u16::from_be_bytes([tcp[0], tcp[1]]),
        dport: u16::from_be_bytes([tcp[2], tcp[3]]),
        seq: word(4),
        ack: word(8),
        flags: tcp[13],
        window: u16::from_be_bytes([tcp[14], tcp[15]]),
        wscale,
        payload: (tcp.len() - doff.min(tcp.len())) as u32,
    })
}
