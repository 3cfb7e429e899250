//! The scheduler against scripted checkers, in paused Tokio time: schedules, timeouts and
//! concurrency are exact and the tests take no wall time.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use futures_util::future::BoxFuture;

use super::*;
use crate::{
    config::{Drain, OnUnhealthy},
    model::{Destination, Forwarding, Service},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Up,
    Refuses,
    Hangs,
}

/// Backends as the fake checker sees them, and what it observed.
#[derive(Debug)]
struct Script {
    behaviour: Mutex<BTreeMap<SocketAddr, Behaviour>>,
    probes: Mutex<Vec<(SocketAddr, Instant)>>,
    delay: Duration,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Script {
    fn new(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            behaviour: Mutex::default(),
            probes: Mutex::default(),
            delay,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        })
    }

    fn set(&self, target: &str, behaviour: Behaviour) {
        self.behaviour.lock().unwrap().insert(target.parse().unwrap(), behaviour);
    }

    fn probes_of(&self, target: &str) -> Vec<Instant> {
        let target: SocketAddr = target.parse().unwrap();
        self.probes.lock().unwrap().iter().filter(|(t, _)| *t == target).map(|(_, at)| *at).collect()
    }

    fn factory(self: &Arc<Self>) -> CheckerFactory {
        let script = Arc::clone(self);
        Arc::new(move |check: &Check| match check {
            Check::Tcp | Check::Http { .. } => {
                Ok(Some(Arc::new(Fake(Arc::clone(&script))) as Arc<dyn Checker>))
            }
            // Stands for a type some factory declines: `checker_for` supports every type, and
            // the scheduler keeps the path (and the daemon its warning) for factories that do not.
            Check::Dns { .. } => Err(Unsupported { check_type: "udp_dns" }),
            other => checker_for(other, &Arc::default()),
        })
    }
}

#[derive(Debug)]
struct Fake(Arc<Script>);

/// Counts a probe out of flight however it ends, including dropped by the timeout.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Checker for Fake {
    fn probe(&self, target: SocketAddr) -> BoxFuture<'_, Result<Duration, CheckFailure>> {
        Box::pin(async move {
            let script = &self.0;
            script.probes.lock().unwrap().push((target, Instant::now()));
            let now = script.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            script.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let _in_flight = InFlight(&script.in_flight);
            let behaviour = script.behaviour.lock().unwrap().get(&target).copied().unwrap_or(Behaviour::Up);
            tokio::time::sleep(script.delay).await;
            match behaviour {
                Behaviour::Up => Ok(script.delay),
                Behaviour::Refuses => Err(CheckFailure::Refused),
                Behaviour::Hangs => std::future::pending().await,
            }
        })
    }
}

const WEB: &str = "tcp:192.0.2.1:80";

fn health(interval: u64, timeout: u64, rise: u32, fall: u32) -> Health {
    Health {
        check: Check::Tcp,
        interval: Duration::from_secs(interval),
        timeout: Duration::from_secs(timeout),
        rise,
        fall,
        port: None,
    }
}

/// A config of services, each `(key, health, backends)`.
fn config(services: &[(&str, Health, Vec<String>)]) -> (DesiredState, BTreeMap<ServiceKey, ServiceSettings>) {
    let mut desired = DesiredState::new();
    let mut settings = BTreeMap::new();
    for (key, health, backends) in services {
        let key: ServiceKey = key.parse().unwrap();
        let destinations = backends
            .iter()
            .map(|backend| {
                let dest: DestKey = backend.parse().unwrap();
                let destination = Destination {
                    key: dest,
                    weight: 1,
                    forwarding: Forwarding::Nat,
                    upper_threshold: 0,
                    lower_threshold: 0,
                };
                (dest, destination)
            })
            .collect();
        let service = Service {
            key,
            scheduler: "rr".into(),
            persistence: None,
            persistence_netmask: None,
            destinations,
        };
        desired.insert(key, service);
        let service_settings = ServiceSettings {
            name: "svc".into(),
            health: health.clone(),
            on_unhealthy: OnUnhealthy::Quiesce,
            drain: Drain::default(),
            canaries: Default::default(),
            circuit_breaker: None,
        };
        settings.insert(key, service_settings);
    }
    (desired, settings)
}

