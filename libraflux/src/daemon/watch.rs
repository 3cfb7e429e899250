//! Reading the table only when it may have changed. The interval reconcile exists to find and
//! repair what someone else did to IPVS (drift); on a large node its read of the whole table is
//! most of what the daemon does at rest. With the write watch (`observe::WriteWatch`, a kprobe
//! on the kernel's entry points for changes to the table) the daemon knows whether anyone else
//! wrote since its last read, and skips the read when nobody did and what it wants is unchanged.
//!
//! The watch is trusted only while it is seen to work: at start it must count a write of the
//! daemon's own that changes nothing (timeouts of 0, which the kernel leaves as they are), and
//! every turn that sends operations must be counted too; otherwise the daemon says so once and
//! reads every interval, as without eBPF. A full read happens at least every [`FULL_READ_EVERY`]
//! whatever the watch says. The count of writes goes to the statistics collector too, which
//! reads only what may have changed while nobody writes (`metrics::collect_ipvs`).

use std::{
    hash::{BuildHasher as _, Hasher, RandomState},
    net::IpAddr,
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use crate::{
    config::DesiredState,
    ipvs::{IpvsClient, IpvsError, Timeouts},
    metrics::Metrics,
    model::{DestKey, Destination, Service, ServiceKey},
    observe::{ObserveError, WriteWatch, Writes},
    plan::Leaving,
};

use super::{
    loading::{Loaded, Loader},
    reconcile::{Outcome, Turn},
};

/// The longest the daemon goes without reading the table, watch or not.
pub const FULL_READ_EVERY: Duration = Duration::from_secs(15 * 60);

/// The watch, and what the last full read found.
#[derive(Debug)]
pub(super) struct TableWatch {
    watch: Option<WriteWatch>,
    verified: Option<Verified>,
    fingerprints: Fingerprints,
    /// Every write counted (ours and others'), for the collector; `None` without a watch.
    writes: tokio::sync::watch::Sender<Option<u64>>,
}

/// A table that held what the desired state of fingerprint `desired` asks for, read when others
/// had written `others` times.
#[derive(Debug)]
struct Verified {
    desired: Fingerprint,
    leaving: Leaving,
    others: u64,
    at: Instant,
}

impl TableWatch {
    /// No watch yet: every interval reads the table.
    pub(super) fn new(writes: tokio::sync::watch::Sender<Option<u64>>) -> Self {
        Self { watch: None, verified: None, fingerprints: Fingerprints::new(), writes }
    }

    /// Starts loading the watch on the blocking pool; until [`TableWatch::loaded`] has it, every
    /// interval reads the table.
    pub(super) fn start(&self, loader: &Loader) {
        loader.spawn(|| Loaded::WriteWatch(WriteWatch::start()));
    }

    /// Takes the loaded watch if it sees the daemon's own writes; without it the daemon reads
    /// every interval (said once, here).
    pub(super) async fn loaded(
        &mut self,
        loaded: Result<WriteWatch, ObserveError>,
        ipvs: &mut IpvsClient,
        metrics: &Metrics,
    ) {
        match loaded {
            Ok(watch) => self.watch = Some(watch),
            Err(err) => {
                tracing::warn!(
                    "the IPVS write watch cannot start ({}){}; the table is read every reconcile interval",
                    super::observer::render(&err),
                    paranoid_hint()
                );
                metrics.set_write_watch(false);
                return;
            }
        }
        let before = self.writes();
        let wrote = ipvs.write_timeouts(Timeouts::default()).await;
        let after = self.writes();
        match (wrote, before, after) {
            (Ok(()), Some(before), Some(after)) if after.ours > before.ours => {
                tracing::info!(
                    "IPVS write watch attached: the table is read when another process writes to it"
                );
                metrics.set_write_watch(true);
            }
            (wrote, ..) => {
                let why = wrote.err().map_or_else(
                    || "it did not count the daemon's own write (is the daemon in a pid namespace of its own?)".to_owned(),
                    |err: IpvsError| format!("its self-test write failed: {err}"),
                );
                self.disable(&why, metrics);
            }
        }
    }

    /// The interval's reconcile may answer without reading: the watch works, nobody else wrote
    /// since the last full read, that read is recent, and `desired` is what it was then. The
    /// backends leaving the configuration, as that read found them.
    pub(super) fn unchanged(&mut self, desired: &Arc<DesiredState>, metrics: &Metrics) -> Option<Leaving> {
        let writes = self.writes()?;
        metrics.set_foreign_writes(writes.others);
        let verified = self.verified.as_ref()?;
        let unchanged = verified.others == writes.others
            && verified.at.elapsed() < FULL_READ_EVERY
            && verified.desired == self.fingerprints.of_shared(desired);
        unchanged.then(|| verified.leaving.clone())
    }

    /// Before a turn that reads the table: the writes counted so far.
    pub(super) fn before_read(&mut self) -> Option<Writes> {
        self.verified = None;
        self.writes()
    }

    /// After that turn: a turn that read the table and left it as `desired` asks (no changes, or
    /// all of a plan applied) is the new verified state; a turn that sent operations the watch did
    /// not count ends the watch.
    pub(super) fn after_read(
        &mut self,
        before: Option<Writes>,
        desired: &Arc<DesiredState>,
        turn: &Turn,
        metrics: &Metrics,
    ) {
        let (Some(before), Some(after)) = (before, self.writes()) else { return };
        let sent = match &turn.outcome {
            Outcome::NoChanges => 0,
            Outcome::Applied { ops, .. } => ops.len(),
            Outcome::Failed { applied, .. } => *applied,
        };
        if sent > 0 && after.ours == before.ours {
            self.disable("it did not count the operations the daemon sent", metrics);
            return;
        }
        let complete =
            matches!(turn.outcome, Outcome::NoChanges | Outcome::Applied { .. }) && turn.rest.is_none();
        if complete {
            self.verified = Some(Verified {
                desired: self.fingerprints.of_shared(desired),
                leaving: turn.leaving.clone(),
                others: before.others,
                at: Instant::now(),
            });
        }
    }

    fn writes(&mut self) -> Option<Writes> {
        match self.watch.as_ref()?.writes() {
            Ok(writes) => {
                let total = Some(writes.others + writes.ours);
                self.writes.send_if_modified(|seen| std::mem::replace(seen, total) != total);
                Some(writes)
            }
            Err(err) => {
                tracing::warn!("reading the IPVS write watch failed: {}", super::observer::render(&err));
                None
            }
        }
    }

    fn disable(&mut self, why: &str, metrics: &Metrics) {
        tracing::warn!("the IPVS write watch is not used: {why}; the table is read every reconcile interval");
        self.watch = None;
        self.verified = None;
        self.writes.send_replace(None);
        metrics.set_write_watch(false);
    }
}

/// 128 bits that tell desired states apart: two SipHash hashes of the whole state, keyed at
/// random by this process (std's `RandomState`, so nobody outside it can make two states
/// collide). Kept instead of a copy of the state, which is 8 MiB at 100,000 backends; two
/// different states share a fingerprint with a chance of about 2^-128.
type Fingerprint = [u64; 2];

#[derive(Debug)]
struct Fingerprints {
    keys: [RandomState; 2],
    /// The state last fingerprinted, and its fingerprint. A `Weak` keeps the allocation, so no
    /// other state can come to live at its address; and while it exists `Arc::make_mut` moves
    /// the state out rather than change it there: the same address is the same state.
    last: Option<(Weak<DesiredState>, Fingerprint)>,
}

impl Fingerprints {
    fn new() -> Self {
        Self { keys: [RandomState::new(), RandomState::new()], last: None }
    }

    /// The fingerprint of `desired`, computed again only for a state not seen last time: at
    /// rest the daemon's desired state is the configuration's own, unchanged between reloads.
    fn of_shared(&mut self, desired: &Arc<DesiredState>) -> Fingerprint {
        match &self.last {
            Some((state, fingerprint)) if std::ptr::eq(state.as_ptr(), Arc::as_ptr(desired)) => *fingerprint,
            _ => {
                let fingerprint = self.of(desired);
                self.last = Some((Arc::downgrade(desired), fingerprint));
                fingerprint
            }
        }
    }

    /// Each service is written out first ([`encode`]) and hashed in one piece: a hasher call per
    /// field would cost several times more on a large table.
    fn of(&self, desired: &DesiredState) -> Fingerprint {
        let mut hashers = self.keys.each_ref().map(RandomState::build_hasher);
        let mut service_bytes = Vec::with_capacity(1024);
        for hasher in &mut hashers {
            hasher.write_usize(desired.len());
        }
        for service in desired.values() {
            service_bytes.clear();
            encode(service, &mut service_bytes);
            for hasher in &mut hashers {
                hasher.write(&service_bytes);
            }
        }
        hashers.map(|hasher| hasher.finish())
    }
}

/// Writes out all of `service`, unambiguously (one service's bytes end where the next's begin):
/// fixed sizes, lengths before contents, a tag before what varies. A derived `Hash` would say the same in about twice the bytes (a `usize` for every
/// length and tag), which is what hashing costs. Destructured whole, so a field added to the model
/// does not compile until it is written here too.
fn encode(service: &Service, out: &mut Vec<u8>) {
    let Service { key, scheduler, persistence, persistence_netmask, destinations } = service;
    match *key {
        ServiceKey::Addr { protocol, addr, port } => {
            out.push(0);
            out.push(protocol as u8);
            encode_addr(addr, out);
            out.extend_from_slice(&port.to_le_bytes());
        }
        ServiceKey::Fwmark { mark, family } => {
            out.push(1);
            out.push(family as u8);
            out.extend_from_slice(&mark.to_le_bytes());
        }
    }
    out.extend_from_slice(&(scheduler.len() as u32).to_le_bytes());
    out.extend_from_slice(scheduler.as_bytes());
    match persistence {
        Some(timeout) => {
            out.push(1);
            out.extend_from_slice(&timeout.to_le_bytes());
        }
        None => out.push(0),
    }
    match persistence_netmask {
        Some(bits) => out.extend_from_slice(&[1, *bits]),
        None => out.push(0),
    }
    out.extend_from_slice(&(destinations.len() as u32).to_le_bytes());
    out.reserve(destinations.len() * DESTINATION_BYTES);
    for destination in destinations.values() {
        let Destination { key: DestKey { addr, port }, weight, forwarding, upper_threshold, lower_threshold } =
            *destination;
        // One record of a fixed size, written at once.
        let mut record = [0; DESTINATION_BYTES];
        let (family, octets) = match addr {
            IpAddr::V4(v4) => (4, v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => (6, v6.octets()),
        };
        record[0] = family;
        record[1..17].copy_from_slice(&octets);
        record[17..19].copy_from_slice(&port.to_le_bytes());
        record[19..23].copy_from_slice(&weight.to_le_bytes());
        record[23] = forwarding as u8;
        record[24..28].copy_from_slice(&upper_threshold.to_le_bytes());
        record[28..32].copy_from_slice(&lower_threshold.to_le_bytes());
        out.extend_from_slice(&record);
    }
}

/// A destination's record: the address family, the address (IPv4 as IPv4-mapped IPv6, told apart
/// by the family), the port, the weight, the forwarding method and both thresholds.
const DESTINATION_BYTES: usize = 32;

fn encode_addr(addr: IpAddr, out: &mut Vec<u8>) {
    match addr {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
}

/// Debian's kernels keep perf_event_open(2), which attaching a kprobe needs, to CAP_SYS_ADMIN
/// while `kernel.perf_event_paranoid` is above 2 (Debian's default is 3); the unit grants
/// CAP_PERFMON, which suffices at 2.
fn paranoid_hint() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .map(|text| text.trim().parse::<i32>())
    {
        Ok(Ok(level)) if level > 2 => format!(
            "; kernel.perf_event_paranoid is {level}, which on Debian's kernels keeps kprobes to CAP_SYS_ADMIN: \
             sysctl kernel.perf_event_paranoid=2 lets the unit's CAP_PERFMON attach them"
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Fingerprints;
    use crate::{
        config::DesiredState,
        model::{Destination, Forwarding, Service},
    };

    fn desired(weights: &[u32]) -> DesiredState {
        let service = Service::new("tcp:10.0.0.1:80".parse().unwrap(), "wrr").with_destinations(
            weights.iter().enumerate().map(|(n, weight)| {
                Destination::new(format!("10.0.1.{}:80", n + 1).parse().unwrap(), *weight, Forwarding::Nat)
            }),
        );
        DesiredState::from([(service.key, service)])
    }

    /// The fingerprint of a shared state is kept while it is the same state: changed, even by its
    /// only owner, or dropped and another made, it is computed again.
    #[test]
    fn a_shared_state_changed_since_is_fingerprinted_anew() {
        let mut fingerprints = Fingerprints::new();
        let mut state = Arc::new(desired(&[1, 2]));
        let first = fingerprints.of_shared(&state);
        assert_eq!(fingerprints.of_shared(&state), first);
        Arc::make_mut(&mut state).values_mut().for_each(|service| service.scheduler = "rr".to_owned());
        let changed = fingerprints.of_shared(&state);
        assert_ne!(changed, first);
        assert_eq!(changed, fingerprints.of(&state));
        drop(state);
        let other = Arc::new(desired(&[1, 3]));
        assert_eq!(fingerprints.of_shared(&other), fingerprints.of(&other));
        assert_ne!(fingerprints.of_shared(&other), changed);
    }

    #[test]
    fn a_fingerprint_tells_desired_states_apart() {
        let fingerprints = Fingerprints::new();
        let base = fingerprints.of(&desired(&[1, 2]));
        assert_eq!(fingerprints.of(&desired(&[1, 2])), base, "the same state");
        for other in
            [desired(&[1, 3]), desired(&[2, 1]), desired(&[1]), desired(&[1, 2, 0]), DesiredState::new()]
        {
            assert_ne!(fingerprints.of(&other), base, "{other:?}");
        }
        let mut scheduler = desired(&[1, 2]);
        scheduler.values_mut().for_each(|service| service.scheduler = "rr".to_owned());
        assert_ne!(fingerprints.of(&scheduler), base);
        let mut forwarding = desired(&[1, 2]);
        forwarding.values_mut().flat_map(|service| service.destinations.values_mut()).for_each(|dest| {
            dest.forwarding = Forwarding::Dr;
        });
        assert_ne!(fingerprints.of(&forwarding), base);
        let changed = |change: fn(&mut Service)| {
            let mut state = desired(&[1, 2]);
            state.values_mut().for_each(change);
            fingerprints.of(&state)
        };
        let changes: [fn(&mut Service); 6] = [
            |service| service.persistence = Some(300),
            |service| service.persistence_netmask = Some(24),
            |service| service.key = "udp:10.0.0.1:80".parse().unwrap(),
            |service| service.scheduler = "wrr ".to_owned(),
            |service| service.destinations.values_mut().for_each(|dest| dest.upper_threshold = 1),
            |service| service.destinations.values_mut().for_each(|dest| dest.lower_threshold = 1),
        ];
        let mut seen = vec![base];
        for change in changes {
            let fingerprint = changed(change);
            assert!(!seen.contains(&fingerprint), "{seen:?}");
            seen.push(fingerprint);
        }
    }
}
