//! `libraflux drain` with real traffic through the VIP: an open TCP connection holds the drain
//! until it closes, new connections never reach the draining backend, a daemon restarted
//! mid-drain keeps it at weight 0 and finishes it; the timeout path exits 4; a steady UDP stream
//! (which IPVS keeps sending to the backend at weight 0) holds a UDP drain until it stops and
//! the quiet window passes, and the daemon's own UDP health checks to the backend do not.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use libraflux_tests::NetNs;

use super::{daemon::Daemon, support::Node};

/// client 10.201.0.2 -> director (VIP 10.220.0.10 on lfvip0) -> backends 10.200.0.2:{8080,8081};
/// the director's side of each link is `lf-c` (client) and `lf-d` (backends).
pub(super) struct Topology {
    pub(super) node: Node,
    pub(super) client: NetNs,
    pub(super) backends: NetNs,
}

fn link(director: &NetNs, peer: &NetNs, director_if: &str, peer_if: &str, subnet: &str) {
    director.ip(&["link", "add", director_if, "type", "veth", "peer", "name", peer_if, "netns", peer.name()]);
    director.ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", director_if]);
    director.ip(&["link", "set", director_if, "up"]);
    peer.ip(&["addr", "add", &format!("{subnet}.2/24"), "dev", peer_if]);
    peer.ip(&["link", "set", peer_if, "up"]);
    peer.ip(&["route", "add", "default", "via", &format!("{subnet}.1")]);
}

impl Topology {
    pub(super) fn new() -> Self {
        let node = Node::new();
        node.netns.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        let client = NetNs::new("client");
        let backends = NetNs::new("backends");
        link(&node.netns, &client, "lf-c", "eth0", "10.201.0");
        link(&node.netns, &backends, "lf-d", "eth0", "10.200.0");
        Self { node, client, backends }
    }

    pub(super) fn config(&self, protocol: &str, port: u16, backend_ports: [u16; 2]) -> String {
        self.config_with_health(protocol, port, backend_ports, &["type: none"])
    }

    /// [`Topology::config`] with `health` as the lines of the service's health block.
    fn config_with_health(
        &self,
        protocol: &str,
        port: u16,
        backend_ports: [u16; 2],
        health: &[&str],
    ) -> String {
        let health = health.join("\n      ");
        let text = format!(
            "node:\n  interface: [lfvip0, lf-d]\nmetrics:\n  listen: 127.0.0.1:19470\nservices:
  - name: svc
    protocol: {protocol}
    vip: 10.220.0.10
    port: {port}
    scheduler: rr
    health:
      {health}
    backends:
      - address: 10.200.0.2
        port: {}
      - address: 10.200.0.2
        port: {}
",
            backend_ports[0], backend_ports[1]
        );
        self.node.config("config.yaml", &text)
    }

    /// `libraflux drain ARGS` against this node's daemon, running in the background.
    fn drain(&self, args: &[&str]) -> Child {
        Command::new(&self.node.bin)
            .arg("--control-socket")
            .arg(&self.node.socket)
            .arg("drain")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start libraflux drain")
    }

    pub(super) fn weight(&self, backend: &str) -> Option<u32> {
        let table = self.node.netns.exec("ipvsadm", &["-Ln"]);
        let line = table.lines().find(|line| line.contains(backend))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }

    pub(super) fn wait_weight(&self, backend: &str, weight: Option<u32>, daemon: &Daemon) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.weight(backend) != weight {
            assert!(
                Instant::now() < deadline,
                "{backend} never reached weight {weight:?}:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// TCP listeners in the backend namespace that answer with their port and keep every
/// connection open until dropped.
pub(super) fn tcp_backends(netns: &NetNs, ports: [u16; 2]) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for port in ports {
        let listener = netns.enter(move || TcpListener::bind(("10.200.0.2", port)).expect("bind a backend"));
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            listener.set_nonblocking(true).unwrap();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.write_all(format!("{port}\n").as_bytes());
                        held.push(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
                // A client that closed: close our side too, so IPVS sees the connection end.
                held.retain_mut(|stream| {
                    let mut byte = [0u8; 1];
                    stream.set_nonblocking(true).unwrap();
                    !matches!(stream.read(&mut byte), Ok(0))
                });
            }
        });
    }
    stop
}

/// Connects from the client through the VIP; returns the stream and the backend port it reached.
pub(super) fn connect(client: &NetNs) -> (TcpStream, u16) {
    client.enter(|| {
        let mut stream =
            TcpStream::connect_timeout(&"10.220.0.10:80".parse().unwrap(), Duration::from_secs(3))
                .expect("connect through the VIP");
        stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut banner = [0u8; 5];
        stream.read_exact(&mut banner).expect("backend banner");
        let port = std::str::from_utf8(&banner[..4]).unwrap().parse().unwrap();
        (stream, port)
    })
}

