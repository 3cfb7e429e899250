//! Link types other than plain Ethernet, on kernels that have them all built in or as modules
//! (the host's and the VM's): VLAN tags inside the packet, loopback, a tun device (an L3 link:
//! no link header), and the refusal of a link type the program cannot parse.
//!
//! Byte counts are `skb->len` at the hook, so they show what the hook saw: 14 bytes of Ethernet
//! header and 4 per VLAN tag carried in the packet (a tag the kernel holds in the skb's metadata
//! adds nothing), and nothing at all in front of the IP header on an L3 link.

use std::{
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use libraflux::observe::{
    DestKey, Direction, FlowCounter, FlowCounters, IPPROTO_TCP, IPPROTO_UDP, LinkType, ObserveError,
};
use libraflux_tests::{
    NetNs, VethPair, counter_at,
    frames::{self, ETH_P_8021AD, ETH_P_8021Q, TCP_SYN, frame, tcp, udp},
    tun::Tun,
};

use crate::{CLOSED_TCP_PORT, PAYLOAD, UDP_PORT, frame_counter, key, run_once, send_raw_frames};

/// The counts of `watched` once `counter` has seen `packets` packets to it, or after 5 s.
fn wait_for(counter: &FlowCounter, watched: &DestKey, packets: u64) -> FlowCounters {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counts = counter.counters().expect("read counters").get(watched).copied().unwrap_or_default();
        if counts.packets >= packets || Instant::now() > deadline {
            return counts;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Exact frames with zero, one and two VLAN tags in the packet (802.1Q, 802.1ad outside 802.1Q,
/// and two 802.1Q) count like untagged ones, by their full length; three tags are more than the
/// program reads (a parse error, not a count); a tagged frame that is not IP is not counted.
fn counts_behind_up_to_two_vlan_tags(client: IpAddr, vip: IpAddr) {
    let (udp_key, tcp_key) = (key(vip, UDP_PORT, IPPROTO_UDP), key(vip, CLOSED_TCP_PORT, IPPROTO_TCP));
    let mut counter = frame_counter(&[udp_key, tcp_key]);
    let datagram = frame(client, vip, frames::IPPROTO_UDP, &udp(40000, UDP_PORT, &[7; 10]));
    let syn = frame(client, vip, frames::IPPROTO_TCP, &tcp(40001, CLOSED_TCP_PORT, TCP_SYN));
    let (mut udp_bytes, mut tcp_bytes) = (0, 0);
    let tag_sets: [&[(u16, u16)]; 4] = [
        &[],
        &[(ETH_P_8021Q, 100)],
        &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 200)],
        &[(ETH_P_8021Q, 100), (ETH_P_8021Q, 200)],
    ];
    for tags in tag_sets {
        let (datagram, syn) = (frames::tagged(&datagram, tags), frames::tagged(&syn, tags));
        run_once(&mut counter, &datagram);
        run_once(&mut counter, &syn);
        udp_bytes += datagram.len() as u64;
        tcp_bytes += syn.len() as u64;
    }
    let three = [(ETH_P_8021AD, 100), (ETH_P_8021Q, 200), (ETH_P_8021Q, 300)];
    run_once(&mut counter, &frames::tagged(&datagram, &three));
    run_once(&mut counter, &frames::tagged(&frames::arp(), &[(ETH_P_8021Q, 100)]));

    let counts = counter.counters().expect("read counters");
    let (udp_counts, tcp_counts) = (counts[&udp_key], counts[&tcp_key]);
    assert_eq!(
        (udp_counts.packets, udp_counts.bytes, udp_counts.new_flows),
        (4, udp_bytes, 1),
        "one datagram behind each of 0, 1, 2 and 2 tags, one flow"
    );
    assert_eq!((tcp_counts.packets, tcp_counts.bytes, tcp_counts.new_flows), (4, tcp_bytes, 4));
    assert_eq!(counter.parse_errors().expect("read parse errors"), 1, "the frame with three tags");
}

#[test]
fn ipv4_counts_behind_up_to_two_vlan_tags() {
    counts_behind_up_to_two_vlan_tags("192.0.2.10".parse().unwrap(), "198.51.100.1".parse().unwrap());
}

#[test]
fn ipv6_counts_behind_up_to_two_vlan_tags() {
    counts_behind_up_to_two_vlan_tags("2001:db8::10".parse().unwrap(), "2001:db8:1::1".parse().unwrap());
}

/// Adds a veth pair between two namespaces, both ends up.
pub(super) fn veth(left: &NetNs, left_if: &str, right: &NetNs, right_if: &str) {
    left.ip(&["link", "add", left_if, "type", "veth", "peer", "name", right_if, "netns", right.name()]);
    left.ip(&["link", "set", left_if, "up"]);
    right.ip(&["link", "set", right_if, "up"]);
}

/// Tagged frames through a Linux bridge (no VLAN filtering, so it forwards them as they come),
/// sent raw by a client: client --veth-- [lf-a  bridge  lf-b] --veth-- server. Counted in the
/// bridge's namespace at the ingress of lf-a and the egress of lf-b.
///
/// What the hooks see: on receipt the kernel moves the outer tag out of the packet into the
/// skb's metadata before the ingress hook runs (`__netif_receive_skb_core`, whatever the
/// device's rx-vlan offload says), so one tag is gone and the others (QinQ's inner one, or two
/// of a frame sent with three) stay in the packet. The bridge forwards the skb with the outer
/// tag still in metadata, so the egress hook sees the same. Each frame counts 4 bytes less than
/// was sent.
fn counts_vlan_tags_a_bridge_forwards(client: IpAddr, vip: IpAddr) {
    const FRAMES: u64 = 10;
    let (client_ns, bridge, server) = (NetNs::new("client"), NetNs::new("bridge"), NetNs::new("server"));
    veth(&client_ns, "lf-c", &bridge, "lf-a");
    veth(&bridge, "lf-b", &server, "lf-s");
    bridge.ip(&["link", "add", "lf-br", "type", "bridge"]);
    for port in ["lf-a", "lf-b"] {
        bridge.ip(&["link", "set", port, "master", "lf-br"]);
    }
    bridge.ip(&["link", "set", "lf-br", "up"]);
    let tag_sets: [&[(u16, u16)]; 3] = [
        &[(ETH_P_8021Q, 100)],
        &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 200)],
        &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 200), (ETH_P_8021Q, 300)],
    ];
    let watched: Vec<DestKey> = (0..3).map(|n| key(vip, UDP_PORT + n, IPPROTO_UDP)).collect();
    let at_ingress = counter_at(&bridge, "lf-a", Direction::Ingress, watched.clone());
    let at_egress = counter_at(&bridge, "lf-b", Direction::Egress, watched.clone());
    let sent: Vec<Vec<u8>> = watched
        .iter()
        .zip(tag_sets)
        .map(|(to, tags)| {
            frames::tagged(
                &frame(client, vip, frames::IPPROTO_UDP, &udp(40000, to.port, &[7; PAYLOAD])),
                tags,
            )
        })
        .collect();
    let seen: Vec<(DestKey, u64)> =
        watched.iter().zip(&sent).map(|(to, frame)| (*to, frame.len() as u64 - 4)).collect();
    client_ns.enter(move || {
        for frame in &sent {
            send_raw_frames("lf-c", frame, FRAMES);
        }
    });
    for (at, counter) in [("ingress of lf-a", &at_ingress), ("egress of lf-b", &at_egress)] {
        for &(watched, len) in &seen {
            let counts = wait_for(counter, &watched, FRAMES);
            assert_eq!(
                (counts.packets, counts.bytes, counts.new_flows),
                (FRAMES, FRAMES * len, 1),
                "{FRAMES} frames to port {} at the {at}, {len} bytes each as the hook sees them",
                watched.port
            );
        }
        assert_eq!(counter.parse_errors().expect("read parse errors"), 0);
    }
}

