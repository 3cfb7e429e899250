//! Host tier: the TCP and HTTP checks, and the scheduler, against real servers in fresh network
//! namespaces. The checker runs in the left namespace of a veth pair, servers in the right one.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use libraflux::{
    config::{Check, DesiredState, Drain, Health, OnUnhealthy, ServiceSettings},
    health::{
        CheckFailure, ProbeOutcome, Scheduler, SchedulerOptions, Transition, checker_for, probe_bounded,
    },
    model::{DestKey, Destination, Forwarding, Service, ServiceKey},
};
use libraflux_tests::{NetNs, VethPair};

fn http(path: &str, expect_status: u16) -> Check {
    Check::Http { path: path.to_owned(), expect_status }
}

/// One bounded probe from inside `netns`: what it found and the wall time it took.
fn probe_from(netns: &NetNs, check: Check, target: &str, timeout: Duration) -> (ProbeOutcome, Duration) {
    let target: SocketAddr = target.parse().unwrap_or_else(|_| panic!("{target:?} is not an address"));
    netns.enter(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let checker = checker_for(&check, &std::sync::Arc::default()).expect("supported").expect("a checker");
        let started = Instant::now();
        let outcome = runtime.block_on(probe_bounded(checker.as_ref(), target, timeout));
        (outcome, started.elapsed())
    })
}

/// A listening socket bound inside `netns`; it accepts nothing unless a test does.
fn listen(netns: &NetNs, addr: &str) -> TcpListener {
    let addr = addr.to_owned();
    netns.enter(move || TcpListener::bind(&addr).unwrap_or_else(|err| panic!("bind {addr}: {err}")))
}

#[test]
fn tcp_passes_against_a_listener_over_ipv4_and_ipv6() {
    let pair = VethPair::new();
    let _v4 = listen(&pair.right, "10.200.0.2:7001");
    let _v6 = listen(&pair.right, "[fd00:200::2]:7001");
    for target in ["10.200.0.2:7001", "[fd00:200::2]:7001"] {
        let (outcome, _) = probe_from(&pair.left, Check::Tcp, target, Duration::from_secs(2));
        assert_eq!(outcome.result, Ok(()), "{target}");
        assert!(outcome.latency < Duration::from_secs(1), "{target}: {:?}", outcome.latency);
    }
}

#[test]
fn a_port_with_nothing_listening_is_refused_at_once() {
    let pair = VethPair::new();
    for check in [Check::Tcp, http("/", 200)] {
        let (outcome, took) =
            probe_from(&pair.left, check.clone(), "10.200.0.2:7002", Duration::from_secs(5));
        assert_eq!(outcome.result, Err(CheckFailure::Refused), "{check:?}");
        assert_eq!(outcome.outcome(), "refused");
        // Well under the 5 s timeout: a refusal, not a timeout (1 s was missed once at load 10).
        assert!(
            took < Duration::from_secs(3),
            "{check:?}: refused fails at once, not after a timeout: {took:?}"
        );
    }
}

/// Asserts the probe failed with a timeout after one `timeout`, not sooner and not much later.
fn assert_one_timeout((outcome, took): (ProbeOutcome, Duration), timeout: Duration) {
    assert_eq!(outcome.result, Err(CheckFailure::TimedOut(timeout)));
    assert_eq!(outcome.result.unwrap_err().to_string(), "timed out after 300ms");
    assert!(outcome.latency >= timeout, "{:?}", outcome.latency);
    assert!(took >= timeout && took < timeout + Duration::from_millis(250), "{took:?}");
}

#[test]
fn a_black_hole_fails_after_exactly_one_timeout() {
    let pair = VethPair::new();
    // SYNs to .99 reach the right namespace, which does not own it and discards them silently.
    pair.left.ip(&[
        "neigh",
        "replace",
        "10.200.0.99",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        VethPair::LEFT_IF,
    ]);
    pair.right.ip(&["route", "add", "blackhole", "10.200.0.99/32"]);
    let timeout = Duration::from_millis(300);
    assert_one_timeout(probe_from(&pair.left, Check::Tcp, "10.200.0.99:80", timeout), timeout);
    assert_one_timeout(probe_from(&pair.left, http("/", 200), "10.200.0.99:80", timeout), timeout);
}

#[test]
fn http_against_a_server_that_accepts_but_never_answers_times_out_once() {
    let pair = VethPair::new();
    // The kernel completes the handshake into the backlog; nobody ever reads the request.
    let _silent = listen(&pair.right, "10.200.0.2:7003");
    let timeout = Duration::from_millis(300);
    assert_one_timeout(probe_from(&pair.left, http("/healthz", 200), "10.200.0.2:7003", timeout), timeout);
}

/// `busybox httpd` serving a directory inside a namespace; killed and cleaned up on drop.
struct Httpd {
    child: Child,
    root: PathBuf,
}

