//! Reading a drain's signals from IPVS: whether the backend is at weight 0, its connection
//! counts, and how long its InPkts counter has not grown. Used by the daemon and by `apply`
//! waiting for the backends it removes. Both read only the services they drain
//! ([`crate::ipvs::IpvsClient::dests_of`]), and look each backend up in a hash map, so a tick
//! costs what the drains cost, not what the table holds.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use super::Signal;
use crate::{
    ipvs::DestinationStatus,
    model::{DestKey, ServiceKey},
};

/// One backend of one service.
pub type Backend = (ServiceKey, DestKey);

/// The destinations of the drained services as one read of IPVS showed them.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    dests: HashMap<Backend, DestinationStatus>,
}

impl Seen {
    /// From GET_DEST dumps of some services (a service IPVS does not hold dumps empty).
    pub fn from_dumps(dumps: Vec<(ServiceKey, Vec<DestinationStatus>)>) -> Self {
        let dests = dumps
            .into_iter()
            .flat_map(|(service, dests)| {
                dests.into_iter().map(move |dest| ((service, dest.destination.key), dest))
            })
            .collect();
        Self { dests }
    }

    pub fn destination(&self, backend: Backend) -> Option<&DestinationStatus> {
        self.dests.get(&backend)
    }

    /// Whether nothing new can reach the backend: weight 0 in IPVS, or not in IPVS at all.
    pub fn at_weight_zero(&self, backend: Backend) -> bool {
        self.destination(backend).is_none_or(|dest| dest.destination.weight == 0)
    }

    /// IPVS's connection counts of the backend; none when it is gone.
    pub fn connections(&self, backend: Backend) -> Signal {
        self.destination(backend).map_or(Signal::Tcp { active: 0, inactive: 0 }, |dest| Signal::Tcp {
            active: dest.active_connections,
            inactive: dest.inactive_connections,
        })
    }
}

/// The services of `backends`, each once, in order.
pub fn services_of<'a>(backends: impl IntoIterator<Item = &'a Backend>) -> Vec<ServiceKey> {
    let mut services: Vec<ServiceKey> = backends.into_iter().map(|(service, _)| *service).collect();
    services.sort_unstable();
    services.dedup();
    services
}

/// IPVS InPkts per drained backend and when it last changed.
#[derive(Debug, Default)]
pub struct PacketWatch {
    seen: BTreeMap<Backend, (u64, Instant)>,
}

impl PacketWatch {
    /// Whether it watches no backend (nothing to forget).
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Takes in the counters of `backends` at `now`; forgets every other backend.
    pub fn update(&mut self, backends: &[Backend], seen: &Seen, now: Instant) {
        let watched: HashSet<&Backend> = backends.iter().collect();
        self.seen.retain(|key, _| watched.contains(key));
        for backend in backends {
            let packets = seen.destination(*backend).map_or(0, |dest| dest.stats.packets_in);
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
