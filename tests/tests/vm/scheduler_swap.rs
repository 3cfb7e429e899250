//! Scheduler changes of a live service under load (issue #15): a new connection per request
//! through the VIP while LibraFlux's client changes the service's scheduler in place
//! (`Op::UpdateService`) again and again.
//!
//! Debian's 6.1 `ip_vs_edit_service` unbinds the old scheduler, sets `svc->scheduler` to NULL,
//! waits for `synchronize_rcu()` and only then binds the new one. A connection's first packet in
//! that window finds no scheduler; `ip_vs_leave` answers it with an ICMP port unreachable, and
//! the client gets ECONNREFUSED (figures before and after the fix: docs/observer.md).
//!
//! The fix: each change is made under a hold of the VIP's [`RefusalShield`], from a counter
//! attached at the egress of the client-facing interface (`lf-c`), which drops those refusals on
//! their way out. A TCP client then retransmits its SYN about 1 s later and connects (the test
//! reports how many connections took that long); a UDP client's datagram is lost instead of
//! refused (reported as timed out).
//!
//! What operators run does the same: the daemon on a reload, and `libraflux apply` (which loads
//! the counter program itself while it changes a scheduler), each with the client-facing
//! interface in `node.interface`.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use libraflux::{
    ipvs::{OnFailure, Op},
    model::{Forwarding, Service},
    observe::{Direction, RefusalShield},
};
use libraflux_tests::{NetNs, counter_at};

use super::{
    daemon::Daemon,
    drain::Topology,
    support::{add_ops, apply_all, dest, service, with_client, with_dests},
};

/// In-place scheduler changes per test, alternating wrr and rr.
const SWAPS: usize = 30;
/// Between two changes (the load keeps going meanwhile): 100 to 250 ms, varied. With a fixed
/// 150 ms pause the changes were periodic, and a client's SYN retransmissions (1 s, then 2 s more)
/// could keep meeting them: one connection met three windows in a row (7.2 s here; in CI one
/// timed out at 5 s).
fn pause(change: usize) -> Duration {
    const PAUSES_MS: [u64; 8] = [110, 230, 150, 190, 130, 250, 170, 210];
    Duration::from_millis(PAUSES_MS[change % PAUSES_MS.len()])
}
/// Load before the first change and after the last: long enough for a SYN retransmitted after
/// the kernel's initial 1 s RTO to complete.
const SETTLE: Duration = Duration::from_millis(1500);
/// Bound on every load loop, whatever happens.
const MAX_LOAD: Duration = Duration::from_secs(60);
/// A request slower than this waited for a retransmission.
const SLOW: Duration = Duration::from_millis(900);
const BACKEND: &str = "10.200.0.2";
const BACKEND_PORTS: [u16; 2] = [8080, 8081];

/// What one request loop saw.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    /// ECONNREFUSED: the node's ICMP port unreachable reached the client.
    refused: usize,
    /// No answer within the request's timeout (UDP: the datagram was lost).
    timed_out: usize,
    /// Anything else, with the first few errors kept.
    other: usize,
    errors: Vec<String>,
    /// Successful requests slower than [`SLOW`].
    slow: usize,
    slowest: Duration,
}

impl Tally {
    fn total(&self) -> usize {
        self.ok + self.refused + self.timed_out + self.other
    }

    fn record(&mut self, outcome: std::io::Result<Duration>) {
        match outcome {
            Ok(took) => {
                self.ok += 1;
                self.slow += usize::from(took > SLOW);
                self.slowest = self.slowest.max(took);
            }
            Err(err) if err.kind() == ErrorKind::ConnectionRefused => self.refused += 1,
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                self.timed_out += 1;
                self.keep(&err);
            }
            Err(err) => {
                self.other += 1;
                self.keep(&err);
            }
        }
    }

    /// Keeps the first few errors that are not refusals, to say what they were.
    fn keep(&mut self, err: &std::io::Error) {
        if self.errors.len() < 5 {
            self.errors.push(err.to_string());
        }
    }

    fn summary(&self) -> String {
        format!(
            "{} refused of {} requests ({} timed out, {} other errors {:?}); {} took > {} ms, slowest {} ms",
            self.refused,
            self.total(),
            self.timed_out,
            self.other,
            self.errors,
            self.slow,
            SLOW.as_millis(),
            self.slowest.as_millis()
        )
    }
}

