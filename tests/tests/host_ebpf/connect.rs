//! Connection outcomes of NAT backends with real traffic: client -> router -> backend, three
//! namespaces. The router counts the way the daemon does: one counter at the ingress of both
//! its links tracking the backends' replies, one at their egress watching the backends and
//! tracking their SYNs. There is no IPVS on the host: the client connects to the backend's own
//! address, routed through the router, which is what a NAT director's egress sees after DNAT.
//! Failures are made in the backend's namespace: a closed port, nftables dropping SYNs,
//! nftables rejecting with ICMP, a UDP port nobody listens on.

use std::{
    collections::BTreeSet,
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    time::Duration,
};

use libraflux::observe::{
    ConnectOutcomes, ConnectSide, DestKey, Direction, FlowCounter, FlowSource as _, IPPROTO_TCP, IPPROTO_UDP,
    Limits,
};
use libraflux_tests::NetNs;

/// Ports on the backend, one per way an attempt ends.
const CLOSED: u16 = 7001;
const LISTENING: u16 = 7002;
/// nftables drops every segment to it.
const DROPPED: u16 = 7003;
/// nftables answers every segment to it with ICMP host (IPv6: address) unreachable.
const REJECTED: u16 = 7004;
/// UDP, nothing bound: the backend's stack answers with port unreachable.
const CLOSED_UDP: u16 = 7005;
/// Accepts, then closes with SO_LINGER 0: a RST inside the connection.
const RESETTING: u16 = 7006;

const TCP_PORTS: [u16; 5] = [CLOSED, LISTENING, DROPPED, REJECTED, RESETTING];
const ROUTER_IFS: [&str; 2] = ["lf-cli", "lf-srv"];
const ATTEMPTS: u64 = 5;
/// Each attempt at a dropped port is given time for one retransmission (Linux's initial
/// retransmission timeout is 1 s), and no second one (3 s).
const DROPPED_ATTEMPTS: u64 = 3;
const DROPPED_TIMEOUT: Duration = Duration::from_millis(1600);

/// Addresses of one family: client, its gateway, the backend's gateway, backend; prefix length,
/// `ip`'s family option and what `ip addr add` needs besides (IPv6: no duplicate address
/// detection, so addresses are usable at once).
struct Plan {
    ip_family: &'static str,
    addr_options: &'static [&'static str],
    client: &'static str,
    client_gateway: &'static str,
    backend_gateway: &'static str,
    backend: &'static str,
    prefix: u8,
}

const V4: Plan = Plan {
    ip_family: "-4",
    addr_options: &[],
    client: "10.71.1.2",
    client_gateway: "10.71.1.1",
    backend_gateway: "10.71.2.1",
    backend: "10.71.2.2",
    prefix: 24,
};
const V6: Plan = Plan {
    ip_family: "-6",
    addr_options: &["nodad"],
    client: "fd00:71:1::2",
    client_gateway: "fd00:71:1::1",
    backend_gateway: "fd00:71:2::1",
    backend: "fd00:71:2::2",
    prefix: 64,
};

struct Lab {
    client: NetNs,
    backend: NetNs,
    /// The daemon's ingress counter: the backends' replies.
    replies: FlowCounter,
    /// The daemon's egress counter: the backends watched, their SYNs tracked.
    attempts: FlowCounter,
    backend_addr: IpAddr,
    /// Kept last: the counters detach before their namespace goes.
    _router: NetNs,
}