pub(super) fn finished(child: &mut Child, within: Duration) -> Option<(i32, String)> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            child.stderr.take().unwrap().read_to_string(&mut out).unwrap();
            return Some((status.code().unwrap_or(-1), out));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn an_open_tcp_connection_holds_the_drain_across_a_daemon_restart_until_it_closes() {
    let topology = Topology::new();
    let stop = tcp_backends(&topology.backends, [8080, 8081]);
    let config = topology.config("tcp", 80, [8080, 8081]);
    let mut daemon = Daemon::start(&topology.node, &config);

    let held = (0..4).map(|_| connect(&topology.client)).find(|(_, port)| *port == 8081);
    let (held, _) = held.expect("round robin reaches 8081 within 4 connections");
    let mut drain = topology.drain(&["10.200.0.2:8081", "--grace", "0s", "--timeout", "120s", "--wait"]);
    topology.wait_weight("10.200.0.2:8081", Some(0), &daemon);

    for _ in 0..6 {
        let (_, port) = connect(&topology.client);
        assert_eq!(port, 8080, "a new connection reached the draining backend");
    }
    assert!(
        finished(&mut drain, Duration::from_secs(3)).is_none(),
        "the open connection must hold the drain"
    );

    // The daemon restarts mid-drain: the backend stays at weight 0 and the drain goes on.
    daemon.signal(libc::SIGTERM);
    let _ = daemon.child.wait();
    daemon = Daemon::start(&topology.node, &config);
    assert_eq!(topology.weight("10.200.0.2:8081"), Some(0), "restart put weight back:\n{}", daemon.log());
    assert!(finished(&mut drain, Duration::from_secs(2)).is_none(), "still held after the restart");

    drop(held);
    let (code, out) =
        finished(&mut drain, Duration::from_secs(30)).expect("the drain ends once the connection closes");
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    assert!(out.contains("drained: no connections left"), "{out}");
    assert_eq!(topology.weight("10.200.0.2:8081"), Some(0), "without --remove it stays at weight 0");

    // The timeout path: a connection to 8080 that never closes. 8080 is the last backend
    // serving (8081 stays at weight 0), so the drain needs --force.
    let (held_8080, port) = connect(&topology.client);
    assert_eq!(port, 8080);
    let mut timed =
        topology.drain(&["10.200.0.2:8080", "--grace", "0s", "--timeout", "3s", "--wait", "--force"]);
    let (code, out) = finished(&mut timed, Duration::from_secs(30)).expect("the drain times out");
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("TIMEOUT"), "{out}");

    let status = topology.node.libraflux(&["status"]);
    assert!(status.stdout.contains("drained (connections_closed)"), "{}", status.stdout);
    assert!(status.stdout.contains("drained (timeout)"), "{}", status.stdout);

    for backend in ["10.200.0.2:8080", "10.200.0.2:8081"] {
        let undone = topology.node.libraflux(&["undrain", backend]);
        assert_eq!(undone.code, 0, "{}{}", undone.stdout, undone.stderr);
        topology.wait_weight(backend, Some(1), &daemon);
    }
    drop(held_8080);

    // Two backends at once, one with --remove: each drain ends by its own connection closing.
    let mut conns: Vec<(TcpStream, u16)> = (0..2).map(|_| connect(&topology.client)).collect();
    conns.sort_by_key(|(_, port)| *port);
    let ports: Vec<u16> = conns.iter().map(|(_, port)| *port).collect();
    assert_eq!(ports, [8080, 8081], "round robin spreads two connections");
    let (to_8081, _) = conns.pop().unwrap();
    let (to_8080, _) = conns.pop().unwrap();
    // Whichever reaches the daemon second drains the last serving backend, so both say --force
    // (the CLI used to let the second through when the daemon's /status lagged the first).
    let both = ["--grace", "0s", "--timeout", "120s", "--wait", "--force"];
    let mut keep = topology.drain(&[&["10.200.0.2:8080"][..], &both].concat());
    let mut remove = topology.drain(&[&["10.200.0.2:8081", "--remove"][..], &both].concat());
    topology.wait_weight("10.200.0.2:8080", Some(0), &daemon);
    topology.wait_weight("10.200.0.2:8081", Some(0), &daemon);
    let status = topology.node.libraflux(&["status"]);
    assert_eq!(status.stdout.matches(", DRAINING").count(), 2, "{}", status.stdout);
    drop(to_8081);
    let (code, out) = finished(&mut remove, Duration::from_secs(30)).expect("the --remove drain ends");
    assert_eq!(code, 0, "{out}");
    topology.wait_weight("10.200.0.2:8081", None, &daemon);
    assert!(finished(&mut keep, Duration::from_secs(1)).is_none(), "the other drain still holds");
    drop(to_8080);
    let (code, out) = finished(&mut keep, Duration::from_secs(30)).expect("the other drain ends");
    assert_eq!(code, 0, "{out}");
    let undone = topology.node.libraflux(&["undrain", "10.200.0.2:8081"]);
    assert_eq!(undone.code, 0, "{}{}", undone.stdout, undone.stderr);
    topology.wait_weight("10.200.0.2:8081", Some(1), &daemon);
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn a_steady_udp_stream_holds_the_drain_until_it_stops_and_the_quiet_window_passes() {
    udp_stream_holds_the_drain_until_it_stops(&["type: none"], "[lfvip0, lf-d]", "(eBPF counter)");
}

