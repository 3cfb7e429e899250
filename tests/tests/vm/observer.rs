//! The data-plane observer on the VM's kernels: on 6.1, where it attaches as a netlink clsact
//! filter, a restart after a crash replaces the stale filter instead of stacking a second one; on
//! 6.12 (tcx) a crash leaves nothing behind. On both, dropping the counter detaches it, and behind
//! a real IPVS NAT director its per-backend counts equal IPVS's own.

use std::{
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use libraflux::observe::{
    AttachMode, COUNT_PROGRAM, DestKey, Direction, FlowCounter, FlowCounters, Framing, IPPROTO_UDP, Limits,
};
use libraflux_tests::{NetNs, VethPair, attached_programs, counter_at, libraflux_bin};

const PAYLOAD: usize = 64;
const ETH: u64 = 14;

/// Sends `count` datagrams from `from` to `target`, a port bound in `to`, and returns once all
/// arrived: tc ingress runs before delivery, so the counts are final then (the receive side of a
/// veth may run later, in softirq, than the send returns).
fn send_datagrams(from: &NetNs, to: &NetNs, target: SocketAddr, count: u64) {
    let receiver = to.enter(move || UdpSocket::bind(target).expect("bind the receiver"));
    from.enter(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        for _ in 0..count {
            socket.send_to(&[0x5a; PAYLOAD], target).expect("send");
        }
    });
    receiver.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buffer = [0; 2048];
    for index in 0..count {
        receiver.recv(&mut buffer).unwrap_or_else(|err| panic!("datagram {index} not received: {err}"));
    }
}

#[test]
fn restart_after_a_crash_replaces_the_stale_filter_and_drop_detaches() {
    const DATAGRAMS: u64 = 30;
    let pair = VethPair::new();
    let right: IpAddr = VethPair::RIGHT_V4.parse().expect("address");
    let watched = DestKey::new(right, 5400, IPPROTO_UDP);
    let attached = || attached_programs(&pair.right, VethPair::RIGHT_IF, "ingress");

    // netlink clsact (before 6.6): a first process attaches, then dies without detaching, and its
    // filter stays. A tcx link dies with its process's file descriptors instead, which a leaked
    // counter in this process would not model: the SIGKILL test below covers tcx.
    if AttachMode::current() == AttachMode::NetlinkClsact {
        let crashed = counter_at(&pair.right, VethPair::RIGHT_IF, Direction::Ingress, vec![watched]);
        std::mem::forget(crashed);
        let stale = attached();
        assert_eq!(stale.len(), 1, "the crashed process's filter stays: {stale:?}");
        assert!(COUNT_PROGRAM.starts_with(&stale[0].name), "named {COUNT_PROGRAM}: {stale:?}");
    }

    // The restarted process attaches (twice, as a reconcile loop might) to the same hook.
    let mut counter = counter_at(&pair.right, VethPair::RIGHT_IF, Direction::Ingress, vec![watched]);
    counter = pair.right.enter(move || {
        counter.attach(VethPair::RIGHT_IF, Direction::Ingress).expect("attach again");
        counter
    });
    let program_id = counter.program_id(Framing::Ethernet).expect("program id");
    let programs = attached();
    assert_eq!(programs.len(), 1, "exactly one LibraFlux program after the restart: {programs:?}");
    assert_eq!(programs[0].id, program_id, "the one program is the new process's: {programs:?}");

    send_datagrams(&pair.left, &pair.right, SocketAddr::new(right, watched.port), DATAGRAMS);
    let counts = counter.counters().expect("read counters")[&watched];
    assert_eq!(
        (counts.packets, counts.new_flows),
        (DATAGRAMS, 1),
        "counted once per datagram: no stale program in front, nothing stacked"
    );

    // Dropped on this thread, outside the namespace: the counter enters the filter's namespace
    // to remove it (netlink removes by interface index in the caller's namespace).
    drop(counter);
    assert_eq!(attached(), [], "dropping the counter detaches its program");
}

