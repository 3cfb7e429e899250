//! Canary backends with real traffic through the VIP (issue 19, part 1): three backends of
//! weight 1 and a canary rolled in by `canary:` steps under `wrr`; at each step a client in its
//! own namespace opens new connections and counts where they land (each backend answers with its
//! port). The share the client measures must be within [`TOLERANCE`] of the step's target. A
//! daemon restarted mid-step continues the rollout where it stood; the last step promotes; an
//! operator's `canary start` with other steps and `canary abort` are followed; an abort stops
//! new connections to the canary; a canary whose health check fails is aborted by the daemon.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use libraflux_tests::NetNs;
use serde_json::Value;

use super::{daemon::Daemon, drain::Topology, support::eventually};

/// How far the share of new connections the client measures may be from the step's target, in
/// percentage points. `wrr` with the computed weights gives the target within half a point in
/// every cycle of the weights; the rest is for a cycle cut short at either end of a measurement.
const TOLERANCE: f64 = 5.0;
/// New connections per measurement.
const CONNECTIONS: usize = 100;
const CANARY: &str = "10.200.0.2:8083";
const PORTS: [u16; 4] = [8080, 8081, 8082, 8083];

fn config(topology: &Topology) -> String {
    let text = "node:\n  interface: [lfvip0, lf-d]\nmetrics:\n  listen: 127.0.0.1:19471\nservices:
  - name: web
    protocol: tcp
    vip: 10.220.0.10
    port: 80
    scheduler: wrr
    health:
      type: tcp
      interval: 500ms
      timeout: 300ms
      rise: 1
      fall: 2
    backends:
      - { address: 10.200.0.2, port: 8080 }
      - { address: 10.200.0.2, port: 8081 }
      - { address: 10.200.0.2, port: 8082 }
      - address: 10.200.0.2
        port: 8083
        canary: { steps: [10%, 50%, 100%], interval: 20s }
";
    topology.node.config("config.yaml", text)
}

/// A listener per port that answers each connection with its port and closes it; `stop[port]`
/// closes the listener (its port then refuses connections).
fn backends(netns: &NetNs) -> BTreeMap<u16, Arc<AtomicBool>> {
    let mut stops = BTreeMap::new();
    for port in PORTS {
        let stop = Arc::new(AtomicBool::new(false));
        stops.insert(port, Arc::clone(&stop));
        let listener = netns.enter(move || TcpListener::bind(("10.200.0.2", port)).expect("bind a backend"));
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.write_all(format!("{port}\n").as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }
    stops
}

/// Opens `count` new connections to the VIP from the client's namespace, one after another, and
/// counts them by the port that answered.
fn measure(client: &NetNs, count: usize) -> BTreeMap<u16, usize> {
    client.enter(move || {
        let mut landed = BTreeMap::new();
        for _ in 0..count {
            let mut stream =
                TcpStream::connect_timeout(&"10.220.0.10:80".parse().unwrap(), Duration::from_secs(3))
                    .expect("connect to the VIP");
            stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).expect("read the backend's answer");
            let port: u16 = answer.trim().parse().unwrap_or_else(|_| panic!("not a port: {answer:?}"));
            *landed.entry(port).or_default() += 1;
        }
        landed
    })
}

fn share(landed: &BTreeMap<u16, usize>) -> f64 {
    let total: usize = landed.values().sum();
    100.0 * landed.get(&8083).copied().unwrap_or(0) as f64 / total as f64
}

/// `libraflux canary status --output json`: the one canary.
fn canary(topology: &Topology) -> Value {
    let ran = topology.node.libraflux(&["canary", "status", "--output", "json"]);
    ran.assert_code(0);
    let reply: Value = serde_json::from_str(&ran.stdout).expect("JSON");
    reply["canaries"][0].clone()
}

/// Waits until the canary is at `state` (and `step`, 0-based, when running) and IPVS shows
/// `weights` for 8080..=8083, then measures and checks the canary's share against `target`.
fn at_step(
    topology: &Topology,
    daemon: &Daemon,
    state: &str,
    step: Option<u64>,
    weights: [u32; 4],
    target: f64,
) {
    let backends = PORTS.map(|port| format!("10.200.0.2:{port}"));
    eventually(
        &format!("canary {state} {step:?} with weights {weights:?}:\n{}", daemon.log()),
        Duration::from_secs(40),
        || {
            let now = canary(topology);
            now["state"] == state
                && (step.is_none() || now["step"].as_u64() == step)
                && backends
                    .iter()
                    .zip(weights)
                    .all(|(backend, weight)| topology.weight(backend) == Some(weight))
        },
    );
    let started = Instant::now();
    let landed = measure(&topology.client, CONNECTIONS);
    let measured = share(&landed);
    eprintln!(
        "canary {state} step {step:?}: target {target}%, measured {measured:.1}% {landed:?} in {:?}",
        started.elapsed()
    );
    assert!((measured - target).abs() <= TOLERANCE, "target {target}%, measured {measured:.1}%: {landed:?}");
    // Measured within that step: it had not moved on meanwhile.
    let now = canary(topology);
    assert_eq!(now["state"], state, "the step moved on while it was measured: {now}");
}