#[test]
fn ipv4_counts_vlan_tags_a_bridge_forwards() {
    counts_vlan_tags_a_bridge_forwards("10.202.0.1".parse().unwrap(), "10.202.0.2".parse().unwrap());
}

#[test]
fn ipv6_counts_vlan_tags_a_bridge_forwards() {
    counts_vlan_tags_a_bridge_forwards("fd00:202::1".parse().unwrap(), "fd00:202::2".parse().unwrap());
}

/// Loopback (`ARPHRD_LOOPBACK`) frames its packets with a 14-byte Ethernet header.
#[test]
fn counts_on_loopback() {
    const DATAGRAMS: u64 = 10;
    let netns = NetNs::new("lo");
    let targets: [SocketAddr; 2] = ["127.0.0.1:5300".parse().unwrap(), "[::1]:5300".parse().unwrap()];
    let watched = targets.map(|to| key(to.ip(), to.port(), IPPROTO_UDP));
    let counter = counter_at(&netns, "lo", Direction::Ingress, watched.to_vec());
    netns.enter(move || {
        for to in targets {
            let receiver = UdpSocket::bind(to).expect("bind");
            receiver.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let sender = UdpSocket::bind(SocketAddr::new(to.ip(), 0)).expect("bind");
            for _ in 0..DATAGRAMS {
                sender.send_to(&[1; PAYLOAD], to).expect("send");
            }
            let mut buffer = [0; 2048];
            for n in 0..DATAGRAMS {
                receiver.recv(&mut buffer).unwrap_or_else(|err| panic!("datagram {n} to {to}: {err}"));
            }
        }
    });
    let counts = counter.counters().expect("read counters");
    for (watched, ip_header) in [(watched[0], 20), (watched[1], 40)] {
        let counts = counts[&watched];
        assert_eq!(
            (counts.packets, counts.bytes, counts.new_flows),
            (DATAGRAMS, DATAGRAMS * (14 + ip_header + 8 + PAYLOAD as u64), 1),
            "{}",
            watched.ip()
        );
    }
    assert_eq!(counter.parse_errors().expect("read parse errors"), 0);
}

