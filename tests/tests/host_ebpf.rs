//! Host tier: the eBPF per-destination counter on the host kernel (tcx attach), with real
//! traffic between two network namespaces. Counts must be exact. The VM tier runs these again on
//! 6.1, where the counter attaches as a netlink clsact filter, and on 6.12 (tcx); attach.rs holds
//! each kernel to its mode. Link types other than plain
//! Ethernet are tested in host_ebpf/links.rs (and vm_links.rs, in the VM only: the host kernel
//! cannot make those links), the refusal shield's frames in host_ebpf/shield.rs, the connection
//! outcomes of NAT backends in host_ebpf/connect.rs (traffic) and connect_frames.rs (frames).

mod host_ebpf {
    mod attach;
    mod connect;
    mod connect_frames;
    mod links;
    mod shield;
    mod slots;
    #[cfg(feature = "vm")]
    mod vm_links;
}

use std::{
    collections::BTreeSet,
    io::ErrorKind,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use libraflux::observe::{
    DestKey, Direction, FlowCounter, FlowSource as _, IPPROTO_TCP, IPPROTO_UDP, Limits, SyncReport,
    recent_flow_slot,
};
use libraflux_tests::{
    VethPair, counter_at,
    frames::{self, Ipv4Shape, TCP_ACK, TCP_SYN, frame, frame_with, tcp, udp},
};

const UDP_PORT: u16 = 5300;
const CLOSED_TCP_PORT: u16 = 5301;
const UNWATCHED_UDP_PORT: u16 = 5399;
const DATAGRAMS: u64 = 100;
const PAYLOAD: usize = 64;
const SYNS: u64 = 20;
const FLOW_PORT: u16 = 5302;
const FLOW_SOCKETS: u64 = 12;
const REPEATS: u64 = 5;

fn key(addr: IpAddr, port: u16, proto: u8) -> DestKey {
    DestKey::new(addr, port, proto)
}

fn v4() -> IpAddr {
    VethPair::RIGHT_V4.parse().unwrap()
}

fn v6() -> IpAddr {
    VethPair::RIGHT_V6.parse().unwrap()
}

fn unspecified(target: IpAddr) -> IpAddr {
    if target.is_ipv4() { "0.0.0.0".parse().unwrap() } else { "::".parse().unwrap() }
}

/// A counter loaded in the right namespace, attached at its ingress and watching `watched`.
fn counter_on_right_ingress(pair: &VethPair, watched: Vec<DestKey>) -> FlowCounter {
    let mut counter = counter_at(&pair.right, VethPair::RIGHT_IF, Direction::Ingress, watched);
    pair.right.enter(move || {
        // Attaching again where it is attached must change nothing: the counts the tests check
        // would double if it stacked a second program.
        counter.attach(VethPair::RIGHT_IF, Direction::Ingress).expect("attach again");
        counter
    })
}

/// UDP flows from the left namespace to `target:port`, bound in the right one: `sockets`
/// sockets (so as many source ports, all open at once) sending again and again.
struct UdpFlows {
    sockets: Vec<UdpSocket>,
    receiver: UdpSocket,
    to: SocketAddr,
}

impl UdpFlows {
    fn new(pair: &VethPair, target: IpAddr, port: u16, sockets: u64) -> Self {
        let to = SocketAddr::new(target, port);
        let receiver = pair.right.enter(move || UdpSocket::bind(to).unwrap());
        receiver.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let sockets = pair.left.enter(move || {
            (0..sockets).map(|_| UdpSocket::bind(SocketAddr::new(unspecified(target), 0)).unwrap()).collect()
        });
        Self { sockets, receiver, to }
    }

    /// Sends `repeats` datagrams from each socket and returns once all arrived: tc ingress runs
    /// before delivery, so the counts are final then (a veth's receive side may run in softirq
    /// after the send returned).
    fn send(&self, repeats: u64) {
        for socket in &self.sockets {
            for _ in 0..repeats {
                socket.send_to(&[0x5a; PAYLOAD], self.to).unwrap();
            }
        }
        let mut buf = [0u8; 2048];
        for n in 0..self.sockets.len() as u64 * repeats {
            self.receiver.recv(&mut buf).unwrap_or_else(|err| panic!("datagram {n} not received: {err}"));
        }
    }
}

/// Sends `DATAGRAMS` UDP datagrams and `SYNS` TCP connection attempts to a closed port (each is
/// exactly one SYN answered by one RST), plus unwatched traffic, from the left namespace.
fn send_traffic(pair: &VethPair, target: IpAddr) {
    let receiver = pair.right.enter(move || UdpSocket::bind(SocketAddr::new(target, UDP_PORT)).unwrap());
    pair.left.enter(move || {
        let socket = UdpSocket::bind(SocketAddr::new(unspecified(target), 0)).unwrap();
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
    let counter = counter_on_right_ingress(&pair, vec![keys[0], keys[1]]);
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
    let udp_counts = counts.get(&udp).copied().expect("the watched UDP destination has an entry");
    assert_eq!(
        (udp_counts.packets, udp_counts.bytes, udp_counts.new_flows),
        (DATAGRAMS, DATAGRAMS * (ETH + ip_header + UDP_HEADER + PAYLOAD as u64), 1),
        "UDP datagrams to the watched port, all from one socket: one new flow"
    );
    let tcp_counts = counts.get(&tcp).copied().expect("the watched TCP destination has an entry");
    assert_eq!(
        (tcp_counts.packets, tcp_counts.bytes, tcp_counts.new_flows),
        (SYNS, SYNS * (ETH + ip_header + SYN_HEADER), SYNS),
        "TCP SYNs to the watched closed port: each a new flow"
    );
    assert!(udp_counts.last_seen_ns > 0 && tcp_counts.last_seen_ns > 0, "last_seen is set: {counts:?}");
    let one = counter.flows(&udp).expect("read one destination").expect("watched");
    assert_eq!(
        (one.packets, one.bytes, one.new_flows),
        (udp_counts.packets, udp_counts.bytes, udp_counts.new_flows)
    );
    assert_eq!(counter.flows(&unwatched).expect("read one destination"), None);
    assert!(!counts.contains_key(&unwatched), "an unwatched destination must not get a map entry");
    assert_eq!(counts.len(), 2, "only watched destinations are in the map: {counts:?}");
    assert_eq!(counter.parse_errors().expect("read parse errors"), 0);
}

#[test]
fn counts_ipv4_udp_and_tcp_exactly() {
    let (counter, keys) = count_on_right_ingress(v4());
    assert_counts(&counter, keys, 20);
}

#[test]
fn counts_ipv6_udp_and_tcp_exactly() {
    let (counter, keys) = count_on_right_ingress(v6());
    assert_counts(&counter, keys, 40);
}

#[test]
fn watching_twice_keeps_counts_and_unwatch_forgets() {
    let (mut counter, keys) = count_on_right_ingress(v4());
    counter.watch(keys[0]).expect("watch again");
    assert_eq!(counter.counters().unwrap()[&keys[0]].packets, DATAGRAMS, "re-watching must not reset counts");
    counter.unwatch(&keys[0]).expect("unwatch");
    assert!(!counter.counters().unwrap().contains_key(&keys[0]));
}

/// N source ports -> N new flows; more datagrams on those 5-tuples -> no new flow.
fn counts_udp_new_flows_per_5_tuple(target: IpAddr) {
    let pair = VethPair::new();
    let watched = key(target, FLOW_PORT, IPPROTO_UDP);
    let counter = counter_on_right_ingress(&pair, vec![watched]);
    let flows = UdpFlows::new(&pair, target, FLOW_PORT, FLOW_SOCKETS);
    flows.send(REPEATS);
    let counts = counter.counters().expect("read counters")[&watched];
    assert_eq!(
        (counts.packets, counts.new_flows),
        (FLOW_SOCKETS * REPEATS, FLOW_SOCKETS),
        "{FLOW_SOCKETS} source ports x {REPEATS} datagrams"
    );
    flows.send(REPEATS);
    let counts = counter.counters().expect("read counters")[&watched];
    assert_eq!(
        (counts.packets, counts.new_flows),
        (2 * FLOW_SOCKETS * REPEATS, FLOW_SOCKETS),
        "the same 5-tuples again are not new flows"
    );
    assert_eq!(counter.parse_errors().expect("read parse errors"), 0);
}

#[test]
fn counts_ipv4_udp_new_flows_per_5_tuple() {
    counts_udp_new_flows_per_5_tuple(v4());
}

#[test]
fn counts_ipv6_udp_new_flows_per_5_tuple() {
    counts_udp_new_flows_per_5_tuple(v6());
}

/// last_seen is 0 before any packet, stands still without traffic, and advances with it.
fn last_seen_advances_only_with_traffic(target: IpAddr) {
    let pair = VethPair::new();
    let watched = key(target, FLOW_PORT, IPPROTO_UDP);
    let counter = counter_on_right_ingress(&pair, vec![watched]);
    let last_seen = || counter.counters().expect("read counters")[&watched].last_seen_ns;
    assert_eq!(last_seen(), 0, "no packet yet");

    let flow = UdpFlows::new(&pair, target, FLOW_PORT, 1);
    flow.send(1);
    let first = last_seen();
    assert!(first > 0, "set by the first packet");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(last_seen(), first, "no traffic, no change");

    flow.send(1);
    let second = last_seen();
    // Each reading may be up to two ticks (at most 20 ms) early: see FlowCounters::last_seen_ns.
    assert!(second >= first + 30_000_000, "advanced by the 50 ms slept, less two ticks: {first} -> {second}");

    let snapshot = counter.snapshot().expect("snapshot")[&watched];
    let idle = snapshot.idle_for(Instant::now()).expect("seen");
    assert!(idle < Duration::from_secs(5), "the last packet was just now: idle {idle:?}");
}

#[test]
fn ipv4_last_seen_advances_only_with_traffic() {
    last_seen_advances_only_with_traffic(v4());
}

#[test]
fn ipv6_last_seen_advances_only_with_traffic() {
    last_seen_advances_only_with_traffic(v6());
}

#[test]
fn sync_makes_the_watched_set_equal_and_keeps_counts() {
    let pair = VethPair::new();
    let target = v4();
    let [a, b, c] = [5310, 5311, 5312].map(|port| key(target, port, IPPROTO_UDP));
    let mut counter = counter_on_right_ingress(&pair, Vec::new());
    let report = counter.sync(&BTreeSet::from([a, b])).expect("sync");
    assert_eq!(report, SyncReport { added: 2, removed: 0 });
    UdpFlows::new(&pair, target, a.port, 1).send(3);
    UdpFlows::new(&pair, target, b.port, 1).send(3);

    let report = counter.sync(&BTreeSet::from([a, c])).expect("sync");
    assert_eq!(report, SyncReport { added: 1, removed: 1 });
    let snapshot = counter.snapshot().expect("snapshot");
    assert_eq!(snapshot.keys().copied().collect::<Vec<_>>(), [a, c], "b removed, c added");
    assert_eq!((snapshot[&a].packets, snapshot[&a].new_flows), (3, 1), "a keeps its counts");
    assert_eq!((snapshot[&c].packets, snapshot[&c].last_seen), (0, None), "c starts at zero");
    assert_eq!(counter.sync(&BTreeSet::from([a, c])).expect("sync"), SyncReport::default());
}

/// A counter that is loaded but not attached, watching `watched`: the kernel runs it on exact
/// frames with [`FlowCounter::test_run`], for header layouts the traffic tests do not produce.
fn frame_counter(watched: &[DestKey]) -> FlowCounter {
    let mut counter = FlowCounter::load(Limits::destinations(16)).expect("load the eBPF counter");
    for key in watched {
        counter.watch(*key).expect("watch");
    }
    counter
}

fn run_once(counter: &mut FlowCounter, frame: &[u8]) {
    counter.test_run(frame, 1).expect("BPF_PROG_TEST_RUN");
}

/// IPv4 options move the L4 header (read through the helper, not at a fixed offset); a
/// non-first fragment has no L4 header and is not counted; a frame cut short inside the headers
/// is a parse error, not a count.
#[test]
fn counts_ipv4_with_options_skips_later_fragments_and_reports_short_frames() {
    let (client, vip): (IpAddr, IpAddr) = ("192.0.2.10".parse().unwrap(), "198.51.100.1".parse().unwrap());
    let (udp_key, tcp_key) = (key(vip, UDP_PORT, IPPROTO_UDP), key(vip, CLOSED_TCP_PORT, IPPROTO_TCP));
    let mut counter = frame_counter(&[udp_key, tcp_key]);

    let with_options = Ipv4Shape { options: 8, ..Ipv4Shape::default() };
    let datagram =
        frame_with(client, vip, frames::IPPROTO_UDP, with_options, &udp(40000, UDP_PORT, &[7; 10]));
    run_once(&mut counter, &datagram);
    run_once(&mut counter, &datagram);
    let syn =
        frame_with(client, vip, frames::IPPROTO_TCP, with_options, &tcp(40001, CLOSED_TCP_PORT, TCP_SYN));
    let ack =
        frame_with(client, vip, frames::IPPROTO_TCP, with_options, &tcp(40001, CLOSED_TCP_PORT, TCP_ACK));
    run_once(&mut counter, &syn);
    run_once(&mut counter, &ack);
    // A later fragment whose payload starts like a datagram to the watched port: counting it
    // would mean reading payload as a header.
    let fragment = Ipv4Shape { fragment_offset: 185, ..Ipv4Shape::default() };
    run_once(
        &mut counter,
        &frame_with(client, vip, frames::IPPROTO_UDP, fragment, &udp(40000, UDP_PORT, &[7; 10])),
    );
    let mut short = frame(client, vip, frames::IPPROTO_UDP, &udp(40000, UDP_PORT, &[]));
    short.truncate(14 + 20 + 3);
    run_once(&mut counter, &short);

    let counts = counter.counters().expect("read counters");
    let udp_counts = counts[&udp_key];
    assert_eq!(
        (udp_counts.packets, udp_counts.bytes, udp_counts.new_flows),
        (2, 2 * datagram.len() as u64, 1),
        "two datagrams of one flow, with options; the fragment and the short frame not counted"
    );
    let tcp_counts = counts[&tcp_key];
    assert_eq!(
        (tcp_counts.packets, tcp_counts.bytes, tcp_counts.new_flows),
        (2, (syn.len() + ack.len()) as u64, 1),
        "a SYN (new) and an ACK (not new), flags read past the options"
    );
    assert_eq!(counter.parse_errors().expect("read parse errors"), 1, "the short frame");
}

/// The address bytes the recent-flow slot hashes: IPv4's four, IPv6's last four.
fn recent_slot_address(client: IpAddr) -> [u8; 4] {
    match client {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let [.., a, b, c, d] = v6.octets();
            [a, b, c, d]
        }
    }
}

/// Flows that share a recent-flow slot take turns in it; each is still new exactly once, because
/// the LRU map behind the slot remembers the others. A client at another address with the same
/// source port is another flow, whatever the destination's last-source shortcut remembers.
fn recent_flow_slots_keep_new_flows_exact(client: IpAddr, vip: IpAddr) {
    let watched = key(vip, FLOW_PORT, IPPROTO_UDP);
    let mut counter = frame_counter(&[watched]);
    let last4 = recent_slot_address(client);
    let slot = recent_flow_slot(last4, 40000);
    let ports: Vec<u16> = std::iter::once(40000)
        .chain(
            (1024..u16::MAX).filter(|&port| port != 40000 && recent_flow_slot(last4, port) == slot).take(2),
        )
        .collect();
    assert_eq!(ports.len(), 3, "three source ports that share slot {slot}");
    let [a, b, c] = [ports[0], ports[1], ports[2]]
        .map(|port| frame(client, vip, frames::IPPROTO_UDP, &udp(port, FLOW_PORT, &[1; 4])));
    let other_client = match client {
        IpAddr::V4(_) => "192.0.2.11".parse().unwrap(),
        IpAddr::V6(_) => "2001:db8::11".parse().unwrap(),
    };
    let d = frame(other_client, vip, frames::IPPROTO_UDP, &udp(ports[0], FLOW_PORT, &[1; 4]));
    for datagram in [&a, &a, &b, &a, &b, &c, &a, &c, &b, &a, &d, &d, &a] {
        run_once(&mut counter, datagram);
    }
    let counts = counter.counters().expect("read counters")[&watched];
    assert_eq!(
        (counts.packets, counts.new_flows),
        (13, 4),
        "ports {ports:?} in slot {slot} from {client}, and port {} from {other_client}: four flows",
        ports[0]
    );
}

#[test]
fn ipv4_recent_flow_slots_keep_new_flows_exact() {
    recent_flow_slots_keep_new_flows_exact("192.0.2.10".parse().unwrap(), "198.51.100.1".parse().unwrap());
}

#[test]
fn ipv6_recent_flow_slots_keep_new_flows_exact() {
    recent_flow_slots_keep_new_flows_exact("2001:db8::10".parse().unwrap(), "2001:db8:1::1".parse().unwrap());
}

/// Keeps the calling thread on one CPU until dropped, so that every `test_run` of a test sees
/// the same per-CPU maps.
struct PinnedToOneCpu(libc::cpu_set_t);

impl PinnedToOneCpu {
    fn new() -> Self {
        // SAFETY: cpu_set_t is plain bits; the calls get valid pointers of the right size, and
        // pid 0 is the calling thread.
        unsafe {
            let mut before: libc::cpu_set_t = std::mem::zeroed();
            let size = size_of::<libc::cpu_set_t>();
            assert_eq!(libc::sched_getaffinity(0, size, &raw mut before), 0, "sched_getaffinity");
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(libc::sched_getcpu() as usize, &mut one);
            assert_eq!(libc::sched_setaffinity(0, size, &raw const one), 0, "sched_setaffinity");
            Self(before)
        }
    }
}

impl Drop for PinnedToOneCpu {
    fn drop(&mut self) {
        // SAFETY: as above; restores the set read in `new`.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const self.0) };
    }
}

/// The difference docs/observer.md states between the recent-flow slots and the LRU table alone:
/// a flow the full table has evicted but that still sits in its CPU's slot is not new again; once
/// another flow has taken the slot, it is.
fn recent_flow_slot_outlives_an_lru_eviction(client: IpAddr, vip: IpAddr) {
    const FLOW_TABLE: u32 = 64;
    let watched = key(vip, FLOW_PORT, IPPROTO_UDP);
    let mut counter = FlowCounter::load(Limits { max_udp_flows: FLOW_TABLE, ..Limits::destinations(16) })
        .expect("load the eBPF counter");
    counter.watch(watched).expect("watch");
    let _pinned = PinnedToOneCpu::new();
    let last4 = recent_slot_address(client);
    let datagram = |port| frame(client, vip, frames::IPPROTO_UDP, &udp(port, FLOW_PORT, &[1; 4]));
    let (a_port, a_slot) = (40000, recent_flow_slot(last4, 40000));
    let same_slot = (1024..u16::MAX)
        .find(|&port| port != a_port && recent_flow_slot(last4, port) == a_slot)
        .expect("a port sharing the slot");
    // Eight tables' worth of other flows, none in A's slot: the table evicts A.
    let others: Vec<u16> = (1024..u16::MAX)
        .filter(|&port| port != a_port && recent_flow_slot(last4, port) != a_slot)
        .take(8 * FLOW_TABLE as usize)
        .collect();

    run_once(&mut counter, &datagram(a_port));
    for &port in &others {
        run_once(&mut counter, &datagram(port));
    }
    run_once(&mut counter, &datagram(a_port));
    let after_evictions = counter.counters().expect("read counters")[&watched].new_flows;
    assert_eq!(after_evictions, 1 + others.len() as u64, "A again, from its slot: not new");

    run_once(&mut counter, &datagram(same_slot));
    run_once(&mut counter, &datagram(a_port));
    let counts = counter.counters().expect("read counters")[&watched];
    assert_eq!(
        (counts.packets, counts.new_flows),
        (others.len() as u64 + 4, after_evictions + 2),
        "port {same_slot} took slot {a_slot}; then A is new again: the table had forgotten it"
    );
}

#[test]
fn ipv4_recent_flow_slot_outlives_an_lru_eviction() {
    recent_flow_slot_outlives_an_lru_eviction("192.0.2.10".parse().unwrap(), "198.51.100.1".parse().unwrap());
}

#[test]
fn ipv6_recent_flow_slot_outlives_an_lru_eviction() {
    recent_flow_slot_outlives_an_lru_eviction(
        "2001:db8::10".parse().unwrap(),
        "2001:db8:1::1".parse().unwrap(),
    );
}

/// Sends `frame` `count` times out of `interface` through an AF_PACKET socket, as is.
fn send_raw_frames(interface: &str, frame: &[u8], count: u64) {
    let name = std::ffi::CString::new(interface).unwrap();
    // SAFETY: plain socket calls with valid pointers and lengths; the descriptor is owned below.
    unsafe {
        let index = libc::if_nametoindex(name.as_ptr());
        assert_ne!(index, 0, "no interface {interface}");
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        let _owned = <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd);
        let mut to: libc::sockaddr_ll = std::mem::zeroed();
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = i32::try_from(index).unwrap();
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&frame[..6]);
        for n in 0..count {
            let sent = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(sent, frame.len() as isize, "frame {n}: {}", std::io::Error::last_os_error());
        }
    }
}

