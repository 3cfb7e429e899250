//! Link types the host kernel (6.18, without `CONFIG_VLAN_8021Q`, `CONFIG_NET_IPIP`,
//! `CONFIG_IPV6_TUNNEL` or `CONFIG_WIREGUARD`) cannot make: VLAN sub-interfaces, ipip, ip6tnl and
//! WireGuard tunnels. Built only with `--features vm`, so they run in the VM tier (6.1, netlink
//! clsact), with the rest of the eBPF host tests.
//!
//! Every test routes real traffic through a node namespace: client -> link -> node -> link ->
//! server, and counts it in the node. Byte counts are `skb->len` at the hook, so they say what
//! the hook saw in front of the IP header (see links.rs).

use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    process::Command,
    time::Duration,
};

use libraflux::observe::{DestKey, Direction, FlowCounter, IPPROTO_TCP, IPPROTO_UDP};
use libraflux_tests::{NetNs, counter_at};

use super::links::veth;
use crate::{CLOSED_TCP_PORT, PAYLOAD, UDP_PORT, key, unspecified};

const DATAGRAMS: u64 = 20;
const SYNS: u64 = 5;
const CLOSED_UDP_PORT: u16 = 5309;
/// Linux SYN: 20-byte header + MSS(4) + SACK_PERM(2) + timestamps(10) + NOP(1) + wscale(3).
const SYN_HEADER: u64 = 40;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn ip_header(addr: IpAddr) -> u64 {
    if addr.is_ipv4() { 20 } else { 40 }
}

/// The watched destinations for traffic to `target`: its UDP port and its closed TCP port.
fn keys(target: IpAddr) -> Vec<DestKey> {
    vec![key(target, UDP_PORT, IPPROTO_UDP), key(target, CLOSED_TCP_PORT, IPPROTO_TCP)]
}

/// `DATAGRAMS` datagrams from `from` to `target:UDP_PORT`, bound in `to` (returns once all
/// arrived), and `SYNS` connection attempts to `target:CLOSED_TCP_PORT`, each refused by a RST.
fn send_traffic(from: &NetNs, to: &NetNs, target: IpAddr) {
    let receiver = to.enter(move || UdpSocket::bind(SocketAddr::new(target, UDP_PORT)).expect("bind"));
    receiver.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    from.enter(move || {
        let socket = UdpSocket::bind(SocketAddr::new(unspecified(target), 0)).expect("bind");
        for _ in 0..DATAGRAMS {
            socket.send_to(&[0x5a; PAYLOAD], SocketAddr::new(target, UDP_PORT)).expect("send");
        }
        for n in 0..SYNS {
            let to = SocketAddr::new(target, CLOSED_TCP_PORT);
            let err = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect_err("nothing listens");
            assert_eq!(
                err.kind(),
                ErrorKind::ConnectionRefused,
                "SYN {n} to {to}: expected a RST, got {err}"
            );
        }
    });
    let mut buffer = [0; 2048];
    for n in 0..DATAGRAMS {
        receiver
            .recv(&mut buffer)
            .unwrap_or_else(|err| panic!("datagram {n} to {target} not received: {err}"));
    }
}

/// `counter` counted the traffic of [`send_traffic`] to `target` exactly, each packet with
/// `link_header` bytes in front of its IP header.
fn assert_seen(counter: &FlowCounter, target: IpAddr, link_header: u64, at: &str) {
    let counts = counter.counters().expect("read counters");
    let [udp, tcp] = [keys(target)[0], keys(target)[1]].map(|watched| counts[&watched]);
    let ip = ip_header(target);
    assert_eq!(
        (udp.packets, udp.bytes, udp.new_flows),
        (DATAGRAMS, DATAGRAMS * (link_header + ip + 8 + PAYLOAD as u64), 1),
        "UDP to {target} at {at}, {link_header} bytes before the IP header"
    );
    assert_eq!(
        (tcp.packets, tcp.bytes, tcp.new_flows),
        (SYNS, SYNS * (link_header + ip + SYN_HEADER), SYNS),
        "SYNs to {target} at {at}, {link_header} bytes before the IP header"
    );
    assert_eq!(counter.parse_errors().expect("read parse errors"), 0, "at {at}");
}

