//! What a host does on the network: echo servers and the exchanges that
//! tell "connected", "refused" and "timed out" apart.
use std::{
    fmt,
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{anyhow, Context as _};
use nix::{
    errno::Errno,
    sys::socket::{bind, connect, getsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage},
};

use crate::netns;

/// What became of an attempt to reach a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Handshake done and the probe bytes came back (TCP), or the datagram
    /// came back (UDP).
    Connected,
    /// The peer's host answered "nobody listens here" (TCP RST, ICMP port
    /// unreachable): the packet got through a filter, if any.
    Refused,
    /// No answer within the timeout: what a silent drop looks like.
    TimedOut,
    /// Anything else (no route, host unreachable, a partial echo, …).
    Other(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connected => f.pad("connected"),
            Self::Refused => f.pad("refused"),
            Self::TimedOut => f.pad("timed out"),
            Self::Other(why) => f.pad(&format!("failed: {why}")),
        }
    }
}

/// The bytes an exchange sends and expects back.
const PROBE: &[u8] = b"testlab probe\n";
/// How often server threads look at their stop flag.
const TICK: Duration = Duration::from_millis(20);

fn from_errno(errno: Errno) -> Outcome {
    match errno {
        Errno::ECONNREFUSED => Outcome::Refused,
        Errno::ETIMEDOUT => Outcome::TimedOut,
        e => Outcome::Other(e.desc().to_owned()),
    }
}

fn from_io(what: &str, e: &io::Error) -> Outcome {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Outcome::Refused,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Outcome::TimedOut,
        _ => Outcome::Other(format!("{what}: {e}")),
    }
}

/// Waits until `fd` is writable (a non-blocking connect finished) or `timeout`.
fn wait_writable(fd: &OwnedFd, timeout: Duration) -> Result<bool, Errno> {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    Errno::result(n).map(|n| n > 0)
}

/// Connects (from `local` if given) and round-trips [`PROBE`]. Runs inside
/// the client's namespace.
pub(crate) fn tcp_exchange(local: Option<SocketAddr>, to: SocketAddr, timeout: Duration) -> Outcome {
    let family = if to.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = match socket(family, SockType::Stream, flags, None) {
        Ok(fd) => fd,
        Err(e) => return Outcome::Other(format!("socket: {e}")),
    };
    if let Some(local) = local {
        if let Err(e) = bind(fd.as_raw_fd(), &SockaddrStorage::from(local)) {
            return Outcome::Other(format!("bind {local}: {e}"));
        }
    }
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(to)) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) => match wait_writable(&fd, timeout) {
            Ok(true) => {}
            Ok(false) => return Outcome::TimedOut,
            Err(e) => return Outcome::Other(format!("poll: {e}")),
        },
        Err(e) => return from_errno(e),
    }
    match getsockopt(&fd, sockopt::SocketError) {
        Ok(0) => {}
        Ok(errno) => return from_errno(Errno::from_raw(errno)),
        Err(e) => return Outcome::Other(format!("SO_ERROR: {e}")),
    }
    let mut stream = TcpStream::from(fd);
    let echoed = (|| {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(PROBE)?;
        let mut back = [0; PROBE.len()];
        stream.read_exact(&mut back)?;
        Ok::<_, io::Error>(back)
    })();
    match echoed {
        Ok(back) if back == PROBE => Outcome::Connected,
        Ok(back) => Outcome::Other(format!("connected, but the echo was {:?}", String::from_utf8_lossy(&back))),
        Err(e) => Outcome::Other(format!("connected, but no echo: {e}")),
    }
}

/// Sends [`PROBE`] in one datagram and waits for it to come back. Runs inside
/// the client's namespace.
pub(crate) fn udp_exchange(to: SocketAddr, timeout: Duration) -> Outcome {
    let any: SocketAddr = if to.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0_u16; 8], 0).into() };
    let socket = match UdpSocket::bind(any) {
        Ok(s) => s,
        Err(e) => return Outcome::Other(format!("bind: {e}")),
    };
    // Connected, so an ICMP port unreachable comes back as ECONNREFUSED.
    let sent =
        socket.connect(to).and_then(|()| socket.set_read_timeout(Some(timeout))).and_then(|()| socket.send(PROBE));
    if let Err(e) = sent {
        return from_io("send", &e);
    }
    let mut back = [0; 64];
    match socket.recv(&mut back) {
        Ok(n) if back[..n] == *PROBE => Outcome::Connected,
        Ok(n) => Outcome::Other(format!("the echo was {:?}", String::from_utf8_lossy(&back[..n]))),
        Err(e) => from_io("recv", &e),
    }
}

/// An echo server running in a host's namespace; it stops when dropped.
pub struct Listener {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// The address it is bound to (with the real port if 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The peers served so far: one per TCP connection accepted, one per UDP
    /// datagram echoed, in order. Shows which source address got through.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn tcp(netns: &str, addr: SocketAddr) -> anyhow::Result<Self> {
        Self::spawn(netns, addr, "TCP", |addr| {
            let listener = TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            let local = listener.local_addr()?;
            Ok((local, move |stop: &Arc<AtomicBool>, peers: &Mutex<Vec<SocketAddr>>| {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, peer)) => {
                            peers.lock().unwrap_or_else(|p| p.into_inner()).push(peer);
                            let stop = Arc::clone(stop);
                            thread::spawn(move || echo_tcp(stream, &stop));
                        }
                        Err(_) => thread::sleep(TICK),
                    }
                }
            }))
        })
    }

    pub(crate) fn udp(netns: &str, addr: SocketAddr) -> anyhow::Result<Self> {
        Self::spawn(netns, addr, "UDP", |addr| {
            let socket = UdpSocket::bind(addr)?;
            socket.set_read_timeout(Some(TICK))?;
            let local = socket.local_addr()?;
            Ok((local, move |stop: &Arc<AtomicBool>, peers: &Mutex<Vec<SocketAddr>>| {
                let mut buf = vec![0; 65_536]; // any datagram, fragmented ones included
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                        peers.lock().unwrap_or_else(|p| p.into_inner()).push(peer);
                        let _ = socket.send_to(&buf[..n], peer);
                    }
                }
            }))
        })
    }

    /// Starts a server thread in `netns`: `setup` binds (its error is ours),
    /// then the loop it returns serves until the stop flag is set.
    fn spawn<S, L>(netns: &str, addr: SocketAddr, proto: &str, setup: S) -> anyhow::Result<Self>
    where
        S: FnOnce(SocketAddr) -> io::Result<(SocketAddr, L)> + Send + 'static,
        L: FnOnce(&Arc<AtomicBool>, &Mutex<Vec<SocketAddr>>),
    {
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let (netns_owned, stop2, peers2) = (netns.to_owned(), Arc::clone(&stop), Arc::clone(&peers));
        let thread = thread::spawn(move || {
            let serve = match netns::enter(&netns_owned).and_then(|()| setup(addr)) {
                Ok((local, serve)) => {
                    let _ = tx.send(Ok(local));
                    serve
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            serve(&stop2, &peers2);
        });
        let local = rx
            .recv()
            .map_err(|_| anyhow!("the {proto} server thread died"))?
            .with_context(|| format!("{proto} server on {addr} in {netns}"))?;
        Ok(Self { local, stop, peers, thread: Some(thread) })
    }
}

/// Echoes one connection until EOF, an error, or the server stops.
fn echo_tcp(mut stream: TcpStream, stop: &AtomicBool) {
    if stream.set_nonblocking(false).and_then(|()| stream.set_read_timeout(Some(TICK))).is_err() {
        return;
    }
    let mut buf = [0; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
