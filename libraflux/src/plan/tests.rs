//! Unit tests for each branch of the planner, the op order and the change limits.

use std::collections::BTreeMap;

use super::*;
use crate::model::{DestKey, Destination, Forwarding, Service, ServiceKey};

fn key(text: &str) -> ServiceKey {
    text.parse().unwrap_or_else(|error| panic!("service key {text}: {error}"))
}

fn dest(text: &str, weight: u32) -> Destination {
    let key: DestKey = text.parse().unwrap_or_else(|error| panic!("backend key {text}: {error}"));
    Destination { key, weight, forwarding: Forwarding::Nat, upper_threshold: 0, lower_threshold: 0 }
}

fn service(text: &str, scheduler: &str, dests: &[Destination]) -> Service {
    Service {
        key: key(text),
        scheduler: scheduler.to_owned(),
        persistence: None,
        persistence_netmask: None,
        destinations: dests.iter().map(|dest| (dest.key, *dest)).collect(),
    }
}

fn table(services: &[Service]) -> BTreeMap<ServiceKey, Service> {
    services.iter().map(|service| (service.key, service.clone())).collect()
}

fn web() -> Service {
    service("tcp:192.0.2.1:80", "rr", &[dest("192.0.2.10:80", 1), dest("192.0.2.11:80", 1)])
}

#[test]
fn identical_state_plans_nothing() {
    let state = table(&[web()]);
    let plan = plan(&state, &state, &Ignore::default());
    assert!(plan.is_empty());
    assert!(plan.ops().is_empty());
}

#[test]
fn a_desired_service_that_is_missing_is_created_with_its_backends_in_one_run() {
    let plan = plan(&table(&[web()]), &BTreeMap::new(), &Ignore::default());
    assert_eq!(plan.create, [web()]);
    let service = key("tcp:192.0.2.1:80");
    assert_eq!(
        plan.ops(),
        [
            Op::AddService(service_without_backends(&web())),
            Op::AddDest(service, dest("192.0.2.10:80", 1)),
            Op::AddDest(service, dest("192.0.2.11:80", 1)),
        ]
    );
}

fn service_without_backends(service: &Service) -> Service {
    Service { destinations: BTreeMap::new(), ..service.clone() }
}

#[test]
fn an_observed_service_that_is_not_desired_is_deleted_whole() {
    let plan = plan(&BTreeMap::new(), &table(&[web()]), &Ignore::default());
    assert_eq!(plan.delete, [web()]);
    assert_eq!(plan.ops(), [Op::DeleteService(key("tcp:192.0.2.1:80"))]);
}

#[test]
fn ignored_services_are_never_created_updated_or_deleted() {
    let ignored_by_key = web();
    let ignored_by_vip = service("udp:198.51.100.9:53", "rr", &[]);
    let mut changed = web();
    changed.scheduler = "wrr".to_owned();
    let ignore = Ignore {
        services: [key("tcp:192.0.2.1:80")].into(),
        vips: ["198.51.100.9".parse().expect("ip")].into(),
    };
    let observed = table(&[ignored_by_key, ignored_by_vip]);
    assert!(plan(&table(&[changed]), &observed, &ignore).is_empty(), "update and delete");
    let created = service("tcp:198.51.100.9:80", "rr", &[]);
    assert!(plan(&table(&[created]), &BTreeMap::new(), &ignore).is_empty(), "create on an ignored VIP");
}

#[test]
fn an_ignored_vip_does_not_cover_fwmark_services() {
    let ignore = Ignore { services: Default::default(), vips: ["192.0.2.1".parse().expect("ip")].into() };
    assert!(!ignore.covers(&key("fwmark:1")));
    let plan = plan(&BTreeMap::new(), &table(&[service("fwmark:1", "rr", &[])]), &ignore);
    assert_eq!(plan.delete.len(), 1);
}

#[test]
fn a_scheduler_change_updates_the_service_attributes_only() {
    let mut wanted = web();
    wanted.scheduler = "wrr".to_owned();
    let plan = plan(&table(&[wanted.clone()]), &table(&[web()]), &Ignore::default());
    let update = &plan.update[0];
    assert_eq!(update.scheduler, Some(Change { old: "rr".to_owned(), new: "wrr".to_owned() }));
    assert_eq!((update.persistence, update.persistence_netmask), (None, None));
    assert!(update.add.is_empty() && update.update.is_empty() && update.remove.is_empty());
    assert_eq!(plan.ops(), [Op::UpdateService(service_without_backends(&wanted))]);
}

