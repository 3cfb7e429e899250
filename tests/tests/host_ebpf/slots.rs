//! Where the counters live (docs/observer.md): each watched destination in one of two array
//! slots its hash picks, others moved, or all placed afresh under a new seed, to make room. With
//! frames run through the program (`BPF_PROG_TEST_RUN`) after every watch, every destination's
//! counts must be exactly what was sent to it since it was watched, wherever it was moved.

use std::{collections::BTreeMap, net::IpAddr};

use libraflux::observe::{DestKey, FlowCounter, IPPROTO_UDP, Limits, ObserveError};
use libraflux_tests::frames::{self, frame, udp};

use crate::{key, run_once};

/// 16 slots: small enough that placements often need moves and sometimes a new seed.
const CAPACITY: u32 = 6;
const MAX_HOSTS: u8 = 100;
const CLIENT_PORT: u16 = 40000;

/// A datagram from `client` to `to`.
fn datagram(client: IpAddr, to: &DestKey) -> Vec<u8> {
    frame(client, to.ip(), frames::IPPROTO_UDP, &udp(CLIENT_PORT, to.port, b"slot"))
}

/// Sends one datagram to every destination in `expected` and to one nobody watches, adds them to
/// `expected`, and checks the counter's counts are `expected`, key by key.
fn send_and_check(
    counter: &mut FlowCounter,
    client: IpAddr,
    expected: &mut BTreeMap<DestKey, u64>,
    what: &str,
) {
    let keys: Vec<DestKey> = expected.keys().copied().collect();
    for to in &keys {
        run_once(counter, &datagram(client, to));
        *expected.get_mut(to).expect("listed") += 1;
    }
    let unwatched = key(keys[0].ip(), 9, IPPROTO_UDP);
    run_once(counter, &datagram(client, &unwatched));
    let counted: BTreeMap<DestKey, u64> = counter
        .counters()
        .expect("read")
        .into_iter()
        .map(|(key, counters)| (key, counters.packets))
        .collect();
    assert_eq!(&counted, expected, "{what}");
}

/// `target` with its last byte (IPv4) or last two bytes (IPv6) set to `host`.
fn host_of(target: IpAddr, host: u8) -> IpAddr {
    match target {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, host])
        }
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[15] = host;
            IpAddr::from(octets)
        }
    }
}

fn crowded_slots_keep_every_count(client: IpAddr, target: IpAddr) {
    let mut counter = FlowCounter::load(Limits::destinations(CAPACITY)).expect("load the eBPF counter");
    // Fill the slots to capacity with the ports of one address (keys that differ in a few bits,
    // the case a weak hash would crowd), checking every count after every watch; then empty them
    // and go on with the next address, until both a move and a new seed were needed.
    for host in 1..=MAX_HOSTS {
        let mut expected = BTreeMap::new();
        for port in 1000..1000 + CAPACITY as u16 {
            let watched = key(host_of(target, host), port, IPPROTO_UDP);
            counter.watch(watched).expect("watch below capacity");
            expected.insert(watched, 0);
            send_and_check(&mut counter, client, &mut expected, &format!("after watching {watched:?}"));
        }
        let changes = counter.slot_changes();
        if changes.moved > 0 && changes.reseeded > 0 {
            churn(&mut counter, client, expected, target);
            return;
        }
        for watched in expected.keys() {
            counter.unwatch(watched).expect("unwatch");
        }
    }
    panic!("{MAX_HOSTS} addresses did not need both a move and a new seed: {:?}", counter.slot_changes());
}

/// With the counter full: one more is refused; every third leaves, then comes back with fresh
/// counts, and the others keep theirs.
fn churn(counter: &mut FlowCounter, client: IpAddr, mut expected: BTreeMap<DestKey, u64>, target: IpAddr) {
    let one_more = key(target, 999, IPPROTO_UDP);
    let refused = counter.watch(one_more).expect_err("one more than the capacity");
    assert!(matches!(refused, ObserveError::SlotsFull { capacity: CAPACITY, .. }), "{refused:?}");
    assert!(!counter.watched().expect("list").contains(&one_more));

    let leaving: Vec<DestKey> = expected.keys().copied().step_by(3).collect();
    for gone in &leaving {
        counter.unwatch(gone).expect("unwatch");
        expected.remove(gone);
    }
    send_and_check(counter, client, &mut expected, "after unwatching every third");
    for back in leaving.iter().rev() {
        counter.watch(*back).expect("watch again");
        expected.insert(*back, 0);
        send_and_check(counter, client, &mut expected, &format!("after watching {back:?} again"));
    }
    let watched: Vec<DestKey> = counter.watched().expect("list").into_iter().collect();
    assert_eq!(watched, expected.keys().copied().collect::<Vec<_>>());
}

#[test]
fn ipv4_counts_survive_moves_and_new_seeds() {
    crowded_slots_keep_every_count("192.0.2.10".parse().unwrap(), "198.51.100.1".parse().unwrap());
}

#[test]
fn ipv6_counts_survive_moves_and_new_seeds() {
    crowded_slots_keep_every_count("2001:db8::10".parse().unwrap(), "2001:db8:1::1".parse().unwrap());
}
