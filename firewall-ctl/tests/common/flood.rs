//! Traffic that runs while a test changes the policy: a SYN flood whose
//! answers are counted (anything that comes back means the firewall let a
//! SYN through), and a stream of new connections that must all succeed.
use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use testlab::{LabHost, Outcome};

/// What a [`SynFlood`] saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct FloodCount {
    /// SYNs sent.
    pub sent: u64,
    /// SYN-ACKs (or RSTs) that came back from the target port: each one is
    /// a SYN that reached the target's TCP stack.
    pub answered: u64,
}

/// SYNs from `from`'s address `src` to `to`, at about `per_sec`, from raw
/// sockets inside `from`'s namespace, until stopped.
pub struct SynFlood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl SynFlood {
    pub fn start(from: &LabHost, src: Ipv4Addr, to: SocketAddrV4, per_sec: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicU64::new(0));
        let (tx, rx) = from.in_netns(|| (raw_tcp_socket(), raw_tcp_socket()));
        let sender = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || send_syns(&tx, src, to, per_sec, &stop, &sent))
        };
        let receiver = {
            let (stop, answered) = (stop.clone(), answered.clone());
            std::thread::spawn(move || count_answers(&rx, to, &stop, &answered))
        };
        Self { stop, sent, answered, threads: vec![sender, receiver] }
    }

    pub fn count(&self) -> FloodCount {
        FloodCount { sent: self.sent.load(Ordering::Relaxed), answered: self.answered.load(Ordering::Relaxed) }
    }

    /// Stops, waits for late answers, and returns the totals.
    pub fn stop(self) -> FloodCount {
        std::thread::sleep(Duration::from_millis(300));
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("flood thread");
        }
        FloodCount { sent: self.sent.load(Ordering::Relaxed), answered: self.answered.load(Ordering::Relaxed) }
    }
}

fn raw_tcp_socket() -> OwnedFd {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: a descriptor we just opened.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn send_syns(fd: &OwnedFd, src: Ipv4Addr, to: SocketAddrV4, per_sec: u64, stop: &AtomicBool, sent: &AtomicU64) {
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(to.ip().octets()) },
        sin_zero: [0; 8],
    };
    let started = Instant::now();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        // Source ports 40000..60000, so answers are told from other traffic.
        let sport = 40_000 + (n % 20_000) as u16;
        let segment = syn_segment(src, *to.ip(), sport, to.port(), n as u32);
        // SAFETY: sendto with a valid buffer and address.
        let r = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                segment.as_ptr().cast(),
                segment.len(),
                0,
                std::ptr::from_ref(&dst).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if r > 0 {
            sent.fetch_add(1, Ordering::Relaxed);
        }
        n += 1;
        // Pace to per_sec.
        let due = Duration::from_secs_f64(n as f64 / per_sec as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// A TCP SYN with a correct checksum (the server drops anything else, which
/// would make a flood that never gets an answer prove nothing).
fn syn_segment(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, seq: u32) -> [u8; 20] {
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&[0, libc::IPPROTO_TCP as u8]);
    add(&(t.len() as u16).to_be_bytes());
    add(&t);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    t[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    t
}

fn count_answers(fd: &OwnedFd, to: SocketAddrV4, stop: &AtomicBool, answered: &AtomicU64) {
    let timeout = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
    // SAFETY: setsockopt with a valid timeval.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&timeout).cast(),
            size_of::<libc::timeval>() as u32,
        );
    }
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: recv into our buffer.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else { continue };
        let packet = &buf[..n];
        let ihl = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
        let (Some(ip), Some(tcp)) = (packet.get(..20), packet.get(ihl..ihl + 14)) else { continue };
        let from = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
        let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
        let flags = tcp[13];
        let syn_ack = flags & 0x12 == 0x12;
        let rst = flags & 0x04 != 0;
        if from == *to.ip() && sport == to.port() && (40_000..60_000).contains(&dport) && (syn_ack || rst) {
            answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// New TCP connections from `from` to `to`, one after another, until stopped;
/// every outcome that is not `Connected` is kept.
pub struct ConnectLoop {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, Vec<String>)>,
}

impl ConnectLoop {
    pub fn start(from: &LabHost, to: SocketAddr, timeout: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let from = from.clone();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut tried, mut failures) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                let outcome = from.tcp_connect(to, timeout);
                tried += 1;
                if outcome != Outcome::Connected {
                    failures.push(format!("attempt {tried}: {outcome:?}"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (tried, failures)
        });
        Self { stop, thread }
    }

    /// Stops; the number of attempts and the ones that failed.
    pub fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("connect loop")
    }
}

/// UDP datagrams to `to` from `sources` different spoofed IPv4 addresses
/// (`base` + i, each a source of its own flow), as fast as one thread
/// sends them from a raw socket in `from`'s namespace, for `secs`; returns
/// how many were sent.
pub fn udp_from_many(from: &LabHost, base: Ipv4Addr, sources: u32, to: SocketAddrV4, secs: f64) -> u64 {
    let fd = from.in_netns(|| {
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: a descriptor we just opened.
        unsafe { OwnedFd::from_raw_fd(fd) }
    });
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(to.ip().octets()) },
        sin_zero: [0; 8],
    };
    let started = Instant::now();
    let mut sent = 0_u64;
    let mut n = 0_u32;
    while started.elapsed().as_secs_f64() < secs {
        let src = Ipv4Addr::from(u32::from(base) + n % sources);
        n = n.wrapping_add(1);
        let mut p = [0u8; 28 + 16];
        p[0] = 0x45;
        p[8] = 64;
        p[9] = libc::IPPROTO_UDP as u8;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&to.ip().octets());
        p[20..22].copy_from_slice(&40_000u16.to_be_bytes());
        p[22..24].copy_from_slice(&to.port().to_be_bytes());
        p[24..26].copy_from_slice(&(8u16 + 16).to_be_bytes());
        // UDP checksum 0: none (IPv4). Length and IP checksum: the kernel's.
        // SAFETY: sendto with a valid buffer and address.
        let r = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                p.as_ptr().cast(),
                p.len(),
                0,
                std::ptr::from_ref(&dst).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if r > 0 {
            sent += 1;
        }
    }
    sent
}