/// The node's refusal of a datagram from `client` to `node_addr`'s closed port reaches the
/// client (ECONNREFUSED), until the shield of `counter` (attached at the egress the refusal
/// leaves by) holds that VIP: then the client hears nothing, and the shield counts one more.
fn assert_refusal_held_back(client: &NetNs, counter: &FlowCounter, node_addr: IpAddr) {
    let to = SocketAddr::new(node_addr, CLOSED_UDP_PORT);
    let ask = move || {
        let socket = UdpSocket::bind(SocketAddr::new(unspecified(node_addr), 0)).expect("bind");
        socket.connect(to).expect("connect");
        socket.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
        socket.send(b"x").expect("send");
        socket.recv(&mut [0; 16]).expect_err("nothing answers").kind()
    };
    assert_eq!(client.enter(ask), ErrorKind::ConnectionRefused, "the node refuses {to}");
    let shield = counter.refusal_shield();
    let before = shield.held_back().expect("read");
    let hold =
        shield.hold(key(node_addr, CLOSED_UDP_PORT, IPPROTO_UDP), Duration::from_secs(60)).expect("hold");
    let kind = client.enter(ask);
    assert!(matches!(kind, ErrorKind::WouldBlock | ErrorKind::TimedOut), "held back, not refused: {kind:?}");
    assert_eq!(shield.held_back().expect("read"), before + 1, "one refusal of {to} held back");
    drop(hold);
}

/// How the VLANs between the namespaces are made.
#[derive(Clone, Copy, Debug)]
enum Tagging {
    /// One 802.1Q tag (VLAN 100).
    Dot1q,
    /// 802.1ad (S-VLAN 100) outside 802.1Q (C-VLAN 200): QinQ.
    QinQ,
}

/// client --lf-c/lf-n0 (VLAN)-- node --lf-n1/lf-s (VLAN)-- server, with the VLAN devices made
/// as `tagging` says on both veth pairs; `lf-n0v`/`lf-n1v` are the node's VLAN devices that
/// carry its addresses.
struct VlanNodes {
    client: NetNs,
    node: NetNs,
    server: NetNs,
}

impl VlanNodes {
    /// `offloads`: whether the veths keep their VLAN offloads; off (`ethtool -K txvlan off
    /// rxvlan off`, and the same for 802.1ad), every tag is on the wire. `reorder_off`: the
    /// node's trunks whose VLAN devices have `reorder_hdr off` (the kernel's default is on), so
    /// that they write their tags into the packet when they build its header.
    fn new(tagging: Tagging, offloads: bool, reorder_off: &[&str]) -> Self {
        let (client, node, server) = (NetNs::new("client"), NetNs::new("node"), NetNs::new("server"));
        veth(&client, "lf-c", &node, "lf-n0");
        veth(&node, "lf-n1", &server, "lf-s");
        let sides = [
            (&client, "lf-c", "10.210.0.1/24", "fd00:210::1/64"),
            (&node, "lf-n0", "10.210.0.2/24", "fd00:210::2/64"),
            (&node, "lf-n1", "10.211.0.1/24", "fd00:211::1/64"),
            (&server, "lf-s", "10.211.0.2/24", "fd00:211::2/64"),
        ];
        for (netns, parent, v4, v6) in sides {
            if !offloads {
                netns.exec("ethtool", &["-K", parent, "txvlan", "off", "rxvlan", "off"]);
                netns.exec(
                    "ethtool",
                    &["-K", parent, "tx-vlan-stag-hw-insert", "off", "rx-vlan-stag-hw-parse", "off"],
                );
            }
            let reorder = !(std::ptr::eq(netns, &node) && reorder_off.contains(&parent));
            let top = Self::vlan_devices(netns, parent, tagging, reorder);
            netns.ip(&["addr", "add", v4, "dev", &top]);
            netns.ip(&["addr", "add", v6, "dev", &top, "nodad"]);
        }
        client.ip(&["route", "add", "10.211.0.0/24", "via", "10.210.0.2"]);
        client.ip(&["-6", "route", "add", "fd00:211::/64", "via", "fd00:210::2"]);
        server.ip(&["route", "add", "10.210.0.0/24", "via", "10.211.0.1"]);
        server.ip(&["-6", "route", "add", "fd00:210::/64", "via", "fd00:211::1"]);
        node.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
        Self { client, node, server }
    }