/// The crash for real: `libraflux debug count-flows` attaches and is killed with SIGKILL (no
/// destructor runs). Its netlink filter stays (before 6.6) and the next process replaces it; its
/// tcx link is gone with the process (6.6 and later). Either way the next process's program is
/// the only one.
#[test]
fn a_process_killed_with_sigkill_leaves_a_filter_the_next_attach_replaces() {
    const DATAGRAMS: u64 = 10;
    let pair = VethPair::new();
    let right: IpAddr = VethPair::RIGHT_V4.parse().expect("address");
    let watched = DestKey::new(right, 5401, IPPROTO_UDP);
    let attached = || attached_programs(&pair.right, VethPair::RIGHT_IF, "ingress");
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", pair.right.name(), &libraflux_bin(), "debug", "count-flows"])
        .args(["--interface", VethPair::RIGHT_IF, "--watch", &format!("udp:{right}:{}", watched.port)])
        .args(["--duration", "60s"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run libraflux debug count-flows");
    // `ip netns exec` execs the program: the child's pid is libraflux's.
    let deadline = Instant::now() + Duration::from_secs(20);
    while attached().is_empty() {
        assert!(Instant::now() < deadline, "count-flows never attached");
        assert!(child.try_wait().expect("poll child").is_none(), "count-flows exited early");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let stale = attached();
    match AttachMode::current() {
        AttachMode::NetlinkClsact => {
            assert_eq!(stale.len(), 1, "the killed process's filter stays: {stale:?}")
        }
        AttachMode::Tcx => assert_eq!(stale, [], "the killed process's tcx link is gone with it"),
    }

    let mut counter = counter_at(&pair.right, VethPair::RIGHT_IF, Direction::Ingress, vec![watched]);
    let program_id = counter.program_id(Framing::Ethernet).expect("program id");
    let programs = attached();
    assert_eq!(programs.len(), 1, "exactly one LibraFlux program after the restart: {programs:?}");
    assert_eq!(programs[0].id, program_id, "it is the new program: {programs:?}");
    send_datagrams(&pair.left, &pair.right, SocketAddr::new(right, watched.port), DATAGRAMS);
    assert_eq!(counter.counters().expect("read counters")[&watched].packets, DATAGRAMS);
    drop(counter);
}

const VIP: &str = "10.60.0.100";
const VIP_PORT: u16 = 5000;
const BACKEND_PORT: u16 = 6000;
const CLIENT_PORTS: u64 = 8;
const DATAGRAMS_PER_PORT: u64 = 10;

/// client (10.60.1.2) -- lfc | director: VIP on a dummy, IPVS NAT | lfb1 -- backend 10.60.2.2
///                                                                 | lfb2 -- backend 10.60.3.2
/// Fixed MACs and permanent neighbour entries: no ARP queue can drop a datagram that IPVS
/// already counted.
struct NatLab {
    client: NetNs,
    director: NetNs,
    backends: [NetNs; 2],
}

impl NatLab {
    const BACKENDS: [&str; 2] = ["10.60.2.2", "10.60.3.2"];
    const BACKEND_IFS: [&str; 2] = ["lfb1", "lfb2"];

    fn new() -> Self {
        let lab = Self {
            client: NetNs::new("client"),
            director: NetNs::new("director"),
            backends: [NetNs::new("backend1"), NetNs::new("backend2")],
        };
        lab.link(&lab.client, "lfc", ["10.60.1.1", "10.60.1.2"], 1);
        for (index, backend) in lab.backends.iter().enumerate() {
            let gateway = format!("10.60.{}.1", index + 2);
            lab.link(backend, Self::BACKEND_IFS[index], [&gateway, Self::BACKENDS[index]], index + 2);
        }
        lab.director.ip(&["link", "add", "lfvip", "type", "dummy"]);
        lab.director.ip(&["link", "set", "lfvip", "up"]);
        lab.director.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lfvip"]);
        lab.director.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        let service = format!("{VIP}:{VIP_PORT}");
        lab.director.exec("ipvsadm", &["-A", "-u", &service, "-s", "rr"]);
        for backend in Self::BACKENDS {
            let real = format!("{backend}:{BACKEND_PORT}");
            lab.director.exec("ipvsadm", &["-a", "-u", &service, "-r", &real, "-m"]);
        }
        lab
    }

    /// A veth `name` (director side, `addresses[0]`) to `peer` (`addresses[1]`, routing
    /// everything through the director).
    fn link(&self, peer: &NetNs, name: &str, [gateway, address]: [&str; 2], id: usize) {
        let inside = format!("{name}0");
        let (outer_mac, inner_mac) = (format!("02:00:00:60:{id:02x}:01"), format!("02:00:00:60:{id:02x}:02"));
        self.director.ip(&[
            "link",
            "add",
            name,
            "address",
            &outer_mac,
            "type",
            "veth",
            "peer",
            "name",
            &inside,
            "address",
            &inner_mac,
            "netns",
            peer.name(),
        ]);
        self.director.ip(&["addr", "add", &format!("{gateway}/24"), "dev", name]);
        self.director.ip(&["link", "set", name, "up"]);
        self.director.ip(&[
            "neigh",
            "replace",
            address,
            "lladdr",
            &inner_mac,
            "dev",
            name,
            "nud",
            "permanent",
        ]);
        peer.ip(&["addr", "add", &format!("{address}/24"), "dev", &inside]);
        peer.ip(&["link", "set", &inside, "up"]);
        peer.ip(&["neigh", "replace", gateway, "lladdr", &outer_mac, "dev", &inside, "nud", "permanent"]);
        peer.ip(&["route", "add", "default", "via", gateway]);
    }
}

/// `[conns, inpkts, outpkts, inbytes, outbytes]` of the line whose address is `address`
/// in `ipvsadm -Ln --stats --exact`.
pub(super) fn ipvsadm_line(text: &str, address: &str) -> [u64; 5] {
    let line = text
        .lines()
        .find(|line| line.split_whitespace().any(|field| field == address))
        .unwrap_or_else(|| panic!("no line for {address}:\n{text}"));
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip_while(|field| *field != address)
        .skip(1)
        .map(|field| field.parse().unwrap_or_else(|err| panic!("counter {field:?} in {line:?}: {err}")))
        .collect();
    fields.try_into().unwrap_or_else(|fields| panic!("five counters in {line:?}: {fields:?}"))
}

/// Each backend counts the datagrams it receives until 2 s pass without one.
fn receive_all(backends: &[NetNs; 2]) -> Vec<std::thread::JoinHandle<u64>> {
    backends
        .iter()
        .zip(NatLab::BACKENDS)
        .map(|(netns, address)| {
            let socket = netns
                .enter(move || UdpSocket::bind(format!("{address}:{BACKEND_PORT}")).expect("backend bind"));
            std::thread::spawn(move || {
                socket.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
                let mut buffer = [0; 2048];
                let mut received = 0;
                while socket.recv(&mut buffer).is_ok() {
                    received += 1;
                }
                received
            })
        })
        .collect()
}

#[test]
fn per_backend_counts_behind_ipvs_nat_equal_ipvsadm() {
    let lab = NatLab::new();
    let vip: IpAddr = VIP.parse().expect("VIP");
    let vip_key = DestKey::new(vip, VIP_PORT, IPPROTO_UDP);
    let backend_keys = NatLab::BACKENDS
        .map(|backend| DestKey::new(backend.parse().expect("address"), BACKEND_PORT, IPPROTO_UDP));
    let counter = lab.director.enter(move || {
        let mut counter = FlowCounter::load(Limits::destinations(8)).expect("load the eBPF counter");
        // The client-facing side sees the VIP (before DNAT), the backend-facing sides at
        // egress see each backend (after DNAT).
        counter.attach("lfc", Direction::Ingress).expect("attach lfc ingress");
        for interface in NatLab::BACKEND_IFS {
            counter.attach(interface, Direction::Egress).expect("attach backend egress");
        }
        for key in [vip_key].into_iter().chain(backend_keys) {
            counter.watch(key).expect("watch");
        }
        counter
    });

    let receivers = receive_all(&lab.backends);
    lab.client.enter(|| {
        // Distinct source ports, all open at once: each a new IPVS connection and a new flow.
        let sockets: Vec<UdpSocket> =
            (0..CLIENT_PORTS).map(|_| UdpSocket::bind("10.60.1.2:0").expect("client bind")).collect();
        for socket in &sockets {
            for _ in 0..DATAGRAMS_PER_PORT {
                socket.send_to(&[0x5a; PAYLOAD], (VIP, VIP_PORT)).expect("send to the VIP");
            }
        }
    });
    let received: u64 = receivers.into_iter().map(|receiver| receiver.join().expect("receiver")).sum();
    let sent = CLIENT_PORTS * DATAGRAMS_PER_PORT;
    assert_eq!(received, sent, "every datagram reached a backend");
    // IPVS's totals are exact at once; its estimator (rates) runs every 2 s.
    std::thread::sleep(Duration::from_millis(2500));

    let stats = lab.director.exec("ipvsadm", &["-Ln", "--stats", "--exact"]);
    let counts = counter.counters().expect("read counters");
    let ours =
        |key: &DestKey| -> FlowCounters { counts.get(key).copied().expect("watched key has an entry") };
    for (backend, key) in NatLab::BACKENDS.iter().zip(&backend_keys) {
        let [conns, in_packets, _, in_bytes, _] = ipvsadm_line(&stats, &format!("{backend}:{BACKEND_PORT}"));
        let observed = ours(key);
        assert!(in_packets > 0, "rr sends to both backends:\n{stats}");
        assert_eq!(
            (observed.packets, observed.new_flows),
            (in_packets, conns),
            "backend {backend}: eBPF at egress vs ipvsadm InPkts/Conns\n{stats}"
        );
        // IPVS counts IP packets; TC's skb->len also has the Ethernet header.
        assert_eq!(observed.bytes, in_bytes + ETH * in_packets, "backend {backend} bytes\n{stats}");
    }
    let [conns, in_packets, _, in_bytes, _] = ipvsadm_line(&stats, &format!("{VIP}:{VIP_PORT}"));
    let observed = ours(&vip_key);
    assert_eq!((in_packets, conns), (sent, CLIENT_PORTS), "ipvsadm saw every datagram and flow\n{stats}");
    assert_eq!(
        (observed.packets, observed.new_flows),
        (in_packets, conns),
        "VIP at the client-facing ingress"
    );
    assert_eq!(observed.bytes, in_bytes + ETH * in_packets, "VIP bytes\n{stats}");
    assert_eq!(counter.parse_errors().expect("parse errors"), 0);
    drop(counter);
}

/// A DR service on a director whose client- and backend-facing interfaces are both
/// `node.interface`s: IPVS forwards each client datagram out of the backend-facing one with the
/// VIP still its destination. The daemon counts VIPs at ingress only, so each datagram once.
/// Beside it, a NAT service whose one backend has no listener: each connection through IPVS is
/// refused by the backend, and the daemon's metrics count each refusal once.
#[test]
fn the_daemon_counts_a_dr_vip_once_and_each_refusal_of_a_nat_backend() {
    const DATAGRAMS: u64 = 20;
    const CONNECTIONS: u64 = 5;
    const LISTEN: &str = "127.0.0.1:19472";
    let topology = super::drain::Topology::new();
    let config = topology.node.config(
        "config.yaml",
        &format!(
            "node:\n  interface: [lf-c, lf-d]\nmetrics:\n  listen: {LISTEN}\n  collect_interval: 1s\nservices:
  - name: dr
    protocol: udp
    vip: 10.220.0.10
    port: 53
    scheduler: rr
    forwarding: dr
    health:
      type: none
    backends:
      - address: 10.200.0.2
        port: 53
  - name: refusing
    protocol: tcp
    vip: 10.220.0.10
    port: 80
    scheduler: rr
    health:
      type: none
    backends:
      - address: 10.200.0.2
        port: 8099
"
        ),
    );
    let daemon = super::daemon::Daemon::start(&topology.node, &config);
    let scrape = |name: &str, labels: &[&str]| {
        super::daemon_reload::metric(&topology.node.http_get(LISTEN, "/metrics"), name, labels)
    };
    // At rest, once the write watch works, the statistics collector reads nothing but the
    // kernel's totals (docs/metrics.md, Collection).
    super::daemon_reload::wait_for(Duration::from_secs(60), "the write watch", &daemon, || {
        (scrape("libraflux_write_watch_attached", &[]) == Some(1.0)).then_some(())
    });
    let resting =
        super::daemon_reload::wait_for(Duration::from_secs(20), "collections at rest", &daemon, || {
            scrape("libraflux_stats_collections_total", &["read=\"none\""]).filter(|none| *none >= 2.0)
        });
    let backend_in = ["service=\"udp:10.220.0.10:53\"", "backend=\"10.200.0.2:53\""];
    assert_eq!(scrape("libraflux_ipvs_packets_in_total", &backend_in), Some(0.0));
    topology.client.enter(|| {
        let socket = UdpSocket::bind("10.201.0.2:0").unwrap();
        for _ in 0..DATAGRAMS {
            socket.send_to(b"dr", "10.220.0.10:53").unwrap();
        }
    });
    let ipvs_in = |node: &NetNs| {
        ipvsadm_line(&node.exec("ipvsadm", &["-Ln", "--stats", "--exact"]), "10.200.0.2:53")[1]
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while ipvs_in(&topology.node.netns) < DATAGRAMS {
        assert!(Instant::now() < deadline, "IPVS never forwarded {DATAGRAMS} datagrams:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The daemon publishes /status after each reconcile (every second here): wait for one that
    // saw the datagrams. Counting is done by then (it happens as the packet passes the hook).
    let status = loop {
        let status: serde_json::Value =
            serde_json::from_str(&topology.node.http_get(LISTEN, "/status")).expect("/status is JSON");
        let seen = status["traffic"]["udp:10.220.0.10:53"]["packets"].as_u64().unwrap_or(0);
        if seen >= DATAGRAMS || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let vip = &status["traffic"]["udp:10.220.0.10:53"];
    assert_eq!(
        vip["packets"],
        DATAGRAMS,
        "IPVS forwarded {DATAGRAMS} (DR); traffic: {}\nprograms at lf-c ingress: {:?}, egress: {:?}\n{}",
        status["traffic"],
        attached_programs(&topology.node.netns, "lf-c", "ingress"),
        attached_programs(&topology.node.netns, "lf-c", "egress"),
        daemon.log()
    );
    assert!(
        status["traffic"].get("udp:10.200.0.2:53").is_none(),
        "a DR backend is not watched: {}",
        status["traffic"]
    );
    // The datagrams moved the totals: the collector read again, and the backend's figures are
    // IPVS's.
    let read_in = super::daemon_reload::wait_for(
        Duration::from_secs(15),
        "the datagrams in the metrics",
        &daemon,
        || {
            scrape("libraflux_ipvs_packets_in_total", &backend_in)
                .filter(|packets| *packets >= DATAGRAMS as f64)
        },
    );
    assert_eq!(read_in, DATAGRAMS as f64, "{}", daemon.log());
    let services = scrape("libraflux_stats_collections_total", &["read=\"services\""]).unwrap_or(0.0);
    assert!(services >= 1.0, "no collection read the services after {resting} at rest");

    let failures = |kind: &str| {
        let kind = format!("kind=\"{kind}\"");
        let labels = ["destination=\"tcp:10.200.0.2:8099\"", kind.as_str()];
        super::daemon_reload::metric(
            &topology.node.http_get(LISTEN, "/metrics"),
            "libraflux_ebpf_connect_failures_total",
            &labels,
        )
    };
    // Tracked once its series exist (the watch list is synced on reconcile).
    super::daemon_reload::wait_for(
        Duration::from_secs(15),
        "the NAT backend's connect series",
        &daemon,
        || failures("refused"),
    );
    topology.client.enter(|| {
        for n in 0..CONNECTIONS {
            let err = TcpStream::connect_timeout(&"10.220.0.10:80".parse().unwrap(), Duration::from_secs(3))
                .expect_err("nothing listens on the backend");
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "connection {n}: {err}");
        }
    });
    let refused =
        super::daemon_reload::wait_for(Duration::from_secs(15), "the refusals in /metrics", &daemon, || {
            failures("refused").filter(|refused| *refused >= CONNECTIONS as f64)
        });
    assert_eq!(refused, CONNECTIONS as f64, "one RST per connection through IPVS NAT\n{}", daemon.log());
    assert_eq!((failures("syn_timeout"), failures("unreachable")), (Some(0.0), Some(0.0)));
}
