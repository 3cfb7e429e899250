//! Kernel refusals come back with the kernel's exact errno and a message naming the object; a
//! batch reports each op's fate and the table (read by ipvsadm) matches that report.

use libraflux::{
    ipvs::{BatchLimits, IpvsError, OnFailure, Op, OpOutcome},
    model::{Forwarding, Service},
};

use super::support::{apply_all, dest, dest_key, director, key, saved, service, with_client, with_dests};

/// Applies one op with our client and returns its refusal.
fn refusal(netns: &libraflux_tests::NetNs, op: Op) -> IpvsError {
    with_client(netns, move |mut client| async move {
        let report = client.apply_ops(std::slice::from_ref(&op), OnFailure::Stop).await;
        match report.outcomes.into_iter().next() {
            Some(OpOutcome::Refused(err)) => err,
            other => panic!("{op:?} was not refused: {other:?}"),
        }
    })
}

fn assert_refused(netns: &libraflux_tests::NetNs, op: Op, errno: i32, message: &str) {
    let err = refusal(netns, op);
    assert_eq!(err.errno(), Some(errno), "errno of: {err}");
    assert!(err.is_kernel_refusal(), "{err:?}");
    assert_eq!(err.to_string(), message);
}

#[test]
fn refusals_carry_the_kernels_errno_and_name_the_object() {
    let netns = director("errors");
    let web = with_dests(service("tcp:10.0.0.1:80", "wrr"), &[dest("10.0.0.2:80", 1, Forwarding::Nat)]);
    apply_all(&netns, super::support::add_ops(std::slice::from_ref(&web)));
    let before = saved(&netns);

    assert_refused(
        &netns,
        Op::AddService(service("tcp:10.0.0.1:80", "rr")),
        libc::EEXIST,
        "creating service tcp:10.0.0.1:80: File exists (os error 17)",
    );
    assert_refused(
        &netns,
        Op::AddDest(web.key, dest("10.0.0.2:80", 5, Forwarding::Dr)),
        libc::EEXIST,
        "creating destination 10.0.0.2:80 in tcp:10.0.0.1:80: File exists (os error 17)",
    );
    assert_refused(
        &netns,
        Op::DeleteService(key("tcp:10.0.0.9:80")),
        libc::ESRCH,
        "deleting service tcp:10.0.0.9:80: No such process (os error 3)",
    );
    assert_refused(
        &netns,
        Op::AddDest(key("tcp:10.0.0.9:80"), dest("10.0.0.2:80", 1, Forwarding::Nat)),
        libc::ESRCH,
        "creating destination 10.0.0.2:80 in tcp:10.0.0.9:80: No such process (os error 3)",
    );
    assert_refused(
        &netns,
        Op::DeleteDest(web.key, dest_key("10.0.0.3:80")),
        libc::ENOENT,
        "deleting destination 10.0.0.3:80 from tcp:10.0.0.1:80: No such file or directory (os error 2)",
    );
    assert_refused(
        &netns,
        Op::UpdateDest(web.key, dest("10.0.0.3:80", 1, Forwarding::Nat)),
        libc::ENOENT,
        "updating destination 10.0.0.3:80 in tcp:10.0.0.1:80: No such file or directory (os error 2)",
    );
    assert_refused(
        &netns,
        Op::AddService(service("tcp:10.0.0.5:80", "nope")),
        libc::ENOENT,
        "creating service tcp:10.0.0.5:80: No such file or directory (os error 2)",
    );
    let mut inverted = dest("10.0.0.4:80", 1, Forwarding::Nat);
    (inverted.upper_threshold, inverted.lower_threshold) = (5, 10);
    assert_refused(
        &netns,
        Op::AddDest(web.key, inverted),
        libc::ERANGE,
        "creating destination 10.0.0.4:80 in tcp:10.0.0.1:80: Numerical result out of range (os error 34)",
    );
    // The broadcast address of 10.0.0.0/8 here: IPVS wants a local or unicast IPv4 address.
    assert_refused(
        &netns,
        Op::AddDest(web.key, dest("10.255.255.255:80", 1, Forwarding::Nat)),
        libc::EINVAL,
        "creating destination 10.255.255.255:80 in tcp:10.0.0.1:80: Invalid argument (os error 22)",
    );
    // Refused before sending: an IPv6 persistence netmask of /0.
    let mut bad_mask = service("tcp:[fd00::1]:80", "rr");
    (bad_mask.persistence, bad_mask.persistence_netmask) = (Some(10), Some(0));
    let err = refusal(&netns, Op::AddService(bad_mask));
    assert!(matches!(err, IpvsError::Invalid { .. }), "{err:?}");
    assert_eq!(err.errno(), None);

    assert_eq!(saved(&netns), before, "no refusal changed the table");

    // GET_DEST for a missing service: the kernel's dump ends empty, without an error.
    let dests = with_client(&netns, |mut client| async move {
        client.dests(&key("tcp:10.0.0.9:80")).await.expect("GET_DEST of a missing service")
    });
    assert!(dests.is_empty(), "{dests:?}");
}