#[test]
fn persistence_changes_are_planned_and_an_unset_netmask_keeps_the_kernels() {
    let mut present = web();
    present.persistence_netmask = Some(32);
    let mut wanted = web();
    wanted.persistence = Some(300);
    let plan = plan(&table(&[wanted]), &table(&[present]), &Ignore::default());
    let update = &plan.update[0];
    assert_eq!(update.persistence, Some(Change { old: None, new: Some(300) }));
    assert_eq!(update.persistence_netmask, None);
    assert_eq!(update.target.persistence_netmask, Some(32), "the update keeps the kernel's netmask");
}

#[test]
fn a_configured_netmask_is_enforced() {
    let mut present = web();
    present.persistence_netmask = Some(32);
    let mut wanted = web();
    wanted.persistence_netmask = Some(24);
    let plan = plan(&table(&[wanted]), &table(&[present]), &Ignore::default());
    assert_eq!(plan.update[0].persistence_netmask, Some(Change { old: Some(32), new: Some(24) }));
}

#[test]
fn backends_are_added_then_updated_then_removed() {
    let present = service("tcp:192.0.2.1:80", "rr", &[dest("192.0.2.10:80", 1), dest("192.0.2.11:80", 1)]);
    let wanted = service("tcp:192.0.2.1:80", "wrr", &[dest("192.0.2.11:80", 0), dest("192.0.2.12:80", 1)]);
    let plan = plan(&table(std::slice::from_ref(&wanted)), &table(&[present]), &Ignore::default());
    let update = &plan.update[0];
    assert_eq!(update.add, [dest("192.0.2.12:80", 1)]);
    assert_eq!(update.update[0].weight, Some(Change { old: 1, new: 0 }));
    assert_eq!(update.remove, [dest("192.0.2.10:80", 1)]);
    let service = wanted.key;
    assert_eq!(
        plan.ops(),
        [
            Op::UpdateService(service_without_backends(&wanted)),
            Op::AddDest(service, dest("192.0.2.12:80", 1)),
            Op::UpdateDest(service, dest("192.0.2.11:80", 0)),
            Op::DeleteDest(service, "192.0.2.10:80".parse().expect("backend key")),
        ]
    );
}

#[test]
fn every_destination_field_is_compared() {
    let present = dest("192.0.2.10:80", 1);
    let wanted = Destination {
        weight: 2,
        forwarding: Forwarding::Dr,
        upper_threshold: 10,
        lower_threshold: 5,
        ..present
    };
    let plan = plan(
        &table(&[service("tcp:192.0.2.1:80", "rr", &[wanted])]),
        &table(&[service("tcp:192.0.2.1:80", "rr", &[present])]),
        &Ignore::default(),
    );
    let update = plan.update[0].update[0];
    assert_eq!(update.weight, Some(Change { old: 1, new: 2 }));
    assert_eq!(update.forwarding, Some(Change { old: Forwarding::Nat, new: Forwarding::Dr }));
    assert_eq!(update.upper_threshold, Some(Change { old: 0, new: 10 }));
    assert_eq!(update.lower_threshold, Some(Change { old: 0, new: 5 }));
    assert_eq!(update.target, wanted);
    assert!(!plan.update[0].changes_service(), "a backend-only change leaves the service alone");
    assert!(!plan.ops().iter().any(|op| matches!(op, Op::UpdateService(_))));
}

#[test]
fn creates_come_before_updates_and_deletes_come_last_each_by_key() {
    let mut changed = web();
    changed.scheduler = "wrr".to_owned();
    let desired =
        table(&[service("udp:192.0.2.2:53", "rr", &[]), service("tcp:192.0.2.2:53", "rr", &[]), changed]);
    let observed = table(&[web(), service("fwmark:3", "rr", &[]), service("tcp:192.0.2.9:80", "rr", &[])]);
    let ops: Vec<String> = plan(&desired, &observed, &Ignore::default())
        .ops()
        .iter()
        .map(|op| {
            let kind = match op {
                Op::AddService(_) => "add",
                Op::UpdateService(_) => "update",
                Op::DeleteService(_) => "delete",
                _ => "backend",
            };
            format!("{kind} {}", op.service())
        })
        .collect();
    assert_eq!(
        ops,
        [
            "add tcp:192.0.2.2:53",
            "add udp:192.0.2.2:53",
            "update tcp:192.0.2.1:80",
            "delete tcp:192.0.2.9:80",
            "delete fwmark:3",
        ]
    );
}

