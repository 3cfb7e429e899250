//! A labelled metric family that encodes its series in label order.
//!
//! prometheus-client's `Family` keeps its series in a `HashMap`, so every scrape lists them in a
//! different order. Everything LibraFlux prints is ordered by key, scrapes included: this family
//! keeps a `BTreeMap` and otherwise encodes exactly as `Family` does.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder},
    metrics::{MetricType, TypedMetric},
};

/// Series of one metric, by label set. Clones share the series.
pub(super) struct SortedFamily<L, M> {
    series: Arc<Mutex<BTreeMap<L, M>>>,
    new_metric: fn() -> M,
}

impl<L, M> Clone for SortedFamily<L, M> {
    fn clone(&self) -> Self {
        Self { series: Arc::clone(&self.series), new_metric: self.new_metric }
    }
}

impl<L: fmt::Debug, M: fmt::Debug> fmt::Debug for SortedFamily<L, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SortedFamily").field("series", &*self.lock()).finish()
    }
}

impl<L: Ord, M: Default> Default for SortedFamily<L, M> {
    fn default() -> Self {
        Self::new(M::default)
    }
}

impl<L, M> SortedFamily<L, M> {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<L, M>> {
        // The map stays consistent even if a holder panicked: every update is one insert.
        self.series.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<L: Ord, M> SortedFamily<L, M> {
    /// A family whose new series start as `new_metric()` (histograms need their buckets).
    pub(super) fn new(new_metric: fn() -> M) -> Self {
        Self { series: Arc::new(Mutex::new(BTreeMap::new())), new_metric }
    }

    /// Runs `f` on the series for `labels`, creating it first if needed.
    pub(super) fn with(&self, labels: L, f: impl FnOnce(&M)) {
        let mut series = self.lock();
        f(series.entry(labels).or_insert_with(self.new_metric));
    }

    /// Drops every series for which `keep` is false.
    pub(super) fn retain(&self, mut keep: impl FnMut(&L) -> bool) {
        self.lock().retain(|labels, _| keep(labels));
    }
}

impl<L, M> TypedMetric for SortedFamily<L, M>
where
    M: TypedMetric,
{
    const TYPE: MetricType = M::TYPE;
}

impl<L, M> EncodeMetric for SortedFamily<L, M>
where
    L: Ord + EncodeLabelSet,
    M: EncodeMetric + TypedMetric,
{
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        for (labels, metric) in self.lock().iter() {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}