impl Lab {
    fn new(family: &Plan) -> Self {
        let (client, router, backend) = (NetNs::new("client"), NetNs::new("router"), NetNs::new("backend"));
        // Fixed MACs and permanent neighbours, both families: right after the links come up, the
        // router lost the first IPv6 segments it forwarded while neighbour discovery settled.
        let links =
            [(&client, "lf-c0", &router, ROUTER_IFS[0], 1), (&router, ROUTER_IFS[1], &backend, "lf-s0", 2)];
        for (near, near_if, far, far_if, link) in links {
            let (near_mac, far_mac) = (format!("02:71:00:00:0{link}:01"), format!("02:71:00:00:0{link}:02"));
            near.ip(&["link", "add", near_if, "address", &near_mac, "type", "veth", "peer", "name", far_if]);
            near.ip(&["link", "set", far_if, "address", &far_mac, "netns", far.name()]);
            for plan in [&V4, &V6] {
                let [near_addr, far_addr] = if link == 1 {
                    [plan.client, plan.client_gateway]
                } else {
                    [plan.backend_gateway, plan.backend]
                };
                for (netns, interface, address, peer, peer_mac) in [
                    (near, near_if, near_addr, far_addr, &far_mac),
                    (far, far_if, far_addr, near_addr, &near_mac),
                ] {
                    let prefixed = format!("{address}/{}", plan.prefix);
                    let add = [plan.ip_family, "addr", "add", &prefixed, "dev", interface];
                    netns.ip(&[&add[..], plan.addr_options].concat());
                    netns.ip(&[
                        "neigh",
                        "replace",
                        peer,
                        "lladdr",
                        peer_mac,
                        "dev",
                        interface,
                        "nud",
                        "permanent",
                    ]);
                }
            }
            near.ip(&["link", "set", near_if, "up"]);
            far.ip(&["link", "set", far_if, "up"]);
        }
        for plan in [&V4, &V6] {
            client.ip(&[plan.ip_family, "route", "add", "default", "via", plan.client_gateway]);
            backend.ip(&[plan.ip_family, "route", "add", "default", "via", plan.backend_gateway]);
        }
        router.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
        // Every refusal must be sent: the kernel limits ICMP errors per destination.
        backend.exec("sysctl", &["-qw", "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0"]);
        for rule in [
            "add table inet lf",
            "add chain inet lf input { type filter hook input priority 0 ; }",
            &format!("add rule inet lf input tcp dport {DROPPED} drop"),
            &format!(
                "add rule inet lf input meta nfproto ipv4 tcp dport {REJECTED} reject with icmp type host-unreachable"
            ),
            &format!(
                "add rule inet lf input meta nfproto ipv6 tcp dport {REJECTED} reject with icmpv6 type addr-unreachable"
            ),
        ] {
            backend.exec("nft", &[rule]);
        }
        let backends: BTreeSet<DestKey> = [&V4, &V6]
            .into_iter()
            .flat_map(|plan| {
                let addr: IpAddr = plan.backend.parse().unwrap();
                TCP_PORTS.map(|port| DestKey::new(addr, port, IPPROTO_TCP)).into_iter().chain([DestKey::new(
                    addr,
                    CLOSED_UDP,
                    IPPROTO_UDP,
                )])
            })
            .collect();
        let (replies, attempts) = router.enter(move || {
            let mut replies = FlowCounter::load(Limits { max_pending_syns: 1, ..Limits::destinations(16) })
                .expect("load the ingress counter");
            let mut attempts = FlowCounter::load(Limits::destinations(16)).expect("load the egress counter");
            for interface in ROUTER_IFS {
                replies.attach(interface, Direction::Ingress).expect("attach at ingress");
                attempts.attach(interface, Direction::Egress).expect("attach at egress");
            }
            // In the daemon's order: tracked, then watched.
            replies.sync_connects(&backends, ConnectSide::Replies).expect("track replies");
            attempts.sync_connects(&backends, ConnectSide::Attempts).expect("track attempts");
            attempts.sync(&backends).expect("watch the backends");
            (replies, attempts)
        });
        Self {
            client,
            backend,
            replies,
            attempts,
            backend_addr: family.backend.parse().unwrap(),
            _router: router,
        }
    }

    fn key(&self, port: u16, proto: u8) -> DestKey {
        DestKey::new(self.backend_addr, port, proto)
    }

    /// What both counters counted for the backend's `port`, summed as the daemon sums them.
    fn outcomes(&self, port: u16, proto: u8) -> ConnectOutcomes {
        let key = self.key(port, proto);
        let replies = self.replies.connect_outcomes().expect("read the ingress counter");
        let attempts = self.attempts.connect_outcomes().expect("read the egress counter");
        replies[&key].combine(attempts[&key])
    }

    /// `ATTEMPTS` connects from the client to the backend's `port`, each within `timeout`.
    fn connect(&self, port: u16, attempts: u64, timeout: Duration) -> Vec<std::io::Result<TcpStream>> {
        let to = SocketAddr::new(self.backend_addr, port);
        self.client.enter(move || (0..attempts).map(|_| TcpStream::connect_timeout(&to, timeout)).collect())
    }

    fn listen(&self, port: u16) -> TcpListener {
        let at = SocketAddr::new(self.backend_addr, port);
        self.backend.enter(move || TcpListener::bind(at).expect("listen on the backend"))
    }