/// A frame sent through AF_PACKET that is larger than a page arrives with only its 14-byte
/// Ethernet header in the skb's linear area (net/packet/af_packet.c, `packet_snd` and
/// `packet_alloc_skb`; veth forwards the skb as it is), so the program reads the IP and UDP
/// headers through `bpf_skb_load_bytes`. They must count exactly like linear ones. (Checked
/// once with a build that also counted each packet taking that path: all 10, in both families.)
fn counts_frames_whose_headers_are_not_linear(target: IpAddr) {
    const FRAMES: u64 = 10;
    let pair = VethPair::new();
    pair.left.ip(&["link", "set", VethPair::LEFT_IF, "mtu", "9000"]);
    pair.right.ip(&["link", "set", VethPair::RIGHT_IF, "mtu", "9000"]);
    let watched = key(target, UDP_PORT, IPPROTO_UDP);
    let counter = counter_on_right_ingress(&pair, vec![watched]);
    let client: IpAddr = if target.is_ipv4() {
        VethPair::LEFT_V4.parse().unwrap()
    } else {
        VethPair::LEFT_V6.parse().unwrap()
    };
    let big = frame(client, target, frames::IPPROTO_UDP, &udp(40000, UDP_PORT, &[7; 6000]));
    let len = big.len() as u64;
    pair.left.enter(move || send_raw_frames(VethPair::LEFT_IF, &big, FRAMES));
    // The frames carry no checksums, so nothing delivers them to a socket to wait on: wait for
    // the counter instead (the receive side may still be running), bounded.
    let deadline = Instant::now() + Duration::from_secs(5);
    let counts = loop {
        let counts = counter.counters().expect("read counters")[&watched];
        if counts.packets >= FRAMES || Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        (counts.packets, counts.bytes, counts.new_flows),
        (FRAMES, FRAMES * len, 1),
        "{FRAMES} frames of {len} bytes, one flow"
    );
    assert_eq!(counter.parse_errors().expect("read parse errors"), 0);
}

