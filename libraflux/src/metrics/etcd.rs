//! The metrics of a node that reads its configuration from etcd (docs/fleet.md,
//! docs/metrics.md). A node without `source.etcd` exports the three gauges at 0 and no counter.

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

use super::{Metrics, family::SortedFamily, labels::ReasonLabels};
use crate::etcd::{follow::FailReason, node::REFUSAL_REASONS};

#[derive(Debug, Default)]
pub(super) struct EtcdMetrics {
    revision: Gauge,
    connected: Gauge,
    from_last_good: Gauge,
    refused: SortedFamily<ReasonLabels, Counter>,
    watch_failures: SortedFamily<ReasonLabels, Counter>,
}

impl EtcdMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "libraflux_etcd_revision",
            "The etcd revision of the configuration in force (the revision it was first read at); 0 without source.etcd",
            self.revision.clone(),
        );
        registry.register(
            "libraflux_etcd_connected",
            "1 while the daemon watches its prefix in etcd, 0 while it cannot read or watch it (or has no source.etcd)",
            self.connected.clone(),
        );
        registry.register(
            "libraflux_etcd_from_last_good",
            "1 while the configuration in force is the last good one from disk because etcd could not be read at start \
             (or held a refused configuration), until etcd is read",
            self.from_last_good.clone(),
        );
        registry.register(
            "libraflux_etcd_refused",
            "Configurations read from etcd that were not put in force, by reason: empty, bad_name, too_many_files, \
             too_large, invalid_config, limits, failed",
            self.refused.clone(),
        );
        registry.register(
            "libraflux_etcd_watch_failures",
            "Times the prefix had to be read again, by reason: unreachable (the read failed), lost (the watch failed, \
             ended, or etcd stopped answering), compacted (the watch's start was compacted away)",
            self.watch_failures.clone(),
        );
    }
}

impl Metrics {
    /// Starts every etcd counter at zero: called once `source.etcd` is configured, so that other
    /// nodes export none of these series.
    pub fn start_etcd(&self) {
        for reason in REFUSAL_REASONS {
            self.etcd.refused.with(ReasonLabels { reason }, |_| {});
        }
        for reason in FailReason::ALL {
            self.etcd.watch_failures.with(ReasonLabels { reason: reason.label() }, |_| {});
        }
    }

    pub fn set_etcd_revision(&self, revision: i64) {
        self.etcd.revision.set(revision);
    }

    pub fn set_etcd_connected(&self, connected: bool) {
        self.etcd.connected.set(i64::from(connected));
    }

    pub fn set_etcd_from_last_good(&self, from_last_good: bool) {
        self.etcd.from_last_good.set(i64::from(from_last_good));
    }

    /// A configuration from etcd refused, `reason` one of [`REFUSAL_REASONS`].
    pub fn record_etcd_refused(&self, reason: &'static str) {
        self.etcd.refused.with(ReasonLabels { reason }, |counter| {
            counter.inc();
        });
    }

    pub fn record_etcd_watch_failure(&self, reason: FailReason) {
        self.etcd.watch_failures.with(ReasonLabels { reason: reason.label() }, |counter| {
            counter.inc();
        });
    }
}