/// A node with a tun device `lf-tun` (`ARPHRD_NONE`: IP packets, no link header), whose far
/// side is the test: the node's address on it is `NODE`, the far side's network is routed
/// through it, and a client namespace (the veth pair's left side) reaches that network through
/// the node, which forwards.
struct TunNode {
    pair: VethPair,
    tun: Tun,
}

impl TunNode {
    const IF: &str = "lf-tun";
    const NODE_V4: &str = "10.201.0.1";
    const FAR_V4: &str = "10.201.0.2";
    const NODE_V6: &str = "fd00:201::1";
    const FAR_V6: &str = "fd00:201::2";

    fn new() -> Self {
        let pair = VethPair::new();
        let tun = Tun::new(&pair.right, Self::IF);
        let node = &pair.right;
        node.ip(&["addr", "add", &format!("{}/24", Self::NODE_V4), "dev", Self::IF]);
        node.ip(&["addr", "add", &format!("{}/64", Self::NODE_V6), "dev", Self::IF, "nodad"]);
        node.ip(&["link", "set", Self::IF, "up"]);
        node.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
        pair.left.ip(&["route", "add", "10.201.0.0/24", "via", VethPair::RIGHT_V4]);
        pair.left.ip(&["-6", "route", "add", "fd00:201::/64", "via", VethPair::RIGHT_V6]);
        Self { pair, tun }
    }

    /// (node, far side) addresses of `target`'s family.
    fn addresses(target: IpAddr) -> (IpAddr, IpAddr) {
        let (node, far) =
            if target.is_ipv4() { (Self::NODE_V4, Self::FAR_V4) } else { (Self::NODE_V6, Self::FAR_V6) };
        (node.parse().unwrap(), far.parse().unwrap())
    }