#[test]
fn counts_ipv4_frames_whose_headers_are_not_linear() {
    counts_frames_whose_headers_are_not_linear(v4());
}

#[test]
fn counts_ipv6_frames_whose_headers_are_not_linear() {
    counts_frames_whose_headers_are_not_linear(v6());
}

/// A node's own packets (health checks, its own clients) leave with no ingress interface: the
/// counter at its egress skips them, while the same datagrams count at the peer's ingress. (The
/// VM test `observer::per_backend_counts_behind_ipvs_nat_equal_ipvsadm` shows that forwarded
/// packets do count at egress.)
#[test]
fn packets_the_node_sends_itself_are_not_counted_at_egress() {
    let pair = VethPair::new();
    let target = v4();
    let watched = key(target, UDP_PORT, IPPROTO_UDP);
    let at_peer_ingress = counter_on_right_ingress(&pair, vec![watched]);
    let at_own_egress = counter_at(&pair.left, VethPair::LEFT_IF, Direction::Egress, vec![watched]);
    send_traffic(&pair, target);
    assert_eq!(at_peer_ingress.counters().expect("read counters")[&watched].packets, DATAGRAMS);
    let own = at_own_egress.counters().expect("read counters")[&watched];
    assert_eq!((own.packets, own.bytes, own.new_flows), (0, 0, 0), "sent by the node itself");
}