/// Runs `request` in a loop on a thread inside `client` until `stop` is set (or [`MAX_LOAD`]).
fn load(
    client: &NetNs,
    stop: &Arc<AtomicBool>,
    request: fn() -> std::io::Result<Duration>,
) -> JoinHandle<Tally> {
    let stop = Arc::clone(stop);
    client.spawn(move || {
        let started = Instant::now();
        let mut tally = Tally::default();
        while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_LOAD {
            tally.record(request());
        }
        tally
    })
}

/// One TCP connection through the VIP: connect, one request, its answer.
fn tcp_request() -> std::io::Result<Duration> {
    let started = Instant::now();
    let vip: SocketAddr = "10.220.0.10:80".parse().expect("VIP");
    // Long enough for three SYN retransmissions (after 1 s, 2 s more and 4 s more): on a slow
    // machine a swap's window is long, and one client can meet several in a row.
    let mut stream = TcpStream::connect_timeout(&vip, Duration::from_secs(8))
        .map_err(|err| std::io::Error::new(err.kind(), format!("connect: {err}")))?;
    let after = |err: std::io::Error| std::io::Error::new(err.kind(), format!("after connecting: {err}"));
    stream.set_read_timeout(Some(Duration::from_secs(3))).map_err(after)?;
    stream.write_all(b"ping\n").map_err(after)?;
    let mut answer = [0u8; 5];
    stream.read_exact(&mut answer).map_err(after)?;
    assert_eq!(&answer, b"pong\n", "the backend's answer");
    Ok(started.elapsed())
}

/// One datagram through the VIP from a fresh connected socket, and its echo.
fn udp_request() -> std::io::Result<Duration> {
    let started = Instant::now();
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.connect("10.220.0.10:53")?;
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    socket.send(b"ping")?;
    let mut answer = [0u8; 16];
    let len = socket.recv(&mut answer)?;
    assert_eq!(&answer[..len], b"ping", "the backend's echo");
    Ok(started.elapsed())
}

/// TCP backends that answer each connection's request with `pong` and close it; they stop
/// once `stop` is set and each has accepted one more connection (see [`wake`]).
fn tcp_backends(netns: &NetNs, stop: &Arc<AtomicBool>) {
    for port in BACKEND_PORTS {
        let listener = netns.enter(move || TcpListener::bind((BACKEND, port)).expect("bind a backend"));
        let stop = Arc::clone(stop);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
                let mut request = [0u8; 5];
                if stream.read_exact(&mut request).is_ok() {
                    let _ = stream.write_all(b"pong\n");
                }
            }
        });
    }
}

/// Ends the backends' accept loops after `stop` was set.
fn wake(netns: &NetNs) {
    netns.enter(|| {
        for port in BACKEND_PORTS {
            let backend: SocketAddr = format!("{BACKEND}:{port}").parse().expect("backend address");
            let _ = TcpStream::connect_timeout(&backend, Duration::from_secs(1));
        }
    });
}

/// UDP backends that echo every datagram; their threads block in `recv_from` until the test
/// process exits (as in `drain`).
fn udp_backends(netns: &NetNs) {
    for port in BACKEND_PORTS {
        let socket = netns.enter(move || UdpSocket::bind((BACKEND, port)).expect("bind a backend"));
        std::thread::spawn(move || {
            let mut buffer = [0u8; 512];
            while let Ok((len, from)) = socket.recv_from(&mut buffer) {
                let _ = socket.send_to(&buffer[..len], from);
            }
        });
    }
}

/// The service `key` with both backends, NAT, scheduler `rr`.
fn balanced(key: &str) -> Service {
    let backends: Vec<_> =
        BACKEND_PORTS.iter().map(|port| dest(&format!("{BACKEND}:{port}"), 1, Forwarding::Nat)).collect();
    with_dests(service(key, "rr"), &backends)
}