fn backends(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("10.0.{}.{}:80", i / 250, i % 250 + 1)).collect()
}

fn options(seed: u64) -> SchedulerOptions {
    SchedulerOptions { seed: Some(seed), ..SchedulerOptions::default() }
}

async fn next(events: &mut mpsc::Receiver<HealthEvent>) -> HealthEvent {
    events.recv().await.expect("the scheduler stopped sending events")
}

/// The offsets from `start` of each backend's first probe, in backend order.
async fn first_probe_offsets(seed: u64, count: usize) -> Vec<Duration> {
    let script = Script::new(Duration::ZERO);
    let (mut scheduler, mut events) = Scheduler::with_checkers(options(seed), script.factory());
    let start = Instant::now();
    let (desired, settings) = config(&[(WEB, health(10, 1, 2, 3), backends(count))]);
    scheduler.update(&desired, &settings);
    let mut probed = std::collections::BTreeSet::new();
    while probed.len() < count {
        probed.insert(next(&mut events).await.backend);
    }
    backends(count).iter().map(|backend| script.probes_of(backend)[0] - start).collect()
}

#[tokio::test(start_paused = true)]
async fn first_probes_spread_uniformly_over_the_interval() {
    let offsets = first_probe_offsets(7, 200).await;
    let mut per_second = [0; 10];
    for offset in &offsets {
        assert!(*offset < Duration::from_secs(10), "{offset:?}");
        per_second[offset.as_secs() as usize] += 1;
    }
    assert!(per_second.iter().all(|&count| (5..=40).contains(&count)), "{per_second:?}");
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_schedule() {
    let first = first_probe_offsets(42, 20).await;
    assert_eq!(first, first_probe_offsets(42, 20).await);
    assert_ne!(first, first_probe_offsets(43, 20).await);
}

#[tokio::test(start_paused = true)]
async fn rounds_follow_the_interval_within_ten_percent() {
    let script = Script::new(Duration::from_millis(3));
    let (mut scheduler, mut events) = Scheduler::with_checkers(options(1), script.factory());
    let (desired, settings) = config(&[(WEB, health(10, 1, 2, 3), backends(1))]);
    scheduler.update(&desired, &settings);
    for _ in 0..30 {
        next(&mut events).await;
    }
    let probes = script.probes_of("10.0.0.1:80");
    let gaps: Vec<Duration> = probes.windows(2).map(|pair| pair[1] - pair[0]).collect();
    assert!(
        gaps.iter().all(|gap| (Duration::from_secs(9)..=Duration::from_secs(11)).contains(gap)),
        "{gaps:?}"
    );
    assert!(gaps.iter().any(|gap| *gap != gaps[0]), "jittered: {gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn falls_and_rises_with_reasons_in_the_events_and_the_table() {
    let script = Script::new(Duration::from_millis(5));
    let backend = "10.0.0.1:80";
    script.set(backend, Behaviour::Refuses);
    let (mut scheduler, mut events) = Scheduler::with_checkers(options(1), script.factory());
    let (desired, settings) = config(&[(WEB, health(2, 1, 2, 3), backends(1))]);
    scheduler.update(&desired, &settings);
    let web: ServiceKey = WEB.parse().unwrap();
    let dest: DestKey = backend.parse().unwrap();
    assert!(scheduler.snapshot().get(&web, &dest).unwrap().healthy(), "starts healthy");

    for _ in 0..2 {
        let event = next(&mut events).await;
        assert_eq!(
            (event.healthy, event.transition, event.reason().as_str()),
            (true, None, "connection refused")
        );
        assert_eq!(event.outcome(), "refused");
    }
    let event = next(&mut events).await;
    assert_eq!(event.transition, Some(Transition::BecameUnhealthy { failures: 3 }));
    assert!(!event.healthy);
    assert_eq!(event.reason(), "unhealthy after 3 consecutive failed probes, last: connection refused");
    assert_eq!((event.service, event.backend, event.check_type), (web, dest, "tcp"));
    let status = scheduler.snapshot().get(&web, &dest).cloned().unwrap();
    assert!(!status.healthy());
    assert_eq!(status.last_probe.unwrap().failure, Some(CheckFailure::Refused));

    script.set(backend, Behaviour::Up);
    let event = next(&mut events).await;
    assert_eq!((event.healthy, event.transition, event.outcome()), (false, None, "success"));
    assert_eq!(event.latency, Duration::from_millis(5));
    let event = next(&mut events).await;
    assert_eq!(event.transition, Some(Transition::BecameHealthy { successes: 2 }));
    assert_eq!(event.reason(), "healthy after 2 consecutive successful probes");
    assert!(scheduler.table().borrow().is_healthy(&web, &dest));
}

#[tokio::test(start_paused = true)]
async fn a_hanging_backend_costs_one_timeout_per_round_and_never_stalls() {
    let script = Script::new(Duration::ZERO);
    script.set("10.0.0.1:80", Behaviour::Hangs);
    let (mut scheduler, mut events) = Scheduler::with_checkers(options(1), script.factory());
    let (desired, settings) = config(&[(WEB, health(2, 1, 1, 2), backends(2))]);
    scheduler.update(&desired, &settings);
    let mut hanging = Vec::new();
    let mut healthy_rounds = 0;
    while hanging.len() < 4 {
        let event = next(&mut events).await;
        if event.backend.to_string() == "10.0.0.1:80" {
            hanging.push(event);
        } else {
            healthy_rounds += 1;
        }
    }
    for event in &hanging {
        assert_eq!(event.result, Err(CheckFailure::TimedOut(Duration::from_secs(1))));
        assert_eq!(event.latency, Duration::from_secs(1));
    }
    assert_eq!(hanging[1].reason(), "unhealthy after 2 consecutive failed probes, last: timed out after 1s");
    assert!(healthy_rounds >= 3, "the other backend kept its schedule: {healthy_rounds}");
}

#[tokio::test(start_paused = true)]
async fn probes_in_flight_never_exceed_the_bound() {
    let script = Script::new(Duration::from_millis(500));
    let options = SchedulerOptions { max_in_flight: 3, ..options(1) };
    let (mut scheduler, mut events) = Scheduler::with_checkers(options, script.factory());
    let (desired, settings) = config(&[(WEB, health(1, 1, 2, 3), backends(20))]);
    scheduler.update(&desired, &settings);
    let mut probed = std::collections::BTreeSet::new();
    for _ in 0..60 {
        probed.insert(next(&mut events).await.backend);
    }
    assert_eq!(script.max_in_flight.load(Ordering::SeqCst), 3);
    assert_eq!(probed.len(), 20, "probes waiting for a slot take turns: none is left out");
}

#[tokio::test(start_paused = true)]
async fn backends_can_start_unhealthy() {
    let script = Script::new(Duration::ZERO);
    let options = SchedulerOptions { initial: InitialState::Unhealthy, ..options(1) };
    let (mut scheduler, mut events) = Scheduler::with_checkers(options, script.factory());
    let (desired, settings) = config(&[(WEB, health(2, 1, 2, 3), backends(1))]);
    scheduler.update(&desired, &settings);
    let web: ServiceKey = WEB.parse().unwrap();
    let dest: DestKey = "10.0.0.1:80".parse().unwrap();
    assert!(!scheduler.snapshot().is_healthy(&web, &dest));
    assert_eq!(next(&mut events).await.transition, None);
    assert_eq!(next(&mut events).await.transition, Some(Transition::BecameHealthy { successes: 2 }));
}

#[tokio::test(start_paused = true)]
async fn reloads_keep_unchanged_backends_and_their_state() {
    let script = Script::new(Duration::ZERO);
    script.set("10.0.0.1:80", Behaviour::Refuses);
    let (mut scheduler, mut events) = Scheduler::with_checkers(options(1), script.factory());
    let web: ServiceKey = WEB.parse().unwrap();
    let (a, b, c) = ("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80");
    let (desired, settings) = config(&[(WEB, health(2, 1, 2, 1), vec![a.into(), b.into()])]);
    assert_eq!(scheduler.update(&desired, &settings), UpdateSummary { added: 2, ..UpdateSummary::default() });
    while next(&mut events).await.transition.is_none() {}
    let a_before = scheduler.snapshot().get(&web, &a.parse().unwrap()).cloned().unwrap();
    assert!(!a_before.healthy());

    let dns = Check::Dns {
        query: "example.org".into(),
        record_type: "A".into(),
        expect_rcode: "NOERROR".into(),
        expect_answer: None,
    };
    let (desired, settings) = config(&[
        (WEB, health(2, 1, 2, 1), vec![a.into(), c.into()]),
        ("udp:192.0.2.1:53", Health::with_check(dns), vec!["10.0.1.1:53".into()]),
        ("tcp:192.0.2.1:22", Health::with_check(Check::None), vec!["10.0.2.1:22".into()]),
    ]);
    while events.try_recv().is_ok() {}
    let summary = scheduler.update(&desired, &settings);
    assert_eq!(summary, UpdateSummary { added: 1, removed: 1, restarted: 0, kept: 1 });
    let table = scheduler.snapshot();
    assert_eq!(table.get(&web, &a.parse().unwrap()), Some(&a_before), "unchanged: state kept as is");
    assert!(table.get(&web, &b.parse().unwrap()).is_none(), "removed");
    assert!(table.get(&web, &c.parse().unwrap()).unwrap().healthy(), "added, healthy");
    assert_eq!(table.services().count(), 1, "no entries for unchecked or unsupported services");
    let unsupported: Vec<String> = scheduler.unsupported().keys().map(ToString::to_string).collect();
    assert_eq!(unsupported, ["udp:192.0.2.1:53"]);

    let removed_probes = script.probes_of(b).len();
    for _ in 0..6 {
        let event = next(&mut events).await;
        assert_ne!(event.backend.to_string(), b, "a removed backend sends no more events");
    }
    assert_eq!(script.probes_of(b).len(), removed_probes, "and is no longer probed");

    let (desired, settings) = config(&[(WEB, health(3, 1, 2, 1), vec![a.into(), c.into()])]);
    let summary = scheduler.update(&desired, &settings);
    assert_eq!(summary, UpdateSummary { added: 0, removed: 0, restarted: 2, kept: 0 });
    let a_after = scheduler.snapshot().get(&web, &a.parse().unwrap()).cloned().unwrap();
    assert!(!a_after.healthy(), "a changed check keeps the verdict");
    assert_eq!(a_after.state.consecutive_failures, 0, "but restarts the counts");
    assert!(scheduler.unsupported().is_empty());
}

#[test]
fn jitter_bounds() {
    let interval = Duration::from_secs(10);
    assert_eq!(first_delay(interval, 0.0), Duration::ZERO);
    assert_eq!(first_delay(interval, 0.5), Duration::from_secs(5));
    assert_eq!(round_delay(interval, 0.0), Duration::from_secs(9));
    assert_eq!(round_delay(interval, 0.5), Duration::from_secs(10));
    assert_eq!(round_delay(interval, 1.0), Duration::from_secs(11));
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_slows_probing_down_for_every_backend_alike() {
    let script = Script::new(Duration::from_millis(2));
    let options = SchedulerOptions { event_capacity: 1, ..options(1) };
    let (mut scheduler, mut events) = Scheduler::with_checkers(options, script.factory());
    let (desired, settings) = config(&[(WEB, health(1, 1, 2, 3), backends(20))]);
    scheduler.update(&desired, &settings);
    let mut probed = BTreeMap::new();
    for _ in 0..100 {
        *probed.entry(next(&mut events).await.backend).or_insert(0) += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(probed.len(), 20, "{probed:?}");
    assert!(probed.values().all(|&n| (3..=7).contains(&n)), "{probed:?}");
}
