//! Running drains: each tick reads the table, records when IPVS first shows a draining backend
//! at weight 0 (the grace period counts from there), and ends the drains whose protocol rule is
//! met. TCP: IPVS's connection counts. UDP: the eBPF counter's quiet when it sees the backend's
//! packets, otherwise the growth of IPVS's InPkts, never "no signal, so quiet".

use std::time::{Duration, Instant, SystemTime};

use super::{Daemon, reconcile::Trigger};
use crate::plan::Leaving;
use crate::{
    drain::{self, DrainEntry, Ended, Progress, Signal, TrafficSource},
    ipvs::ServiceStatus,
    model::{Protocol, ServiceKey},
};

impl Daemon {
    /// Ends the running drains whose rule is met. Drains are asked for and undone on the control
    /// socket (`requests.rs`), which reconciles at once; no one else writes the drain state.
    pub(super) async fn drain_tick(&mut self) {
        let running: Vec<DrainEntry> = drain::running(&self.drain_entries).cloned().collect();
        if running.is_empty() {
            self.drain_packets = drain::PacketWatch::default();
            return;
        }
        let table = match self.ipvs.list_services().await {
            Ok(table) => table,
            Err(err) => {
                tracing::error!(error = %err, "cannot read IPVS to evaluate drains");
                return;
            }
        };
        let (now, instant) = (SystemTime::now(), Instant::now());
        let now_ms = drain::unix_ms(now);
        let backends: Vec<drain::Backend> = running.iter().map(|d| (d.service, d.backend)).collect();
        self.drain_packets.update(&backends, &table, instant);
        let mut zeroed = Vec::new();
        let mut endings = Vec::new();
        for entry in &running {
            let at_zero_ms = entry
                .at_zero_unix_ms
                .or_else(|| drain::at_weight_zero(&table, (entry.service, entry.backend)).then_some(now_ms));
            if entry.at_zero_unix_ms.is_none() && at_zero_ms.is_some() {
                tracing::info!(service = %entry.service, backend = %entry.backend, "drain: IPVS shows weight 0; the grace period starts");
                zeroed.push((entry.service, entry.backend));
            }
            let progress = Progress {
                elapsed: entry.elapsed(now),
                at_zero: at_zero_ms.map(|ms| Duration::from_millis(now_ms.saturating_sub(ms))),
            };
            let signal = self.drain_signal(entry, &table, instant);
            if let Some(ending) = drain::evaluate(&entry.rules, progress, signal) {
                tracing::warn!(service = %entry.service, backend = %entry.backend, "{}", ending.describe());
                endings.push((entry.service, entry.backend, ending));
            }
        }
        if zeroed.is_empty() && endings.is_empty() {
            return;
        }
        let recorded = self.drains.update(|drains| {
            for drain in drains.iter_mut().filter(|d| d.ended.is_none()) {
                let key = (drain.service, drain.backend);
                if zeroed.contains(&key) {
                    drain.at_zero_unix_ms.get_or_insert(now_ms);
                }
                if let Some((_, _, ending)) = endings.iter().find(|(s, b, _)| (*s, *b) == key) {
                    drain.ended = Some(Ended { ending: *ending, at_unix_ms: now_ms });
                }
            }
        });
        if let Err(err) = recorded {
            tracing::error!(error = %err, "cannot record a drain's progress");
        }
        if self.load_drains() && !endings.is_empty() {
            self.reconcile(Trigger::Drain).await;
        }
    }

    /// The protocol's signal for one drain: IPVS connections for TCP (and firewall-mark
    /// services); for UDP the eBPF counter's quiet, or IPVS InPkts when no counter sees it.
    fn drain_signal(&self, entry: &DrainEntry, table: &[ServiceStatus], now: Instant) -> Signal {
        let backend = (entry.service, entry.backend);
        let ServiceKey::Addr { protocol: Protocol::Udp, .. } = entry.service else {
            return drain::connections(table, backend);
        };
        let key =
            crate::observe::DestKey::new(entry.backend.addr, entry.backend.port, Protocol::Udp.number());
        match self.observer.idle(&key) {
            Some(Some(idle)) => Signal::Udp { quiet_for: idle, source: TrafficSource::Ebpf },
            _ => Signal::Udp {
                quiet_for: self.drain_packets.quiet_for(backend, now),
                source: TrafficSource::IpvsInPkts,
            },
        }
    }
}

/// The backends whose removal drain has ended: the next plan deletes them.
pub(super) fn removals_drained(drains: &[DrainEntry]) -> std::collections::BTreeSet<drain::Backend> {
    drains
        .iter()
        .filter(|d| d.removed_from_config && d.ended.is_some())
        .map(|d| (d.service, d.backend))
        .collect()
}

impl Daemon {
    /// Keeps one removal drain per backend leaving the configuration: starts the missing ones
    /// (with their service's drain rules, or the defaults for a service that left), turns an
    /// operator's drain of a leaving backend into one, and drops those no longer needed: the
    /// backend is configured again (the drain is cancelled) or, after `applied`, deleted.
    pub(super) fn sync_removals(&mut self, leaving: &Leaving, applied: bool) {
        let needed = |d: &DrainEntry| leaving.backends.contains(&(d.service, d.backend));
        let stale = |d: &DrainEntry| d.removed_from_config && !needed(d) && (d.ended.is_none() || applied);
        let unmarked = |d: &DrainEntry| !d.removed_from_config && needed(d);
        let missing: Vec<drain::Backend> = leaving
            .backends
            .iter()
            .filter(|backend| !self.drain_entries.iter().any(|d| (d.service, d.backend) == **backend))
            .copied()
            .collect();
        if missing.is_empty() && !self.drain_entries.iter().any(|d| stale(d) || unmarked(d)) {
            return;
        }
        let started_unix_ms = drain::now_ms();
        let mut services: Vec<&ServiceKey> = missing.iter().map(|(service, _)| service).collect();
        services.dedup();
        for service in services.into_iter().filter(|service| leaving.services.contains(service)) {
            tracing::warn!(%service, "left the configuration: its backends at weight 0, deleted once all are drained");
        }
        let new: Vec<DrainEntry> = missing
            .iter()
            .map(|(service, backend)| {
                let rules = self.config.settings.get(service).map(|s| s.drain).unwrap_or_default();
                if !leaving.services.contains(service) {
                    tracing::warn!(%service, %backend, "left the configuration: weight 0, deleted once drained");
                }
                DrainEntry {
                    service: *service,
                    backend: *backend,
                    rules: drain::Rules {
                        grace: rules.grace,
                        timeout: rules.timeout,
                        quiet: rules.quiet,
                        include_inactive: false,
                    },
                    remove: true,
                    removed_from_config: true,
                    started_unix_ms,
                    at_zero_unix_ms: None,
                    ended: None,
                }
            })
            .collect();
        let updated = self.drains.update(|drains| {
            for drain in drains.iter_mut().filter(|d| unmarked(d)) {
                drain.remove = true;
                drain.removed_from_config = true;
            }
            drains.retain(|d| {
                let cancel = stale(d);
                if cancel && d.ended.is_none() {
                    tracing::info!(service = %d.service, backend = %d.backend, "configured again: removal drain cancelled");
                }
                !cancel
            });
            drains.extend(new.iter().cloned());
        });
        if let Err(err) = updated {
            tracing::error!(error = %err, "cannot record the drains of removed backends; they stay at weight 0");
        }
        self.load_drains();
    }
}
