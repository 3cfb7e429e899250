use super::*;
use crate::{
    ipvs::Operation,
    model::{Family, Forwarding},
};

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
}

fn service(key: &str) -> Service {
    Service {
        key: key.parse().unwrap(),
        scheduler: "wrr".into(),
        persistence: None,
        persistence_netmask: None,
        destinations: BTreeMap::new(),
    }
}

fn dest(key: &str, weight: u32) -> Destination {
    Destination {
        key: key.parse().unwrap(),
        weight,
        forwarding: Forwarding::Nat,
        upper_threshold: 0,
        lower_threshold: 0,
    }
}

fn svc_key(key: &str) -> ServiceKey {
    key.parse().unwrap()
}

fn apply(table: &mut MemoryIpvs, ops: &[Op], on_failure: OnFailure) -> ApplyReport {
    block_on(table.apply(ops, on_failure))
}

fn refused_errno(report: &ApplyReport, index: usize) -> i32 {
    match &report.outcomes[index] {
        OpOutcome::Refused(err) => err.errno().unwrap_or_else(|| panic!("no errno in {err}")),
        other => panic!("op {index} was not refused: {other:?}"),
    }
}

#[test]
fn services_and_destinations_are_created_and_listed_by_key() {
    let mut table = MemoryIpvs::new();
    let web = svc_key("tcp:10.0.0.1:80");
    let ops = [
        Op::AddService(service("tcp:10.0.0.9:80")),
        Op::AddService(service("tcp:10.0.0.1:80")),
        Op::AddDest(web, dest("10.0.0.3:80", 1)),
        Op::AddDest(web, dest("10.0.0.2:80", 2)),
    ];
    assert!(apply(&mut table, &ops, OnFailure::Stop).is_complete());
    let listed = block_on(table.services()).unwrap();
    let keys: Vec<String> = listed.iter().map(|s| s.service.key.to_string()).collect();
    assert_eq!(keys, ["tcp:10.0.0.1:80", "tcp:10.0.0.9:80"]);
    let dests: Vec<String> = listed[0].service.destinations.keys().map(ToString::to_string).collect();
    assert_eq!(dests, ["10.0.0.2:80", "10.0.0.3:80"]);
    assert_eq!(listed[0].destinations.len(), 2);
}

#[test]
fn errnos_match_the_kernel_for_duplicates_and_missing_objects() {
    let mut table = MemoryIpvs::with_services([service("tcp:10.0.0.1:80")]);
    let web = svc_key("tcp:10.0.0.1:80");
    let missing = svc_key("udp:10.0.0.1:53");
    let ops = [
        Op::AddService(service("tcp:10.0.0.1:80")),
        Op::UpdateService(service("udp:10.0.0.1:53")),
        Op::DeleteService(missing),
        Op::AddDest(missing, dest("10.0.0.2:53", 1)),
        Op::AddDest(web, dest("10.0.0.2:80", 1)),
        Op::AddDest(web, dest("10.0.0.2:80", 1)),
        Op::UpdateDest(web, dest("10.0.0.3:80", 1)),
        Op::DeleteDest(web, "10.0.0.3:80".parse().unwrap()),
    ];
    let report = apply(&mut table, &ops, OnFailure::Continue);
    let errnos: Vec<Option<i32>> = (0..ops.len())
        .map(|index| {
            matches!(report.outcomes[index], OpOutcome::Refused(_)).then(|| refused_errno(&report, index))
        })
        .collect();
    assert_eq!(
        errnos,
        [
            Some(libc::EEXIST),
            Some(libc::ESRCH),
            Some(libc::ESRCH),
            Some(libc::ESRCH),
            None,
            Some(libc::EEXIST),
            Some(libc::ENOENT),
            Some(libc::ENOENT),
        ]
    );
}

#[test]
fn refusals_name_the_operation_and_the_objects() {
    let mut table = MemoryIpvs::with_services([service("tcp:10.0.0.1:80")]);
    let web = svc_key("tcp:10.0.0.1:80");
    let ops = [Op::AddDest(web, dest("10.0.0.2:80", 1)), Op::AddDest(web, dest("10.0.0.2:80", 1))];
    let err = apply(&mut table, &ops, OnFailure::Stop).into_result().unwrap_err();
    assert_eq!(
        err.to_string(),
        "creating destination 10.0.0.2:80 in tcp:10.0.0.1:80: File exists (os error 17)"
    );
    assert_eq!(err.operation(), Operation::CreateDest { service: web, dest: "10.0.0.2:80".parse().unwrap() });
    assert!(err.is_kernel_refusal());
}

