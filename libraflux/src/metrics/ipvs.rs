//! Per-backend IPVS metrics: a collector that encodes the last snapshot of the table at scrape
//! time. Scrapes never touch the kernel; [`super::collect`] refreshes the snapshot on its own
//! interval.
//!
//! Counters come from the kernel's cumulative stats64 values. They are kept monotonic for the
//! life of the process: when a kernel value drops (service re-created, counters zeroed), the
//! value last seen is added to a per-series offset, so the exported value keeps rising from
//! where it was. Traffic between the last collection and the reset is not seen.
//!
//! Cardinality: at most `max_series` series over all per-backend families. Each backend has
//! [`SERIES_PER_BACKEND`] series; backends are exported in (service key, backend key) order and
//! those past the limit are dropped whole, their series counted in
//! `libraflux_metrics_series_dropped`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use crate::{
    ipvs::{DestinationStatus, ServiceStatus},
    model::{DestKey, ServiceKey},
};

/// The per-backend families, in the order they are encoded.
const FAMILIES: [Family; 7] = [
    Family::Connections,
    Family::Active,
    Family::Inactive,
    Family::PacketsIn,
    Family::PacketsOut,
    Family::BytesIn,
    Family::BytesOut,
];

/// How many series one backend adds.
pub const SERIES_PER_BACKEND: u64 = FAMILIES.len() as u64;

#[derive(Clone, Copy, Debug)]
enum Family {
    Connections,
    Active,
    Inactive,
    PacketsIn,
    PacketsOut,
    BytesIn,
    BytesOut,
}

impl Family {
    /// Name as registered: counters get `_total` from the encoder.
    fn name(self) -> &'static str {
        match self {
            Self::Connections => "libraflux_ipvs_connections",
            Self::Active => "libraflux_ipvs_connections_active",
            Self::Inactive => "libraflux_ipvs_connections_inactive",
            Self::PacketsIn => "libraflux_ipvs_packets_in",
            Self::PacketsOut => "libraflux_ipvs_packets_out",
            Self::BytesIn => "libraflux_ipvs_bytes_in",
            Self::BytesOut => "libraflux_ipvs_bytes_out",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Self::Connections => {
                "Connections IPVS scheduled to the backend (kernel stats64, kept monotonic)."
            }
            Self::Active => "Active connections of the backend (IPVS ActiveConn).",
            Self::Inactive => "Inactive connections of the backend (IPVS InActConn).",
            Self::PacketsIn => "Packets from clients to the backend (kernel stats64, kept monotonic).",
            Self::PacketsOut => "Packets from the backend to clients (kernel stats64, kept monotonic).",
            Self::BytesIn => "Bytes from clients to the backend (kernel stats64, kept monotonic).",
            Self::BytesOut => "Bytes from the backend to clients (kernel stats64, kept monotonic).",
        }
    }

    fn metric_type(self) -> MetricType {
        match self {
            Self::Active | Self::Inactive => MetricType::Gauge,
            _ => MetricType::Counter,
        }
    }
}

/// A kernel counter made monotonic across resets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct MonotonicCounter {
    last_kernel: u64,
    offset: u64,
}

impl MonotonicCounter {
    fn observe(&mut self, kernel: u64) {
        if kernel < self.last_kernel {
            self.offset = self.offset.saturating_add(self.last_kernel);
        }
        self.last_kernel = kernel;
    }

    fn value(self) -> u64 {
        self.offset.saturating_add(self.last_kernel)
    }
}

/// What one backend exports. The service label is formatted once, when the service is first
/// seen, and shared by its backends; the backend label is formatted at scrape time, for exported
/// backends only (at most `max_series` / [`SERIES_PER_BACKEND`] of them).
#[derive(Clone, Debug)]
struct BackendSeries {
    service: Arc<str>,
    active: u32,
    inactive: u32,
    connections: MonotonicCounter,
    packets_in: MonotonicCounter,
    packets_out: MonotonicCounter,
    bytes_in: MonotonicCounter,
    bytes_out: MonotonicCounter,
}

impl BackendSeries {
    fn new(service: Arc<str>) -> Self {
        Self {
            service,
            active: 0,
            inactive: 0,
            connections: MonotonicCounter::default(),
            packets_in: MonotonicCounter::default(),
            packets_out: MonotonicCounter::default(),
            bytes_in: MonotonicCounter::default(),
            bytes_out: MonotonicCounter::default(),
        }
    }

    fn observe(&mut self, status: &DestinationStatus) {
        self.active = status.active_connections;
        self.inactive = status.inactive_connections;
        self.connections.observe(status.stats.connections);
        self.packets_in.observe(status.stats.packets_in);
        self.packets_out.observe(status.stats.packets_out);
        self.bytes_in.observe(status.stats.bytes_in);
        self.bytes_out.observe(status.stats.bytes_out);
    }

