//! The collection task: reads the IPVS table every `metrics.collect_interval` and caches it for
//! scrapes. It runs apart from reconcile (whose reads serve the planner) and from scrapes (which
//! never touch the kernel), so a scrape storm costs no netlink dumps.
//!
//! Reading every service's destinations costs one dump per service. While the daemon's write
//! watch counts every write to the table (`writes`, the count it saw; `None` without a watch)
//! and nobody wrote since the last whole read, the collector reads the services alone and then
//! only the destinations that may read differently: those of a service whose counters moved, or
//! of which one held a connection or a persistence template at the last read (a timer ends
//! those, without a packet). The others cannot have moved: IPVS counts every packet and
//! connection of a destination in its service too. A whole read still happens every
//! [`FULL_READ_EVERY`]. The collector keeps only what the next collection compares with (each
//! service's counters, and whether one of its destinations held anything), not the table: the
//! metrics keep the backends of the services not read again as they were.
//!
//! At rest it reads nothing: IPVS also counts every packet and connection in the namespace's
//! totals ([`crate::ipvs::totals`], one small file), so while nobody writes, no destination holds
//! anything, and the totals stay where they were when the counters last read as settled, no
//! counter can have moved. Settled: every read over at least [`SETTLED_AFTER`] found the same
//! totals and every service's counters the same; the kernel's estimator sums each counter every
//! 2 s on its own tick, so by the last of them every service has counted what the totals had at
//! the first.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    time::{Duration, Instant},
};

use tokio::{
    sync::watch,
    time::{self, MissedTickBehavior},
};

use super::Metrics;
use crate::{
    ipvs::{Ipvs, IpvsError, ServiceStatus, Stats64, Totals},
    model::ServiceKey,
};

/// The longest the collector goes without reading every destination.
pub const FULL_READ_EVERY: Duration = Duration::from_secs(15 * 60);

/// How long reads must find the same totals and counters for the last of them to have every
/// packet the first one's totals counted: two of the estimator's 2 s periods.
pub const SETTLED_AFTER: Duration = Duration::from_secs(4);

/// What a collection read, as `libraflux_stats_collections_total{read}` counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// Every service and every destination.
    Table,
    /// Every service, and the destinations that may read differently.
    Services,
    /// Nothing: the totals had not moved since the counters settled.
    Nothing,
}

impl Read {
    pub const ALL: [Self; 3] = [Self::Table, Self::Services, Self::Nothing];

    pub fn label(self) -> &'static str {
        match self {
            Self::Table => "table",
            Self::Services => "services",
            Self::Nothing => "none",
        }
    }
}

/// Reads `ipvs` now and then every `interval` until `shutdown` completes. A failed read is
/// logged and leaves the previous snapshot in place.
pub async fn collect_ipvs<I: Ipvs>(
    ipvs: &mut I,
    metrics: &Metrics,
    interval: Duration,
    mut writes: watch::Receiver<Option<u64>>,
    shutdown: impl Future<Output = ()>,
) {
    let mut ticks = time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last = None;
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticks.tick() => {}
        }
        let seen = *writes.borrow_and_update();
        match read(ipvs, last.as_ref(), seen, Instant::now()).await {
            Ok(None) => metrics.record_collection(Read::Nothing),
            Ok(Some(Collected { services, kept, seen, read })) => {
                metrics.update_ipvs_snapshot(&services, &kept);
                metrics.record_collection(read);
                last = Some(seen);
            }
            Err(err) => {
                tracing::warn!("metrics: reading the IPVS table failed, keeping the last snapshot: {err}")
            }
        }
    }
}

/// One collection: the services read, with the destinations of all but those in `kept`, whose
/// destinations were not read again (the metrics keep them as they were); and what the next
/// collection needs to know of this one.
#[derive(Debug)]
struct Collected {
    services: Vec<ServiceStatus>,
    kept: BTreeSet<ServiceKey>,
    seen: Seen,
    read: Read,
}

