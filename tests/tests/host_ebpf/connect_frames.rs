//! Connection outcomes from exact frames (`BPF_PROG_TEST_RUN`): which flags, sequence numbers and
//! ICMP messages count as what, including header layouts real traffic here does not produce
//! (IPv4 options in an ICMP error and in the packet it quotes).

use std::net::IpAddr;

use libraflux::observe::{ConnectOutcomes, ConnectSide, DestKey, FlowCounter, IPPROTO_TCP, IPPROTO_UDP};
use libraflux_tests::frames::{
    self, Ipv4Shape, TCP_ACK, TCP_RST, TCP_SYN, frame, frame_with, icmp_error, tcp_with_seq, udp,
};

use crate::{frame_counter, key, run_once};

const PORT: u16 = 8080;
const CLIENT_PORT: u16 = 40000;

fn outcomes(counter: &FlowCounter, backend: &DestKey) -> ConnectOutcomes {
    counter.connect_outcomes().expect("read")[backend]
}

/// A segment from the backend `from:PORT` back to the client.
fn reply(from: IpAddr, client: IpAddr, flags: u8, seq: u32) -> Vec<u8> {
    frame(from, client, frames::IPPROTO_TCP, &tcp_with_seq(PORT, CLIENT_PORT, flags, seq))
}

/// The ICMP (ICMPv6) destination unreachable with `code` about `sent`, the frame it quotes.
fn unreachable(sent: &[u8], code: u8, shape: Ipv4Shape) -> Vec<u8> {
    let kind = if sent[14] >> 4 == 4 { frames::ICMP_DEST_UNREACH } else { frames::ICMPV6_DEST_UNREACH };
    icmp_error(sent, kind, code, shape)
}

/// Replies count by their flags (and a RST by its sequence number); ICMP by its type and the
/// quoted packet's destination, any code.
fn replies_count_by_flags_sequence_and_quoted_destination(client: IpAddr, backend: IpAddr) {
    let tracked = key(backend, PORT, IPPROTO_TCP);
    let udp_tracked = key(backend, PORT, IPPROTO_UDP);
    let mut counter = frame_counter(&[]);
    for backend in [tracked, udp_tracked] {
        counter.track(backend, ConnectSide::Replies).expect("track");
    }
    for (what, flags, seq, answered_refused) in [
        ("SYN-ACK: answered", TCP_SYN | TCP_ACK, 5000, (1, 0)),
        ("RST|ACK with sequence number 0: refused", TCP_RST | TCP_ACK, 0, (1, 1)),
        ("RST|ACK inside a connection: not counted", TCP_RST | TCP_ACK, 77, (1, 1)),
        ("RST without ACK: not counted", TCP_RST, 0, (1, 1)),
        ("SYN|ACK|RST: not counted", TCP_SYN | TCP_ACK | TCP_RST, 0, (1, 1)),
        ("ACK: not counted", TCP_ACK, 0, (1, 1)),
    ] {
        run_once(&mut counter, &reply(backend, client, flags, seq));
        let after = outcomes(&counter, &tracked);
        assert_eq!((after.answered, after.refused), answered_refused, "{what}");
    }
    // From another port of the same address: not a tracked backend.
    let other_port = frame(
        backend,
        client,
        frames::IPPROTO_TCP,
        &tcp_with_seq(PORT + 1, CLIENT_PORT, TCP_RST | TCP_ACK, 0),
    );
    run_once(&mut counter, &other_port);

    let plain = Ipv4Shape::default();
    let options = Ipv4Shape { options: 12, ..plain };
    let syn = frame_with(
        client,
        backend,
        frames::IPPROTO_TCP,
        options,
        &tcp_with_seq(CLIENT_PORT, PORT, TCP_SYN, 9),
    );
    let datagram = frame(client, backend, frames::IPPROTO_UDP, &udp(CLIENT_PORT, PORT, b"ping"));
    let host_code = if backend.is_ipv4() { frames::ICMP_HOST_UNREACH } else { 3 };
    run_once(&mut counter, &unreachable(&syn, host_code, options));
    run_once(&mut counter, &unreachable(&datagram, frames::ICMP_PORT_UNREACH, plain));
    // Another ICMP error (time exceeded, 11 and 3) and an unreachable about another port pass.
    let time_exceeded = if backend.is_ipv4() { 11 } else { 3 };
    run_once(&mut counter, &icmp_error(&syn, time_exceeded, 0, plain));
    let to_other_port =
        frame(client, backend, frames::IPPROTO_TCP, &tcp_with_seq(CLIENT_PORT, PORT + 1, TCP_SYN, 9));
    run_once(&mut counter, &unreachable(&to_other_port, host_code, plain));

    assert_eq!(
        outcomes(&counter, &tracked),
        ConnectOutcomes { refused: 1, syn_timeout: 0, unreachable: 1, answered: 1 },
        "one SYN-ACK, one RST answering a SYN, one unreachable quoting a SYN (options in both headers)"
    );
    assert_eq!(
        outcomes(&counter, &udp_tracked),
        ConnectOutcomes { unreachable: 1, ..ConnectOutcomes::default() },
        "the port unreachable about the datagram"
    );
    assert_eq!(counter.parse_errors().expect("read"), 0);
}