    /// Makes the VLAN device(s) on `parent` and returns the name of the one addresses go on.
    fn vlan_devices(netns: &NetNs, parent: &str, tagging: Tagging, reorder_hdr: bool) -> String {
        let reorder = if reorder_hdr { "on" } else { "off" };
        let top = format!("{parent}v");
        let (lower, id) = match tagging {
            Tagging::Dot1q => (parent.to_owned(), "100"),
            Tagging::QinQ => {
                let outer = format!("{parent}s");
                netns.ip(&[
                    "link",
                    "add",
                    "link",
                    parent,
                    "name",
                    &outer,
                    "type",
                    "vlan",
                    "proto",
                    "802.1ad",
                    "id",
                    "100",
                    "reorder_hdr",
                    reorder,
                ]);
                netns.ip(&["link", "set", &outer, "up"]);
                (outer, "200")
            }
        };
        netns.ip(&[
            "link",
            "add",
            "link",
            &lower,
            "name",
            &top,
            "type",
            "vlan",
            "id",
            id,
            "reorder_hdr",
            reorder,
        ]);
        netns.ip(&["link", "set", &top, "up"]);
        top
    }
}

/// Client-to-server traffic through the node, counted at the ingress of the trunk it arrives on
/// (`lf-n0`) and the egress of the trunk it leaves by (`lf-n1`), and at the same hooks of the
/// VLAN devices themselves (`lf-n0v`, `lf-n1v`); and the node's refusal held back at the egress
/// of `lf-n0`. `seen` is the bytes each of the four hooks sees in front of the IP header.
fn counts_through_vlans(nodes: &VlanNodes, seen: [u64; 4]) {
    let [trunk_in, trunk_out, device_in, device_out] = seen;
    let targets = [ip("10.211.0.2"), ip("fd00:211::2")];
    let watched: Vec<DestKey> = targets.iter().flat_map(|&target| keys(target)).collect();
    let at = [
        ("the ingress of trunk lf-n0", "lf-n0", Direction::Ingress, trunk_in),
        ("the egress of trunk lf-n1", "lf-n1", Direction::Egress, trunk_out),
        ("the ingress of VLAN device lf-n0v", "lf-n0v", Direction::Ingress, device_in),
        ("the egress of VLAN device lf-n1v", "lf-n1v", Direction::Egress, device_out),
    ];
    let counters: Vec<FlowCounter> = at
        .iter()
        .map(|&(_, interface, direction, _)| counter_at(&nodes.node, interface, direction, watched.clone()))
        .collect();
    for target in targets {
        send_traffic(&nodes.client, &nodes.server, target);
    }
    for (counter, (name, _, _, link_header)) in counters.iter().zip(at) {
        for target in targets {
            assert_seen(counter, target, link_header, name);
        }
    }
    let refusals = counter_at(&nodes.node, "lf-n0", Direction::Egress, Vec::new());
    for node_addr in [ip("10.210.0.2"), ip("fd00:210::2")] {
        assert_refusal_held_back(&nodes.client, &refusals, node_addr);
    }
}

/// The default VLAN device: its tag is kept in the skb's metadata, not in the packet, at the
/// trunk's egress; on receipt the kernel takes it out of the packet before the ingress hook.
#[test]
fn counts_through_an_802_1q_vlan() {
    counts_through_vlans(&VlanNodes::new(Tagging::Dot1q, true, &[]), [14; 4]);
}

/// The same with the veths' VLAN offloads off: the tag is on the wire, but neither hook sees it
/// in the packet (it is written after the egress hook and taken out before the ingress hook).
#[test]
fn counts_through_an_802_1q_vlan_without_vlan_offloads() {
    counts_through_vlans(&VlanNodes::new(Tagging::Dot1q, false, &[]), [14; 4]);
}

/// `reorder_hdr off` on the node's VLAN devices: they write their tag into the packet when they
/// build its header, so it is there at their own egress hook and the trunk's (and in the
/// refusal leaving by `lf-n0`). On receipt the kernel takes the tag out before the trunk's
/// ingress hook, then writes it back before the VLAN device's (`vlan_do_receive`), while
/// `skb->protocol` says IP: the program reads the ethertypes from the packet.
#[test]
fn counts_through_an_802_1q_vlan_that_writes_its_tag() {
    counts_through_vlans(&VlanNodes::new(Tagging::Dot1q, false, &["lf-n0", "lf-n1"]), [14, 18, 18, 18]);
}