/// What a collection found, all the next one compares with: each service's counters and whether
/// one of its destinations held a connection or a persistence template; the writes counted when
/// it read; when every destination was last read; the totals just before it read; since when the
/// reads have found these totals and counters; and whether that is long enough for them to be
/// settled.
#[derive(Debug)]
struct Seen {
    services: BTreeMap<ServiceKey, ServiceSeen>,
    writes: Option<u64>,
    whole_at: Instant,
    totals: Option<Totals>,
    since: Instant,
    settled: bool,
}

impl Seen {
    /// What a read at `now` found, after `last`.
    fn new(
        services: BTreeMap<ServiceKey, ServiceSeen>,
        writes: Option<u64>,
        whole_at: Instant,
        totals: Option<Totals>,
        last: Option<&Self>,
        now: Instant,
    ) -> Self {
        let same = last.filter(|last| totals.is_some() && last.totals == totals && last.services == services);
        let since = same.map_or(now, |last| last.since);
        let settled = same.is_some() && now.duration_since(since) >= SETTLED_AFTER;
        Self { services, writes, whole_at, totals, since, settled }
    }

    fn held(&self) -> bool {
        self.services.values().any(|service| service.held)
    }
}

#[derive(Debug, PartialEq, Eq)]
struct ServiceSeen {
    stats: Stats64,
    held: bool,
}

impl ServiceSeen {
    fn of(status: &ServiceStatus) -> Self {
        let held = status.destinations.values().any(|dest| {
            dest.active_connections > 0 || dest.inactive_connections > 0 || dest.persistent_connections > 0
        });
        Self { stats: status.stats, held }
    }
}

/// One collection at `now`; `None` when it read nothing (the metrics stay as they are).
async fn read<I: Ipvs>(
    ipvs: &mut I,
    last: Option<&Seen>,
    writes: Option<u64>,
    now: Instant,
) -> Result<Option<Collected>, IpvsError> {
    let unwritten = last.filter(|last| {
        writes.is_some() && last.writes == writes && now.duration_since(last.whole_at) < FULL_READ_EVERY
    });
    // Before anything else: what the reads below find includes at least what these count.
    let totals = ipvs.totals().await;
    let Some(last) = unwritten else {
        let services = ipvs.services().await?;
        let seen = services.iter().map(|status| (status.service.key, ServiceSeen::of(status))).collect();
        let seen = Seen::new(seen, writes, now, totals, last, now);
        return Ok(Some(Collected { services, kept: BTreeSet::new(), seen, read: Read::Table }));
    };
    if last.settled && totals.is_some() && last.totals == totals && !last.held() {
        return Ok(None);
    }
    let mut services = ipvs.services_alone().await?;
    let stale: Vec<ServiceKey> = services
        .iter()
        .filter(|now| last.services.get(&now.service.key).is_none_or(|then| may_read_differently(then, now)))
        .map(|now| now.service.key)
        .collect();
    let mut fresh: BTreeMap<ServiceKey, _> = ipvs.destinations_of(&stale).await?.into_iter().collect();
    let (mut kept, mut seen) = (BTreeSet::new(), BTreeMap::new());
    for status in &mut services {
        let key = status.service.key;
        if let Some(dests) = fresh.remove(&key) {
            dests.into_iter().for_each(|dest| status.insert_destination(dest));
            seen.insert(key, ServiceSeen::of(status));
        } else if let Some(then) = last.services.get(&key) {
            // Not read again: its destinations stay as last read, and so does what was seen of
            // them.
            kept.insert(key);
            seen.insert(key, ServiceSeen { stats: status.stats, held: then.held });
        }
        // Neither (it went between the two reads, and a write will say so): the next collection
        // reads it again.
    }
    let seen = Seen::new(seen, writes, last.whole_at, totals, Some(last), now);
    Ok(Some(Collected { services, kept, seen, read: Read::Services }))
}

