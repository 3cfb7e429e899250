//! Counters after real traffic through a NAT director: our STATS64 equal what
//! `ipvsadm -Ln --stats --exact` prints and what was sent; ZERO resets them.

use std::{net::UdpSocket, time::Duration};

use libraflux::{
    ipvs::{ServiceStatus, Stats64},
    model::Forwarding,
};
use libraflux_tests::NetNs;

use super::support::{add_ops, apply_all, dest, service, with_client, with_dests};

const VIP: &str = "10.50.0.100:5000";
const BACKEND: &str = "10.50.2.2:6000";
const PACKETS: u64 = 10;
const PAYLOAD: usize = 100;
/// IPv4 header + UDP header + payload: IPVS counts whole IP packets.
const PACKET_BYTES: u64 = 20 + 8 + PAYLOAD as u64;

/// client (10.50.1.2) -- director (10.50.1.1 | VIP 10.50.0.100 on a dummy | 10.50.2.1) -- backend (10.50.2.2)
struct Lab {
    client: NetNs,
    director: NetNs,
    backend: NetNs,
}

impl Lab {
    fn new() -> Self {
        let lab = Self {
            client: NetNs::new("client"),
            director: NetNs::new("director"),
            backend: NetNs::new("backend"),
        };
        lab.link(&lab.client, "10.50.1.2", "10.50.1.1", "lfc");
        lab.link(&lab.backend, "10.50.2.2", "10.50.2.1", "lfb");
        lab.director.ip(&["link", "add", "lfvip", "type", "dummy"]);
        lab.director.ip(&["link", "set", "lfvip", "up"]);
        lab.director.ip(&["addr", "add", "10.50.0.100/32", "dev", "lfvip"]);
        lab.director.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        lab
    }

    /// A veth from `peer` to the director; `peer` routes everything through the director.
    fn link(&self, peer: &NetNs, address: &str, gateway: &str, name: &str) {
        let inside = format!("{name}0");
        self.director.ip(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            &inside,
            "netns",
            peer.name(),
        ]);
        self.director.ip(&["addr", "add", &format!("{gateway}/24"), "dev", name]);
        self.director.ip(&["link", "set", name, "up"]);
        peer.ip(&["addr", "add", &format!("{address}/24"), "dev", &inside]);
        peer.ip(&["link", "set", &inside, "up"]);
        peer.ip(&["route", "add", "default", "via", gateway]);
    }
}

/// Counters of the one service and its one destination, as ipvsadm prints them:
/// `[conns, inpkts, outpkts, inbytes, outbytes]`.
fn ipvsadm_stats(netns: &NetNs) -> ([u64; 5], [u64; 5]) {
    let text = netns.exec("ipvsadm", &["-Ln", "--stats", "--exact"]);
    let numbers = |line: &str| -> [u64; 5] {
        let fields: Vec<u64> =
            line.split_whitespace().skip(2).map(|field| field.parse().expect("a counter")).collect();
        fields.try_into().unwrap_or_else(|fields| panic!("five counters in {line:?}: {fields:?}"))
    };
    let service =
        text.lines().find(|line| line.starts_with("UDP ")).unwrap_or_else(|| panic!("no service:\n{text}"));
    let dest = text
        .lines()
        .find(|line| line.trim_start().starts_with("-> 10."))
        .unwrap_or_else(|| panic!("no dest:\n{text}"));
    (numbers(service), numbers(dest))
}

fn totals(stats: &Stats64) -> [u64; 5] {
    [stats.connections, stats.packets_in, stats.packets_out, stats.bytes_in, stats.bytes_out]
}

fn ours(netns: &NetNs) -> ServiceStatus {
    let mut services =
        with_client(netns, |mut client| async move { client.list_services().await.expect("list") });
    assert_eq!(services.len(), 1);
    services.remove(0)
}

#[test]
fn stats_after_real_traffic_match_ipvsadm_and_zero_resets_them() {
    let lab = Lab::new();
    let udp = with_dests(service(&format!("udp:{VIP}"), "rr"), &[dest(BACKEND, 1, Forwarding::Nat)]);
    apply_all(&lab.director, add_ops(&[udp]));

    // Bound before any packet is sent, so none meets a closed port.
    let socket = lab.backend.enter(|| UdpSocket::bind(BACKEND).expect("backend bind"));
    let echo = std::thread::spawn(move || {
        socket.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buffer = [0; 2048];
        for _ in 0..PACKETS {
            let (length, from) = socket.recv_from(&mut buffer).expect("backend receives through the VIP");
            socket.send_to(&buffer[..length], from).expect("backend replies");
        }
    });
    lab.client.enter(|| {
        let socket = UdpSocket::bind("10.50.1.2:0").expect("client bind");
        socket.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buffer = [0; 2048];
        for index in 0..PACKETS {
            socket.send_to(&[u8::try_from(index).expect("small"); PAYLOAD], VIP).expect("send to the VIP");
            let (length, from) = socket.recv_from(&mut buffer).expect("the reply comes back through the VIP");
            assert_eq!(
                (length, from.to_string()),
                (PAYLOAD, VIP.to_owned()),
                "NAT rewrites the reply's source"
            );
        }
    });
    echo.join().expect("backend thread");
    // The totals are exact at once; wait out the estimator anyway so rates are non-zero too.
    std::thread::sleep(Duration::from_millis(2500));

    let expected = [1, PACKETS, PACKETS, PACKETS * PACKET_BYTES, PACKETS * PACKET_BYTES];
    let (service_line, dest_line) = ipvsadm_stats(&lab.director);
    assert_eq!((service_line, dest_line), (expected, expected), "ipvsadm counts what was sent");
    let status = ours(&lab.director);
    let dest = status.destinations.values().next().expect("one destination");
    assert_eq!(totals(&status.stats), service_line, "our service counters equal ipvsadm's");
    assert_eq!(totals(&dest.stats), dest_line, "our destination counters equal ipvsadm's");
    assert_eq!(dest.inactive_connections + dest.active_connections, 1, "the one UDP connection");

    with_client(&lab.director, |mut client| async move { client.zero().await.expect("ZERO") });
    assert_eq!(ipvsadm_stats(&lab.director), ([0; 5], [0; 5]), "ipvsadm after ZERO");
    let status = ours(&lab.director);
    assert_eq!(totals(&status.stats), [0; 5]);
    assert_eq!(totals(&status.destinations.values().next().expect("dest").stats), [0; 5]);
}
