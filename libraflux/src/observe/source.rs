//! The seam between the data-plane observer and its users (drain, metrics): a snapshot of
//! per-destination counters, and keeping the watched set equal to what the daemon wants.
//! [`super::FlowCounter`] reads the kernel maps; [`FakeFlowSource`] is the in-memory stand-in
//! for unit tests.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use libraflux_common::{ConnectCounters, DestKey, FlowCounters};

use super::ObserveError;

/// What was observed for one destination since it was first watched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSnapshot {
    pub packets: u64,
    /// Includes the 14-byte Ethernet header of every packet (counted at TC).
    pub bytes: u64,
    /// TCP connection attempts (SYN without ACK); UDP 5-tuples seen for the first time.
    pub new_flows: u64,
    /// When the last packet was seen; `None` if none was since it was watched.
    pub last_seen: Option<Instant>,
    /// How connection attempts to it ended, for a NAT backend tracked with
    /// [`FlowSource::sync_connects`]; `None` for a destination that is not tracked.
    pub connects: Option<ConnectOutcomes>,
}

/// How connection attempts to one NAT backend ended since it was first tracked
/// (docs/observer.md, "Connection outcomes"). Counts only grow; a consumer such as a circuit
/// breaker compares two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectOutcomes {
    /// The backend answered a SYN with a RST (nothing listens on the port).
    pub refused: u64,
    /// Attempts whose SYN the client retransmitted (no SYN-ACK within its retransmission
    /// timeout, 1 s on Linux), once per attempt.
    pub syn_timeout: u64,
    /// ICMP (ICMPv6) destination unreachable about a packet to the backend, from it or from a
    /// router on the way; for UDP backends, port unreachable.
    pub unreachable: u64,
    /// SYN-ACKs from the backend: attempts it accepted (a retransmitted SYN-ACK counts again).
    pub answered: u64,
}

impl ConnectOutcomes {
    /// Every failure, whatever its kind.
    pub const fn failures(&self) -> u64 {
        self.refused + self.syn_timeout + self.unreachable
    }

    /// The same backend counted at two places (both counters, or two readings' sum).
    pub const fn combine(self, other: Self) -> Self {
        Self {
            refused: self.refused + other.refused,
            syn_timeout: self.syn_timeout + other.syn_timeout,
            unreachable: self.unreachable + other.unreachable,
            answered: self.answered + other.answered,
        }
    }

    pub const fn from_kernel(counters: ConnectCounters) -> Self {
        Self {
            refused: counters.refused,
            syn_timeout: counters.syn_timeouts,
            unreachable: counters.unreachable,
            answered: counters.answered,
        }
    }
}

/// Which half of a connection attempt a counter sees for the backends it tracks: the daemon
/// tracks its NAT backends on both, one in each of its counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConnectSide {
    /// The backends' replies (SYN-ACK, RST, ICMP unreachable), counted where they arrive: a
    /// counter at ingress. Counts `answered`, `refused`, `unreachable`.
    Replies,
    /// The SYNs to the backends, counted where they leave: a counter at egress that also
    /// watches the backends. Counts `syn_timeout`.
    Attempts,
}

impl FlowSnapshot {
    /// How long the destination has been quiet at `now`; `None` if it never saw a packet.
    pub fn idle_for(&self, now: Instant) -> Option<Duration> {
        self.last_seen.map(|seen| now.saturating_duration_since(seen))
    }

    /// The same destination observed at two places (a VIP that is also another service's NAT
    /// backend): the sums, and the later last packet.
    pub fn combine(self, other: Self) -> Self {
        Self {
            packets: self.packets + other.packets,
            bytes: self.bytes + other.bytes,
            new_flows: self.new_flows + other.new_flows,
            last_seen: self.last_seen.max(other.last_seen),
            connects: match (self.connects, other.connects) {
                (Some(mine), Some(theirs)) => Some(mine.combine(theirs)),
                (mine, theirs) => mine.or(theirs),
            },
        }
    }

