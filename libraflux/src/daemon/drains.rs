//! Running drains: each tick reads the table, records when IPVS first shows a draining backend
//! at weight 0 (the grace period counts from there), and ends the drains whose protocol rule is
//! met. TCP: IPVS's connection counts. UDP: the eBPF counter's quiet when it sees the backend's
//! packets, otherwise the growth of IPVS's InPkts, never "no signal, so quiet".

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime},
};

use super::{Daemon, reconcile::Trigger};
use crate::{
    drain::{self, DrainEntry, Ended, Progress, Signal, TrafficSource},
    ipvs::{DestinationStatus, ServiceStatus},
    model::{DestKey, Protocol, ServiceKey},
};

/// IPVS InPkts per drained backend and when it last changed.
#[derive(Debug, Default)]
pub(super) struct PacketWatch {
    seen: BTreeMap<(ServiceKey, DestKey), (u64, Instant)>,
}

impl PacketWatch {
    /// Takes in the running drains' counters; forgets the backends no longer draining.
    fn update(&mut self, drains: &[&DrainEntry], table: &[ServiceStatus], now: Instant) {
        self.seen.retain(|key, _| drains.iter().any(|d| (d.service, d.backend) == *key));
        for drain in drains {
            let packets = destination(table, drain).map_or(0, |dest| dest.stats.packets_in);
            let entry = self.seen.entry((drain.service, drain.backend)).or_insert((packets, now));
            if entry.0 != packets {
                *entry = (packets, now);
            }
        }
    }

    /// How long InPkts of `drain`'s backend has not grown (since watching began, at most).
    fn quiet_for(&self, drain: &DrainEntry, now: Instant) -> Duration {
        self.seen.get(&(drain.service, drain.backend)).map_or(Duration::ZERO, |(_, since)| now - *since)
    }
}

fn destination<'t>(table: &'t [ServiceStatus], drain: &DrainEntry) -> Option<&'t DestinationStatus> {
    table.iter().find(|status| status.service.key == drain.service)?.destinations.get(&drain.backend)
}

/// Whether nothing new can reach the backend: weight 0 in IPVS, or not in IPVS at all.
fn at_weight_zero(table: &[ServiceStatus], drain: &DrainEntry) -> bool {
    destination(table, drain).is_none_or(|dest| dest.destination.weight == 0)
}

impl Daemon {
    /// Picks up drains asked for or undone, and ends the running ones whose rule is met.
    pub(super) async fn drain_tick(&mut self) {
        if self.load_drains() {
            self.reconcile(Trigger::Drain).await;
        }
        let running: Vec<DrainEntry> = drain::running(&self.drain_entries).cloned().collect();
        if running.is_empty() {
            self.drain_packets = PacketWatch::default();
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
        self.drain_packets.update(&running.iter().collect::<Vec<_>>(), &table, instant);
        let mut zeroed = Vec::new();
        let mut endings = Vec::new();
        for entry in &running {
            let at_zero_ms =
                entry.at_zero_unix_ms.or_else(|| at_weight_zero(&table, entry).then_some(now_ms));
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
        let ServiceKey::Addr { protocol: Protocol::Udp, .. } = entry.service else {
            return destination(table, entry).map_or(Signal::Tcp { active: 0, inactive: 0 }, |dest| {
                Signal::Tcp { active: dest.active_connections, inactive: dest.inactive_connections }
            });
        };
        let key =
            crate::observe::DestKey::new(entry.backend.addr, entry.backend.port, Protocol::Udp.number());
        match self.observer.idle(&key) {
            Some(Some(idle)) => Signal::Udp { quiet_for: idle, source: TrafficSource::Ebpf },
            _ => Signal::Udp {
                quiet_for: self.drain_packets.quiet_for(entry, now),
                source: TrafficSource::IpvsInPkts,
            },
        }
    }
}
