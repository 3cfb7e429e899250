//! A load generator for tests that change a load balancer under traffic: small backend servers
//! that answer with their own address, and clients that keep three kinds of load running through
//! a VIP at once, recording every request with its send time, its outcome and the backend that
//! answered.
//!
//! - [`Kind::TcpRequest`]: a new TCP connection per request (one line, one answer, close);
//! - [`Kind::UdpRequest`]: a new UDP socket, hence a new flow, per request;
//! - [`Kind::LongLived`]: a few TCP connections, each exchanging a line every `exchange_every`
//!   for `lifetime`, then closing in an orderly way and opening again (as client sessions do).
//!
//! Every thread is bounded: it ends at `stop`, and in any case after [`MAX_RUN`].
//! Clients and servers run on threads that entered the namespaces given to them, so traffic only
//! goes where those namespaces route it.

use std::{
    collections::BTreeSet,
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::NetNs;

/// No client or server thread runs longer than this, whatever the test does.
pub const MAX_RUN: Duration = Duration::from_secs(30 * 60);

/// How often a blocked server call wakes to look at its stop flag.
const POLL: Duration = Duration::from_millis(200);

/// The three kinds of load, in the order they are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    TcpRequest,
    UdpRequest,
    LongLived,
}

impl Kind {
    pub const ALL: [Self; 3] = [Self::TcpRequest, Self::UdpRequest, Self::LongLived];

    /// A short stable name, for JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::TcpRequest => "tcp_request",
            Self::UdpRequest => "udp_request",
            Self::LongLived => "long_lived",
        }
    }
}

/// Why a request failed or a connection was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// TCP: an RST answered the SYN; UDP: ICMP port unreachable.
    Refused,
    /// An RST on an established connection.
    Reset,
    /// Nothing within the timeout: connect, answer, or (long-lived) a read that returned EAGAIN.
    Timeout,
    /// An orderly close (EOF) before the answer.
    Closed,
    /// No route, host or network unreachable.
    Unreachable,
    /// An answer that does not name a backend.
    Garbled,
    /// Any other error, by errno.
    Other(i32),
}

impl Failure {
    fn of(err: &std::io::Error) -> Self {
        match err.kind() {
            ErrorKind::ConnectionRefused => Self::Refused,
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => Self::Reset,
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Self::Timeout,
            ErrorKind::UnexpectedEof => Self::Closed,
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => Self::Unreachable,
            _ => Self::Other(err.raw_os_error().unwrap_or(-1)),
        }
    }

    pub fn name(self) -> String {
        match self {
            Self::Refused => "refused".to_owned(),
            Self::Reset => "reset".to_owned(),
            Self::Timeout => "timeout".to_owned(),
            Self::Closed => "closed".to_owned(),
            Self::Unreachable => "unreachable".to_owned(),
            Self::Garbled => "garbled".to_owned(),
            Self::Other(errno) => format!("errno {errno}"),
        }
    }
}

/// What happened to one request, or to one exchange on a long-lived connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered by `backend` after `latency`.
    Answered { backend: SocketAddr, latency: Duration },
    /// A request, or a long-lived connection's (re)connect, failed.
    Failed(Failure),
    /// An established long-lived connection was lost; `backend` had served it.
    Cut { failure: Failure, backend: SocketAddr },
}

/// One record: the request was sent at `at`.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub at: Instant,
    pub kind: Kind,
    pub outcome: Outcome,
}

/// What to send, and how fast.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    /// TCP service for new-connection requests.
    pub tcp: SocketAddr,
    /// UDP service for new-flow requests.
    pub udp: SocketAddr,
    /// One long-lived connection per entry, to that service.
    pub long_lived: Vec<SocketAddr>,
    /// Threads per request kind; each sends one request per `request_every`.
    pub request_workers: usize,
    pub request_every: Duration,
    pub exchange_every: Duration,
    /// How long a long-lived connection lives before it closes and opens again; connection `i`
    /// lives `lifetime + i` seconds, so they do not all reopen at once.
    pub lifetime: Duration,
    /// Connect and answer timeout, for every kind.
    pub timeout: Duration,
}

/// A long-lived connection as it stands: the service it goes to, the backend that answers it,
/// and when its lifetime ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    pub target: SocketAddr,
    pub backend: SocketAddr,
    pub ends: Instant,
}

/// One slot per long-lived worker: its open session, if any.
type Sessions = Arc<Mutex<Vec<Option<Session>>>>;

/// A running load; stopped (and its threads joined) by [`Load::stop`], or on drop.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    retired: Arc<Mutex<BTreeSet<SocketAddr>>>,
    sessions: Sessions,
    workers: Vec<JoinHandle<Vec<Event>>>,
}

