//! Prometheus metrics (PRODUCT feature 7): the registry and the typed calls the daemon makes,
//! the per-backend IPVS collector ([`ipvs`]), the collection task ([`collect`]) and the HTTP
//! endpoint ([`http`]). Every name, label and limit is described in `docs/metrics.md`.
//!
//! Series are encoded in key order (service key, then backend key), like everything else
//! LibraFlux prints.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, PoisonError, atomic::AtomicU64},
    time::{Duration, Instant, SystemTime},
};

use prometheus_client::{
    encoding::{prometheus_text, text},
    metrics::{counter::Counter, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{
    config::Check,
    ipvs::{Op, ServiceStatus, SyncState},
    model::{DestKey, ServiceKey},
};

mod announce;
mod collect;
mod ebpf;
mod etcd;
mod family;
pub mod http;
mod ipvs;
mod labels;
mod register;
#[cfg(test)]
mod tests;
mod watch;
pub mod web;

pub use collect::collect_ipvs;
pub use ipvs::SERIES_PER_BACKEND;
pub use labels::{CheckOutcome, CheckType, ReconcileResult, Trigger};

use family::SortedFamily;
use ipvs::IpvsCollector;
use labels::{
    BackendLabels, CheckLabels, LatencyLabels, OperationKind, OperationLabels, ReasonLabels, ReconcileLabels,
    ReloadLabels, ReloadResult, ServiceLabels, SyncLabels, TriggerLabels, VersionLabels,
};

/// Health check latency buckets, seconds: 1 ms to 5 s (the longest sensible check timeout).
const CHECK_LATENCY_BUCKETS: [f64; 12] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Plan size buckets, operations: an idle reconcile plans none, a node's first thousands.
const PLAN_BUCKETS: [f64; 10] = [0.0, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 1000.0, 10_000.0, 100_000.0];

/// Why a configuration change was not put in force, as `libraflux_changes_refused_total` counts it:
/// each change limit by its name, a configuration that does not validate, one that could not be
/// put in force.
pub const REFUSAL_REASONS: [&str; 6] = [
    "max_services_created",
    "max_services_deleted",
    "max_backends_per_service",
    "max_backends_removed_percent",
    "invalid_config",
    "failed",
];

/// Reconcile duration buckets, seconds: an idle tick takes milliseconds, a large apply seconds.
const RECONCILE_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The exposition formats `/metrics` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text, what Prometheus asks for first.
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for every other client (curl, promtool).
    PrometheusText,
}

impl Format {
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::PrometheusText => prometheus_text::CONTENT_TYPE,
        }
    }

    /// The format a request's `Accept` header asks for: OpenMetrics only when named.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::PrometheusText,
        }
    }
}

/// The daemon's metrics. Share it behind an `Arc`: every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    ipvs: Arc<IpvsCollector>,
    ebpf: Arc<ebpf::EbpfCollector>,
    backend_healthy: SortedFamily<BackendLabels, Gauge>,
    health_checks: SortedFamily<CheckLabels, Counter>,
    check_latency: SortedFamily<LatencyLabels, Histogram>,
    fail_open: SortedFamily<ServiceLabels, Gauge>,
    reconcile_runs: SortedFamily<ReconcileLabels, Counter>,
    reconcile_triggers: SortedFamily<TriggerLabels, Counter>,
    reconcile_duration: Histogram,
    reconcile_operations: SortedFamily<OperationLabels, Counter>,
    drift_repairs: Counter,
    config_reloads: SortedFamily<ReloadLabels, Counter>,
    last_success: Gauge<f64, AtomicU64>,
    ebpf_attached: Gauge,
    sync_daemons: SortedFamily<SyncLabels, Gauge>,
    rollbacks: Counter,
    config_generation: Gauge,
    config_last_change: Gauge<f64, AtomicU64>,
    plan_operations: Histogram,
    changes_refused: SortedFamily<ReasonLabels, Counter>,
    replication_generation: Gauge,
    replication_last_success: Gauge<f64, AtomicU64>,
    replication_failures: SortedFamily<ReasonLabels, Counter>,
    canary_step: SortedFamily<BackendLabels, Gauge>,
    canary_target: SortedFamily<BackendLabels, Gauge>,
    canary_aborts: SortedFamily<ReasonLabels, Counter>,
    circuit_open: SortedFamily<BackendLabels, Gauge>,
    backend_draining: SortedFamily<BackendLabels, Gauge>,
    circuit_ejections: SortedFamily<BackendLabels, Counter>,
    announce: announce::AnnounceMetrics,
    watch: watch::WatchMetrics,
    etcd: etcd::EtcdMetrics,
    /// The rollback log's count when last read, so the counter only ever adds the difference.
    rollbacks_seen: AtomicU64,
    /// When the daemon loop last finished a reconcile (any result), or when this was created.
    last_reconcile: Mutex<Instant>,
}

