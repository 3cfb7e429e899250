//! The refusal shield: the program drops the node's own port unreachable for a shielded VIP,
//! and nothing else. Exact frames through `BPF_PROG_TEST_RUN`.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use libraflux::observe::{IPPROTO_TCP, IPPROTO_UDP};
use libraflux_tests::frames::{self, Ipv4Shape, TCP_SYN, frame_with, tcp, udp};

use crate::{frame_counter, key, run_once};

/// A SYN from `client` to `vip:port` (TCP) or a datagram (UDP), as the frame IPVS refuses.
fn refused(client: IpAddr, vip: IpAddr, port: u16, proto: u8, shape: Ipv4Shape) -> Vec<u8> {
    let l4 = if proto == IPPROTO_TCP { tcp(40000, port, TCP_SYN) } else { udp(40000, port, b"ping") };
    frame_with(client, vip, proto, shape, &l4)
}

/// The node's port unreachable for `refused`, from an IP header of `shape` (IPv4).
fn port_unreachable(refused: &[u8], shape: Ipv4Shape) -> Vec<u8> {
    match refused[14] >> 4 {
        4 => frames::icmp_error(refused, frames::ICMP_DEST_UNREACH, frames::ICMP_PORT_UNREACH, shape),
        _ => frames::icmp_error(refused, frames::ICMPV6_DEST_UNREACH, frames::ICMPV6_PORT_UNREACH, shape),
    }
}

/// The program drops the node's port unreachable for a shielded VIP (address, protocol, port),
/// and nothing else: not before the hold nor after its release or its bound, not for another
/// port or protocol or another kind of unreachable, not the same refusal entering the node.
fn refusals_of_a_shielded_vip_are_dropped_and_nothing_else(client: IpAddr, vip: IpAddr) {
    let plain = Ipv4Shape::default();
    let syn = refused(client, vip, 80, IPPROTO_TCP, plain);
    let refusal = port_unreachable(&syn, plain);
    let mut counter = frame_counter(&[]);
    let shield = counter.refusal_shield();
    assert!(!counter.drops_when_sent(&refusal).expect("test run"), "not shielded yet");

    let shielded = key(vip, 80, IPPROTO_TCP);
    let hold = shield.hold(shielded, Duration::from_secs(60)).expect("hold");
    assert_eq!(shield.shielded().expect("list"), BTreeSet::from([shielded]));
    assert!(counter.drops_when_sent(&refusal).expect("test run"), "shielded: dropped");
    // The quoted header's own IHL places the port (IPv4 options in either header).
    let with_options = Ipv4Shape { options: 12, ..plain };
    let syn_with_options = refused(client, vip, 80, IPPROTO_TCP, with_options);
    assert!(counter.drops_when_sent(&port_unreachable(&syn_with_options, with_options)).expect("test run"));
    for (what, other) in [
        ("another port", port_unreachable(&refused(client, vip, 81, IPPROTO_TCP, plain), plain)),
        ("another protocol", port_unreachable(&refused(client, vip, 80, IPPROTO_UDP, plain), plain)),
        ("another VIP", port_unreachable(&refused(client, client, 80, IPPROTO_TCP, plain), plain)),
        ("the SYN itself", syn.clone()),
    ] {
        assert!(!counter.drops_when_sent(&other).expect("test run"), "{what} is not shielded");
    }
    if vip.is_ipv4() {
        let host_unreachable =
            frames::icmp_error(&syn, frames::ICMP_DEST_UNREACH, frames::ICMP_HOST_UNREACH, plain);
        assert!(!counter.drops_when_sent(&host_unreachable).expect("test run"), "only port unreachable");
    }
    run_once(&mut counter, &refusal);
    assert_eq!(shield.held_back().expect("read"), 2, "a received refusal passes: only the node's are held");

    // A second hold of the same VIP: the shield lasts until both end.
    let second = shield.hold(shielded, Duration::from_secs(60)).expect("second hold");
    hold.release().expect("release");
    assert!(counter.drops_when_sent(&refusal).expect("test run"), "still held by the second");
    drop(second);
    assert!(shield.shielded().expect("list").is_empty(), "the last release removes the entry");
    assert!(!counter.drops_when_sent(&refusal).expect("test run"), "released: passes again");

    // A hold past its bound drops nothing, even before it is released.
    let expired = shield.hold(shielded, Duration::ZERO).expect("hold");
    assert!(!counter.drops_when_sent(&refusal).expect("test run"), "past its bound");
    drop(expired);
    assert_eq!(shield.held_back().expect("read"), 3, "every drop counted");
    assert_eq!(counter.parse_errors().expect("read"), 0);
}

