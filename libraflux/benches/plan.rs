//! plan() over 10,000 services x 10 backends: against an identical observed table (the steady
//! state of the daemon's reconcile loop) and against one where 10% of the services differ.
//! Run with a short measurement: `cargo bench -p libraflux --bench plan -- --measurement-time 3`.

use std::{
    collections::BTreeMap,
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
};

use criterion::{Criterion, criterion_group, criterion_main};
use libraflux::{
    config::Ignore,
    model::{DestKey, Destination, Forwarding, Protocol, Service, ServiceKey},
    plan::plan,
};

const SERVICES: u32 = 10_000;
const BACKENDS: u32 = 10;

fn desired() -> BTreeMap<ServiceKey, Service> {
    (0..SERVICES)
        .map(|index| {
            let vip = Ipv4Addr::from(0x0a60_0000 + index);
            let key = ServiceKey::Addr { protocol: Protocol::Tcp, addr: IpAddr::V4(vip), port: 443 };
            let destinations = (0..BACKENDS)
                .map(|backend| {
                    let addr = IpAddr::V4(Ipv4Addr::from(0xc000_0200 + index * BACKENDS + backend));
                    let key = DestKey::new(addr, 443);
                    let dest = Destination {
                        key,
                        weight: 1,
                        forwarding: Forwarding::Nat,
                        upper_threshold: 0,
                        lower_threshold: 0,
                    };
                    (key, dest)
                })
                .collect();
            let service = Service {
                key,
                scheduler: "wrr".to_owned(),
                persistence: None,
                persistence_netmask: None,
                destinations,
            };
            (key, service)
        })
        .collect()
}

/// Every tenth service differs: alternately a new scheduler, a changed weight, a removed backend.
fn ten_percent_changed(desired: &BTreeMap<ServiceKey, Service>) -> BTreeMap<ServiceKey, Service> {
    let mut observed = desired.clone();
    for (index, service) in observed.values_mut().enumerate().filter(|(index, _)| index % 10 == 0) {
        match (index / 10) % 3 {
            0 => service.scheduler = "rr".to_owned(),
            1 => service.destinations.values_mut().for_each(|dest| dest.weight = 5),
            _ => {
                service.destinations.pop_first();
            }
        }
    }
    observed
}

fn bench_plan(c: &mut Criterion) {
    let desired = desired();
    let changed = ten_percent_changed(&desired);
    let ignore = Ignore::default();
    c.bench_function("plan 10k services x 10 backends, identical", |b| {
        b.iter(|| plan(black_box(&desired), black_box(&desired), &ignore))
    });
    c.bench_function("plan 10k services x 10 backends, 10% changed", |b| {
        b.iter(|| plan(black_box(&desired), black_box(&changed), &ignore))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_plan
}
criterion_main!(benches);