impl Load {
    /// Starts every worker in `client`'s namespace. The long-lived connections open first.
    pub fn start(client: &NetNs, plan: &LoadPlan) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let retired = Arc::new(Mutex::new(BTreeSet::new()));
        let sessions: Sessions = Arc::new(Mutex::new(vec![None; plan.long_lived.len()]));
        let mut workers = Vec::new();
        for (index, target) in plan.long_lived.iter().copied().enumerate() {
            let worker = LongLived {
                target,
                every: plan.exchange_every,
                lifetime: plan.lifetime + Duration::from_secs(index as u64),
                timeout: plan.timeout,
                stop: Arc::clone(&stop),
                retired: Arc::clone(&retired),
                sessions: Arc::clone(&sessions),
                slot: index,
            };
            workers.push(client.spawn(move || worker.run()));
        }
        for _ in 0..plan.request_workers {
            for kind in [Kind::TcpRequest, Kind::UdpRequest] {
                let (target, timeout, every) = (
                    if kind == Kind::TcpRequest { plan.tcp } else { plan.udp },
                    plan.timeout,
                    plan.request_every,
                );
                let stop = Arc::clone(&stop);
                workers.push(client.spawn(move || requests(kind, target, every, timeout, &stop)));
            }
        }
        Self { stop, retired, sessions, workers }
    }

    /// The service `target` is going away: long-lived connections to it are not opened again
    /// once they end (by their lifetime, or cut).
    pub fn retire(&self, target: SocketAddr) {
        self.retired.lock().unwrap().insert(target);
    }

    /// The long-lived connections open now, once each has been answered.
    pub fn sessions(&self) -> Vec<Session> {
        self.sessions.lock().unwrap().iter().flatten().copied().collect()
    }

    /// Stops every worker and returns all events, ordered by send time.
    pub fn stop(mut self) -> Vec<Event> {
        self.stop.store(true, Ordering::Relaxed);
        let mut events: Vec<Event> = std::mem::take(&mut self.workers)
            .into_iter()
            .flat_map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect();
        events.sort_by_key(|event| event.at);
        events
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sleeps until `next` (then moves it on by `every`), or returns false at `stop` or [`MAX_RUN`].
fn pace(next: &mut Instant, every: Duration, started: Instant, stop: &AtomicBool) -> bool {
    let now = Instant::now();
    if *next > now {
        std::thread::sleep(*next - now);
    }
    *next = (*next + every).max(Instant::now());
    !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN
}

fn requests(
    kind: Kind,
    target: SocketAddr,
    every: Duration,
    timeout: Duration,
    stop: &AtomicBool,
) -> Vec<Event> {
    let started = Instant::now();
    let mut next = started;
    let mut events = Vec::new();
    while pace(&mut next, every, started, stop) {
        let at = Instant::now();
        let answer = match kind {
            Kind::TcpRequest => tcp_request(target, timeout),
            _ => udp_request(target, timeout),
        };
        let outcome = match answer {
            Ok(backend) => Outcome::Answered { backend, latency: at.elapsed() },
            Err(failure) => Outcome::Failed(failure),
        };
        events.push(Event { at, kind, outcome });
    }
    events
}

fn tcp_request(target: SocketAddr, timeout: Duration) -> Result<SocketAddr, Failure> {
    let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(|err| Failure::of(&err))?;
    stream.set_read_timeout(Some(timeout)).map_err(|err| Failure::of(&err))?;
    stream.set_write_timeout(Some(timeout)).map_err(|err| Failure::of(&err))?;
    exchange(&mut stream)
}

fn udp_request(target: SocketAddr, timeout: Duration) -> Result<SocketAddr, Failure> {
    let any: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
    let socket = UdpSocket::bind(any).map_err(|err| Failure::of(&err))?;
    socket.connect(target).map_err(|err| Failure::of(&err))?;
    socket.set_read_timeout(Some(timeout)).map_err(|err| Failure::of(&err))?;
    socket.send(b"x\n").map_err(|err| Failure::of(&err))?;
    let mut buf = [0u8; 64];
    let read = socket.recv(&mut buf).map_err(|err| Failure::of(&err))?;
    backend_of(&buf[..read])
}

/// Sends one line and reads the answer line: the backend's address.
fn exchange(stream: &mut TcpStream) -> Result<SocketAddr, Failure> {
    stream.write_all(b"x\n").map_err(|err| Failure::of(&err))?;
    let mut buf = [0u8; 64];
    let mut len = 0;
    while !buf[..len].contains(&b'\n') {
        match stream.read(&mut buf[len..]) {
            Ok(0) => return Err(Failure::Closed),
            Ok(read) => len += read,
            Err(err) => return Err(Failure::of(&err)),
        }
        if len == buf.len() {
            return Err(Failure::Garbled);
        }
    }
    backend_of(&buf[..len])
}

fn backend_of(answer: &[u8]) -> Result<SocketAddr, Failure> {
    std::str::from_utf8(answer).ok().and_then(|text| text.trim().parse().ok()).ok_or(Failure::Garbled)
}

struct LongLived {
    target: SocketAddr,
    every: Duration,
    lifetime: Duration,
    timeout: Duration,
    stop: Arc<AtomicBool>,
    retired: Arc<Mutex<BTreeSet<SocketAddr>>>,
    sessions: Sessions,
    slot: usize,
}

impl LongLived {
    fn publish(&self, session: Option<Session>) {
        self.sessions.lock().unwrap()[self.slot] = session;
    }

    fn run(self) -> Vec<Event> {
        let started = Instant::now();
        let mut next = started;
        let mut events = Vec::new();
        let retired = || self.retired.lock().unwrap().contains(&self.target);
        while !retired() && pace(&mut next, self.every, started, &self.stop) {
            let at = Instant::now();
            let mut stream = match TcpStream::connect_timeout(&self.target, self.timeout).and_then(|stream| {
                stream.set_read_timeout(Some(self.timeout))?;
                stream.set_write_timeout(Some(self.timeout))?;
                Ok(stream)
            }) {
                Ok(stream) => stream,
                Err(err) => {
                    events.push(Event {
                        at,
                        kind: Kind::LongLived,
                        outcome: Outcome::Failed(Failure::of(&err)),
                    });
                    continue;
                }
            };
            self.session(&mut stream, at, &mut next, started, &mut events);
            self.publish(None);
        }
        events
    }

    /// Exchanges on one connection until its lifetime ends, it is cut, or the load stops.
    fn session(
        &self,
        stream: &mut TcpStream,
        opened: Instant,
        next: &mut Instant,
        started: Instant,
        events: &mut Vec<Event>,
    ) {
        let mut backend = None;
        loop {
            let at = Instant::now();
            match exchange(stream) {
                Ok(answered) => {
                    if backend.is_none() {
                        let ends = opened + self.lifetime;
                        self.publish(Some(Session { target: self.target, backend: answered, ends }));
                    }
                    backend = Some(answered);
                    let outcome = Outcome::Answered { backend: answered, latency: at.elapsed() };
                    events.push(Event { at, kind: Kind::LongLived, outcome });
                }
                Err(failure) => {
                    // Cut before its first answer: the connection never carried anything.
                    let outcome = match backend {
                        Some(backend) => Outcome::Cut { failure, backend },
                        None => Outcome::Failed(failure),
                    };
                    events.push(Event { at, kind: Kind::LongLived, outcome });
                    return;
                }
            }
            if opened.elapsed() >= self.lifetime || !pace(next, self.every, started, &self.stop) {
                return;
            }
        }
    }
}

/// A backend server in a namespace that answers every TCP line, or every UDP datagram, with its
/// own address. [`Server::stop`] is the backend dying: the listener and every connection close.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn tcp(netns: &NetNs, addr: SocketAddr) -> Self {
        let listener = netns.enter(move || TcpListener::bind(addr).expect("bind a TCP backend"));
        // accept(2) honours SO_RCVTIMEO: the accept loop wakes to see the stop flag.
        socket2::SockRef::from(&listener).set_read_timeout(Some(POLL)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut connections = Vec::new();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN {
                if let Ok((stream, _)) = listener.accept() {
                    let flag = Arc::clone(&flag);
                    connections.push(std::thread::spawn(move || answer_lines(stream, addr, &flag)));
                }
                connections.retain(|connection: &JoinHandle<()>| !connection.is_finished());
            }
            drop(listener);
            for connection in connections {
                let _ = connection.join();
            }
        });
        Self { addr, stop, thread: Some(thread) }
    }

    pub fn udp(netns: &NetNs, addr: SocketAddr) -> Self {
        let socket = netns.enter(move || UdpSocket::bind(addr).expect("bind a UDP backend"));
        socket.set_read_timeout(Some(POLL)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let answer = format!("{addr}\n");
            let mut buf = [0u8; 64];
            while !flag.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(answer.as_bytes(), from);
                }
            }
        });
        Self { addr, stop, thread: Some(thread) }
    }

    /// Closes the listener and every connection, and waits until they are closed.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Answers each line on `stream` with `name` until EOF, an error, or `stop`.