#[test]
fn a_canary_gets_its_share_of_new_connections_at_each_step_and_none_once_aborted() {
    let topology = Topology::new();
    let stops = backends(&topology.backends);
    let config = config(&topology);
    let mut daemon = Daemon::start(&topology.node, &config);

    // Step 1, 10 %: among three of weight 1, the others x3 and the canary 1.
    at_step(&topology, &daemon, "running", Some(0), [3, 3, 3, 1], 10.0);
    let since = canary(&topology)["since_unix_ms"].clone();
    let metrics = topology.node.http_get("127.0.0.1:19471", "/metrics");
    assert!(
        metrics.contains(&format!(
            "libraflux_canary_step{{service=\"tcp:10.220.0.10:80\",backend=\"{CANARY}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "libraflux_canary_target_percent{{service=\"tcp:10.220.0.10:80\",backend=\"{CANARY}\"}} 10"
    )));
    let text = topology.node.libraflux(&["status"]);
    assert!(text.stdout.contains("canary step 1 of 2 (10%)"), "{}", text.stdout);

    // A restarted daemon continues the step it was at, not the first again.
    drop(daemon);
    daemon = Daemon::start(&topology.node, &config);
    // Where it stood: the same step since the same time, or (a restart slower than the rest of
    // the interval) the next step, started an interval after the first. Not the first step anew.
    let now = canary(&topology);
    let (step, at) = (now["step"].as_u64(), now["since_unix_ms"].as_u64().unwrap_or(0));
    let since = since.as_u64().unwrap();
    assert!(
        (step == Some(0) && at == since) || (step == Some(1) && at >= since + 20_000),
        "the restarted daemon did not continue the rollout: {now}"
    );

    // Step 2, 50 %: weight 3 against 3.
    at_step(&topology, &daemon, "running", Some(1), [1, 1, 1, 3], 50.0);
    // Then promoted: the configured weights, a quarter each.
    at_step(&topology, &daemon, "promoted", None, [1, 1, 1, 1], 25.0);
    let metrics = topology.node.http_get("127.0.0.1:19471", "/metrics");
    assert!(!metrics.contains("libraflux_canary_step{"), "a promoted canary has no step series:\n{metrics}");

    // An operator's rollout with its own steps: 20 % needs the others x4 against 3.
    let ran = topology.node.libraflux(&["canary", "start", CANARY, "--steps", "20,100", "--interval", "1h"]);
    ran.assert_code(0);
    assert!(ran.stdout.contains("step 1 of 1 (20% of new connections"), "{}", ran.stdout);
    at_step(&topology, &daemon, "running", Some(0), [4, 4, 4, 3], 20.0);

    // Abort: weight 0 and no new connection reaches it; drained by the service's rules.
    let ran = topology.node.libraflux(&["canary", "abort", CANARY]);
    ran.assert_code(0);
    assert!(
        ran.stdout.contains("ABORTED (operator)") && ran.stdout.contains("IPVS: weight 0"),
        "{}",
        ran.stdout
    );
    at_step(&topology, &daemon, "aborted", None, [1, 1, 1, 0], 0.0);
    let landed = measure(&topology.client, 60);
    assert_eq!(landed.get(&8083), None, "new connections reached an aborted canary: {landed:?}");
    let status = topology.node.libraflux(&["status", "--output", "json"]);
    let status: Value = serde_json::from_str(&status.stdout).expect("JSON");
    let drains = status["daemon"]["drains"].as_array().cloned().unwrap_or_default();
    assert!(
        drains.iter().any(|d| d["backend"] == CANARY && d["remove"] == false),
        "no drain after the abort: {drains:?}"
    );
    let text = topology.node.libraflux(&["status"]);
    assert!(
        text.stdout.contains("canary ABORTED (operator)")
            && (text.stdout.contains("DRAINING") || text.stdout.contains("drained (connections_closed)")),
        "{}",
        text.stdout
    );
    let metrics = topology.node.http_get("127.0.0.1:19471", "/metrics");
    assert!(metrics.contains("libraflux_canary_aborts_total{reason=\"operator\"} 1"), "{metrics}");

    // Refusals: abort what is not rolling out; a canary on a backend that is not configured.
    let ran = topology.node.libraflux(&["canary", "abort", CANARY]);
    assert_eq!(ran.code, 3, "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stderr.contains("not rolling out"), "{}", ran.stderr);
    let ran = topology.node.libraflux(&["canary", "start", "10.200.0.2:9999"]);
    assert_ne!(ran.code, 0, "{}", ran.stdout);

    // Started again, then its backend stops answering: its health check aborts it.
    topology
        .node
        .libraflux(&["canary", "start", CANARY, "--steps", "50,100", "--interval", "1h"])
        .assert_code(0);
    at_step(&topology, &daemon, "running", Some(0), [1, 1, 1, 3], 50.0);
    stops[&8083].store(true, Ordering::Relaxed);
    eventually(
        &format!("the health check aborts the canary:\n{}", daemon.log()),
        Duration::from_secs(20),
        || canary(&topology)["reason"] == "health_check" && topology.weight(CANARY) == Some(0),
    );
    let metrics = topology.node.http_get("127.0.0.1:19471", "/metrics");
    assert!(metrics.contains("libraflux_canary_aborts_total{reason=\"health_check\"} 1"), "{metrics}");
    for stop in stops.values() {
        stop.store(true, Ordering::Relaxed);
    }
}
