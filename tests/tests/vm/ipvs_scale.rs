//! Pipelining at scale: thousands of ops in one `apply`, listings that need multi-part dumps
//! and EBUSY retries, and FLUSH.

use std::time::{Duration, Instant};

use libraflux::{
    ipvs::OnFailure,
    model::{Destination, Forwarding, Service},
};

use super::support::{add_ops, dest, director, saved, service, with_client, with_dests};

const SERVICES: usize = 2000;
const DESTS: usize = 5;
/// Far above what this takes under TCG, far below a hang.
const BUDGET: Duration = Duration::from_secs(240);

fn octets(n: usize) -> (usize, usize) {
    (n / 200, n % 200 + 1)
}

fn many_services() -> Vec<Service> {
    (0..SERVICES)
        .map(|index| {
            let (high, low) = octets(index);
            let dests: Vec<Destination> = (0..DESTS)
                .map(|d| dest(&format!("10.{}.{high}.{low}:80", 110 + d), 1, Forwarding::Nat))
                .collect();
            with_dests(service(&format!("tcp:10.100.{high}.{low}:80"), "wrr"), &dests)
        })
        .collect()
}

#[test]
fn thousands_of_ops_apply_in_one_call_and_list_back() {
    let netns = director("scale");
    let services = many_services();
    let ops = add_ops(&services);
    assert_eq!(ops.len(), SERVICES * (1 + DESTS));
    let started = Instant::now();
    let (report, listed, limits) = with_client(&netns, move |mut client| async move {
        let report = client.apply_ops(&ops, OnFailure::Stop).await;
        let listed = client.list_services().await.expect("listing");
        (report, listed, client.batch_limits())
    });
    eprintln!("apply + list of {} ops took {:?} with {limits:?}", SERVICES * 6, started.elapsed());
    assert!(report.transport_error.is_none(), "{:?}", report.transport_error);
    assert_eq!(report.applied(), SERVICES * (1 + DESTS), "first refusal: {:?}", report.refusals().next());
    assert_eq!(limits.max_requests, 4096, "root gets the forced buffers: full 4096-request batches");
    assert_eq!(listed.len(), SERVICES);
    let listed: Vec<Service> = listed.into_iter().map(|status| status.service).collect();
    assert_eq!(listed, super::support::sorted(services), "every service and destination listed back");
    let lines = saved(&netns).lines().count();
    assert_eq!(lines, SERVICES * (1 + DESTS), "ipvsadm-save -n | wc -l");
    assert!(started.elapsed() < BUDGET, "took {:?}", started.elapsed());

    with_client(&netns, |mut client| async move { client.flush().await.expect("FLUSH") });
    assert_eq!(saved(&netns), "", "FLUSH empties the table");
    let after = with_client(&netns, |mut client| async move { client.list_services().await.expect("list") });
    assert!(after.is_empty());
}

#[test]
fn a_service_with_hundreds_of_destinations_lists_completely() {
    const COUNT: usize = 600;
    let netns = director("wide");
    let dests: Vec<Destination> = (0..COUNT)
        .map(|n| {
            let (high, low) = octets(n);
            dest(
                &format!("10.120.{high}.{low}:8080"),
                u32::try_from(n % 7 + 1).expect("small"),
                Forwarding::Nat,
            )
        })
        .collect();
    // A second, small service first and last in order, so the wide dump shares rounds.
    let wide = with_dests(service("tcp:10.99.0.2:80", "wrr"), &dests);
    let before = with_dests(service("tcp:10.99.0.1:80", "rr"), &dests[..3]);
    let after = with_dests(service("tcp:10.99.0.3:80", "rr"), &dests[3..6]);
    let services = vec![before, wide, after];
    super::support::apply_all(&netns, add_ops(&services));
    let listed = with_client(&netns, |mut client| async move { client.list_services().await.expect("list") });
    let listed: Vec<Service> = listed.into_iter().map(|status| status.service).collect();
    assert_eq!(listed[1].destinations.len(), COUNT);
    assert_eq!(listed, services);
    let lines = saved(&netns).lines().count();
    assert_eq!(lines, 3 + 3 + COUNT + 3);
}