fn answer_lines(mut stream: TcpStream, name: SocketAddr, stop: &AtomicBool) {
    let answer = format!("{name}\n");
    if stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let started = Instant::now();
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(read) => {
                let lines = buf[..read].iter().filter(|byte| **byte == b'\n').count();
                for _ in 0..lines {
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// Counts of one kind of load over a stretch of time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests sent (long-lived: exchanges, plus connection attempts that failed).
    pub sent: u64,
    /// Requests that failed (long-lived: connection attempts that failed).
    pub failed: u64,
    /// Long-lived connections cut after they had carried traffic.
    pub cut: u64,
    /// Answered, but only after `SLOW` or more (a retransmitted SYN or datagram).
    pub slow: u64,
    pub max_latency: Duration,
}

/// An answer this late was retransmitted or stalled, though it came.
pub const SLOW: Duration = Duration::from_millis(900);

impl Tally {
    pub fn of<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut tally = Self::default();
        for event in events {
            tally.sent += 1;
            match event.outcome {
                Outcome::Answered { latency, .. } => {
                    tally.slow += u64::from(latency >= SLOW);
                    tally.max_latency = tally.max_latency.max(latency);
                }
                Outcome::Failed(_) => tally.failed += 1,
                Outcome::Cut { .. } => tally.cut += 1,
            }
        }
        tally
    }

    pub fn lost(&self) -> u64 {
        self.failed + self.cut
    }
}