fn many(prefix: &str, count: usize, backends: usize) -> Vec<Service> {
    (0..count)
        .map(|index| {
            let dests: Vec<Destination> =
                (0..backends).map(|b| dest(&format!("192.0.2.{}:80", b + 1), 1)).collect();
            service(&format!("tcp:{prefix}.{}:80", index + 1), "rr", &dests)
        })
        .collect()
}

fn limits(created: u32, backends: u32, deleted: u32) -> Limits {
    Limits {
        max_services_created: created,
        max_backends_per_service: backends,
        max_services_deleted: deleted,
        ..Limits::default()
    }
}

#[test]
fn a_plan_within_the_limits_passes() {
    let plan = plan(&table(&many("198.51.100", 2, 3)), &table(&many("203.0.113", 2, 9)), &Ignore::default());
    assert_eq!(check_limits(&plan, &limits(2, 3, 2)), Ok(()), "deleted services' backends do not count");
}

#[test]
fn each_exceeded_limit_is_named_with_its_figures() {
    let mut desired = table(&many("198.51.100", 2, 1));
    let mut grown = web();
    for backend in ["192.0.2.12:80", "192.0.2.13:80", "192.0.2.14:80"] {
        grown.destinations.insert(dest(backend, 1).key, dest(backend, 1));
    }
    grown.destinations.remove(&dest("192.0.2.10:80", 1).key);
    grown.destinations.remove(&dest("192.0.2.11:80", 1).key);
    desired.insert(grown.key, grown);
    let observed = table(&[web(), service("udp:203.0.113.1:53", "rr", &[])]);
    let violations =
        check_limits(&plan(&desired, &observed, &Ignore::default()), &limits(1, 2, 0)).unwrap_err();
    let messages: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "plan creates 2 services; limit max_services_created is 1 (use --force to override)",
            "plan adds 3 backends to service tcp:192.0.2.1:80; limit max_backends_per_service is 2 \
             (use --force to override)",
            "plan takes 2 of the 2 backends of service tcp:192.0.2.1:80 out of service (removed or set to \
             weight 0); limit max_backends_removed_percent is 50 %, 1 backend(s) here (use --force to override)",
            "plan deletes 1 services; limit max_services_deleted is 0 (use --force to override)",
        ]
    );
}

/// A service applied once over the backend limit (with --force) is not refused again for it:
/// the limit counts what one plan adds.
#[test]
fn a_service_already_over_the_backend_limit_can_still_change() {
    let crowded = many("198.51.100", 1, 5).remove(0);
    let mut reweighted = crowded.clone();
    reweighted.destinations.values_mut().next().unwrap().weight = 7;
    let plan = plan(&table(&[reweighted]), &table(&[crowded]), &Ignore::default());
    assert_eq!(check_limits(&plan, &limits(0, 2, 0)), Ok(()));
}

#[test]
fn the_removal_share_counts_removed_and_zeroed_backends_and_always_allows_one() {
    let four = many("198.51.100", 1, 4).remove(0);
    let with = |change: &dyn Fn(&mut Service)| {
        let mut service = four.clone();
        change(&mut service);
        check_limits(
            &plan(&table(&[service]), &table(std::slice::from_ref(&four)), &Ignore::default()),
            &Limits::default(),
        )
    };
    let keys: Vec<DestKey> = four.destinations.keys().copied().collect();
    assert_eq!(
        with(&|s| {
            s.destinations.remove(&keys[0]);
        }),
        Ok(())
    );
    assert_eq!(with(&|s| s.destinations.get_mut(&keys[1]).unwrap().weight = 0), Ok(()));
    let two = with(&|s| {
        s.destinations.remove(&keys[0]);
        s.destinations.get_mut(&keys[1]).unwrap().weight = 0;
    });
    assert_eq!(two, Ok(()), "2 of 4 is 50 %");
    let three = with(&|s| {
        s.destinations.remove(&keys[0]);
        s.destinations.remove(&keys[2]);
        s.destinations.get_mut(&keys[1]).unwrap().weight = 0;
    });
    assert!(matches!(
        three.unwrap_err().as_slice(),
        [LimitViolation::BackendsRemoved { count: 3, of: 4, allowed: 2, .. }]
    ));

    let single = many("198.51.100", 1, 1).remove(0);
    let replaced = service(&single.key.to_string(), "rr", &[dest("192.0.2.99:80", 1)]);
    let plan = plan(&table(&[replaced]), &table(&[single]), &Ignore::default());
    assert_eq!(check_limits(&plan, &Limits::default()), Ok(()), "the only backend may be replaced");
}

#[test]
fn an_empty_plan_says_so() {
    assert_eq!(render_text(&Plan::default(), true), "No changes. IPVS matches the configuration.\n");
}