impl Metrics {
    /// The registry for this node; per-backend IPVS series are capped at `max_series`.
    pub fn new(node: &str, max_series: u64) -> Self {
        let metrics = Self {
            registry: Registry::default(),
            ipvs: Arc::new(IpvsCollector::new(node, max_series)),
            ebpf: Arc::new(ebpf::EbpfCollector::new(node)),
            backend_healthy: SortedFamily::default(),
            health_checks: SortedFamily::default(),
            check_latency: SortedFamily::new(|| Histogram::new(CHECK_LATENCY_BUCKETS)),
            fail_open: SortedFamily::default(),
            reconcile_runs: SortedFamily::default(),
            reconcile_triggers: SortedFamily::default(),
            reconcile_duration: Histogram::new(RECONCILE_BUCKETS),
            reconcile_operations: SortedFamily::default(),
            drift_repairs: Counter::default(),
            config_reloads: SortedFamily::default(),
            last_success: Gauge::default(),
            ebpf_attached: Gauge::default(),
            sync_daemons: SortedFamily::default(),
            rollbacks: Counter::default(),
            config_generation: Gauge::default(),
            config_last_change: Gauge::default(),
            plan_operations: Histogram::new(PLAN_BUCKETS),
            changes_refused: SortedFamily::default(),
            replication_generation: Gauge::default(),
            replication_last_success: Gauge::default(),
            replication_failures: SortedFamily::default(),
            canary_step: SortedFamily::default(),
            canary_target: SortedFamily::default(),
            canary_aborts: SortedFamily::default(),
            circuit_open: SortedFamily::default(),
            backend_draining: SortedFamily::default(),
            circuit_ejections: SortedFamily::default(),
            announce: announce::AnnounceMetrics::default(),
            watch: watch::WatchMetrics::default(),
            etcd: etcd::EtcdMetrics::default(),
            rollbacks_seen: AtomicU64::new(0),
            last_reconcile: Mutex::new(Instant::now()),
        };
        metrics.with_registrations()
    }

