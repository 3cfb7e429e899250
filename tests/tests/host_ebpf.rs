//! Host tier: the eBPF per-destination counter on the host kernel (tcx attach), with real
//! traffic between two network namespaces. Counts must be exact.

use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use libraflux::observe::{DestKey, Direction, FlowCounter, FlowCounters, IPPROTO_TCP, IPPROTO_UDP};
use libraflux_tests::VethPair;

const UDP_PORT: u16 = 5300;
const CLOSED_TCP_PORT: u16 = 5301;
const UNWATCHED_UDP_PORT: u16 = 5399;
const DATAGRAMS: u64 = 100;
const PAYLOAD: usize = 64;
const SYNS: u64 = 20;

fn key(addr: IpAddr, port: u16, proto: u8) -> DestKey {
    match addr {
        IpAddr::V4(v4) => DestKey::ipv4(v4.octets(), port, proto),
        IpAddr::V6(v6) => DestKey::ipv6(v6.octets(), port, proto),
    }
}

/// Sends `DATAGRAMS` UDP datagrams and `SYNS` TCP connection attempts to a closed port (each is
/// exactly one SYN answered by one RST), plus unwatched traffic, from the left namespace.
fn send_traffic(pair: &VethPair, target: IpAddr) {
    let receiver = pair.right.enter(move || UdpSocket::bind(SocketAddr::new(target, UDP_PORT)).unwrap());
    pair.left.enter(move || {
        let unspecified: IpAddr =
            if target.is_ipv4() { "0.0.0.0".parse().unwrap() } else { "::".parse().unwrap() };
        let socket = UdpSocket::bind(SocketAddr::new(unspecified, 0)).unwrap();
        for _ in 0..DATAGRAMS {
            socket.send_to(&[0x5a; PAYLOAD], SocketAddr::new(target, UDP_PORT)).unwrap();
            socket.send_to(&[0x5a; PAYLOAD], SocketAddr::new(target, UNWATCHED_UDP_PORT)).unwrap();
        }
        for _ in 0..SYNS {
            let err =
                TcpStream::connect_timeout(&SocketAddr::new(target, CLOSED_TCP_PORT), Duration::from_secs(2))
                    .expect_err("nothing listens on the closed port");
            assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "expected a RST, got {err}");
        }
    });
    receiver.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2048];
    for n in 0..DATAGRAMS {
        let len = receiver.recv(&mut buf).unwrap_or_else(|err| panic!("datagram {n} not received: {err}"));
        assert_eq!(len, PAYLOAD);
    }
}

fn count_on_right_ingress(target: IpAddr) -> (FlowCounter, [DestKey; 3]) {
    let pair = VethPair::new();
    let keys = [
        key(target, UDP_PORT, IPPROTO_UDP),
        key(target, CLOSED_TCP_PORT, IPPROTO_TCP),
        key(target, UNWATCHED_UDP_PORT, IPPROTO_UDP),
    ];
    let watched = [keys[0], keys[1]];
    let counter = pair.right.enter(move || {
        let mut counter = FlowCounter::load(16).expect("load the eBPF counter");
        counter.attach(VethPair::RIGHT_IF, Direction::Ingress).expect("attach at ingress");
        for key in watched {
            counter.watch(key).expect("watch");
        }
        counter
    });
    send_traffic(&pair, target);
    (counter, keys)
}

/// `skb->len` at TC: Ethernet (14) + IP header + L4 header (+ payload).
fn assert_counts(counter: &FlowCounter, keys: [DestKey; 3], ip_header: u64) {
    const ETH: u64 = 14;
    const UDP_HEADER: u64 = 8;
    // Linux SYN: 20-byte header + MSS(4) + SACK_PERM(2) + timestamps(10) + NOP(1) + wscale(3).
    const SYN_HEADER: u64 = 40;
    let counts = counter.counters().expect("read counters");
    let [udp, tcp, unwatched] = keys;
    assert_eq!(
        counts.get(&udp).copied(),
        Some(FlowCounters {
            packets: DATAGRAMS,
            bytes: DATAGRAMS * (ETH + ip_header + UDP_HEADER + PAYLOAD as u64)
        }),
        "UDP datagrams to the watched port"
    );
    assert_eq!(
        counts.get(&tcp).copied(),
        Some(FlowCounters { packets: SYNS, bytes: SYNS * (ETH + ip_header + SYN_HEADER) }),
        "TCP SYNs to the watched closed port"
    );
    assert!(!counts.contains_key(&unwatched), "an unwatched destination must not get a map entry");
    assert_eq!(counts.len(), 2, "only watched destinations are in the map: {counts:?}");
    assert_eq!(counter.parse_errors().expect("read parse errors"), 0);
}

#[test]
fn counts_ipv4_udp_and_tcp_exactly() {
    let (counter, keys) = count_on_right_ingress(VethPair::RIGHT_V4.parse().unwrap());
    assert_counts(&counter, keys, 20);
}

#[test]
fn counts_ipv6_udp_and_tcp_exactly() {
    let (counter, keys) = count_on_right_ingress(VethPair::RIGHT_V6.parse().unwrap());
    assert_counts(&counter, keys, 40);
}

#[test]
fn watching_twice_keeps_counts_and_unwatch_forgets() {
    let target: IpAddr = VethPair::RIGHT_V4.parse().unwrap();
    let (mut counter, keys) = count_on_right_ingress(target);
    counter.watch(keys[0]).expect("watch again");
    assert_eq!(counter.counters().unwrap()[&keys[0]].packets, DATAGRAMS, "re-watching must not reset counts");
    counter.unwatch(&keys[0]).expect("unwatch");
    assert!(!counter.counters().unwrap().contains_key(&keys[0]));
}
