//! Graceful removal on real IPVS with real traffic: a backend that leaves the configuration goes
//! to weight 0 and is deleted only once its drain rule is met, so a connection established to
//! it is not cut; by `apply` (which waits, with `--no-wait` and `--immediate` as the other
//! choices) and by a daemon reload (which persists the drain; putting the backend back in the
//! configuration cancels it).

use std::{
    io::Read as _,
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use libraflux_tests::libraflux_bin;

use super::{
    daemon::Daemon,
    drain::{Topology, connect, finished, tcp_backends},
};

const BACKEND_8081: &str = "      - address: 10.200.0.2\n        port: 8081\n";

/// Connects through the VIP until a connection lands on 8081.
fn held_on_8081(topology: &Topology) -> TcpStream {
    let held = (0..6).map(|_| connect(&topology.client)).find(|(_, port)| *port == 8081);
    held.expect("round robin reaches 8081 within 6 connections").0
}

/// Still open: a read times out instead of ending or failing.
fn still_open(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock)
}

fn write_config(path: &str, with_8081: bool, original: &str) {
    let text = if with_8081 { original.to_owned() } else { original.replace(BACKEND_8081, "") };
    std::fs::write(path, text).unwrap();
}

/// The drain tests' topology with TCP backends on 8080 and 8081 that hold every connection; the
/// backends' stop flag, the config's path and its text.
fn two_tcp_backends() -> (Topology, Arc<AtomicBool>, String, String) {
    let topology = Topology::new();
    let stop = tcp_backends(&topology.backends, [8080, 8081]);
    let config = topology.config("tcp", 80, [8080, 8081]);
    let original = std::fs::read_to_string(&config).unwrap();
    (topology, stop, config, original)
}

fn apply(topology: &Topology, config: &str) -> Child {
    Command::new("ip")
        .args(["netns", "exec", topology.node.netns.name(), &libraflux_bin(), "--control-socket"])
        .arg(&topology.node.socket)
        .args(["apply", "-c", config])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start libraflux apply")
}

#[test]
fn apply_drains_a_removed_backend_until_its_connection_closes() {
    let (topology, stop, config, original) = two_tcp_backends();
    topology.node.libraflux(&["apply", "-c", &config]).assert_code(0);
    let mut held = held_on_8081(&topology);

    write_config(&config, false, &original);
    let dry = topology.node.libraflux(&["apply", "-c", &config, "--dry-run"]);
    dry.assert_code(0);
    assert!(
        dry.stdout.contains("- backend 10.200.0.2:8081  drain, then delete (weight: 1 -> 0)"),
        "{}",
        dry.stdout
    );

    let mut applying = apply(&topology, &config);
    let deadline = Instant::now() + Duration::from_secs(15);
    while topology.weight("10.200.0.2:8081") != Some(0) {
        assert!(Instant::now() < deadline, "8081 never reached weight 0: {}", topology.node.saved());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(finished(&mut applying, Duration::from_millis(100)).is_none(), "apply must wait for the drain");
    assert_eq!(topology.weight("10.200.0.2:8081"), Some(0), "deleted while a connection was open");
    assert!(still_open(&mut held), "the established connection was cut");
    for _ in 0..4 {
        assert_eq!(connect(&topology.client).1, 8080, "a new connection reached the leaving backend");
    }

    drop(held);
    let (code, out) =
        finished(&mut applying, Duration::from_secs(30)).expect("apply ends once the connection closes");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("10.200.0.2:8081 in tcp:10.220.0.10:80: drained: no connections left"), "{out}");
    assert_eq!(topology.weight("10.200.0.2:8081"), None, "deleted once drained");
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn no_wait_leaves_weight_0_for_the_next_apply_and_immediate_deletes_at_once() {
    let (topology, stop, config, original) = two_tcp_backends();
    topology.node.libraflux(&["apply", "-c", &config]).assert_code(0);
    let mut held = held_on_8081(&topology);

    write_config(&config, false, &original);
    let left = topology.node.libraflux(&["apply", "-c", &config, "--no-wait"]);
    left.assert_code(0);
    assert!(left.stdout.contains("(--no-wait)"), "{}", left.stdout);
    assert_eq!(topology.weight("10.200.0.2:8081"), Some(0));
    let pending = topology.node.libraflux(&["apply", "-c", &config, "--no-wait"]);
    pending.assert_code(0);
    assert!(
        pending.stdout.contains("No changes. 1 backend(s) that left the configuration"),
        "{}",
        pending.stdout
    );
    assert!(still_open(&mut held), "the established connection was cut");

    let now = topology.node.libraflux(&["apply", "-c", &config, "--immediate"]);
    now.assert_code(0);
    assert_eq!(topology.weight("10.200.0.2:8081"), None, "--immediate deletes at once");
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn a_reload_drains_a_removed_backend_and_configuring_it_again_cancels_the_drain() {
    let (topology, stop, config, original) = two_tcp_backends();
    let daemon = Daemon::start(&topology.node, &config);
    let mut held = held_on_8081(&topology);

    write_config(&config, false, &original);
    daemon.signal(libc::SIGHUP);
    topology.wait_weight("10.200.0.2:8081", Some(0), &daemon);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(topology.weight("10.200.0.2:8081"), Some(0), "deleted while a connection was open");
    assert!(still_open(&mut held), "the established connection was cut:\n{}", daemon.log());

    // Back in the config: the drain is cancelled and the configured weight returns.
    write_config(&config, true, &original);
    daemon.signal(libc::SIGHUP);
    topology.wait_weight("10.200.0.2:8081", Some(1), &daemon);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !daemon.log().contains("removal drain cancelled") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(daemon.log().contains("removal drain cancelled"), "{}", daemon.log());

    // Removed again; the connection closes; the daemon deletes the backend.
    write_config(&config, false, &original);
    daemon.signal(libc::SIGHUP);
    topology.wait_weight("10.200.0.2:8081", Some(0), &daemon);
    assert!(still_open(&mut held), "the established connection was cut:\n{}", daemon.log());
    drop(held);
    topology.wait_weight("10.200.0.2:8081", None, &daemon);
    stop.store(true, Ordering::Relaxed);
}
