use super::*;

const SETTINGS: Settings = Settings {
    consecutive_failures: 3,
    ejection: Duration::from_secs(10),
    max_ejection: Duration::from_secs(25),
    max_ejected_percent: 50,
};

fn service() -> ServiceKey {
    "tcp:10.0.0.1:80".parse().unwrap()
}

fn backend(n: u8) -> DestKey {
    format!("10.0.1.{n}:80").parse().unwrap()
}

/// Breakers for `n` backends of one service.
fn breakers(n: u8, now: Instant) -> Breakers {
    let mut breakers = Breakers::default();
    breakers.configure([(service(), SETTINGS, (1..=n).map(backend).collect())], now);
    breakers
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn failures_in_a_row_eject_and_a_success_between_them_does_not() {
    let t0 = Instant::now();
    let mut b = breakers(4, t0);
    assert_eq!(b.traffic(service(), backend(1), 2, 0, t0), None);
    assert_eq!(b.traffic(service(), backend(1), 1, 5, t0), None, "a sample with an answer ends the run");
    assert_eq!(b.traffic(service(), backend(1), 2, 0, t0), None);
    let opened = b.traffic(service(), backend(1), 1, 0, t0);
    assert_eq!(
        opened,
        Some(Transition::Opened { source: Source::Traffic, failures: 3, for_: secs(10), ejections: 1 })
    );
    assert!(b.get(service(), backend(1)).unwrap().is_open());
    // The health check's run is its own.
    assert_eq!(b.check(service(), backend(2), false, t0), None);
    assert_eq!(b.check(service(), backend(2), true, t0), None);
    assert_eq!(b.check(service(), backend(2), false, t0), None);
    assert_eq!(b.check(service(), backend(2), false, t0), None);
    assert!(matches!(
        b.check(service(), backend(2), false, t0),
        Some(Transition::Opened { source: Source::Check, .. })
    ));
}

#[test]
fn an_ejection_ends_half_open_and_the_next_outcome_decides() {
    let t0 = Instant::now();
    let mut b = breakers(2, t0);
    b.traffic(service(), backend(1), 3, 0, t0);
    assert_eq!(b.tick(t0 + secs(9)), []);
    assert_eq!(b.tick(t0 + secs(10)), [(service(), backend(1), Transition::HalfOpened)]);
    // One failure while half-open: ejected again, for twice as long.
    let again = b.check(service(), backend(1), false, t0 + secs(11));
    assert_eq!(
        again,
        Some(Transition::Opened { source: Source::Check, failures: 1, for_: secs(20), ejections: 2 })
    );
    b.tick(t0 + secs(31));
    // Third time: capped at max_ejection.
    b.traffic(service(), backend(1), 1, 0, t0 + secs(32));
    assert_eq!(b.get(service(), backend(1)).unwrap().state, State::Open { until: t0 + secs(57) });
    b.tick(t0 + secs(57));
    // One success while half-open closes it; the ejections are remembered until it has stayed
    // closed for max_ejection.
    assert_eq!(b.traffic(service(), backend(1), 0, 1, t0 + secs(58)), Some(Transition::Closed));
    assert_eq!(b.get(service(), backend(1)).unwrap().ejections, 3);
    b.traffic(service(), backend(1), 3, 0, t0 + secs(60));
    assert_eq!(b.get(service(), backend(1)).unwrap().state, State::Open { until: t0 + secs(85) });
    b.tick(t0 + secs(85));
    b.check(service(), backend(1), true, t0 + secs(86));
    let opened = b.traffic(service(), backend(1), 3, 0, t0 + secs(86) + secs(25));
    assert_eq!(
        opened,
        Some(Transition::Opened { source: Source::Traffic, failures: 3, for_: secs(10), ejections: 1 })
    );
}

#[test]
fn no_more_than_the_share_of_a_service_is_ejected_but_always_one() {
    let t0 = Instant::now();
    // 50 % of 4: two at once; the third is held.
    let mut b = breakers(4, t0);
    b.traffic(service(), backend(1), 3, 0, t0);
    b.traffic(service(), backend(2), 3, 0, t0);
    let held = b.traffic(service(), backend(3), 3, 0, t0);
    assert_eq!(held, Some(Transition::Held { source: Source::Traffic, failures: 3, ejected: 2, allowed: 2 }));
    assert!(!b.get(service(), backend(3)).unwrap().is_open());
    // Once one is back, the held one goes at its next failure.
    b.tick(t0 + secs(10));
    assert!(matches!(
        b.traffic(service(), backend(3), 1, 0, t0 + secs(10)),
        Some(Transition::Opened { failures: 4, .. })
    ));
    // 50 % of 1 rounds to 0, but one may always be ejected.
    let mut one = breakers(1, t0);
    assert!(matches!(one.traffic(service(), backend(1), 3, 0, t0), Some(Transition::Opened { .. })));
}

#[test]
fn ejected_backends_get_weight_0_and_a_new_configuration_keeps_the_rest() {
    use crate::model::{Destination, Forwarding, Service};
    let t0 = Instant::now();
    let mut b = breakers(2, t0);
    b.traffic(service(), backend(1), 3, 0, t0);
    let mut desired = DesiredState::new();
    let mut svc = Service::new(service(), "wrr");
    for n in [1, 2] {
        let key = backend(n);
        svc.destinations.insert(
            key,
            Destination {
                key,
                weight: 5,
                forwarding: Forwarding::Nat,
                upper_threshold: 0,
                lower_threshold: 0,
            },
        );
    }
    desired.insert(service(), svc);
    b.apply_to(&mut desired);
    let weights: Vec<u32> = desired[&service()].destinations.values().map(|d| d.weight).collect();
    assert_eq!(weights, [0, 5]);
    // Backend 2 leaves; backend 1 stays ejected; a service without settings has no breakers.
    b.configure([(service(), SETTINGS, vec![backend(1)])], t0);
    assert!(b.get(service(), backend(1)).unwrap().is_open());
    assert!(!b.has(service(), backend(2)));
    b.configure([], t0);
    assert_eq!(b.traffic(service(), backend(1), 9, 0, t0), None);
}