impl Httpd {
    fn start(netns: &NetNs, listen: &str, files: &[(&str, &str)]) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "lf-health-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&root).unwrap();
        for (name, content) in files {
            std::fs::write(root.join(name), content).unwrap();
        }
        let child = Command::new("ip")
            .args(["netns", "exec", netns.name(), "busybox", "httpd", "-f", "-p", listen, "-h"])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start busybox httpd (is busybox installed?): {err}"));
        Self { child, root }
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Waits (at most 5 s) until something accepts connections on `target` as seen from `netns`.
fn wait_for_listener(netns: &NetNs, target: &str) {
    let target: SocketAddr = target.parse().unwrap();
    netns.enter(move || {
        for _ in 0..100 {
            if TcpStream::connect_timeout(&target, Duration::from_millis(100)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nothing listens on {target} after 5 s");
    });
}

#[test]
fn http_against_busybox_httpd_passes_and_a_missing_path_fails_with_its_status() {
    let pair = VethPair::new();
    let target = "10.200.0.2:8080";
    let _httpd = Httpd::start(&pair.right, target, &[("healthz", "ok\n")]);
    wait_for_listener(&pair.left, target);

    let (outcome, _) = probe_from(&pair.left, http("/healthz", 200), target, Duration::from_secs(2));
    assert_eq!(outcome.result, Ok(()));
    let (outcome, _) = probe_from(&pair.left, http("/missing", 200), target, Duration::from_secs(2));
    assert_eq!(outcome.result, Err(CheckFailure::HttpStatus { got: 404, expected: 200 }));
    assert_eq!(outcome.outcome(), "bad_status");
    let (outcome, _) = probe_from(&pair.left, http("/missing", 404), target, Duration::from_secs(2));
    assert_eq!(outcome.result, Ok(()), "the expected status need not be 200");
}

/// Answers one request with `503` and returns the request it read.
fn serve_503_once(listener: TcpListener) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut request = Vec::new();
        let mut buf = [0; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            let read = stream.read(&mut buf).expect("read the request");
            assert!(read > 0, "the checker closed before sending a whole request");
            request.extend_from_slice(&buf[..read]);
        }
        stream
            .write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n",
            )
            .expect("write the response");
        String::from_utf8(request).unwrap()
    })
}

#[test]
fn http_status_mismatch_names_both_statuses_and_the_request_is_well_formed() {
    let pair = VethPair::new();
    let server = serve_503_once(listen(&pair.right, "10.200.0.2:7004"));
    let (outcome, _) =
        probe_from(&pair.left, http("/healthz", 200), "10.200.0.2:7004", Duration::from_secs(2));
    let failure = outcome.result.unwrap_err();
    assert_eq!(failure, CheckFailure::HttpStatus { got: 503, expected: 200 });
    assert_eq!(failure.to_string(), "HTTP status 503, expected 200");
    let request = server.join().unwrap();
    assert!(request.starts_with("GET /healthz HTTP/1.1\r\nHost: 10.200.0.2:7004\r\n"), "{request}");
    assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
}

fn one_service(
    service: &str,
    backend: &str,
    health: Health,
) -> (DesiredState, BTreeMap<ServiceKey, ServiceSettings>) {
    let key: ServiceKey = service.parse().unwrap();
    let dest: DestKey = backend.parse().unwrap();
    let destination = Destination {
        key: dest,
        weight: 1,
        forwarding: Forwarding::Nat,
        upper_threshold: 0,
        lower_threshold: 0,
    };
    let service = Service {
        key,
        scheduler: "rr".into(),
        persistence: None,
        persistence_netmask: None,
        destinations: [(dest, destination)].into(),
    };
    let settings = ServiceSettings {
        name: "web".into(),
        health,
        on_unhealthy: OnUnhealthy::Quiesce,
        drain: Drain::default(),
        canaries: Default::default(),
        circuit_breaker: None,
    };
    ([(key, service)].into(), [(key, settings)].into())
}

#[test]
fn the_scheduler_falls_and_rises_with_a_real_listener() {
    // One namespace, its loopback: the scheduler's task takes the listener down and up again.
    let netns = NetNs::new("health");
    let backend = "127.0.0.1:7005";
    let health = Health {
        check: Check::Tcp,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(200),
        rise: 2,
        fall: 2,
        port: None,
    };
    let service = "tcp:10.200.1.1:80";
    let (desired, settings) = one_service(service, backend, health);
    let transitions = netns.enter(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let options = SchedulerOptions { seed: Some(5), ..SchedulerOptions::default() };
            let (mut scheduler, mut events) = Scheduler::new(options);
            let mut listener = Some(TcpListener::bind(backend).expect("bind"));
            scheduler.update(&desired, &settings);
            let mut transitions = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while transitions.len() < 2 {
                let event = tokio::time::timeout_at(deadline, events.recv())
                    .await
                    .unwrap_or_else(|_| panic!("no fall and rise within 10 s; saw {transitions:?}"))
                    .expect("events");
                if let Some(transition) = event.transition {
                    transitions.push((transition, event.reason()));
                }
                match (transitions.len(), listener.is_some()) {
                    // Healthy and probed: take the backend down.
                    (0, true) if event.result.is_ok() => listener = None,
                    // Unhealthy: bring it back on the same port.
                    (1, false) => listener = Some(TcpListener::bind(backend).expect("bind again")),
                    _ => {}
                }
            }
            let table = scheduler.snapshot();
            assert!(table.is_healthy(&service.parse().unwrap(), &backend.parse().unwrap()), "{table:?}");
            transitions
        })
    });
    assert_eq!(
        transitions,
        [
            (
                Transition::BecameUnhealthy { failures: 2 },
                "unhealthy after 2 consecutive failed probes, last: connection refused".to_owned()
            ),
            (
                Transition::BecameHealthy { successes: 2 },
                "healthy after 2 consecutive successful probes".to_owned()
            ),
        ]
    );
}