/// Changes the scheduler of `service` [`SWAPS`] times in place with our client, [`pause`]
/// apart, alternating wrr and rr, each under a hold of `shield` on the service's VIP: what the
/// apply path does around an `UpdateService` that changes the scheduler.
fn swap_schedulers(node: &NetNs, service: Service, shield: &RefusalShield) {
    let holder = shield.clone();
    with_client(node, move |mut client| async move {
        for swap in 0..SWAPS {
            let mut changed = service.clone();
            changed.scheduler = if swap % 2 == 0 { "wrr" } else { "rr" }.to_owned();
            let hold =
                holder.hold_service(&changed.key).expect("shield the VIP").expect("an address service");
            let report = client.apply_ops(&[Op::UpdateService(changed)], OnFailure::Stop).await;
            hold.release().expect("end the shield");
            assert_eq!(report.applied(), 1, "scheduler change {swap}: {report:?}");
            tokio::time::sleep(pause(swap)).await;
        }
    });
    assert!(shield.shielded().expect("list shielded VIPs").is_empty(), "every hold ended");
}

/// Sets up `key` behind the VIP, runs `request` in a loop from the client while the scheduler
/// changes [`SWAPS`] times, and returns what the loop saw.
fn under_swaps(topology: &Topology, key: &str, request: fn() -> std::io::Result<Duration>) -> Tally {
    let service = balanced(key);
    apply_all(&topology.node.netns, add_ops(std::slice::from_ref(&service)));
    // The path works before anything changes.
    topology.client.enter(move || request().expect("a request through the VIP"));
    // The kernel sends one host at most one ICMP error a second (after a burst of 6); a refusal
    // it does not send is a silent drop, which the client retries like a held-back one. Many
    // clients each have their own budget; this test's one client gets an unlimited one, so that
    // every connection in the window is refused as it would be from as many different hosts.
    topology.node.netns.exec("sysctl", &["-qw", "net.ipv4.icmp_ratelimit=0"]);
    // Refusals leave towards the client: the counter's shield works at lf-c's egress.
    let counter = counter_at(&topology.node.netns, "lf-c", Direction::Egress, Vec::new());
    let shield = counter.refusal_shield();

    let stop = Arc::new(AtomicBool::new(false));
    let loop_handle = load(&topology.client, &stop, request);
    std::thread::sleep(SETTLE);
    let started = Instant::now();
    swap_schedulers(&topology.node.netns, service, &shield);
    let swapping = started.elapsed();
    std::thread::sleep(SETTLE);
    stop.store(true, Ordering::Relaxed);
    let tally = loop_handle.join().expect("the load loop");
    eprintln!(
        "{key}: {SWAPS} scheduler changes in {} ms: {}; refusals held back: {}",
        swapping.as_millis(),
        tally.summary(),
        shield.held_back().expect("read the shield's count")
    );
    tally
}

#[test]
fn tcp_scheduler_swaps_refuse_no_connection() {
    let topology = Topology::new();
    let stop = Arc::new(AtomicBool::new(false));
    tcp_backends(&topology.backends, &stop);
    let tally = under_swaps(&topology, "tcp:10.220.0.10:80", tcp_request);
    stop.store(true, Ordering::Relaxed);
    wake(&topology.backends);
    assert!(tally.ok > 0, "no request got through: {}", tally.summary());
    assert_eq!(
        (tally.refused, tally.timed_out, tally.other),
        (0, 0, 0),
        "scheduler changes failed connections: {}",
        tally.summary()
    );
}

#[test]
fn udp_scheduler_swaps_refuse_no_request() {
    let topology = Topology::new();
    udp_backends(&topology.backends);
    let tally = under_swaps(&topology, "udp:10.220.0.10:53", udp_request);
    assert!(tally.ok > 0, "no request got through: {}", tally.summary());
    assert_eq!(
        (tally.refused, tally.other),
        (0, 0),
        "scheduler changes refused requests: {}",
        tally.summary()
    );
}