/// QinQ: the inner tag is in the packet at both trunk hooks (written in when the inner VLAN
/// device hands the packet to the outer one; left there on receipt, where only the outer one is
/// taken out); so it is in the refusal leaving by `lf-n0`.
///
/// Not tested: stacked VLAN devices with `reorder_hdr off`. Made so on the node's side, they did
/// not carry the datagrams to the server in the VM (6.1), nor, on both sides, the ARP requests
/// (dropped by the receiving inner device). Two tags in the packet at a real hook are shown by
/// the bridge test in links.rs instead.
#[test]
fn counts_through_qinq() {
    counts_through_vlans(&VlanNodes::new(Tagging::QinQ, false, &[]), [18, 18, 14, 14]);
}

/// An L3 link between client and node.
#[derive(Clone, Copy, Debug)]
enum Tunnel {
    /// `ARPHRD_TUNNEL`: IPv4 in IPv4.
    Ipip,
    /// `ARPHRD_TUNNEL6`, mode any: IPv4 and IPv6 in IPv6.
    Ip6tnl,
    /// `ARPHRD_NONE`, IPv4 and IPv6 over UDP/IPv4.
    WireGuard,
}

/// client --underlay veth-- node --veth-- server, with `lf-t`, a `tunnel` between client and
/// node (overlay 10.221.0.0/24, fd00:221::/64) that the client routes the server's network
/// through, and the server's network 10.222.0.0/24, fd00:222::/64.
struct TunnelNodes {
    client: NetNs,
    node: NetNs,
    server: NetNs,
    /// WireGuard's key files, removed on drop.
    keys: Vec<String>,
}

impl Drop for TunnelNodes {
    fn drop(&mut self) {
        for file in &self.keys {
            let _ = std::fs::remove_file(file);
        }
    }
}

impl TunnelNodes {
    fn new(tunnel: Tunnel) -> Self {
        let (client, node, server) = (NetNs::new("client"), NetNs::new("node"), NetNs::new("server"));
        veth(&client, "lf-u0", &node, "lf-u1");
        veth(&node, "lf-n1", &server, "lf-s");
        let mut nodes = Self { client, node, server, keys: Vec::new() };
        let underlay = [
            (&nodes.client, "lf-u0", "10.220.0.1", "fd00:220::1"),
            (&nodes.node, "lf-u1", "10.220.0.2", "fd00:220::2"),
        ];
        for (netns, interface, v4, v6) in underlay {
            netns.ip(&["addr", "add", &format!("{v4}/24"), "dev", interface]);
            netns.ip(&["addr", "add", &format!("{v6}/64"), "dev", interface, "nodad"]);
        }
        match tunnel {
            Tunnel::Ipip => {
                nodes.client.ip(&[
                    "link",
                    "add",
                    "lf-t",
                    "type",
                    "ipip",
                    "local",
                    "10.220.0.1",
                    "remote",
                    "10.220.0.2",
                ]);
                nodes.node.ip(&[
                    "link",
                    "add",
                    "lf-t",
                    "type",
                    "ipip",
                    "local",
                    "10.220.0.2",
                    "remote",
                    "10.220.0.1",
                ]);
            }
            Tunnel::Ip6tnl => {
                for (netns, local, remote) in [
                    (&nodes.client, "fd00:220::1", "fd00:220::2"),
                    (&nodes.node, "fd00:220::2", "fd00:220::1"),
                ] {
                    netns.ip(&[
                        "link", "add", "lf-t", "type", "ip6tnl", "mode", "any", "local", local, "remote",
                        remote,
                    ]);
                }
            }
            Tunnel::WireGuard => nodes.wireguard(),
        }
        let overlay =
            [(&nodes.client, "10.221.0.1", "fd00:221::1"), (&nodes.node, "10.221.0.2", "fd00:221::2")];
        for (netns, v4, v6) in overlay {
            netns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "lf-t"]);
            if !matches!(tunnel, Tunnel::Ipip) {
                netns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "lf-t", "nodad"]);
            }
            netns.ip(&["link", "set", "lf-t", "up"]);
        }
        nodes.node.ip(&["addr", "add", "10.222.0.1/24", "dev", "lf-n1"]);
        nodes.node.ip(&["addr", "add", "fd00:222::1/64", "dev", "lf-n1", "nodad"]);
        nodes.server.ip(&["addr", "add", "10.222.0.2/24", "dev", "lf-s"]);
        nodes.server.ip(&["addr", "add", "fd00:222::2/64", "dev", "lf-s", "nodad"]);
        nodes.client.ip(&["route", "add", "10.222.0.0/24", "dev", "lf-t"]);
        nodes.client.ip(&["-6", "route", "add", "fd00:222::/64", "dev", "lf-t"]);
        nodes.server.ip(&["route", "add", "10.221.0.0/24", "via", "10.222.0.1"]);
        nodes.server.ip(&["-6", "route", "add", "fd00:221::/64", "via", "fd00:222::1"]);
        nodes.node.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
        nodes
    }

    /// A WireGuard link between client and node over the IPv4 underlay, keys made now.
    fn wireguard(&mut self) {
        let key_file = |role: &str| format!("/tmp/lf-wg-{}-{role}.key", std::process::id());
        let (client_key, node_key) = (key_file("client"), key_file("node"));
        for file in [&client_key, &node_key] {
            std::fs::write(file, libraflux_tests::run("wg", &["genkey"])).expect("write a WireGuard key");
            self.keys.push(file.clone());
        }
        let public = |file: &str| {
            let output = Command::new("wg")
                .arg("pubkey")
                .stdin(std::fs::File::open(file).expect("open key"))
                .output()
                .expect("run wg pubkey");
            assert!(output.status.success(), "wg pubkey: {}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout).expect("base64").trim().to_owned()
        };
        let (client_public, node_public) = (public(&client_key), public(&node_key));
        let sides = [
            (
                &self.client,
                &client_key,
                &node_public,
                "10.221.0.2/32,10.222.0.0/24,fd00:221::2/128,fd00:222::/64",
                "10.220.0.2:51820",
            ),
            (&self.node, &node_key, &client_public, "10.221.0.1/32,fd00:221::1/128", "10.220.0.1:51820"),
        ];
        for (netns, private, peer, allowed, endpoint) in sides {
            netns.ip(&["link", "add", "lf-t", "type", "wireguard"]);
            netns.exec(
                "wg",
                &[
                    "set",
                    "lf-t",
                    "private-key",
                    private,
                    "listen-port",
                    "51820",
                    "peer",
                    peer,
                    "allowed-ips",
                    allowed,
                    "endpoint",
                    endpoint,
                ],
            );
        }
    }
}