/// The backend-facing interface is not in `node.interface`, so no counter sees the backend's
/// packets. Before, "never seen" read as quiet and the drain ended after its grace period while
/// the stream still flowed; now IPVS's InPkts holds it.
#[test]
fn a_udp_backend_no_counter_sees_is_drained_by_ipvs_inpkts() {
    udp_stream_holds_the_drain_until_it_stops(&["type: none"], "lfvip0", "(IPVS InPkts");
}

/// The daemon's own UDP health checks reach the backend every second, through the interface
/// the observer watches at egress; they are not client traffic and must not hold the drain
/// (the observer counts only packets that entered the node through an interface).
#[test]
fn the_daemons_own_udp_health_checks_do_not_hold_a_udp_drain() {
    udp_stream_holds_the_drain_until_it_stops(
        &["type: udp_echo", "payload: ping", "interval: 1s"],
        "[lfvip0, lf-d]",
        "(eBPF counter)",
    );
}

/// UDP backends that echo every datagram (so `udp_echo` checks pass) and a client stream through
/// the VIP: the drain of the backend the stream is pinned to holds while it flows and ends once
/// it has stopped for the quiet window, with `health` as the service's check, the observer on
/// `interfaces`, and `signal` in the message that says which signal ended it.
fn udp_stream_holds_the_drain_until_it_stops(health: &[&str], interfaces: &str, signal: &str) {
    let topology = Topology::new();
    for port in [5300, 5301] {
        let socket = topology.backends.enter(move || UdpSocket::bind(("10.200.0.2", port)).unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..len], from);
            }
        });
    }
    let config = topology.config_with_health("udp", 53, [5300, 5301], health);
    let text = std::fs::read_to_string(&config).unwrap().replace("[lfvip0, lf-d]", interfaces);
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&topology.node, &config);

    // One client 5-tuple; IPVS pins it to one backend and keeps sending there at weight 0.
    let streaming = Arc::new(AtomicBool::new(true));
    let sender = topology.client.enter(|| {
        let socket = UdpSocket::bind("10.201.0.2:40000").unwrap();
        socket.connect("10.220.0.10:53").unwrap();
        socket
    });
    let flag = Arc::clone(&streaming);
    let stream = std::thread::spawn(move || {
        let started = Instant::now();
        while flag.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
            let _ = sender.send(b"tick");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let table = topology.node.netns.exec("ipvsadm", &["-Lnc"]);
    let pinned: SocketAddr =
        if table.contains("10.200.0.2:5301") { "10.200.0.2:5301" } else { "10.200.0.2:5300" }
            .parse()
            .unwrap();
    let pinned_text = pinned.to_string();
    let mut drain =
        topology.drain(&[&pinned_text, "--grace", "1s", "--quiet", "3s", "--timeout", "120s", "--wait"]);
    topology.wait_weight(&pinned_text, Some(0), &daemon);
    assert!(
        finished(&mut drain, Duration::from_secs(6)).is_none(),
        "UDP traffic still flows to the backend at weight 0: the drain must hold\n{}",
        daemon.log()
    );

    streaming.store(false, Ordering::Relaxed);
    stream.join().unwrap();
    let stopped = Instant::now();
    let (code, out) =
        finished(&mut drain, Duration::from_secs(30)).expect("the drain ends after the quiet window");
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    assert!(out.contains("no traffic for the quiet window"), "{out}");
    assert!(out.contains(signal), "the drain names its signal {signal}: {out}");
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "ended before the quiet window: {:?}",
        stopped.elapsed()
    );
}

/// Fail-open comes after drains: draining the one backend still serving a service would take
/// all its traffic away, so it is refused (exit 3) unless forced.
#[test]
fn draining_the_last_serving_backend_is_refused_unless_forced() {
    let topology = Topology::new();
    let config = topology.config("tcp", 80, [8080, 8081]);
    let daemon = Daemon::start(&topology.node, &config);
    let drain = |backend: &str, force: bool| {
        let mut args = vec!["drain", backend];
        if force {
            args.push("--force");
        }
        topology.node.libraflux(&args)
    };
    drain("10.200.0.2:8080", false).assert_code(0);
    topology.wait_weight("10.200.0.2:8080", Some(0), &daemon);
    let refused = drain("10.200.0.2:8081", false);
    refused.assert_code(3);
    assert!(refused.stderr.contains("last backend serving"), "{}", refused.stderr);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(topology.weight("10.200.0.2:8081"), Some(1), "a refused drain changed the weight");
    drain("10.200.0.2:8081", true).assert_code(0);
    topology.wait_weight("10.200.0.2:8081", Some(0), &daemon);
}
