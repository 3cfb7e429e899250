//! Circuit breakers driven by real traffic (issue 19, part 3): four NAT backends under `wrr`
//! behind the VIP, a client in its own namespace opening a new connection every 50 ms. One
//! backend stops listening (its port then answers SYNs with RST). The eBPF programs see the
//! refusals, the breaker ejects the backend after `consecutive_failures` of them, sooner than its
//! health check (`fall` x `interval`) would; the client's connections stop failing; after the
//! ejection the backend is let back half-open, fails again and is ejected for twice as long;
//! listening again, it closes at its next half-open.

use std::{
    collections::BTreeMap,
    io::Read as _,
    net::{TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use libraflux_tests::NetNs;

use super::{daemon::Daemon, drain::Topology, support::eventually};

const BROKEN: &str = "10.200.0.2:8083";
/// The health check's verdict would take `fall` x `interval` = 5 x 2 s.
const CHECK_BOUND: Duration = Duration::from_secs(10);

fn config(topology: &Topology) -> String {
    let text = "node:\n  interface: [lfvip0, lf-d]\nmetrics:\n  listen: 127.0.0.1:19472\nservices:
  - name: web
    protocol: tcp
    vip: 10.220.0.10
    port: 80
    scheduler: wrr
    health:
      type: tcp
      interval: 2s
      timeout: 500ms
      fall: 5
      rise: 1
    circuit_breaker: { consecutive_failures: 3, ejection: 6s, max_ejection: 30s, max_ejected_percent: 50 }
    backends:
      - { address: 10.200.0.2, port: 8080 }
      - { address: 10.200.0.2, port: 8081 }
      - { address: 10.200.0.2, port: 8082 }
      - { address: 10.200.0.2, port: 8083 }
";
    topology.node.config("config.yaml", text)
}

/// A backend on `port` that answers each connection with its port, until `stop`.
fn serve(netns: &NetNs, port: u16, stop: Arc<AtomicBool>) {
    let listener = netns.enter(move || TcpListener::bind(("10.200.0.2", port)).expect("bind a backend"));
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = std::io::Write::write_all(&mut stream, format!("{port}\n").as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
}

/// The client's record: when each connection failed.
#[derive(Default)]
struct Record {
    failures: Vec<Instant>,
    landed: BTreeMap<u16, usize>,
}

/// A new connection to the VIP every 50 ms from the client's namespace until `stop`.
fn client(netns: &NetNs, stop: Arc<AtomicBool>) -> Arc<Mutex<Record>> {
    let record = Arc::new(Mutex::new(Record::default()));
    let shared = Arc::clone(&record);
    netns.spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let answer =
                TcpStream::connect_timeout(&"10.220.0.10:80".parse().unwrap(), Duration::from_secs(2))
                    .and_then(|mut stream| {
                        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                        let mut answer = String::new();
                        stream.read_to_string(&mut answer)?;
                        Ok(answer)
                    });
            let mut record = shared.lock().unwrap();
            match answer.ok().and_then(|answer| answer.trim().parse::<u16>().ok()) {
                Some(port) => *record.landed.entry(port).or_default() += 1,
                None => record.failures.push(Instant::now()),
            }
            drop(record);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    record
}

fn metric(topology: &Topology, name: &str) -> Option<f64> {
    let metrics = topology.node.http_get("127.0.0.1:19472", "/metrics");
    let series = format!("{name}{{service=\"tcp:10.220.0.10:80\",backend=\"{BROKEN}\"}} ");
    metrics.lines().find_map(|line| line.strip_prefix(&series)).and_then(|value| value.parse().ok())
}

#[test]
fn a_backend_that_refuses_connections_is_ejected_by_real_traffic_and_comes_back_half_open() {
    let topology = Topology::new();
    let stops: Vec<Arc<AtomicBool>> = (0..4).map(|_| Arc::new(AtomicBool::new(false))).collect();
    for (port, stop) in (8080..).zip(&stops) {
        serve(&topology.backends, port, Arc::clone(stop));
    }
    let daemon = Daemon::start(&topology.node, &config(&topology));
    let stop_client = Arc::new(AtomicBool::new(false));
    let record = client(&topology.client, Arc::clone(&stop_client));
    eventually("traffic reaches every backend", Duration::from_secs(10), || {
        record.lock().unwrap().landed.len() == 4
    });
    assert_eq!(metric(&topology, "libraflux_circuit_open"), Some(0.0));
    assert_eq!(metric(&topology, "libraflux_circuit_ejections_total"), Some(0.0));

    // 8083 stops listening: its port refuses every new connection.
    stops[3].store(true, Ordering::Relaxed);
    let broke = Instant::now();
    eventually(&format!("the breaker ejects {BROKEN}:\n{}", daemon.log()), CHECK_BOUND, || {
        topology.weight(BROKEN) == Some(0)
    });
    let ejected_after = broke.elapsed();
    eprintln!(
        "ejected {ejected_after:?} after the backend stopped listening (health check bound {CHECK_BOUND:?})"
    );
    assert!(ejected_after < CHECK_BOUND, "ejected after {ejected_after:?}, not sooner than the health check");
    let log = daemon.log();
    // At least 3: one reading every 0.5 s may hold more than the last needed.
    assert!(log.contains(" connection attempts of real traffic failed in a row"), "{log}");
    assert_eq!(metric(&topology, "libraflux_circuit_open"), Some(1.0));
    let failed_before = record.lock().unwrap().failures.len();
    eprintln!("{failed_before} of the client's connections failed before the ejection");
    assert!((3..=20).contains(&failed_before), "{failed_before} connections failed before the ejection");
    // Ejected: the client's new connections stop failing.
    std::thread::sleep(Duration::from_secs(2));
    let settled = record.lock().unwrap().failures.len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        record.lock().unwrap().failures.len(),
        settled,
        "connections failed while the backend was ejected"
    );

    // 6 s later half-open: its next outcome is a failure, so it is ejected again, for 12 s.
    eventually(&format!("half-open, then ejected again:\n{}", daemon.log()), Duration::from_secs(20), || {
        metric(&topology, "libraflux_circuit_ejections_total") == Some(2.0)
    });
    assert!(daemon.log().contains("circuit half-open"), "{}", daemon.log());
    eventually("weight 0 again", Duration::from_secs(5), || topology.weight(BROKEN) == Some(0));
    let status = topology.node.libraflux(&["status"]);
    assert!(status.stdout.contains("circuit OPEN"), "{}", status.stdout);

    // Listening again: at the next half-open its first outcome succeeds and closes the circuit.
    let again = Arc::new(AtomicBool::new(false));
    serve(&topology.backends, 8083, Arc::clone(&again));
    eventually(&format!("the circuit closes:\n{}", daemon.log()), Duration::from_secs(30), || {
        daemon.log().contains("circuit closed: a success while half-open")
            && topology.weight(BROKEN) == Some(1)
    });
    assert_eq!(metric(&topology, "libraflux_circuit_open"), Some(0.0));
    let landed_before = record.lock().unwrap().landed.get(&8083).copied().unwrap_or(0);
    eventually("new connections reach it again", Duration::from_secs(10), || {
        record.lock().unwrap().landed.get(&8083).copied().unwrap_or(0) > landed_before + 3
    });

    // A canary whose breaker ejects it is aborted, and says why.
    topology
        .node
        .libraflux(&["canary", "start", BROKEN, "--steps", "50,100", "--interval", "1h"])
        .assert_code(0);
    eventually("the canary's 50% weight", Duration::from_secs(10), || topology.weight(BROKEN) == Some(3));
    again.store(true, Ordering::Relaxed);
    eventually(&format!("the breaker aborts the canary:\n{}", daemon.log()), CHECK_BOUND, || {
        let canaries = topology.node.libraflux(&["canary", "status", "--output", "json"]).stdout;
        canaries.contains("\"reason\": \"circuit_breaker\"") && topology.weight(BROKEN) == Some(0)
    });
    let metrics = topology.node.http_get("127.0.0.1:19472", "/metrics");
    assert!(metrics.contains("libraflux_canary_aborts_total{reason=\"circuit_breaker\"} 1"), "{metrics}");
    stop_client.store(true, Ordering::Relaxed);
    for stop in &stops {
        stop.store(true, Ordering::Relaxed);
    }
}
