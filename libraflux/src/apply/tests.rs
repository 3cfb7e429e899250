//! The barrier on the in-memory table, whose batches behave as the kernel's: the defects it
//! closes are reproduced against a plain `apply` of the same ops first.

use std::collections::BTreeMap;

use super::*;
use crate::{
    config::Ignore,
    ipvs::{MemoryIpvs, Op},
    model::{Destination, Forwarding, Service, ServiceKey},
    plan::plan,
};

const WEB: &str = "tcp:192.0.2.1:80";

fn web(backends: &[(&str, u32)]) -> BTreeMap<ServiceKey, Service> {
    let key: ServiceKey = WEB.parse().unwrap();
    let dests = backends
        .iter()
        .map(|(dest, weight)| Destination::new(dest.parse().unwrap(), *weight, Forwarding::Nat));
    BTreeMap::from([(key, Service::new(key, "wrr").with_destinations(dests))])
}

fn block_on<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
}

fn table(ipvs: &mut MemoryIpvs) -> BTreeMap<ServiceKey, Service> {
    block_on(crate::ipvs::observed(ipvs)).unwrap()
}

fn weights(table: &BTreeMap<ServiceKey, Service>) -> Vec<(String, u32)> {
    let service = &table[&WEB.parse().unwrap()];
    service.destinations.values().map(|dest| (dest.key.to_string(), dest.weight)).collect()
}

/// Replacing a backend: the add is refused. Sent as one batch, the kernel still runs the
/// delete after it and the service is left empty; behind the barrier the old backend stays.
#[test]
fn a_refused_add_keeps_the_backend_it_was_to_replace() {
    let observed = web(&[("192.0.2.10:80", 1)]);
    let desired = web(&[("192.0.2.11:80", 1)]);
    let plan = plan(&desired, &observed, &Ignore::default());

    let mut one_batch = MemoryIpvs::with_services(observed.values().cloned());
    one_batch.refuse_ops([0]);
    let report = block_on(one_batch.apply(&plan.ops(), OnFailure::Stop));
    assert_eq!(report.applied(), 1, "the delete in the same datagram ran: {report:?}");
    assert_eq!(weights(&table(&mut one_batch)), []);

    let mut barrier = MemoryIpvs::with_services(observed.values().cloned());
    barrier.refuse_ops([0]);
    let executed = block_on(execute(&mut barrier, &plan.phases()));
    assert!(executed.reduce_withheld);
    assert!(matches!(executed.report.outcomes.as_slice(), [OpOutcome::Refused(_), OpOutcome::NotSent]));
    assert_eq!(weights(&table(&mut barrier)), [("192.0.2.10:80".to_owned(), 1)]);
}

/// Moving traffic from one backend to another by weights: in key order the first backend went
/// to 0 before the second came up; raises now go first.
#[test]
fn swapping_weights_never_leaves_every_backend_at_zero() {
    let observed = web(&[("192.0.2.10:80", 1), ("192.0.2.11:80", 0)]);
    let desired = web(&[("192.0.2.10:80", 0), ("192.0.2.11:80", 1)]);
    let phases = plan(&desired, &observed, &Ignore::default()).phases();
    assert_eq!(phases.make.len(), 1);
    assert_eq!(phases.reduce.len(), 1);
    let mut ipvs = MemoryIpvs::with_services(observed.values().cloned());
    ipvs.record_history();
    assert!(block_on(execute(&mut ipvs, &phases)).is_complete());
    let steps: Vec<Vec<(String, u32)>> = ipvs.history().iter().map(weights).collect();
    assert_eq!(
        steps,
        [
            [("192.0.2.10:80".to_owned(), 1), ("192.0.2.11:80".to_owned(), 1)],
            [("192.0.2.10:80".to_owned(), 0), ("192.0.2.11:80".to_owned(), 1)],
        ]
    );
}

#[test]
fn a_tighter_upper_threshold_waits_for_the_barrier_and_a_looser_one_does_not() {
    let observed = web(&[("192.0.2.10:80", 1)]);
    let key = "192.0.2.10:80".parse().unwrap();
    let with_threshold = |upper: u32| {
        let mut table = observed.clone();
        table.values_mut().for_each(|s| s.destinations.get_mut(&key).unwrap().upper_threshold = upper);
        table
    };
    let phases =
        |from: u32, to: u32| plan(&with_threshold(to), &with_threshold(from), &Ignore::default()).phases();
    assert!(matches!(phases(0, 100).reduce.as_slice(), [Op::UpdateDest(..)]), "none -> 100 tightens");
    assert!(matches!(phases(200, 100).reduce.as_slice(), [Op::UpdateDest(..)]), "200 -> 100 tightens");
    assert!(matches!(phases(100, 0).make.as_slice(), [Op::UpdateDest(..)]), "100 -> none loosens");
    assert!(matches!(phases(100, 200).make.as_slice(), [Op::UpdateDest(..)]), "100 -> 200 loosens");
}
