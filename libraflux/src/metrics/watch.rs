//! The IPVS write watch's metrics (docs/observer.md, "Who writes to IPVS"): whether the daemon
//! sees every write to the table, how many came from other processes, and how many interval
//! reconciles it could therefore answer without reading the table; and what each of the
//! statistics collector's collections read, which the watch lets it narrow.

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

use super::{Metrics, SortedFamily, collect::Read, labels::ReadLabels};

#[derive(Debug, Default)]
pub(super) struct WatchMetrics {
    attached: Gauge,
    foreign_writes: Counter,
    reads_skipped: Counter,
    collections: SortedFamily<ReadLabels, Counter>,
    /// The probe's count of others' writes when last exported, so the counter adds differences.
    foreign_seen: std::sync::atomic::AtomicU64,
}

impl WatchMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "libraflux_write_watch_attached",
            "1 while the daemon counts every write to the IPVS table (a kprobe) and reads the table on its \
             interval only after someone else wrote; 0 while it reads the table every interval",
            self.attached.clone(),
        );
        registry.register(
            "libraflux_foreign_writes",
            "Writes to the IPVS table by other processes (ipvsadm, keepalived, another daemon) the watch \
             counted, accepted or not",
            self.foreign_writes.clone(),
        );
        registry.register(
            "libraflux_reconcile_reads_skipped",
            "Interval reconciles that did not read the IPVS table: nobody else had written to it and the \
             configuration, health and drains were as at the last read (counted as no_changes runs too)",
            self.reads_skipped.clone(),
        );
        for read in Read::ALL {
            self.collections.with(ReadLabels { read: read.label() }, |_| {});
        }
        registry.register(
            "libraflux_stats_collections",
            "Collections of the IPVS statistics by what they read: table (every service and backend), \
             services (every service, and the backends of those whose counters moved or that held a \
             connection), none (nobody wrote, nothing held a connection, and the kernel's totals had not \
             moved)",
            self.collections.clone(),
        );
    }
}

impl Metrics {
    pub fn set_write_watch(&self, attached: bool) {
        self.watch.attached.set(i64::from(attached));
    }

    /// The probe's running count of other processes' writes.
    pub fn set_foreign_writes(&self, total: u64) {
        let seen = self.watch.foreign_seen.swap(total, std::sync::atomic::Ordering::Relaxed);
        self.watch.foreign_writes.inc_by(total.saturating_sub(seen));
    }

    pub fn record_read_skipped(&self) {
        self.watch.reads_skipped.inc();
    }

    pub fn record_collection(&self, read: Read) {
        self.watch.collections.with(ReadLabels { read: read.label() }, |counter| {
            counter.inc();
        });
    }
}
