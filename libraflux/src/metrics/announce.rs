//! The announce metrics (docs/fleet.md, docs/metrics.md): which VIPs BIRD announces for this
//! node, and how its reconfigures went. A node without `announce:` exports only
//! `libraflux_announce_pending`, at 0.

use std::net::IpAddr;

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

use super::{
    Metrics,
    family::SortedFamily,
    labels::{ResultLabels, VipLabels},
};

#[derive(Debug, Default)]
pub(super) struct AnnounceMetrics {
    vip_announced: SortedFamily<VipLabels, Gauge>,
    reconfigures: SortedFamily<ResultLabels, Counter>,
    pending: Gauge,
}

impl AnnounceMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "libraflux_vip_announced",
            "1 while BIRD runs an announce file of this daemon's that announces the VIP, 0 otherwise",
            self.vip_announced.clone(),
        );
        registry.register(
            "libraflux_bird_reconfigures",
            "Announce changes put to BIRD, by result: ok, rejected (BIRD refused its configuration; the \
             last good file is back), unreachable (no socket or no answer), file_error",
            self.reconfigures.clone(),
        );
        registry.register(
            "libraflux_announce_pending",
            "1 while the last announce change did not take (BIRD keeps announcing what it did); retried after \
             each reconcile",
            self.pending.clone(),
        );
    }
}

impl Metrics {
    /// One announce change put to BIRD, `result` one of [`crate::announce::RESULTS`]. The first
    /// starts every result at zero.
    pub fn record_bird_reconfigure(&self, result: &'static str) {
        for each in crate::announce::RESULTS {
            self.announce.reconfigures.with(ResultLabels { result: each }, |_| {});
        }
        self.announce.reconfigures.with(ResultLabels { result }, |counter| {
            counter.inc();
        });
        self.announce.pending.set(i64::from(result != "ok"));
    }

    /// Every VIP of `announce:` and whether BIRD announces it: their series are set, every other
    /// VIP's go. None (`announce:` removed): every announce series goes.
    pub fn set_announced(&self, vips: &[(IpAddr, bool)]) {
        self.announce.vip_announced.retain(|labels| vips.iter().any(|(vip, _)| *vip == labels.vip));
        for (vip, announced) in vips {
            self.announce.vip_announced.with(VipLabels { vip: *vip }, |gauge| {
                gauge.set(i64::from(*announced));
            });
        }
        if vips.is_empty() {
            self.announce.pending.set(0);
            self.announce.reconfigures.retain(|_| false);
        }
    }
}