    /// Converts the kernel's counters: `last_seen_ns` is CLOCK_MONOTONIC, turned into an
    /// [`Instant`] by its age at (`now_ns`, `now`), two readings of the same instant.
    pub fn from_kernel(counters: FlowCounters, now_ns: u64, now: Instant) -> Self {
        let last_seen = match counters.last_seen_ns {
            0 => None,
            seen_ns => now.checked_sub(Duration::from_nanos(now_ns.saturating_sub(seen_ns))),
        };
        Self {
            packets: counters.packets,
            bytes: counters.bytes,
            new_flows: counters.new_flows,
            last_seen,
            connects: None,
        }
    }
}

/// How [`FlowSource::sync`] changed the watched set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: usize,
    pub removed: usize,
}

/// One step of making a set of keys equal another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    Add,
    Remove,
}

impl SyncReport {
    /// Makes a set that holds `current` equal `wanted` through `change`, one key at a time,
    /// removals first, and counts the changes; stops at the first error.
    pub(super) fn apply<E>(
        current: &BTreeSet<DestKey>,
        wanted: &BTreeSet<DestKey>,
        mut change: impl FnMut(&DestKey, Change) -> Result<(), E>,
    ) -> Result<Self, E> {
        let mut report = Self::default();
        for gone in current.difference(wanted) {
            change(gone, Change::Remove)?;
            report.removed += 1;
        }
        for new in wanted.difference(current) {
            change(new, Change::Add)?;
            report.added += 1;
        }
        Ok(report)
    }
}

/// Per-destination traffic counters, as the kernel observes them.
pub trait FlowSource {
    /// The counters of every watched destination and the connection outcomes of every tracked
    /// backend (a backend tracked but not watched has zero traffic), ordered by key.
    fn snapshot(&self) -> Result<BTreeMap<DestKey, FlowSnapshot>, ObserveError>;

    /// Makes the watched destinations equal `watched`: new ones start at zero, gone ones are
    /// forgotten, the others keep their counts. The daemon calls it on every reconcile.
    fn sync(&mut self, watched: &BTreeSet<DestKey>) -> Result<SyncReport, ObserveError>;

    /// Makes the backends whose connection outcomes are counted on `side` equal `backends`, the
    /// way [`FlowSource::sync`] does for the watched set.
    fn sync_connects(
        &mut self,
        backends: &BTreeSet<DestKey>,
        side: ConnectSide,
    ) -> Result<SyncReport, ObserveError>;
}

/// CLOCK_MONOTONIC (the clock of `bpf_ktime_get_ns`) in nanoseconds, and the [`Instant`] read
/// right after it.
pub(super) fn monotonic_now_ns() -> (u64, Instant) {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out pointer; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    debug_assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    let ns = u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0);
    (ns, Instant::now())
}

/// An in-memory [`FlowSource`]: tests feed it traffic with [`FakeFlowSource::record`]. Like the
/// kernel program, it counts only watched destinations.
#[derive(Clone, Debug, Default)]
pub struct FakeFlowSource {
    flows: BTreeMap<DestKey, FlowSnapshot>,
    /// Tracked backends by side, with what was recorded for them.
    connects: BTreeMap<(ConnectSide, DestKey), ConnectOutcomes>,
}

impl FakeFlowSource {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records traffic to `key` seen at `at`; ignored unless `key` is watched.
    pub fn record(&mut self, key: DestKey, packets: u64, bytes: u64, new_flows: u64, at: Instant) {
        if let Some(flow) = self.flows.get_mut(&key) {
            flow.packets += packets;
            flow.bytes += bytes;
            flow.new_flows += new_flows;
            flow.last_seen = flow.last_seen.max(Some(at));
        }
    }

    /// Records connection outcomes of `backend` as seen on `side`; ignored unless it is
    /// tracked there.
    pub fn record_connects(&mut self, backend: DestKey, side: ConnectSide, outcomes: ConnectOutcomes) {
        if let Some(seen) = self.connects.get_mut(&(side, backend)) {
            *seen = seen.combine(outcomes);
        }
    }

    /// The destinations being watched, ordered.
    pub fn watched(&self) -> BTreeSet<DestKey> {
        self.flows.keys().copied().collect()
    }
}