    /// Nothing counted for the ports no test used: no outcome leaks to another backend.
    fn assert_quiet_except(&self, used: &[(u16, u8)]) {
        for (port, proto) in
            TCP_PORTS.map(|port| (port, IPPROTO_TCP)).into_iter().chain([(CLOSED_UDP, IPPROTO_UDP)])
        {
            if !used.contains(&(port, proto)) {
                assert_eq!(self.outcomes(port, proto), ConnectOutcomes::default(), "port {port} saw nothing");
            }
        }
        assert_eq!(
            self.replies.parse_errors().expect("read") + self.attempts.parse_errors().expect("read"),
            0
        );
    }
}

fn assert_all_fail(results: &[std::io::Result<TcpStream>], kind: ErrorKind) {
    for (n, result) in results.iter().enumerate() {
        match result {
            Err(err) => assert_eq!(err.kind(), kind, "attempt {n}: {err}"),
            Ok(stream) => panic!("attempt {n} connected: {stream:?}"),
        }
    }
}

fn a_closed_port_counts_refused(family: &Plan) {
    let lab = Lab::new(family);
    assert_all_fail(&lab.connect(CLOSED, ATTEMPTS, Duration::from_secs(2)), ErrorKind::ConnectionRefused);
    assert_eq!(
        lab.outcomes(CLOSED, IPPROTO_TCP),
        ConnectOutcomes { refused: ATTEMPTS, ..ConnectOutcomes::default() },
        "each SYN answered by one RST"
    );
    lab.assert_quiet_except(&[(CLOSED, IPPROTO_TCP)]);
}

#[test]
fn ipv4_a_closed_port_counts_refused() {
    a_closed_port_counts_refused(&V4);
}

#[test]
fn ipv6_a_closed_port_counts_refused() {
    a_closed_port_counts_refused(&V6);
}

fn a_listening_port_counts_answered(family: &Plan) {
    let lab = Lab::new(family);
    let _listener = lab.listen(LISTENING);
    for (n, result) in lab.connect(LISTENING, ATTEMPTS, Duration::from_secs(2)).into_iter().enumerate() {
        result.unwrap_or_else(|err| panic!("attempt {n}: {err}"));
    }
    assert_eq!(
        lab.outcomes(LISTENING, IPPROTO_TCP),
        ConnectOutcomes { answered: ATTEMPTS, ..ConnectOutcomes::default() },
        "one SYN-ACK per attempt, no failure"
    );
    lab.assert_quiet_except(&[(LISTENING, IPPROTO_TCP)]);
}

#[test]
fn ipv4_a_listening_port_counts_answered() {
    a_listening_port_counts_answered(&V4);
}

#[test]
fn ipv6_a_listening_port_counts_answered() {
    a_listening_port_counts_answered(&V6);
}

fn dropped_syns_count_one_syn_timeout_per_attempt(family: &Plan) {
    let lab = Lab::new(family);
    assert_all_fail(&lab.connect(DROPPED, DROPPED_ATTEMPTS, DROPPED_TIMEOUT), ErrorKind::TimedOut);
    assert_eq!(
        lab.outcomes(DROPPED, IPPROTO_TCP),
        ConnectOutcomes { syn_timeout: DROPPED_ATTEMPTS, ..ConnectOutcomes::default() },
        "each attempt's SYN retransmitted once after 1 s"
    );
    let watched = lab.attempts.counters().expect("read")[&lab.key(DROPPED, IPPROTO_TCP)];
    assert_eq!(
        watched.new_flows,
        2 * DROPPED_ATTEMPTS,
        "the SYNs the egress counter saw: first and retransmitted"
    );
    lab.assert_quiet_except(&[(DROPPED, IPPROTO_TCP)]);
}

#[test]
fn ipv4_dropped_syns_count_one_syn_timeout_per_attempt() {
    dropped_syns_count_one_syn_timeout_per_attempt(&V4);
}

#[test]
fn ipv6_dropped_syns_count_one_syn_timeout_per_attempt() {
    dropped_syns_count_one_syn_timeout_per_attempt(&V6);
}