    /// The next packet out of the tun that is `proto` to `to`, skipping the node's own chatter
    /// (IPv6 router solicitations, MLD reports); `None` if none comes within `timeout`.
    fn next_out(&self, to: IpAddr, proto: u8, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let packet = self.tun.recv(deadline.saturating_duration_since(Instant::now()))?;
            let (dst, next): (IpAddr, u8) = match packet[0] >> 4 {
                4 => (<[u8; 4]>::try_from(&packet[16..20]).unwrap().into(), packet[9]),
                _ => (<[u8; 16]>::try_from(&packet[24..40]).unwrap().into(), packet[6]),
            };
            if dst == to && next == proto {
                return Some(packet);
            }
        }
    }
}

/// What the far side writes arrives on the tun (ingress); what the node forwards to the far side
/// leaves by it (egress). Both are counted by their IP length: nothing precedes the IP header.
fn counts_on_a_tun_device(family: IpAddr) {
    const DATAGRAMS: u64 = 10;
    const SYNS: u64 = 5;
    let node = TunNode::new();
    let (node_addr, far) = TunNode::addresses(family);
    let inbound = SocketAddr::new(node_addr, UDP_PORT);
    let (outbound, syns) = (SocketAddr::new(far, UDP_PORT), SocketAddr::new(far, CLOSED_TCP_PORT));
    let [inbound_key, outbound_key, syn_key] = [
        key(node_addr, UDP_PORT, IPPROTO_UDP),
        key(far, UDP_PORT, IPPROTO_UDP),
        key(far, CLOSED_TCP_PORT, IPPROTO_TCP),
    ];
    let at_ingress = counter_at(&node.pair.right, TunNode::IF, Direction::Ingress, vec![inbound_key]);
    let at_egress = counter_at(&node.pair.right, TunNode::IF, Direction::Egress, vec![outbound_key, syn_key]);

    let receiver = node.pair.right.enter(move || UdpSocket::bind(inbound).expect("bind"));
    receiver.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let packet = frames::udp_packet(SocketAddr::new(far, 40000), inbound, &[3; PAYLOAD]);
    for _ in 0..DATAGRAMS {
        node.tun.send(&packet);
    }
    let mut buffer = [0; 2048];
    for n in 0..DATAGRAMS {
        receiver.recv(&mut buffer).unwrap_or_else(|err| panic!("datagram {n} written to the tun: {err}"));
    }
    let counts = at_ingress.counters().expect("read counters")[&inbound_key];
    assert_eq!(
        (counts.packets, counts.bytes, counts.new_flows),
        (DATAGRAMS, DATAGRAMS * packet.len() as u64, 1),
        "datagrams of {} bytes written into the tun",
        packet.len()
    );

    node.pair.left.enter(move || {
        let socket = UdpSocket::bind(SocketAddr::new(crate::unspecified(far), 0)).expect("bind");
        for _ in 0..DATAGRAMS {
            socket.send_to(&[5; PAYLOAD], outbound).expect("send");
        }
        for _ in 0..SYNS {
            // Nobody answers beyond the tun: the attempt times out after its first SYN.
            let _ = TcpStream::connect_timeout(&syns, Duration::from_millis(100));
        }
    });
    let mut sizes = Vec::new();
    for proto in [frames::IPPROTO_UDP, frames::IPPROTO_TCP] {
        let count = if proto == frames::IPPROTO_UDP { DATAGRAMS } else { SYNS };
        for n in 0..count {
            let packet = node.next_out(far, proto, Duration::from_secs(2));
            sizes.push(packet.unwrap_or_else(|| panic!("packet {n} ({proto}) never left by the tun")).len());
        }
    }
    let (udp_bytes, syn_bytes) = sizes.split_at(DATAGRAMS as usize);
    let counts = at_egress.counters().expect("read counters");
    let (udp_counts, syn_counts) = (counts[&outbound_key], counts[&syn_key]);
    assert_eq!(
        (udp_counts.packets, udp_counts.bytes, udp_counts.new_flows),
        (DATAGRAMS, udp_bytes.iter().sum::<usize>() as u64, 1),
        "forwarded datagrams out of the tun, as read from it"
    );
    assert_eq!(
        (syn_counts.packets, syn_counts.bytes, syn_counts.new_flows),
        (SYNS, syn_bytes.iter().sum::<usize>() as u64, SYNS),
        "forwarded SYNs out of the tun"
    );
    assert_eq!(at_ingress.parse_errors().expect("read") + at_egress.parse_errors().expect("read"), 0);
}