impl FlowSource for FakeFlowSource {
    fn snapshot(&self) -> Result<BTreeMap<DestKey, FlowSnapshot>, ObserveError> {
        let mut snapshot = self.flows.clone();
        for (&(_, backend), &outcomes) in &self.connects {
            let flow = snapshot.entry(backend).or_default();
            flow.connects = Some(flow.connects.map_or(outcomes, |seen| seen.combine(outcomes)));
        }
        Ok(snapshot)
    }

    fn sync_connects(
        &mut self,
        backends: &BTreeSet<DestKey>,
        side: ConnectSide,
    ) -> Result<SyncReport, ObserveError> {
        let current = self.connects.keys().filter(|(on, _)| *on == side).map(|&(_, key)| key).collect();
        SyncReport::apply(&current, backends, |backend, change| {
            match change {
                Change::Remove => self.connects.remove(&(side, *backend)),
                Change::Add => self.connects.insert((side, *backend), ConnectOutcomes::default()),
            };
            Ok(())
        })
    }

    fn sync(&mut self, watched: &BTreeSet<DestKey>) -> Result<SyncReport, ObserveError> {
        let current = self.watched();
        SyncReport::apply(&current, watched, |key, change| {
            match change {
                Change::Remove => self.flows.remove(key),
                Change::Add => self.flows.insert(*key, FlowSnapshot::default()),
            };
            Ok(())
        })
    }
}

/// The fake and the real reader implement the same seam; this fails to compile if they drift.
const _: fn() = || {
    fn is_flow_source<T: FlowSource>() {}
    is_flow_source::<FakeFlowSource>();
    is_flow_source::<super::FlowCounter>();
};

#[cfg(test)]
mod tests {
    use libraflux_common::{IPPROTO_TCP, IPPROTO_UDP};

    use super::*;

    fn key(port: u16) -> DestKey {
        DestKey::ipv4([192, 0, 2, 1], port, IPPROTO_UDP)
    }

    #[test]
    fn combine_sums_and_keeps_the_later_last_packet() {
        let at = Instant::now();
        let later = at + Duration::from_secs(1);
        let a = FlowSnapshot { packets: 1, bytes: 100, new_flows: 1, last_seen: Some(later), connects: None };
        let b = FlowSnapshot { packets: 2, bytes: 10, new_flows: 0, last_seen: Some(at), connects: None };
        let sum =
            FlowSnapshot { packets: 3, bytes: 110, new_flows: 1, last_seen: Some(later), connects: None };
        assert_eq!(a.combine(b), sum);
        assert_eq!(b.combine(a), sum);
        assert_eq!(FlowSnapshot::default().combine(b), b, "no packet yet: the other's last packet");
    }

    #[test]
    fn combine_sums_connect_outcomes_where_either_side_tracks_them() {
        let replies = ConnectOutcomes { refused: 2, syn_timeout: 0, unreachable: 1, answered: 5 };
        let attempts = ConnectOutcomes { syn_timeout: 3, ..ConnectOutcomes::default() };
        let tracked = |connects| FlowSnapshot { connects: Some(connects), ..FlowSnapshot::default() };
        let both = tracked(replies).combine(tracked(attempts)).connects.unwrap();
        assert_eq!(both, ConnectOutcomes { refused: 2, syn_timeout: 3, unreachable: 1, answered: 5 });
        assert_eq!(both.failures(), 6);
        assert_eq!(FlowSnapshot::default().combine(tracked(replies)).connects, Some(replies));
        assert_eq!(FlowSnapshot::default().combine(FlowSnapshot::default()).connects, None, "not tracked");
    }