    fn counter(&self, family: Family) -> u64 {
        match family {
            Family::Connections => self.connections.value(),
            Family::PacketsIn => self.packets_in.value(),
            Family::PacketsOut => self.packets_out.value(),
            Family::BytesIn => self.bytes_in.value(),
            Family::BytesOut => self.bytes_out.value(),
            Family::Active => u64::from(self.active),
            Family::Inactive => u64::from(self.inactive),
        }
    }
}

#[derive(Debug)]
struct State {
    backends: BTreeMap<(ServiceKey, DestKey), BackendSeries>,
    dropped: u64,
}

/// The cached table and the counter offsets; registered with the registry as a collector.
#[derive(Debug)]
pub(super) struct IpvsCollector {
    node: String,
    /// `metrics.max_series`; a reload changes it, and the next collection applies it.
    max_series: std::sync::atomic::AtomicU64,
    state: Mutex<State>,
}

impl IpvsCollector {
    pub(super) fn new(node: &str, max_series: u64) -> Self {
        Self {
            node: node.to_owned(),
            max_series: max_series.into(),
            state: Mutex::new(State { backends: BTreeMap::new(), dropped: 0 }),
        }
    }

    /// Replaces the cached table with `services`, but for the backends of the services in `kept`,
    /// which stay as they were (their counters were not read again: they cannot have moved).
    /// Backends missing from `services` are forgotten: their series go stale, and a backend that
    /// comes back later starts again from the kernel's value. Updated in place, so that a
    /// collection that read little costs little. Returns the number of series dropped by the
    /// cardinality limit, before and now.
    pub(super) fn set_snapshot(&self, services: &[ServiceStatus], kept: &BTreeSet<ServiceKey>) -> (u64, u64) {
        let read: BTreeMap<ServiceKey, &ServiceStatus> =
            services.iter().map(|status| (status.service.key, status)).collect();
        let mut state = self.lock();
        state.backends.retain(|(service, backend), _| {
            read.get(service)
                .is_some_and(|status| kept.contains(service) || status.destinations.contains_key(backend))
        });
        for (key, status) in read.iter().filter(|(key, _)| !kept.contains(key)) {
            // Formatted only if one of its backends is new, and then once for all of them.
            let mut label: Option<Arc<str>> = None;
            for (dest, destination) in &status.destinations {
                let series = state.backends.entry((*key, *dest)).or_insert_with(|| {
                    BackendSeries::new(Arc::clone(label.get_or_insert_with(|| key.to_string().into())))
                });
                series.observe(destination);
            }
        }
        let exported = self.exported_backends(state.backends.len());
        let before = state.dropped;
        state.dropped = (state.backends.len() as u64 - exported).saturating_mul(SERIES_PER_BACKEND);
        (before, state.dropped)
    }

    pub(super) fn set_max_series(&self, max_series: u64) {
        self.max_series.store(max_series, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many of `backends` fit under the limit.
    fn exported_backends(&self, backends: usize) -> u64 {
        (backends as u64).min(self.max_series.load(std::sync::atomic::Ordering::Relaxed) / SERIES_PER_BACKEND)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Each snapshot replaces the map whole, so a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn encode_family(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        family: Family,
        backends: &[(String, &BackendSeries)],
    ) -> Result<(), fmt::Error> {
        let mut metric =
            encoder.encode_descriptor(family.name(), family.help(), None, family.metric_type())?;
        for (backend, series) in backends {
            let labels =
                [("node", self.node.as_str()), ("service", &*series.service), ("backend", backend.as_str())];
            let value = series.counter(family);
            let sample = metric.encode_family(&labels)?;
            match family.metric_type() {
                MetricType::Counter => ConstCounter::new(value).encode(sample)?,
                _ => ConstGauge::new(value).encode(sample)?,
            }
        }
        Ok(())
    }
}

impl Collector for IpvsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let state = self.lock();
        let exported = self.exported_backends(state.backends.len()) as usize;
        let backends: Vec<(String, &BackendSeries)> = state
            .backends
            .iter()
            .take(exported)
            .map(|((_, backend), series)| (backend.to_string(), series))
            .collect();
        if !backends.is_empty() {
            for family in FAMILIES {
                self.encode_family(&mut encoder, family, &backends)?;
            }
        }
        let dropped = encoder.encode_descriptor(
            "libraflux_metrics_series_dropped",
            "Per-backend IPVS series not exported because of metrics.max_series.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(state.dropped).encode(dropped)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::MonotonicCounter;

    #[test]
    fn a_counter_follows_the_kernel_and_survives_resets() {
        let mut counter = MonotonicCounter::default();
        for (kernel, exported) in [(10, 10), (25, 25), (25, 25), (4, 29), (0, 29), (7, 36)] {
            counter.observe(kernel);
            assert_eq!(counter.value(), exported, "after the kernel said {kernel}");
        }
    }
}
