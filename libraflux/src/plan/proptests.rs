//! Properties of the planner over random desired, observed and ignored sets: applying a plan's
//! ops converges (planning again yields nothing), ignored services are never touched, and a
//! service that keeps backends never passes through an empty state while it is updated. Under
//! injected kernel refusals, with the kernel's batch behaviour: nothing of the reduce phase runs
//! unless the whole make phase did, and no step leaves a serving service without a backend of
//! weight above 0 unless the desired state has none.

use std::collections::BTreeMap;

use proptest::{collection, prelude::*};

use super::*;
use crate::ipvs::{Ipvs as _, MemoryIpvs, OnFailure};
use crate::model::{DestKey, Destination, Forwarding, Service, ServiceKey};

type Table = BTreeMap<ServiceKey, Service>;

const SERVICE_KEYS: &[&str] = &[
    "tcp:192.0.2.1:80",
    "tcp:192.0.2.1:443",
    "udp:192.0.2.1:53",
    "tcp:192.0.2.2:80",
    "fwmark:7",
    "fwmark:8",
];
const DEST_KEYS: &[&str] = &["192.0.2.10:80", "192.0.2.11:80", "192.0.2.12:80", "192.0.2.13:80"];

fn destination() -> impl Strategy<Value = Destination> {
    (0..DEST_KEYS.len(), 0u32..3, prop::bool::ANY, 0u32..2, 0u32..2).prop_map(
        |(index, weight, dr, upper_threshold, lower_threshold)| Destination {
            key: DEST_KEYS[index].parse::<DestKey>().expect("dest key"),
            weight,
            forwarding: if dr { Forwarding::Dr } else { Forwarding::Nat },
            // The kernel refuses a lower threshold above the upper one (ERANGE).
            upper_threshold: upper_threshold.max(lower_threshold),
            lower_threshold,
        },
    )
}

/// Services on the shared key pools; `netmasks` chooses whether a netmask may be set (the kernel
/// always reports one; the config may leave it unset).
fn table(netmasks: &'static [Option<u8>]) -> impl Strategy<Value = Table> {
    let service = (
        0..SERVICE_KEYS.len(),
        prop::sample::select(&["rr", "wrr"][..]),
        prop::sample::select(&[None, Some(60)][..]),
        prop::sample::select(netmasks),
        collection::vec(destination(), 0..4),
    )
        .prop_map(|(index, scheduler, persistence, persistence_netmask, dests)| Service {
            key: SERVICE_KEYS[index].parse().expect("service key"),
            scheduler: scheduler.to_owned(),
            persistence,
            persistence_netmask,
            destinations: dests.into_iter().map(|dest| (dest.key, dest)).collect(),
        });
    collection::vec(service, 0..6).prop_map(|services| services.into_iter().map(|s| (s.key, s)).collect())
}

fn ignore() -> impl Strategy<Value = Ignore> {
    (collection::btree_set(0..SERVICE_KEYS.len(), 0..2), prop::bool::ANY).prop_map(|(keys, vip)| Ignore {
        services: keys.into_iter().map(|index| SERVICE_KEYS[index].parse().expect("service key")).collect(),
        vips: if vip { ["192.0.2.2".parse().expect("ip")].into() } else { Default::default() },
    })
}

/// Applies one op to the in-memory IPVS table, which refuses what the kernel refuses (a
/// destination before its service, duplicates, missing objects), and returns the table after it.
fn apply(op: &Op, ipvs: &mut MemoryIpvs, runtime: &tokio::runtime::Runtime) -> Table {
    runtime.block_on(async {
        let report = ipvs.apply(std::slice::from_ref(op), OnFailure::Stop).await;
        assert!(report.is_complete(), "the kernel's rules refuse {op:?}: {report:?}");
        crate::ipvs::observed(ipvs).await.expect("read the in-memory table")
    })
}

proptest! {
    #[test]
    fn applying_a_plan_converges_and_leaves_ignored_services_alone(
        desired in table(&[None, Some(24)]),
        observed in table(&[Some(24), Some(32)]),
        ignore in ignore(),
    ) {
        let ops = plan(&desired, &observed, &ignore).ops();
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let mut ipvs = MemoryIpvs::with_services(observed.values().cloned());
        let mut applied = observed.clone();
        for op in &ops {
            prop_assert!(!ignore.covers(&op.service()), "{op:?} touches an ignored service");
            let service = op.service();
            let kept_backends = observed.get(&service).is_some_and(|s| !s.destinations.is_empty())
                && desired.get(&service).is_some_and(|s| !s.destinations.is_empty());
            applied = apply(op, &mut ipvs, &runtime);
            if kept_backends {
                prop_assert!(!applied[&service].destinations.is_empty(), "{service} went empty at {op:?}");
            }
        }
        prop_assert!(plan(&desired, &applied, &ignore).is_empty(), "a second plan is not empty");
        for key in SERVICE_KEYS.iter().map(|key| key.parse::<ServiceKey>().expect("key")) {
            if ignore.covers(&key) {
                prop_assert_eq!(applied.get(&key), observed.get(&key));
            }
        }
    }
}

/// Whether a service has a backend that takes new connections.
fn serves(service: Option<&Service>) -> bool {
    service.is_some_and(|service| service.destinations.values().any(|dest| dest.weight > 0))
}

/// Whether `after` took no capacity from `before`: every service and backend is still there, no
/// weight lower, no upper threshold tighter.
fn nothing_reduced(before: &Table, after: &Table) -> bool {
    before.iter().all(|(key, old)| {
        after.get(key).is_some_and(|new| {
            old.destinations.iter().all(|(dest, was)| {
                new.destinations.get(dest).is_some_and(|now| {
                    let tighter = now.upper_threshold != 0
                        && (was.upper_threshold == 0 || now.upper_threshold < was.upper_threshold);
                    now.weight >= was.weight && !tighter
                })
            })
        })
    })
}

proptest! {
    #[test]
    fn the_barrier_holds_under_refusals_and_no_step_zeroes_a_serving_service(
        desired in table(&[None, Some(24)]),
        observed in table(&[Some(24), Some(32)]),
        ignore in ignore(),
        refused in collection::btree_set(0usize..24, 0..3),
        batch in 1usize..8,
    ) {
        let phases = plan(&desired, &observed, &ignore).phases();
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let mut ipvs = MemoryIpvs::with_services(observed.values().cloned());
        ipvs.set_batch_size(batch);
        ipvs.refuse_ops(refused.iter().copied());
        ipvs.record_history();
        let executed = runtime.block_on(crate::apply::execute(&mut ipvs, &phases));
        let after = runtime.block_on(crate::ipvs::observed(&mut ipvs)).expect("read the in-memory table");

        // Refusals count ops as received, and nothing is refused before the first injected one.
        let make_failed = refused.first().is_some_and(|first| *first < phases.make.len());
        if make_failed {
            prop_assert!(nothing_reduced(&observed, &after), "capacity went after a refused make op");
            prop_assert_eq!(executed.reduce_withheld, !phases.reduce.is_empty());
        } else if refused.is_empty() {
            prop_assert!(executed.is_complete(), "{:?}", executed.report);
            prop_assert!(plan(&desired, &after, &ignore).is_empty(), "a second plan is not empty");
        }
        for step in ipvs.history() {
            for key in SERVICE_KEYS.iter().map(|key| key.parse::<ServiceKey>().expect("key")) {
                if serves(observed.get(&key)) && serves(desired.get(&key)) {
                    prop_assert!(serves(step.get(&key)), "{key} had no backend above weight 0 at a step");
                }
            }
        }
    }
}
