//! How connection attempts to NAT backends end, as the programs count them (docs/observer.md,
//! "Connection outcomes"): the connect maps of a [`FlowCounter`], filled with the backends to
//! track, read back per backend and summed over CPUs.

use std::collections::{BTreeMap, BTreeSet};

use aya::Pod;
use libraflux_common::{
    CONNECT_ATTEMPTS_V4_MAP, CONNECT_ATTEMPTS_V6_MAP, CONNECT_REPLIES_V4_MAP, CONNECT_REPLIES_V6_MAP,
    ConnectCounters, Dest4, Dest6, DestKey, MapKey,
};

use super::{
    FlowCounter, ObserveError,
    ebpf::map_error,
    source::{Change, ConnectOutcomes, ConnectSide, SyncReport},
};

impl ConnectSide {
    /// The maps of this side, IPv4 and IPv6.
    const fn maps(self) -> [&'static str; 2] {
        match self {
            Self::Replies => [CONNECT_REPLIES_V4_MAP, CONNECT_REPLIES_V6_MAP],
            Self::Attempts => [CONNECT_ATTEMPTS_V4_MAP, CONNECT_ATTEMPTS_V6_MAP],
        }
    }

    const fn map(self, key: &DestKey) -> &'static str {
        let [v4, v6] = self.maps();
        if matches!(key.map_key(), MapKey::V4(_)) { v4 } else { v6 }
    }
}

impl FlowCounter {
    /// The backends this counter tracks on `side`, ordered.
    pub fn tracked(&self, side: ConnectSide) -> Result<BTreeSet<DestKey>, ObserveError> {
        let [v4, v6] = side.maps();
        let mut out = BTreeSet::new();
        self.collect_keys::<Dest4, ConnectCounters>(v4, &mut out)?;
        self.collect_keys::<Dest6, ConnectCounters>(v6, &mut out)?;
        Ok(out)
    }

    /// Starts counting `side`'s outcomes of connection attempts to `backend`; a backend already
    /// tracked keeps its counts. For [`ConnectSide::Attempts`] the backend must also be watched
    /// ([`FlowCounter::watch`], before or after): the SYN is seen through its counters entry.
    pub fn track(&mut self, backend: DestKey, side: ConnectSide) -> Result<(), ObserveError> {
        match backend.map_key() {
            MapKey::V4(key) => self.insert_new(side.map(&backend), key, ConnectCounters::default())?,
            MapKey::V6(key) => self.insert_new(side.map(&backend), key, ConnectCounters::default())?,
        }
        if side == ConnectSide::Attempts {
            self.mark_syn_timeouts(&backend, true)?;
        }
        Ok(())
    }

    /// Stops counting `side`'s outcomes for `backend` and forgets them.
    pub fn untrack(&mut self, backend: &DestKey, side: ConnectSide) -> Result<(), ObserveError> {
        if side == ConnectSide::Attempts {
            self.mark_syn_timeouts(backend, false)?;
        }
        match backend.map_key() {
            MapKey::V4(key) => self.remove::<_, ConnectCounters>(side.map(backend), &key),
            MapKey::V6(key) => self.remove::<_, ConnectCounters>(side.map(backend), &key),
        }
    }

    /// Whether `backend` is tracked for SYN timeouts: [`FlowCounter::watch`] then sets its
    /// entry's flag.
    pub(super) fn tracks_attempts(&self, backend: &DestKey) -> Result<bool, ObserveError> {
        let map = ConnectSide::Attempts.map(backend);
        let found = match backend.map_key() {
            MapKey::V4(key) => self.per_cpu_map::<Dest4, ConnectCounters>(map)?.get(&key, 0).map(drop),
            MapKey::V6(key) => self.per_cpu_map::<Dest6, ConnectCounters>(map)?.get(&key, 0).map(drop),
        };
        match found {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(source) => Err(map_error("reading", map, source)),
        }
    }

    /// Every tracked backend's outcomes, both sides and all CPUs summed, ordered by backend.
    pub fn connect_outcomes(&self) -> Result<BTreeMap<DestKey, ConnectOutcomes>, ObserveError> {
        let mut sums: BTreeMap<DestKey, ConnectCounters> = BTreeMap::new();
        for side in [ConnectSide::Replies, ConnectSide::Attempts] {
            let [v4, v6] = side.maps();
            self.sum_connects::<Dest4>(v4, &mut sums)?;
            self.sum_connects::<Dest6>(v6, &mut sums)?;
        }
        Ok(sums.into_iter().map(|(key, counters)| (key, ConnectOutcomes::from_kernel(counters))).collect())
    }

    /// Makes the backends tracked on `side` equal `backends`, like [`super::FlowSource::sync`]
    /// does for the watched destinations.
    pub(super) fn sync_connect_side(
        &mut self,
        backends: &BTreeSet<DestKey>,
        side: ConnectSide,
    ) -> Result<SyncReport, ObserveError> {
        let current = self.tracked(side)?;
        SyncReport::apply(&current, backends, |backend, change| match change {
            Change::Remove => self.untrack(backend, side),
            Change::Add => self.track(*backend, side),
        })
    }

    fn sum_connects<K: Pod + Into<DestKey>>(
        &self,
        name: &'static str,
        sums: &mut BTreeMap<DestKey, ConnectCounters>,
    ) -> Result<(), ObserveError> {
        self.for_each_entry::<K, ConnectCounters>(name, |key, values| {
            let total = sums.entry(key).or_default();
            *total = values.iter().fold(*total, |sum, cpu| sum.add(*cpu));
        })
    }
}