    /// One reconcile run: its result, how long it took and the IPVS changes it applied.
    pub fn record_reconcile(&self, result: ReconcileResult, duration: Duration, applied: &[Op]) {
        self.reconcile_runs.with(ReconcileLabels { result }, |counter| {
            counter.inc();
        });
        self.reconcile_duration.observe(duration.as_secs_f64());
        for op in applied {
            self.reconcile_operations.with(OperationLabels { kind: op.into() }, |counter| {
                counter.inc();
            });
        }
        if result == ReconcileResult::Ok {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            self.last_success.set(now.as_secs_f64());
        }
        *self.last_reconcile.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// A reconcile starts, because of `trigger`.
    pub fn record_trigger(&self, trigger: Trigger) {
        self.reconcile_triggers.with(TriggerLabels { trigger }, |counter| {
            counter.inc();
        });
    }

    /// `changes` IPVS changes were made to repair drift (someone else changed the table).
    pub fn record_drift_repair(&self, changes: u64) {
        self.drift_repairs.inc_by(changes);
    }

    /// A configuration that changes what the daemon runs is in force: the `generation`th.
    pub fn record_config_change(&self, generation: u64) {
        self.config_generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        self.config_last_change.set(now.as_secs_f64());
    }

    /// A reconcile planned `operations` IPVS operations.
    pub fn record_plan(&self, operations: usize) {
        self.plan_operations.observe(operations as f64);
    }

    /// A configuration change was not put in force; `reason` is one of [`REFUSAL_REASONS`].
    pub fn record_change_refused(&self, reason: &'static str) {
        self.changes_refused.with(ReasonLabels { reason }, |counter| {
            counter.inc();
        });
    }

    pub fn record_reload(&self, ok: bool) {
        let result = if ok { ReloadResult::Ok } else { ReloadResult::Failed };
        self.config_reloads.with(ReloadLabels { result }, |counter| {
            counter.inc();
        });
    }

    /// One health check of `backend` and how long it took.
    pub fn record_health(
        &self,
        service: ServiceKey,
        backend: DestKey,
        check: &Check,
        outcome: CheckOutcome,
        latency: Duration,
    ) {
        self.health_checks.with(CheckLabels { service, backend, outcome }, |counter| {
            counter.inc();
        });
        self.check_latency.with(LatencyLabels { check_type: check.into(), outcome }, |histogram| {
            histogram.observe(latency.as_secs_f64());
        });
    }

    pub fn set_backend_healthy(&self, service: ServiceKey, backend: DestKey, healthy: bool) {
        self.backend_healthy.with(BackendLabels { service, backend }, |gauge| {
            gauge.set(i64::from(healthy));
        });
    }

    /// The rolling-out canaries, as (service, backend, step from 1, target percent): their series
    /// are set, every other canary's go.
    pub fn set_canaries(&self, running: &[(ServiceKey, DestKey, usize, u8)]) {
        let keep = |labels: &BackendLabels| {
            running.iter().any(|(s, b, ..)| (labels.service, labels.backend) == (*s, *b))
        };
        self.canary_step.retain(keep);
        self.canary_target.retain(keep);
        for (service, backend, step, percent) in running {
            let labels = BackendLabels { service: *service, backend: *backend };
            self.canary_step.with(labels.clone(), |gauge| {
                gauge.set(i64::try_from(*step).unwrap_or(i64::MAX));
            });
            self.canary_target.with(labels, |gauge| {
                gauge.set(i64::from(*percent));
            });
        }
    }

    /// Every backend with a circuit breaker, and whether it is ejected: their series are set
    /// (ejections from 0), every other backend's go.
    pub fn set_circuits(&self, circuits: impl Iterator<Item = (ServiceKey, DestKey, bool)>) {
        let circuits: Vec<(ServiceKey, DestKey, bool)> = circuits.collect();
        let known: BTreeSet<(ServiceKey, DestKey)> = circuits.iter().map(|(s, b, _)| (*s, *b)).collect();
        let keep = |labels: &BackendLabels| known.contains(&(labels.service, labels.backend));
        self.circuit_open.retain(keep);
        self.circuit_ejections.retain(keep);
        for (service, backend, open) in circuits.iter().copied() {
            self.set_circuit_open(service, backend, open);
            self.circuit_ejections.with(BackendLabels { service, backend }, |_| {});
        }
    }

    /// Every drain the daemon keeps, and whether it still runs: their series are set, every other
    /// backend's go.
    pub fn set_drains(&self, drains: &[(ServiceKey, DestKey, bool)]) {
        let known: BTreeSet<(ServiceKey, DestKey)> = drains.iter().map(|(s, b, _)| (*s, *b)).collect();
        self.backend_draining.retain(|labels| known.contains(&(labels.service, labels.backend)));
        for (service, backend, running) in drains {
            self.backend_draining.with(BackendLabels { service: *service, backend: *backend }, |gauge| {
                gauge.set(i64::from(*running));
            });
        }
    }

    pub fn set_circuit_open(&self, service: ServiceKey, backend: DestKey, open: bool) {
        self.circuit_open.with(BackendLabels { service, backend }, |gauge| {
            gauge.set(i64::from(open));
        });
    }

    pub fn record_circuit_ejection(&self, service: ServiceKey, backend: DestKey) {
        self.circuit_ejections.with(BackendLabels { service, backend }, |counter| {
            counter.inc();
        });
    }

    pub fn record_canary_abort(&self, reason: crate::canary::AbortReason) {
        self.canary_aborts.with(ReasonLabels { reason: reason.label() }, |counter| {
            counter.inc();
        });
    }

    pub fn set_fail_open(&self, service: ServiceKey, fail_open: bool) {
        self.fail_open.with(ServiceLabels { service }, |gauge| {
            gauge.set(i64::from(fail_open));
        });
    }

    /// Drops the health series of a backend that left the configuration.
    pub fn forget_backend(&self, service: ServiceKey, backend: DestKey) {
        self.backend_healthy.retain(|labels| (labels.service, labels.backend) != (service, backend));
        self.health_checks.retain(|labels| (labels.service, labels.backend) != (service, backend));
    }

    /// Drops the health series of a service that left the configuration, and its backends'.
    pub fn forget_service(&self, service: ServiceKey) {
        self.backend_healthy.retain(|labels| labels.service != service);
        self.health_checks.retain(|labels| labels.service != service);
        self.fail_open.retain(|labels| labels.service != service);
    }

    /// A reloaded `metrics.max_series`: the next collection exports or drops series by it.
    pub fn set_max_series(&self, max_series: u64) {
        self.ipvs.set_max_series(max_series);
    }

    /// Caches the IPVS table read by the collection task; scrapes encode this copy.
    pub fn set_ipvs_snapshot(&self, services: &[ServiceStatus]) {
        self.update_ipvs_snapshot(services, &BTreeSet::new());
    }

    /// The table as read, but for the backends of the services in `kept`, which were not read
    /// again and stay as the last snapshot had them.
    pub fn update_ipvs_snapshot(&self, services: &[ServiceStatus], kept: &BTreeSet<ServiceKey>) {
        // Logged when the number changes, not on every collection.
        match self.ipvs.set_snapshot(services, kept) {
            (before, now) if now == before => {}
            (_, 0) => tracing::info!("metrics.max_series: every per-backend IPVS series is exported again"),
            (_, dropped) => tracing::warn!(
                dropped,
                "metrics.max_series reached: {dropped} per-backend IPVS series are not exported \
                 (the backends after the limit, in service and backend key order)"
            ),
        }
    }

    /// The number of restores the rollback log records now; the counter adds what is new.
    pub fn set_rollbacks_recorded(&self, total: u64) {
        let before = self.rollbacks_seen.fetch_max(total, std::sync::atomic::Ordering::Relaxed);
        if total > before {
            self.rollbacks.inc_by(total - before);
        }
    }

    /// The eBPF observer's per-destination counters, cached until the next call.
    pub fn set_ebpf_snapshot(
        &self,
        snapshot: &std::collections::BTreeMap<crate::observe::DestKey, crate::observe::FlowSnapshot>,
    ) {
        self.ebpf.set(snapshot, Instant::now());
    }

    pub fn set_replication_generation(&self, generation: u64) {
        self.replication_generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    pub fn set_replication_last_success(&self, at: SystemTime) {
        let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        self.replication_last_success.set(since.as_secs_f64());
    }

    /// A replication failure; `reason` is one of [`crate::replication::REASONS`].
    pub fn record_replication_failure(&self, reason: &'static str) {
        self.replication_failures.with(ReasonLabels { reason }, |counter| {
            counter.inc();
        });
    }

    /// Starts every replication failure reason at zero: called once replication is configured,
    /// so that nodes without it export none of these series.
    pub fn start_replication_failures(&self) {
        for reason in crate::replication::REASONS {
            self.replication_failures.with(ReasonLabels { reason }, |_| {});
        }
    }

    pub fn set_ebpf_attached(&self, attached: bool) {
        self.ebpf_attached.set(i64::from(attached));
    }

    /// The states of the sync daemons the kernel runs: 1 for each, 0 for the others.
    pub fn set_sync_daemons(&self, running: &[SyncState]) {
        for state in SyncState::ALL {
            self.sync_daemons.with(SyncLabels { state }, |gauge| {
                gauge.set(i64::from(running.contains(&state)));
            });
        }
    }

    /// True while the daemon loop has finished a reconcile within `staleness` (counting from
    /// start-up before the first one).
    pub fn is_alive(&self, staleness: Duration) -> bool {
        self.last_reconcile.lock().unwrap_or_else(PoisonError::into_inner).elapsed() <= staleness
    }

    /// Every metric, in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::new();
        let encoded = match format {
            Format::OpenMetrics => text::encode(&mut out, &self.registry),
            Format::PrometheusText => prometheus_text::encode(&mut out, &self.registry),
        };
        // Only the writer can fail, and writing to a String does not.
        encoded.expect("encoding metrics into a String");
        out
    }
}