fn web(n: u8) -> Service {
    service(&format!("tcp:10.0.1.{n}:80"), "rr")
}

#[test]
fn a_batch_reports_each_outcome_and_the_table_matches_it() {
    let netns = director("batch");
    let d1 = dest("10.0.2.1:80", 1, Forwarding::Nat);
    let d2 = dest("10.0.2.2:80", 2, Forwarding::Nat);
    let ops = vec![
        Op::AddService(web(1)),
        Op::AddDest(web(1).key, d1),
        Op::AddService(web(1)), // EEXIST
        Op::AddDest(web(1).key, d2),
        Op::AddService(web(2)),
    ];
    let report =
        with_client(
            &netns,
            move |mut client| async move { client.apply_ops(&ops, OnFailure::Continue).await },
        );
    let outcomes: Vec<String> = report.outcomes.iter().map(outcome).collect();
    assert_eq!(outcomes, ["applied", "applied", "refused 17", "applied", "applied"]);
    assert_eq!(
        saved(&netns),
        libraflux_tests::sorted_lines(
            "-A -t 10.0.1.1:80 -s rr\n\
             -a -t 10.0.1.1:80 -r 10.0.2.1:80 -m -w 1\n\
             -a -t 10.0.1.1:80 -r 10.0.2.2:80 -m -w 2\n\
             -A -t 10.0.1.2:80 -s rr\n"
        )
    );

    // Stop, with two requests per datagram: the refusal's datagram partner still applies,
    // later datagrams are never sent.
    let netns = director("batch-stop");
    let ops = vec![
        Op::AddService(web(1)),
        Op::AddService(web(2)),
        Op::AddService(web(1)), // EEXIST, first of the second datagram
        Op::AddService(web(3)), // same datagram: applied
        Op::AddService(web(4)), // NotSent
        Op::AddService(web(5)), // NotSent
    ];
    let report = with_client(&netns, move |mut client| async move {
        client.set_batch_limits(BatchLimits { max_requests: 2, ..client.batch_limits() });
        client.apply_ops(&ops, OnFailure::Stop).await
    });
    let outcomes: Vec<String> = report.outcomes.iter().map(outcome).collect();
    assert_eq!(outcomes, ["applied", "applied", "refused 17", "applied", "not sent", "not sent"]);
    assert_eq!(
        saved(&netns),
        libraflux_tests::sorted_lines(
            "-A -t 10.0.1.1:80 -s rr\n-A -t 10.0.1.2:80 -s rr\n-A -t 10.0.1.3:80 -s rr\n"
        )
    );
}

fn outcome(outcome: &OpOutcome) -> String {
    match outcome {
        OpOutcome::Applied => "applied".into(),
        OpOutcome::Refused(err) => format!("refused {}", err.errno().unwrap_or(-1)),
        OpOutcome::NotSent => "not sent".into(),
        OpOutcome::Unknown => "unknown".into(),
    }
}
