//! The collection task: reads the IPVS table every `metrics.collect_interval` and caches it for
//! scrapes. It runs apart from reconcile (whose reads serve the planner) and from scrapes (which
//! never touch the kernel), so a scrape storm costs no netlink dumps.

use std::{future::Future, time::Duration};

use tokio::time::{self, MissedTickBehavior};

use super::Metrics;
use crate::ipvs::Ipvs;

/// Reads `ipvs` now and then every `interval` until `shutdown` completes. A failed read is
/// logged and leaves the previous snapshot in place.
pub async fn collect_ipvs<I: Ipvs>(
    ipvs: &mut I,
    metrics: &Metrics,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut ticks = time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticks.tick() => {}
        }
        match ipvs.services().await {
            Ok(services) => metrics.set_ipvs_snapshot(&services),
            Err(err) => {
                tracing::warn!("metrics: reading the IPVS table failed, keeping the last snapshot: {err}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

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
            tokio::time::sleep(Duration::from_millis(20)),
        )
        .await;
        let text = metrics.encode(Format::PrometheusText);
        let line = r#"libraflux_ipvs_connections_active{node="lb-a",service="tcp:10.0.0.1:80",backend="10.0.1.1:80"} 4"#;
        assert!(text.lines().any(|l| l == line), "{text}");
    }
}