#[test]
fn ipv4_refusals_of_a_shielded_vip_are_dropped_and_nothing_else() {
    refusals_of_a_shielded_vip_are_dropped_and_nothing_else(
        "192.0.2.10".parse().unwrap(),
        "198.51.100.1".parse().unwrap(),
    );
}

#[test]
fn ipv6_refusals_of_a_shielded_vip_are_dropped_and_nothing_else() {
    refusals_of_a_shielded_vip_are_dropped_and_nothing_else(
        "2001:db8::10".parse().unwrap(),
        "2001:db8:1::1".parse().unwrap(),
    );
}

/// A refusal cut short inside the quoted header is a parse error and passes.
#[test]
fn a_truncated_refusal_passes_as_a_parse_error() {
    let (client, vip): (IpAddr, IpAddr) = ("192.0.2.10".parse().unwrap(), "198.51.100.1".parse().unwrap());
    let mut refusal =
        port_unreachable(&refused(client, vip, 80, IPPROTO_TCP, Ipv4Shape::default()), Ipv4Shape::default());
    refusal.truncate(14 + 20 + 8 + 20);
    let mut counter = frame_counter(&[]);
    let _hold =
        counter.refusal_shield().hold(key(vip, 80, IPPROTO_TCP), Duration::from_secs(60)).expect("hold");
    assert!(!counter.drops_when_sent(&refusal).expect("test run"), "no port to match: passes");
    assert_eq!(counter.parse_errors().expect("read"), 1);
}

/// A refusal that leaves with VLAN tags in the packet (a VLAN device with `reorder_hdr off`, or
/// stacked for QinQ: docs/observer.md) is read past them: dropped when its VIP is shielded, and
/// its VIP is still matched exactly.
fn refusals_behind_vlan_tags_are_shielded(client: IpAddr, vip: IpAddr) {
    let plain = Ipv4Shape::default();
    let refusal = port_unreachable(&refused(client, vip, 80, IPPROTO_TCP, plain), plain);
    let other_port = port_unreachable(&refused(client, vip, 81, IPPROTO_TCP, plain), plain);
    let mut counter = frame_counter(&[]);
    let shield = counter.refusal_shield();
    let _hold = shield.hold(key(vip, 80, IPPROTO_TCP), Duration::from_secs(60)).expect("hold");
    for tags in [
        &[(frames::ETH_P_8021Q, 100)][..],
        &[(frames::ETH_P_8021AD, 100), (frames::ETH_P_8021Q, 200)],
        &[(frames::ETH_P_8021Q, 100), (frames::ETH_P_8021Q, 200)],
    ] {
        let tagged = frames::tagged(&refusal, tags);
        assert!(counter.drops_when_sent(&tagged).expect("test run"), "shielded behind {tags:x?}");
        let other = frames::tagged(&other_port, tags);
        assert!(!counter.drops_when_sent(&other).expect("test run"), "another port behind {tags:x?}");
    }
    assert_eq!(shield.held_back().expect("read"), 3);
    assert_eq!(counter.parse_errors().expect("read"), 0);
}

#[test]
fn ipv4_refusals_behind_vlan_tags_are_shielded() {
    refusals_behind_vlan_tags_are_shielded("192.0.2.10".parse().unwrap(), "198.51.100.1".parse().unwrap());
}

#[test]
fn ipv6_refusals_behind_vlan_tags_are_shielded() {
    refusals_behind_vlan_tags_are_shielded("2001:db8::10".parse().unwrap(), "2001:db8:1::1".parse().unwrap());
}