#[test]
fn stop_leaves_the_rest_unsent_and_continue_carries_on() {
    let web = svc_key("tcp:10.0.0.1:80");
    let ops = [
        Op::AddService(service("tcp:10.0.0.1:80")),
        Op::DeleteDest(web, "10.0.0.9:80".parse().unwrap()),
        Op::AddDest(web, dest("10.0.0.2:80", 1)),
    ];
    let mut one_per_datagram = MemoryIpvs::new();
    one_per_datagram.set_batch_size(1);
    let stopped = apply(&mut one_per_datagram, &ops, OnFailure::Stop);
    assert!(matches!(
        stopped.outcomes.as_slice(),
        [OpOutcome::Applied, OpOutcome::Refused(_), OpOutcome::NotSent]
    ));
    assert_eq!(stopped.applied(), 1);
    assert_eq!(stopped.refusals().map(|(index, _)| index).collect::<Vec<_>>(), [1]);

    // As in the kernel, the rest of the datagram that held the refused op still runs.
    let one_datagram = apply(&mut MemoryIpvs::new(), &ops, OnFailure::Stop);
    assert!(matches!(
        one_datagram.outcomes.as_slice(),
        [OpOutcome::Applied, OpOutcome::Refused(_), OpOutcome::Applied]
    ));
    let mut two_per_datagram = MemoryIpvs::new();
    two_per_datagram.set_batch_size(2);
    let second_datagram = apply(&mut two_per_datagram, &ops, OnFailure::Stop);
    assert!(matches!(
        second_datagram.outcomes.as_slice(),
        [OpOutcome::Applied, OpOutcome::Refused(_), OpOutcome::NotSent]
    ));

    let continued = apply(&mut MemoryIpvs::new(), &ops, OnFailure::Continue);
    assert!(matches!(
        continued.outcomes.as_slice(),
        [OpOutcome::Applied, OpOutcome::Refused(_), OpOutcome::Applied]
    ));
}

#[test]
fn kernel_range_and_family_checks_are_mimicked() {
    let mut table = MemoryIpvs::with_services([service("tcp:10.0.0.1:80")]);
    let web = svc_key("tcp:10.0.0.1:80");
    let heavy = dest("10.0.0.2:80", u32::MAX);
    let inverted = Destination { lower_threshold: 10, upper_threshold: 5, ..dest("10.0.0.3:80", 1) };
    let mixed = dest("[2001:db8::2]:80", 1);
    let tunnelled_mixed = Destination { forwarding: Forwarding::Tunnel, ..mixed };
    let ops = [
        Op::AddDest(web, heavy),
        Op::AddDest(web, inverted),
        Op::AddDest(web, mixed),
        Op::AddDest(web, tunnelled_mixed),
        Op::AddService(Service { scheduler: "nope".into(), ..service("tcp:10.0.0.5:80") }),
    ];
    let report = apply(&mut table, &ops, OnFailure::Continue);
    assert_eq!(refused_errno(&report, 0), libc::ERANGE);
    assert_eq!(refused_errno(&report, 1), libc::ERANGE);
    assert_eq!(refused_errno(&report, 2), libc::EINVAL);
    assert!(matches!(report.outcomes[3], OpOutcome::Applied), "{:?}", report.outcomes[3]);
    assert_eq!(refused_errno(&report, 4), libc::ENOENT);
}

#[test]
fn what_cannot_be_encoded_is_refused_before_the_kernel() {
    let bad = Service { scheduler: "a-name-too-long-for-ipvs".into(), ..service("tcp:10.0.0.1:80") };
    let report = apply(&mut MemoryIpvs::new(), &[Op::AddService(bad)], OnFailure::Stop);
    let OpOutcome::Refused(err) = &report.outcomes[0] else { panic!("{:?}", report.outcomes) };
    assert!(matches!(err, IpvsError::Invalid { .. }), "{err:?}");
    assert_eq!(err.errno(), None);
}