/// Whether a service's destinations may read differently than at the last read: its counters
/// moved, or one of them held a connection or a persistence template.
fn may_read_differently(then: &ServiceSeen, now: &ServiceStatus) -> bool {
    then.stats != now.stats || then.held
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        time::{Duration, Instant},
    };

    use super::collect_ipvs;
    use crate::{
        ipvs::MemoryIpvs,
        metrics::{Format, Metrics},
        model::{Destination, Forwarding, Service},
    };

    #[tokio::test]
    async fn collects_at_once_then_stops_on_shutdown() {
        let backend = Destination {
            key: "10.0.1.1:80".parse().unwrap(),
            weight: 1,
            forwarding: Forwarding::Nat,
            upper_threshold: 0,
            lower_threshold: 0,
        };
        let service = Service {
            key: "tcp:10.0.0.1:80".parse().unwrap(),
            scheduler: "rr".to_owned(),
            persistence: None,
            persistence_netmask: None,
            destinations: BTreeMap::from([(backend.key, backend)]),
        };
        let mut ipvs = MemoryIpvs::with_services([service.clone()]);
        assert!(ipvs.set_connections(&service.key, &backend.key, 4, 2));
        let metrics = Metrics::new("lb-a", 1000);
        // An hour between reads: only the immediate first read happens before shutdown.
        collect_ipvs(
            &mut ipvs,
            &metrics,
            Duration::from_secs(3600),
            tokio::sync::watch::channel(None).1,
            tokio::time::sleep(Duration::from_millis(20)),
        )
        .await;
        let text = metrics.encode(Format::PrometheusText);
        let line = r#"libraflux_ipvs_connections_active{node="lb-a",service="tcp:10.0.0.1:80",backend="10.0.1.1:80"} 4"#;
        assert!(text.lines().any(|l| l == line), "{text}");
    }

    fn three_services() -> (MemoryIpvs, Vec<Service>) {
        let services: Vec<Service> = (1..=3)
            .map(|n| {
                let backend = Destination {
                    key: format!("10.0.1.{n}:80").parse().unwrap(),
                    weight: 1,
                    forwarding: Forwarding::Nat,
                    upper_threshold: 0,
                    lower_threshold: 0,
                };
                Service {
                    key: format!("tcp:10.0.0.1:{n}").parse().unwrap(),
                    scheduler: "rr".to_owned(),
                    persistence: None,
                    persistence_netmask: None,
                    destinations: BTreeMap::from([(backend.key, backend)]),
                }
            })
            .collect();
        (MemoryIpvs::with_services(services.clone()), services)
    }

    /// Without a write watch every collection reads every destination, as before.
    #[tokio::test]
    async fn without_a_watch_every_read_is_whole() {
        let (mut ipvs, _) = three_services();
        let first = super::read(&mut ipvs, None, None, Instant::now()).await.unwrap().unwrap();
        let second = super::read(&mut ipvs, Some(&first.seen), None, Instant::now()).await.unwrap().unwrap();
        assert_eq!(second.services, first.services);
        assert!(second.kept.is_empty());
        assert_eq!((ipvs.reads().services, ipvs.reads().services_alone), (2, 0));
    }

    /// The per-backend IPVS series of a scrape.
    fn ipvs_series(metrics: &Metrics) -> Vec<String> {
        let text = metrics.encode(Format::PrometheusText);
        text.lines().filter(|line| line.starts_with("libraflux_ipvs_")).map(str::to_owned).collect()
    }

    /// While nobody writes, only the destinations of a service whose counters moved, or that held
    /// a connection, are read again; the metrics keep the rest as they were, and say what a whole
    /// read would. A write reads everything.
    #[tokio::test]
    async fn while_nobody_writes_only_what_may_have_moved_is_read_again() {
        let (mut ipvs, services) = three_services();
        let backend = |n: usize| *services[n].destinations.keys().next().unwrap();
        assert!(ipvs.set_connections(&services[2].key, &backend(2), 1, 0));
        let (partly, wholly) = (Metrics::new("lb-a", 1000), Metrics::new("lb-a", 1000));
        let first = super::read(&mut ipvs, None, Some(7), Instant::now()).await.unwrap().unwrap();
        partly.update_ipvs_snapshot(&first.services, &first.kept);
        assert!(ipvs.count_packets(&services[0].key, &backend(0), 5));
        let second =
            super::read(&mut ipvs, Some(&first.seen), Some(7), Instant::now()).await.unwrap().unwrap();
        let reads = ipvs.reads().clone();
        assert_eq!((reads.services, reads.services_alone), (1, 1));
        // Service 1 moved, service 3 held a connection; service 2 is as it was.
        assert_eq!(reads.destinations_of, vec![services[0].key, services[2].key]);
        assert_eq!(second.kept, [services[1].key].into());
        partly.update_ipvs_snapshot(&second.services, &second.kept);
        let whole = super::read(&mut ipvs, None, None, Instant::now()).await.unwrap().unwrap();
        wholly.set_ipvs_snapshot(&whole.services);
        assert_eq!(ipvs_series(&partly), ipvs_series(&wholly), "the partial read is the table");
        let moved = r#"libraflux_ipvs_packets_in_total{node="lb-a",service="tcp:10.0.0.1:1",backend="10.0.1.1:80"} 5"#;
        assert!(ipvs_series(&partly).iter().any(|line| line == moved), "{:?}", ipvs_series(&partly));

        // Someone wrote (the count moved): everything is read.
        assert!(ipvs.count_packets(&services[1].key, &backend(1), 2));
        let third =
            super::read(&mut ipvs, Some(&second.seen), Some(8), Instant::now()).await.unwrap().unwrap();
        assert_eq!(ipvs.reads().services, 3);
        assert!(third.kept.is_empty());
        assert_eq!(third.services[1].destinations[&backend(1)].stats.packets_in, 2);
    }

    /// Kept services keep their series; a service read again loses the backends it no longer
    /// has; a service gone loses all of its series.
    #[test]
    fn an_update_keeps_what_was_not_read_and_forgets_what_is_gone() {
        use crate::ipvs::{DestinationStatus, ServiceStatus};
        let status = |service: &Service, backends: &[&Destination]| {
            let mut status = ServiceStatus {
                service: Service { destinations: BTreeMap::new(), ..service.clone() },
                flags: 0,
                persistence_engine: None,
                stats: Default::default(),
                destinations: BTreeMap::new(),
            };
            for backend in backends {
                status.insert_destination(DestinationStatus {
                    destination: **backend,
                    active_connections: 1,
                    inactive_connections: 0,
                    persistent_connections: 0,
                    stats: Default::default(),
                });
            }
            status
        };
        let (_, services) = three_services();
        let one = |n: usize| services[n].destinations.values().next().unwrap();
        let extra = Destination { key: "10.0.2.1:80".parse().unwrap(), ..*one(0) };
        let metrics = Metrics::new("lb-a", 1000);
        metrics.set_ipvs_snapshot(&[
            status(&services[0], &[one(0), &extra]),
            status(&services[1], &[one(1)]),
            status(&services[2], &[one(2)]),
        ]);
        let active = |metrics: &Metrics| -> Vec<String> {
            ipvs_series(metrics)
                .into_iter()
                .filter(|line| line.starts_with("libraflux_ipvs_connections_active"))
                .collect()
        };
        assert_eq!(active(&metrics).len(), 4);
        // Service 1 read again without its extra backend, service 2 kept (read without its
        // destinations), service 3 gone.
        metrics.update_ipvs_snapshot(
            &[status(&services[0], &[one(0)]), status(&services[1], &[])],
            &[services[1].key].into(),
        );
        assert_eq!(
            active(&metrics),
            [
                r#"libraflux_ipvs_connections_active{node="lb-a",service="tcp:10.0.0.1:1",backend="10.0.1.1:80"} 1"#,
                r#"libraflux_ipvs_connections_active{node="lb-a",service="tcp:10.0.0.1:2",backend="10.0.1.2:80"} 1"#,
            ]
        );
    }

    /// At rest nothing is read: once every read over [`super::SETTLED_AFTER`] found the same totals
    /// and the same counters, the collections that find the totals where they were read nothing. A packet
    /// moves the totals, and what it moved is read; a connection held, or a write, reads again.
    #[tokio::test]
    async fn at_rest_nothing_is_read_until_the_totals_move() {
        let (mut ipvs, services) = three_services();
        let backend = |n: usize| *services[n].destinations.keys().next().unwrap();
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let collect = async |ipvs: &mut MemoryIpvs, last: &super::Seen, writes: u64, seconds: u64| {
            super::read(ipvs, Some(last), Some(writes), at(seconds)).await.unwrap()
        };
        let first = super::read(&mut ipvs, None, Some(7), at(0)).await.unwrap().unwrap();
        assert_eq!(first.read, super::Read::Table);
        // Too soon after the first read for the estimator to have summed every counter: read.
        let second = collect(&mut ipvs, &first.seen, 7, 2).await.unwrap();
        assert_eq!((second.read, second.seen.settled), (super::Read::Services, false));
        // The same as the reads since the first, far enough from it: settled, but read all the
        // same.
        let third = collect(&mut ipvs, &second.seen, 7, 4).await.unwrap();
        assert_eq!((third.read, third.seen.settled), (super::Read::Services, true));
        let reads = ipvs.reads().clone();
        assert!(collect(&mut ipvs, &third.seen, 7, 36).await.is_none(), "at rest");
        assert!(collect(&mut ipvs, &third.seen, 7, 66).await.is_none(), "still at rest");
        assert_eq!(ipvs.reads(), &reads, "nothing was read at rest");

        // A packet moves the totals: the service it went to is read again, and settles anew.
        assert!(ipvs.count_packets(&services[1].key, &backend(1), 1));
        let moved = collect(&mut ipvs, &third.seen, 7, 96).await.unwrap();
        assert_eq!((moved.read, moved.seen.settled), (super::Read::Services, false));
        assert_eq!(ipvs.reads().destinations_of[reads.destinations_of.len()..], [services[1].key]);
        assert_eq!(moved.services[1].destinations[&backend(1)].stats.packets_in, 1);
        let settled = collect(&mut ipvs, &moved.seen, 7, 126).await.unwrap();
        assert!(settled.seen.settled);
        assert!(collect(&mut ipvs, &settled.seen, 7, 156).await.is_none());

        // A connection held: read every time, whatever the totals say.
        assert!(ipvs.set_connections(&services[0].key, &backend(0), 1, 0));
        let unsettled = Instant::now();
        let read = super::read(&mut ipvs, None, Some(7), unsettled).await.unwrap().unwrap();
        let again = super::read(&mut ipvs, Some(&read.seen), Some(7), unsettled + Duration::from_secs(30));
        let again = again.await.unwrap().unwrap();
        assert!(again.seen.settled, "settled, but held");
        let later = super::read(&mut ipvs, Some(&again.seen), Some(7), unsettled + Duration::from_secs(60));
        assert!(later.await.unwrap().is_some(), "a held connection ends on a timer, without a packet");

        // A write reads the whole table.
        let written = collect(&mut ipvs, &settled.seen, 8, 186).await.unwrap();
        assert_eq!(written.read, super::Read::Table);
    }

    #[tokio::test]
    async fn a_destination_with_a_persistence_template_may_read_differently() {
        use crate::ipvs::Ipvs as _;
        let (mut ipvs, _) = three_services();
        let mut status = ipvs.services().await.unwrap().remove(0);
        assert!(!super::may_read_differently(&super::ServiceSeen::of(&status), &status));
        status.destinations.values_mut().for_each(|dest| dest.persistent_connections = 1);
        assert!(super::may_read_differently(&super::ServiceSeen::of(&status), &status));
    }
}