/// nftables rejects TCP with ICMP host (address) unreachable, which aborts the connect at once;
/// a datagram to a closed UDP port gets the stack's port unreachable, which a connected socket
/// reports as refused.
fn icmp_unreachable_counts_for_tcp_and_udp(family: &Plan) {
    let lab = Lab::new(family);
    assert_all_fail(&lab.connect(REJECTED, ATTEMPTS, Duration::from_secs(2)), ErrorKind::HostUnreachable);
    let to = SocketAddr::new(lab.backend_addr, CLOSED_UDP);
    lab.client.enter(move || {
        let any: IpAddr = if to.is_ipv4() { "0.0.0.0".parse().unwrap() } else { "::".parse().unwrap() };
        let socket = UdpSocket::bind(SocketAddr::new(any, 0)).expect("bind");
        socket.connect(to).expect("connect");
        socket.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        for n in 0..ATTEMPTS {
            socket.send(b"ping").expect("send");
            let err = socket.recv(&mut [0; 16]).expect_err("nothing answers");
            assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "datagram {n}: {err}");
        }
    });
    // The client's kernel aborts a connect on the ICMP error, unless the error arrives while
    // connect() still holds the socket lock: then it is dropped (nstat's TcpExtLockDroppedIcmps),
    // the SYN is retransmitted after 1 s and the next error aborts. Over veth that happened to
    // every IPv6 attempt here, to no IPv4 one. Either way each SYN the router forwarded got one
    // ICMP, and each retransmission is a SYN timeout.
    let syns = lab.attempts.counters().expect("read")[&lab.key(REJECTED, IPPROTO_TCP)].new_flows;
    assert!((ATTEMPTS..=2 * ATTEMPTS).contains(&syns), "{syns} SYNs for {ATTEMPTS} attempts");
    assert_eq!(
        lab.outcomes(REJECTED, IPPROTO_TCP),
        ConnectOutcomes { unreachable: syns, syn_timeout: syns - ATTEMPTS, ..ConnectOutcomes::default() },
        "TCP: one ICMP per SYN ({syns} for {ATTEMPTS} attempts)"
    );
    assert_eq!(
        lab.outcomes(CLOSED_UDP, IPPROTO_UDP),
        ConnectOutcomes { unreachable: ATTEMPTS, ..ConnectOutcomes::default() },
        "UDP: one port unreachable per datagram"
    );
    lab.assert_quiet_except(&[(REJECTED, IPPROTO_TCP), (CLOSED_UDP, IPPROTO_UDP)]);
}

#[test]
fn ipv4_icmp_unreachable_counts_for_tcp_and_udp() {
    icmp_unreachable_counts_for_tcp_and_udp(&V4);
}

#[test]
fn ipv6_icmp_unreachable_counts_for_tcp_and_udp() {
    icmp_unreachable_counts_for_tcp_and_udp(&V6);
}

/// A server that accepts, reads a byte and then aborts (SO_LINGER 0) sends RST|ACK with its own
/// sequence number, not 0: the attempt was answered, nothing was refused. (It waits for the
/// byte so that the reset cannot reach the client before its connect returns.)
fn a_reset_inside_a_connection_is_not_refused(family: &Plan) {
    let lab = Lab::new(family);
    let listener = lab.listen(RESETTING);
    let server = std::thread::spawn(move || {
        for _ in 0..ATTEMPTS {
            let (mut stream, _) = listener.accept().expect("accept");
            stream.read_exact(&mut [0]).expect("the client's byte");
            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: a valid socket and a linger struct of the size given.
            let rc = unsafe {
                libc::setsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&raw const linger).cast(),
                    size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
        }
    });
    for (n, result) in lab.connect(RESETTING, ATTEMPTS, Duration::from_secs(2)).into_iter().enumerate() {
        let mut stream = result.unwrap_or_else(|err| panic!("attempt {n}: {err}"));
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        stream.write_all(b"x").expect("send a byte");
        let err = stream.read(&mut [0; 16]).expect_err("the server resets the connection");
        assert_eq!(err.kind(), ErrorKind::ConnectionReset, "attempt {n}: {err}");
    }
    server.join().expect("server");
    assert_eq!(
        lab.outcomes(RESETTING, IPPROTO_TCP),
        ConnectOutcomes { answered: ATTEMPTS, ..ConnectOutcomes::default() },
        "answered, then reset inside the connection: not refused"
    );
    lab.assert_quiet_except(&[(RESETTING, IPPROTO_TCP)]);
}

#[test]
fn ipv4_a_reset_inside_a_connection_is_not_refused() {
    a_reset_inside_a_connection_is_not_refused(&V4);
}

#[test]
fn ipv6_a_reset_inside_a_connection_is_not_refused() {
    a_reset_inside_a_connection_is_not_refused(&V6);
}