#[test]
fn updates_change_what_is_listed() {
    let web = svc_key("tcp:10.0.0.1:80");
    let mut table = MemoryIpvs::with_services([service("tcp:10.0.0.1:80")]);
    let persistent = Service { persistence: Some(300), scheduler: "sh".into(), ..service("tcp:10.0.0.1:80") };
    let ops = [
        Op::AddDest(web, dest("10.0.0.2:80", 1)),
        Op::UpdateService(persistent),
        Op::UpdateDest(web, dest("10.0.0.2:80", 0)),
    ];
    assert!(apply(&mut table, &ops, OnFailure::Stop).is_complete());
    let listed = block_on(table.services()).unwrap();
    assert_eq!(listed[0].service.persistence, Some(300));
    assert_eq!(listed[0].service.scheduler, "sh");
    assert_eq!(listed[0].flags & 1, 1, "IP_VS_SVC_F_PERSISTENT");
    assert_eq!(listed[0].service.destinations[&"10.0.0.2:80".parse().unwrap()].weight, 0);
    assert_eq!(listed[0].destinations[&"10.0.0.2:80".parse().unwrap()].destination.weight, 0);
}

#[test]
fn deleting_a_service_deletes_its_destinations() {
    let web = svc_key("tcp:10.0.0.1:80");
    let mut table = MemoryIpvs::with_services([service("tcp:10.0.0.1:80")]);
    let ops = [
        Op::AddDest(web, dest("10.0.0.2:80", 1)),
        Op::DeleteService(web),
        Op::AddService(service("tcp:10.0.0.1:80")),
    ];
    assert!(apply(&mut table, &ops, OnFailure::Stop).is_complete());
    assert!(block_on(table.services()).unwrap()[0].destinations.is_empty());
}

#[test]
fn connection_counts_can_be_set_for_drain_tests() {
    let web = svc_key("tcp:10.0.0.1:80");
    let mut seeded = service("tcp:10.0.0.1:80");
    seeded.destinations.insert("10.0.0.2:80".parse().unwrap(), dest("10.0.0.2:80", 1));
    let mut table = MemoryIpvs::with_services([seeded]);
    assert!(table.set_connections(&web, &"10.0.0.2:80".parse().unwrap(), 4, 1));
    assert!(!table.set_connections(&web, &"10.0.0.9:80".parse().unwrap(), 4, 1));
    let status = &block_on(table.services()).unwrap()[0].destinations[&"10.0.0.2:80".parse().unwrap()];
    assert_eq!((status.active_connections, status.inactive_connections), (4, 1));
}

#[test]
fn zero_timeouts_leave_the_current_value() {
    let mut table = MemoryIpvs::new();
    block_on(table.set_timeouts(Timeouts { tcp: 60, tcp_fin: 0, udp: 30 })).unwrap();
    assert_eq!(block_on(table.timeouts()).unwrap(), Timeouts { tcp: 60, tcp_fin: 120, udp: 30 });
    assert_eq!(block_on(table.info()).unwrap().version_string(), "1.2.1");
}

#[test]
fn fwmark_services_take_destinations_of_their_family() {
    let v6 = ServiceKey::Fwmark { mark: 7, family: Family::V6 };
    let mut table = MemoryIpvs::new();
    let ops = [
        Op::AddService(Service { key: v6, ..service("tcp:10.0.0.1:80") }),
        Op::AddDest(v6, dest("[2001:db8::2]:0", 1)),
        Op::AddDest(v6, dest("10.0.0.2:0", 1)),
    ];
    let report = apply(&mut table, &ops, OnFailure::Continue);
    assert!(matches!(report.outcomes[1], OpOutcome::Applied));
    assert_eq!(refused_errno(&report, 2), libc::EINVAL);
}

#[test]
fn injected_refusals_count_ops_across_calls_and_history_keeps_each_applied_state() {
    let web = svc_key("tcp:10.0.0.1:80");
    let mut table = MemoryIpvs::new();
    table.refuse_ops([2]);
    table.record_history();
    assert!(apply(&mut table, &[Op::AddService(service("tcp:10.0.0.1:80"))], OnFailure::Stop).is_complete());
    let ops = [Op::AddDest(web, dest("10.0.0.2:80", 1)), Op::AddDest(web, dest("10.0.0.3:80", 1))];
    let report = apply(&mut table, &ops, OnFailure::Stop);
    assert!(matches!(report.outcomes.as_slice(), [OpOutcome::Applied, OpOutcome::Refused(_)]));
    assert_eq!(refused_errno(&report, 1), libc::ENOMEM);
    let sizes: Vec<usize> = table.history().iter().map(|t| t[&web].destinations.len()).collect();
    assert_eq!(sizes, [0, 1]);
}