    #[test]
    fn sync_connects_tracks_each_side_apart_and_snapshots_sum_them() {
        let mut fake = FakeFlowSource::new();
        let (a, b) = (key(1), key(2));
        let added = |added| SyncReport { added, removed: 0 };
        assert_eq!(fake.sync_connects(&[a, b].into(), ConnectSide::Replies).unwrap(), added(2));
        assert_eq!(fake.sync_connects(&[a].into(), ConnectSide::Attempts).unwrap(), added(1));
        fake.record_connects(
            a,
            ConnectSide::Replies,
            ConnectOutcomes { refused: 1, ..ConnectOutcomes::default() },
        );
        fake.record_connects(
            a,
            ConnectSide::Attempts,
            ConnectOutcomes { syn_timeout: 2, ..ConnectOutcomes::default() },
        );
        fake.record_connects(
            b,
            ConnectSide::Attempts,
            ConnectOutcomes { syn_timeout: 9, ..ConnectOutcomes::default() },
        );
        let snapshot = fake.snapshot().unwrap();
        let outcomes = |key| snapshot[&key].connects.unwrap();
        assert_eq!((outcomes(a).refused, outcomes(a).syn_timeout), (1, 2), "both sides of a");
        assert_eq!(outcomes(b), ConnectOutcomes::default(), "b is not tracked for attempts: ignored");
        assert_eq!(snapshot[&a].packets, 0, "tracked, not watched: no traffic");
        let report = fake.sync_connects(&BTreeSet::new(), ConnectSide::Replies).unwrap();
        assert_eq!(report, SyncReport { added: 0, removed: 2 });
        assert_eq!(fake.snapshot().unwrap().keys().copied().collect::<Vec<_>>(), [a], "a's attempts remain");
    }

    #[test]
    fn sync_adds_zeroed_removes_gone_and_keeps_the_rest() {
        let mut fake = FakeFlowSource::new();
        let at = Instant::now();
        assert_eq!(fake.sync(&[key(1), key(2)].into()).unwrap(), SyncReport { added: 2, removed: 0 });
        fake.record(key(1), 3, 300, 1, at);
        fake.record(key(9), 5, 500, 5, at);
        assert_eq!(fake.sync(&[key(1), key(3)].into()).unwrap(), SyncReport { added: 1, removed: 1 });
        let snapshot = fake.snapshot().unwrap();
        assert_eq!(snapshot.keys().copied().collect::<Vec<_>>(), [key(1), key(3)]);
        assert_eq!(
            snapshot[&key(1)],
            FlowSnapshot { packets: 3, bytes: 300, new_flows: 1, last_seen: Some(at), connects: None },
            "kept with its counts"
        );
        assert_eq!(snapshot[&key(3)], FlowSnapshot::default(), "new ones start at zero");
        assert_eq!(fake.sync(&[key(1), key(3)].into()).unwrap(), SyncReport::default(), "idempotent");
    }

    #[test]
    fn record_keeps_the_latest_time_and_ignores_unwatched() {
        let mut fake = FakeFlowSource::new();
        let tcp = DestKey::ipv4([192, 0, 2, 1], 1, IPPROTO_TCP);
        fake.sync(&[tcp].into()).unwrap();
        let early = Instant::now();
        let late = early + Duration::from_secs(5);
        fake.record(tcp, 1, 60, 1, late);
        fake.record(tcp, 1, 60, 0, early);
        let flow = fake.snapshot().unwrap()[&tcp];
        assert_eq!(flow.last_seen, Some(late));
        assert_eq!(flow.idle_for(late + Duration::from_secs(2)), Some(Duration::from_secs(2)));
        assert_eq!(FlowSnapshot::default().idle_for(late), None);
    }

    #[test]
    fn kernel_time_becomes_an_instant_by_its_age() {
        let now = Instant::now();
        let counters = FlowCounters { packets: 1, bytes: 2, new_flows: 3, last_seen_ns: 7_000_000_000 };
        let snapshot = FlowSnapshot::from_kernel(counters, 10_000_000_000, now);
        assert_eq!(snapshot.idle_for(now), Some(Duration::from_secs(3)));
        assert_eq!((snapshot.packets, snapshot.bytes, snapshot.new_flows), (1, 2, 3));
        let never = FlowSnapshot::from_kernel(FlowCounters::default(), 10, now);
        assert_eq!(never.last_seen, None);
    }

    #[test]
    fn monotonic_clock_reads_and_advances() {
        let (first, _) = monotonic_now_ns();
        let (second, _) = monotonic_now_ns();
        assert!(first > 0 && second >= first);
    }
}