#[test]
fn ipv4_counts_on_a_tun_device() {
    counts_on_a_tun_device(TunNode::NODE_V4.parse().unwrap());
}

#[test]
fn ipv6_counts_on_a_tun_device() {
    counts_on_a_tun_device(TunNode::NODE_V6.parse().unwrap());
}

/// The node's own refusal of a datagram to a closed port leaves by the tun: it is read there
/// while its VIP is not shielded, and held back while it is.
fn refusals_leaving_a_tun_device_are_shielded(family: IpAddr) {
    const CLOSED_UDP_PORT: u16 = 5309;
    let node = TunNode::new();
    let (node_addr, far) = TunNode::addresses(family);
    let icmp = if family.is_ipv4() { frames::IPPROTO_ICMP } else { frames::IPPROTO_ICMPV6 };
    let counter = counter_at(&node.pair.right, TunNode::IF, Direction::Egress, Vec::new());
    let shield = counter.refusal_shield();
    let refused =
        frames::udp_packet(SocketAddr::new(far, 40000), SocketAddr::new(node_addr, CLOSED_UDP_PORT), b"x");
    node.tun.send(&refused);
    let refusal = node.next_out(far, icmp, Duration::from_secs(2)).expect("the node refuses the datagram");
    let (kind, code) = if family.is_ipv4() { (refusal[20], refusal[21]) } else { (refusal[40], refusal[41]) };
    let expected = if family.is_ipv4() {
        (frames::ICMP_DEST_UNREACH, frames::ICMP_PORT_UNREACH)
    } else {
        (frames::ICMPV6_DEST_UNREACH, frames::ICMPV6_PORT_UNREACH)
    };
    assert_eq!((kind, code), expected, "a port unreachable");

    let hold =
        shield.hold(key(node_addr, CLOSED_UDP_PORT, IPPROTO_UDP), Duration::from_secs(60)).expect("hold");
    node.tun.send(&refused);
    assert_eq!(node.next_out(far, icmp, Duration::from_millis(500)), None, "held back");
    assert_eq!(shield.held_back().expect("read"), 1);
    drop(hold);
    assert_eq!(counter.parse_errors().expect("read"), 0);
}

#[test]
fn ipv4_refusals_leaving_a_tun_device_are_shielded() {
    refusals_leaving_a_tun_device_are_shielded(TunNode::NODE_V4.parse().unwrap());
}

#[test]
fn ipv6_refusals_leaving_a_tun_device_are_shielded() {
    refusals_leaving_a_tun_device_are_shielded(TunNode::NODE_V6.parse().unwrap());
}

/// A link type the program cannot parse is refused at attach, naming the interface and the type;
/// nothing is attached. A tun device set to PPP's link type (`ARPHRD_PPP`, 512) stands in for a
/// PPP link.
#[test]
fn a_link_type_the_program_cannot_parse_is_refused() {
    let netns = NetNs::new("ppp");
    let tun = Tun::new(&netns, "lf-ppp");
    tun.set_link_type(512);
    netns.ip(&["link", "set", "lf-ppp", "up"]);
    let error = netns.enter(|| {
        let mut counter = frame_counter(&[]);
        let error = counter.attach("lf-ppp", Direction::Ingress).expect_err("PPP is not supported");
        assert!(!counter.is_attached("lf-ppp", Direction::Ingress));
        error
    });
    let ObserveError::UnsupportedLink { interface, link_type } = &error else {
        panic!("expected UnsupportedLink, got {error:?}");
    };
    assert_eq!((interface.as_str(), *link_type), ("lf-ppp", LinkType(512)));
    let message = error.to_string();
    assert!(message.contains("lf-ppp") && message.contains("PPP (ARPHRD 512)"), "{message}");
    let filters = netns.exec("tc", &["filter", "show", "dev", "lf-ppp", "ingress"]);
    assert!(!filters.contains("bpf"), "nothing attached (netlink clsact kernels): {filters}");
}