/// Client-to-server traffic arrives on the tunnel (its ingress), server-to-client traffic
/// leaves by it (its egress), the node's refusals leave by it too: all counted, or held back,
/// with nothing in front of the IP header.
fn counts_through_a_tunnel(tunnel: Tunnel) {
    let nodes = TunnelNodes::new(tunnel);
    let families: &[(&str, &str, &str)] = match tunnel {
        Tunnel::Ipip => &[("10.222.0.2", "10.221.0.1", "10.221.0.2")],
        _ => &[("10.222.0.2", "10.221.0.1", "10.221.0.2"), ("fd00:222::2", "fd00:221::1", "fd00:221::2")],
    };
    let servers: Vec<IpAddr> = families.iter().map(|(server, _, _)| ip(server)).collect();
    let clients: Vec<IpAddr> = families.iter().map(|(_, client, _)| ip(client)).collect();
    let inbound =
        counter_at(&nodes.node, "lf-t", Direction::Ingress, servers.iter().flat_map(|&a| keys(a)).collect());
    let outbound =
        counter_at(&nodes.node, "lf-t", Direction::Egress, clients.iter().flat_map(|&a| keys(a)).collect());
    for (&server, &client) in servers.iter().zip(&clients) {
        send_traffic(&nodes.client, &nodes.server, server);
        send_traffic(&nodes.server, &nodes.client, client);
        assert_seen(&inbound, server, 0, &format!("the ingress of {tunnel:?} lf-t"));
        assert_seen(&outbound, client, 0, &format!("the egress of {tunnel:?} lf-t"));
    }
    for (_, _, node_addr) in families {
        assert_refusal_held_back(&nodes.client, &outbound, ip(node_addr));
    }
}

#[test]
fn counts_through_an_ipip_tunnel() {
    counts_through_a_tunnel(Tunnel::Ipip);
}

#[test]
fn counts_through_an_ip6tnl_tunnel() {
    counts_through_a_tunnel(Tunnel::Ip6tnl);
}

#[test]
fn counts_through_a_wireguard_tunnel() {
    counts_through_a_tunnel(Tunnel::WireGuard);
}
