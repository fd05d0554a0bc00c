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
        let (tx, rx) = (RawSender::open(from), from.in_netns(raw_tcp_socket));
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

fn send_syns(tx: &RawSender, src: Ipv4Addr, to: SocketAddrV4, per_sec: u64, stop: &AtomicBool, sent: &AtomicU64) {
    let started = Instant::now();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        // Source ports 40000..60000, so answers are told from other traffic.
        let sport = 40_000 + (n % 20_000) as u16;
        let segment = syn_segment(src, *to.ip(), sport, to.port(), n as u32);
        if tx.send(&ipv4(src, *to.ip(), libc::IPPROTO_TCP as u8, &segment)) {
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
    tcp_segment(src, dst, (sport, dport), (seq, 0), 0x02, 64240)
}

/// A TCP header (no options, no payload) with a correct checksum, from
/// `ports.0` to `ports.1`, sequence and acknowledgement numbers `numbers`.
pub fn tcp_segment(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    numbers: (u32, u32),
    flags: u8,
    window: u16,
) -> [u8; 20] {
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&ports.0.to_be_bytes());
    t[2..4].copy_from_slice(&ports.1.to_be_bytes());
    t[4..8].copy_from_slice(&numbers.0.to_be_bytes());
    t[8..12].copy_from_slice(&numbers.1.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&window.to_be_bytes());
    let mut pseudo = Vec::with_capacity(12 + t.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, libc::IPPROTO_TCP as u8]);
    pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&t);
    t[16..18].copy_from_slice(&testlab::inet_checksum(&pseudo).to_be_bytes());
    t
}

/// A raw IPv4 socket in a host's namespace that sends whole packets of the
/// caller's making (any source address), many of them, fast.
pub struct RawSender(OwnedFd);

impl RawSender {
    pub fn open(host: &LabHost) -> Self {
        Self(host.in_netns(|| {
            // SAFETY: plain socket(2); the descriptor is owned at once.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            // SAFETY: a descriptor we just opened.
            unsafe { OwnedFd::from_raw_fd(fd) }
        }))
    }

    /// Sends an IPv4 packet (the kernel fills in its length and checksum);
    /// whether it went out.
    pub fn send(&self, packet: &[u8]) -> bool {
        let dst = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([packet[16], packet[17], packet[18], packet[19]]) },
            sin_zero: [0; 8],
        };
        // SAFETY: sendto with a valid buffer and address.
        let r = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                std::ptr::from_ref(&dst).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        r > 0
    }
}

/// An IPv4 packet of `protocol` around `l4` (the kernel fills in the
/// header's length and checksum).
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[8] = 64;
    p[9] = protocol;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p.extend_from_slice(l4);
    p
}

/// Makes a blocking `recv` on `fd` give up after `after`, so a reader
/// thread sees its stop flag.
pub fn recv_timeout(fd: &OwnedFd, after: Duration) {
    let timeout = libc::timeval { tv_sec: after.as_secs() as libc::time_t, tv_usec: after.subsec_micros().into() };
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
}

fn count_answers(fd: &OwnedFd, to: SocketAddrV4, stop: &AtomicBool, answered: &AtomicU64) {
    recv_timeout(fd, Duration::from_millis(100));
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

/// What a [`SpoofedFlood`] sends: each packet a flow of its own that nobody
/// will answer for.
#[derive(Clone, Copy, Debug)]
pub enum Spoofed {
    /// TCP SYNs to this port.
    Syn(u16),
    /// UDP datagrams to this port.
    Udp(u16),
    /// ICMP echo requests, each with an identifier of its own.
    EchoRequest,
}

/// Packets from spoofed IPv4 addresses (`sources` of them from `base`),
/// each with a source port or echo identifier of its own, so each opens a
/// new flow, to `to`, as fast as one thread sends them from a raw socket
/// in `from`'s namespace, until stopped. Checksums are right, so the
/// target's stack answers as it would a real client (to an address that
/// will never answer back).
pub struct SpoofedFlood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl SpoofedFlood {
    pub fn start(from: &LabHost, base: Ipv4Addr, sources: u32, to: Ipv4Addr, kind: Spoofed) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let raw = RawSender::open(from);
        let thread = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut n: u32 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let src = Ipv4Addr::from(u32::from(base) + n % sources.max(1));
                    let flow = 1024 + (n / sources.max(1)) % 60_000;
                    if raw.send(&spoofed_packet(src, to, kind, flow as u16, n)) {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    n = n.wrapping_add(1);
                }
            })
        };
        Self { stop, sent, thread }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits until `n` packets went out (at most `limit`); how many did.
    pub fn wait_for(&self, n: u64, limit: Duration) -> u64 {
        let until = Instant::now() + limit;
        while self.sent() < n && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.sent()
    }

    /// Stops; how many packets went out.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("flood thread");
        self.sent.load(Ordering::Relaxed)
    }
}

/// One packet of a [`SpoofedFlood`]: IPv4 (the kernel fills in the
/// header's length and checksum) and its L4 header with checksum.
fn spoofed_packet(src: Ipv4Addr, dst: Ipv4Addr, kind: Spoofed, flow: u16, n: u32) -> Vec<u8> {
    let (protocol, mut l4) = match kind {
        Spoofed::Syn(dport) => (libc::IPPROTO_TCP as u8, syn_segment(src, dst, flow, dport, n).to_vec()),
        Spoofed::Udp(dport) => {
            let mut u = vec![0u8; 8 + 16];
            u[0..2].copy_from_slice(&flow.to_be_bytes());
            u[2..4].copy_from_slice(&dport.to_be_bytes());
            u[4..6].copy_from_slice(&24u16.to_be_bytes());
            (libc::IPPROTO_UDP as u8, u)
        }
        Spoofed::EchoRequest => {
            let mut e = vec![8u8, 0, 0, 0];
            e.extend_from_slice(&(n as u16).to_be_bytes());
            e.extend_from_slice(&1u16.to_be_bytes());
            e.extend_from_slice(b"flood");
            (libc::IPPROTO_ICMP as u8, e)
        }
    };
    // UDP checksum 0: none (IPv4).
    if let Spoofed::EchoRequest = kind {
        let sum = testlab::inet_checksum(&l4);
        l4[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    ipv4(src, dst, protocol, &l4)
}

/// UDP datagrams to `to` from `sources` different spoofed IPv4 addresses
/// (`base` + i, each a source of its own flow), as fast as one thread
/// sends them from a raw socket in `from`'s namespace, for `secs`; returns
/// how many were sent.
pub fn udp_from_many(from: &LabHost, base: Ipv4Addr, sources: u32, to: SocketAddrV4, secs: f64) -> u64 {
    let flood = SpoofedFlood::start(from, base, sources, *to.ip(), Spoofed::Udp(to.port()));
    std::thread::sleep(Duration::from_secs_f64(secs));
    flood.stop()
}