/// What operators run: `libraflux daemon` with the client-facing interface in `node.interface`,
/// and reloads that change the service's scheduler. The daemon holds each change's refusals back
/// through its own observer, so no connection is refused.
#[test]
fn daemon_reloads_that_change_the_scheduler_refuse_no_connection() {
    let run = OperatorRun::new();
    let daemon = Daemon::start(&run.topology.node, &run.config);
    run.under_changes("daemon: reloads", |scheduler| {
        run.set_scheduler(scheduler);
        daemon.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        let line = format!("-A -t 10.220.0.10:80 -s {scheduler}");
        while !run.topology.node.saved().contains(&line) {
            assert!(Instant::now() < deadline, "reload to {scheduler} not applied:\n{}", daemon.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        0
    });
}

/// The same with no daemon: `libraflux apply` of the edited config. apply loads the counter
/// program itself for a plan that changes a scheduler, attaches it at the egress of every
/// `node.interface` while it runs, and says how many refusals it held back.
#[test]
fn applies_that_change_the_scheduler_refuse_no_connection() {
    let run = OperatorRun::new();
    run.topology.node.libraflux(&["apply", "-c", &run.config]).assert_code(0);
    run.under_changes("apply", |scheduler| {
        run.set_scheduler(scheduler);
        let applied = run.topology.node.libraflux(&["apply", "-c", &run.config]);
        applied.assert_code(0);
        let line = format!("-A -t 10.220.0.10:80 -s {scheduler}");
        assert!(run.topology.node.saved().contains(&line), "apply to {scheduler}:\n{}", applied.stdout);
        let said = "refusal(s) of new connections were held back (eBPF at the egress of lfvip0, lf-c, lf-d)";
        let at =
            applied.stdout.find(said).unwrap_or_else(|| panic!("no word of the shield:\n{}", applied.stdout));
        let count = applied.stdout[..at].rsplit(' ').nth(1).expect("a count before the words");
        count.parse::<u64>().unwrap_or_else(|_| panic!("count {count:?} in:\n{}", applied.stdout))
    });
}

/// A node as operators run it: the TCP service of [`Topology::config`] with the client-facing
/// interface in `node.interface`, the backends answering, and no ICMP rate limit.
struct OperatorRun {
    topology: Topology,
    config: String,
    stop: Arc<AtomicBool>,
}

impl OperatorRun {
    /// Scheduler changes per test, alternating wrr and rr.
    const CHANGES: usize = 10;

    fn new() -> Self {
        let topology = Topology::new();
        let stop = Arc::new(AtomicBool::new(false));
        tcp_backends(&topology.backends, &stop);
        topology.node.netns.exec("sysctl", &["-qw", "net.ipv4.icmp_ratelimit=0"]);
        let config = topology.config("tcp", 80, BACKEND_PORTS);
        let run = Self { topology, config, stop };
        run.set_scheduler("rr");
        run
    }

    fn set_scheduler(&self, scheduler: &str) {
        let text = std::fs::read_to_string(&self.config).expect("the config");
        let text = text.replace("[lfvip0, lf-d]", "[lfvip0, lf-c, lf-d]");
        let text = text.replace("scheduler: rr", &format!("scheduler: {scheduler}"));
        let text = text.replace("scheduler: wrr", &format!("scheduler: {scheduler}"));
        std::fs::write(&self.config, text).expect("write the config");
    }

    /// Runs the load while `change` sets the scheduler [`Self::CHANGES`] times (it returns the
    /// refusals it says were held back); no connection may fail.
    fn under_changes(&self, what: &str, mut change: impl FnMut(&str) -> u64) {
        self.topology.client.enter(|| tcp_request().expect("a request through the VIP"));
        let load_stop = Arc::new(AtomicBool::new(false));
        let loop_handle = load(&self.topology.client, &load_stop, tcp_request);
        std::thread::sleep(SETTLE);
        let mut held_back = 0;
        for round in 0..Self::CHANGES {
            held_back += change(if round % 2 == 0 { "wrr" } else { "rr" });
            std::thread::sleep(pause(round));
        }
        std::thread::sleep(SETTLE);
        load_stop.store(true, Ordering::Relaxed);
        let tally = loop_handle.join().expect("the load loop");
        eprintln!(
            "{what}: {} changing the scheduler: {}; said held back: {held_back}",
            Self::CHANGES,
            tally.summary()
        );
        assert!(tally.ok > 0, "no request got through: {}", tally.summary());
        assert_eq!(
            (tally.refused, tally.timed_out, tally.other),
            (0, 0, 0),
            "{what}: scheduler changes failed connections: {}",
            tally.summary()
        );
    }
}

impl Drop for OperatorRun {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        wake(&self.topology.backends);
    }
}
