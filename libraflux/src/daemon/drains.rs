//! Running drains: each tick reads the table, records when IPVS first shows a draining backend
//! at weight 0 (the grace period counts from there), and ends the drains whose protocol rule is
//! met. TCP: IPVS's connection counts. UDP: the eBPF counter's quiet when it sees the backend's
//! packets, otherwise the growth of IPVS's InPkts, never "no signal, so quiet".

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    time::{Duration, Instant, SystemTime},
};

use super::{Daemon, blocking, reconcile::Trigger};
use crate::{
    drain::{self, DrainEntry, DrainStore, Ended, Ending, Progress, Seen, Signal, TrafficSource},
    model::{Protocol, ServiceKey},
    plan::Leaving,
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
        let backends: Vec<drain::Backend> = running.iter().map(|d| (d.service, d.backend)).collect();
        let seen = match self.ipvs.dests_of(&drain::services_of(&backends)).await {
            Ok(dumps) => Seen::from_dumps(dumps),
            Err(err) => {
                tracing::error!(error = %err, "cannot read IPVS to evaluate drains");
                return;
            }
        };
        let (now, instant) = (SystemTime::now(), Instant::now());
        let now_ms = drain::unix_ms(now);
        self.drain_packets.update(&backends, &seen, instant);
        let mut zeroed = Vec::new();
        let mut endings = Vec::new();
        for entry in &running {
            let at_zero_ms = entry
                .at_zero_unix_ms
                .or_else(|| seen.at_weight_zero((entry.service, entry.backend)).then_some(now_ms));
            if entry.at_zero_unix_ms.is_none() && at_zero_ms.is_some() {
                zeroed.push((entry.service, entry.backend));
            }
            let progress = Progress {
                elapsed: entry.elapsed(now),
                at_zero: at_zero_ms.map(|ms| Duration::from_millis(now_ms.saturating_sub(ms))),
            };
            let signal = self.drain_signal(entry, &seen, instant);
            if let Some(ending) = drain::evaluate(&entry.rules, progress, signal) {
                endings.push((entry.service, entry.backend, ending));
            }
        }
        if zeroed.is_empty() && endings.is_empty() {
            return;
        }
        log_progress(&zeroed, &endings);
        let zeroed: HashSet<drain::Backend> = zeroed.into_iter().collect();
        let endings: HashMap<drain::Backend, Ending> =
            endings.into_iter().map(|(service, backend, ending)| ((service, backend), ending)).collect();
        self.change_drains(|drains| {
            for drain in drains.iter_mut().filter(|d| d.ended.is_none()) {
                let key = (drain.service, drain.backend);
                if zeroed.contains(&key) {
                    drain.at_zero_unix_ms.get_or_insert(now_ms);
                }
                if let Some(ending) = endings.get(&key) {
                    drain.ended = Some(Ended { ending: *ending, at_unix_ms: now_ms });
                }
            }
        });
        // While a plan larger than one turn is under way, its turns go on; the reconcile after its
        // last turn deletes what drained meanwhile.
        if endings.is_empty() || self.continue_with.is_some() {
            self.publish_status();
        } else {
            self.reconcile(Trigger::Drain).await;
        }
    }

    /// The protocol's signal for one drain: IPVS connections for TCP (and firewall-mark
    /// services); for UDP the eBPF counter's quiet, or IPVS InPkts when no counter sees it.
    fn drain_signal(&self, entry: &DrainEntry, seen: &Seen, now: Instant) -> Signal {
        let backend = (entry.service, entry.backend);
        let ServiceKey::Addr { protocol: Protocol::Udp, .. } = entry.service else {
            return seen.connections(backend);
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

/// Above this many drains reaching a step in one tick (a large service leaving the
/// configuration), the log says how many per step, and names each backend at debug level only.
const LOG_EACH_UP_TO: usize = 20;

/// Says which drains IPVS now shows at weight 0, and which ended and why.
fn log_progress(zeroed: &[drain::Backend], endings: &[(ServiceKey, crate::model::DestKey, Ending)]) {
    let each = zeroed.len() + endings.len() <= LOG_EACH_UP_TO;
    for (service, backend) in zeroed {
        if each {
            tracing::info!(%service, %backend, "drain: IPVS shows weight 0; the grace period starts");
        } else {
            tracing::debug!(%service, %backend, "drain: IPVS shows weight 0; the grace period starts");
        }
    }
    for (service, backend, ending) in endings {
        if each {
            tracing::warn!(%service, %backend, "{}", ending.describe());
        } else {
            tracing::debug!(%service, %backend, "{}", ending.describe());
        }
    }
    if each {
        return;
    }
    if !zeroed.is_empty() {
        tracing::info!(
            backends = zeroed.len(),
            "drain: IPVS shows these backends at weight 0; their grace periods start"
        );
    }
    let mut by_ending: std::collections::BTreeMap<&str, usize> = Default::default();
    for (_, _, ending) in endings {
        *by_ending.entry(ending.describe()).or_default() += 1;
    }
    for (ending, backends) in by_ending {
        tracing::warn!(backends, "drains ended: {ending}");
    }
}

/// The backends whose removal drain has ended: the next plan deletes them.
pub(super) fn removals_drained(drains: &[DrainEntry]) -> BTreeSet<drain::Backend> {
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
        let drained: HashSet<drain::Backend> =
            self.drain_entries.iter().map(|d| (d.service, d.backend)).collect();
        let missing: Vec<drain::Backend> =
            leaving.backends.iter().filter(|backend| !drained.contains(backend)).copied().collect();
        if missing.is_empty() && !self.drain_entries.iter().any(|d| stale(d) || unmarked(d)) {
            return;
        }
        let started_unix_ms = drain::now_ms();
        let services: BTreeSet<&ServiceKey> = missing.iter().map(|(service, _)| service).collect();
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
        self.change_drains(|drains| {
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
            drains.extend(new);
        });
    }

    /// Changes the drains, and hands the new state to the writer without waiting for it; returns
    /// its generation, or none when nothing changed.
    pub(super) fn change_drains(&mut self, change: impl FnOnce(&mut Vec<DrainEntry>)) -> Option<u64> {
        let mut drains = self.drain_entries.clone();
        change(&mut drains);
        drains.sort_by_key(|drain| (drain.service, drain.backend));
        if drains == self.drain_entries {
            return None;
        }
        let generation = self.drain_writer.hand(drains.clone());
        self.drain_entries = drains;
        self.export_drains();
        Some(generation)
    }

    /// `libraflux_backend_draining` of every drain the daemon keeps.
    pub(super) fn export_drains(&self) {
        let drains: Vec<_> =
            self.drain_entries.iter().map(|d| (d.service, d.backend, d.ended.is_none())).collect();
        self.metrics.set_drains(&drains);
    }

    /// Changes the drains and waits until the change is written: when it cannot be written,
    /// nothing changes, and the answer says why.
    pub(super) async fn record_drains(
        &mut self,
        change: impl FnOnce(&mut Vec<DrainEntry>),
    ) -> Result<(), String> {
        let before = self.drain_entries.clone();
        let Some(generation) = self.change_drains(change) else { return Ok(()) };
        if let Err(why) = self.drain_writer.written(generation).await {
            self.drain_entries = before.clone();
            self.drain_writer.hand(before);
            self.export_drains();
            return Err(why);
        }
        Ok(())
    }
}

/// The drains recorded in `store`; none when they cannot be read (said in the log).
pub(super) async fn load(store: &DrainStore) -> Vec<DrainEntry> {
    let store = store.clone();
    blocking(move || store.load()).await.unwrap_or_else(|err| {
        tracing::error!(error = %err, "cannot read the drain state; starting without drains");
        Vec::new()
    })
}