#[test]
fn ipv4_replies_count_by_flags_sequence_and_quoted_destination() {
    replies_count_by_flags_sequence_and_quoted_destination(
        "192.0.2.10".parse().unwrap(),
        "198.51.100.7".parse().unwrap(),
    );
}

#[test]
fn ipv6_replies_count_by_flags_sequence_and_quoted_destination() {
    replies_count_by_flags_sequence_and_quoted_destination(
        "2001:db8::10".parse().unwrap(),
        "2001:db8:1::7".parse().unwrap(),
    );
}

/// A SYN to `backend:PORT` from the client's `src_port` with sequence number `isn`.
fn syn(client: IpAddr, backend: IpAddr, src_port: u16, isn: u32) -> Vec<u8> {
    frame(client, backend, frames::IPPROTO_TCP, &tcp_with_seq(src_port, PORT, TCP_SYN, isn))
}

/// A retransmitted SYN (same flow, same sequence number) counts once per attempt; a new
/// sequence number on the same flow is a new attempt; SYNs to a watched destination that is not
/// tracked count nothing. Tracking a destination already watched, and untracking it, take
/// effect at once.
fn syn_timeouts_count_once_per_attempt(client: IpAddr, backend: IpAddr, vip: IpAddr) {
    let tracked = key(backend, PORT, IPPROTO_TCP);
    let untracked_vip = key(vip, PORT, IPPROTO_TCP);
    let mut counter = frame_counter(&[tracked, untracked_vip]);
    counter.track(tracked, ConnectSide::Attempts).expect("track a watched backend");
    let timeouts = |counter: &FlowCounter| outcomes(counter, &tracked).syn_timeout;
    for (isn, expected) in [(100, 0), (100, 1), (100, 1), (200, 1), (200, 2)] {
        run_once(&mut counter, &syn(client, backend, CLIENT_PORT, isn));
        assert_eq!(timeouts(&counter), expected, "SYN with sequence number {isn}");
    }
    run_once(&mut counter, &syn(client, backend, CLIENT_PORT + 1, 100));
    assert_eq!(timeouts(&counter), 2, "another flow's first SYN");
    for _ in 0..3 {
        run_once(&mut counter, &syn(client, vip, CLIENT_PORT, 100));
    }
    assert!(
        !counter.connect_outcomes().expect("read").contains_key(&untracked_vip),
        "the VIP is not tracked"
    );
    assert_eq!(counter.counters().expect("read")[&untracked_vip].new_flows, 3, "but its SYNs count as ever");

    counter.untrack(&tracked, ConnectSide::Attempts).expect("untrack");
    assert!(counter.connect_outcomes().expect("read").is_empty());
    counter.track(tracked, ConnectSide::Attempts).expect("track again");
    run_once(&mut counter, &syn(client, backend, CLIENT_PORT, 100));
    assert_eq!(timeouts(&counter), 0, "tracked anew: its counts start at zero");
    run_once(&mut counter, &syn(client, backend, CLIENT_PORT, 100));
    assert_eq!(timeouts(&counter), 1, "and its retransmission counts");
    assert_eq!(
        counter.counters().expect("read")[&tracked].new_flows,
        8,
        "every SYN to it is a new flow, as ever"
    );
}

#[test]
fn ipv4_syn_timeouts_count_once_per_attempt() {
    syn_timeouts_count_once_per_attempt(
        "192.0.2.10".parse().unwrap(),
        "198.51.100.7".parse().unwrap(),
        "198.51.100.1".parse().unwrap(),
    );
}

#[test]
fn ipv6_syn_timeouts_count_once_per_attempt() {
    syn_timeouts_count_once_per_attempt(
        "2001:db8::10".parse().unwrap(),
        "2001:db8:1::7".parse().unwrap(),
        "2001:db8:1::1".parse().unwrap(),
    );
}
