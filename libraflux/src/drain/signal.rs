//! Reading a drain's signals from the IPVS table: whether the backend is at weight 0, its
//! connection counts, and how long its InPkts counter has not grown. Used by the daemon and by
//! `apply` waiting for the backends it removes.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use super::Signal;
use crate::{
    ipvs::{DestinationStatus, ServiceStatus},
    model::{DestKey, ServiceKey},
};

/// One backend of one service.
pub type Backend = (ServiceKey, DestKey);

pub fn destination(table: &[ServiceStatus], (service, backend): Backend) -> Option<&DestinationStatus> {
    table.iter().find(|status| status.service.key == service)?.destinations.get(&backend)
}

/// Whether nothing new can reach the backend: weight 0 in IPVS, or not in IPVS at all.
pub fn at_weight_zero(table: &[ServiceStatus], backend: Backend) -> bool {
    destination(table, backend).is_none_or(|dest| dest.destination.weight == 0)
}

/// IPVS's connection counts of the backend; none when it is gone.
pub fn connections(table: &[ServiceStatus], backend: Backend) -> Signal {
    destination(table, backend).map_or(Signal::Tcp { active: 0, inactive: 0 }, |dest| Signal::Tcp {
        active: dest.active_connections,
        inactive: dest.inactive_connections,
    })
}

/// IPVS InPkts per drained backend and when it last changed.
#[derive(Debug, Default)]
pub struct PacketWatch {
    seen: BTreeMap<Backend, (u64, Instant)>,
}

impl PacketWatch {
    /// Takes in the counters of `backends` at `now`; forgets every other backend.
    pub fn update(&mut self, backends: &[Backend], table: &[ServiceStatus], now: Instant) {
        self.seen.retain(|key, _| backends.contains(key));
        for backend in backends {
            let packets = destination(table, *backend).map_or(0, |dest| dest.stats.packets_in);
            let entry = self.seen.entry(*backend).or_insert((packets, now));
            if entry.0 != packets {
                *entry = (packets, now);
            }
        }
    }

    /// How long InPkts of `backend` has not grown (since watching began, at most).
    pub fn quiet_for(&self, backend: Backend, now: Instant) -> Duration {
        self.seen.get(&backend).map_or(Duration::ZERO, |(_, since)| now - *since)
    }
}
