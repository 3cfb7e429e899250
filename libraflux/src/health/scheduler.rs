//! Runs the checks: one task per checked (service, backend), probing every `interval` with
//! jitter, each probe bounded by `timeout`, at most `max_in_flight` probes at once. Publishes a
//! [`HealthTable`] (a watch channel) and one [`HealthEvent`] per probe (an mpsc channel).

use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash as _, Hasher as _},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::{Semaphore, mpsc, watch},
    task::JoinHandle,
    time::Instant,
};

use super::{
    checker::{CheckFailure, Checker, ProbeOutcome, Unsupported, checker_for, probe_bounded},
    state::{BackendState, InitialState, Transition},
    table::{BackendStatus, HealthTable, LastProbe},
    tcp::IdleSockets,
    type_name,
};
use crate::{
    config::{Check, DesiredState, Health, ServiceSettings},
    model::{DestKey, ServiceKey},
};

/// Makes the checker for a check; [`checker_for`] in the daemon, fakes in tests.
pub type CheckerFactory = Arc<dyn Fn(&Check) -> Result<Option<Arc<dyn Checker>>, Unsupported> + Send + Sync>;

/// Probes no more often than this, whatever the interval says: a zero interval must not spin.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Each round waits the interval plus or minus this fraction of it.
const JITTER: f64 = 0.1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// Probes in flight at once, over all services.
    pub max_in_flight: usize,
    /// The state of a backend whose check starts.
    pub initial: InitialState,
    /// Seeds the jitter, for reproducible schedules in tests; `None` seeds it at random.
    pub seed: Option<u64>,
    /// Capacity of the event channel. When it is full, probe tasks wait for the reader.
    pub event_capacity: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self { max_in_flight: 512, initial: InitialState::Healthy, seed: None, event_capacity: 1024 }
    }
}

/// The result of one probe, and the backend's state after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEvent {
    pub service: ServiceKey,
    pub backend: DestKey,
    /// The check type as configured (`tcp`, `http`): a metrics label.
    pub check_type: &'static str,
    /// This probe's result; [`HealthEvent::outcome`] is its metrics label.
    pub result: Result<(), CheckFailure>,
    /// This probe's latency, for `libraflux_health_check_latency_seconds`.
    pub latency: Duration,
    /// The backend's verdict after this probe.
    pub healthy: bool,
    /// Set when this probe changed the verdict.
    pub transition: Option<Transition>,
}

impl HealthEvent {
    /// For the log: the transition and its cause, or this probe's result. Made when asked for,
    /// not per probe: the daemon logs transitions only.
    pub fn reason(&self) -> String {
        match self.transition {
            Some(transition) => describe(transition, &self.result),
            None => self.result.as_ref().map_or_else(ToString::to_string, |()| "probe succeeded".to_owned()),
        }
    }

    /// `success`, or the failure's label (`refused`, `timeout`, `bad_status`, ...).
    pub fn outcome(&self) -> &'static str {
        ProbeOutcome { result: self.result.clone(), latency: self.latency }.outcome()
    }
}

/// What [`Scheduler::update`] changed, by count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdateSummary {
    pub added: usize,
    pub removed: usize,
    /// Check settings or target changed: the probe restarted, keeping the verdict.
    pub restarted: usize,
    pub kept: usize,
}

/// What one backend's probe task does; a task whose spec is unchanged survives a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ProbeSpec {
    health: Health,
    target: SocketAddr,
}

#[derive(Debug)]
struct Running {
    spec: ProbeSpec,
    task: JoinHandle<()>,
}

/// What the probe tasks share with the scheduler.
#[derive(Clone, Debug)]
struct Shared {
    table: Arc<watch::Sender<HealthTable>>,
    events: mpsc::Sender<HealthEvent>,
    permits: Arc<Semaphore>,
}

/// The health-check engine. Its tasks stop when it is dropped.
pub struct Scheduler {
    probes: BTreeMap<(ServiceKey, DestKey), Running>,
    unsupported: BTreeMap<ServiceKey, Unsupported>,
    shared: Shared,
    checkers: CheckerFactory,
    initial: InitialState,
    seed: u64,
    generation: u64,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("probes", &self.probes.keys().collect::<Vec<_>>())
            .field("unsupported", &self.unsupported)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler with the real checkers and no probes yet; [`Scheduler::update`] starts them.
    pub fn new(options: SchedulerOptions) -> (Self, mpsc::Receiver<HealthEvent>) {
        let tcp = Arc::new(IdleSockets::default());
        Self::with_checkers(options, Arc::new(move |check: &Check| checker_for(check, &tcp)))
    }

    pub fn with_checkers(
        options: SchedulerOptions,
        checkers: CheckerFactory,
    ) -> (Self, mpsc::Receiver<HealthEvent>) {
        let (events, receiver) = mpsc::channel(options.event_capacity.max(1));
        let shared = Shared {
            table: Arc::new(watch::Sender::new(HealthTable::default())),
            events,
            permits: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
        };
        let scheduler = Self {
            probes: BTreeMap::new(),
            unsupported: BTreeMap::new(),
            shared,
            checkers,
            initial: options.initial,
            seed: options.seed.unwrap_or_else(|| fastrand::u64(..)),
            generation: 0,
        };
        (scheduler, receiver)
    }

    /// The health table, as a watch channel. It notifies when a backend's verdict changes (and when
    /// [`Scheduler::update`] adds or removes backends); the details of each probe (its counts, the
    /// last result and latency) are written after every probe without a notification, and read
    /// with the next `borrow`.
    pub fn table(&self) -> watch::Receiver<HealthTable> {
        self.shared.table.subscribe()
    }

    /// A copy of the health table now.
    pub fn snapshot(&self) -> HealthTable {
        self.shared.table.borrow().clone()
    }

    /// Whether `backend` of `service` passes its check now (unchecked ones do), without copying
    /// the table as [`Scheduler::snapshot`] does.
    pub fn is_healthy(&self, service: &ServiceKey, backend: &DestKey) -> bool {
        self.shared.table.borrow().is_healthy(service, backend)
    }

    /// Services whose check type is not supported yet: their backends are not checked.
    pub fn unsupported(&self) -> &BTreeMap<ServiceKey, Unsupported> {
        &self.unsupported
    }

    /// Brings the probes in line with a (re)loaded configuration: starts probes for new checked
    /// backends, stops those of backends or checks that are gone, restarts those whose check
    /// changed (keeping their verdict, restarting their counts) and leaves the rest untouched, state
    /// and schedule alike. Must run inside a Tokio runtime.
    pub fn update(
        &mut self,
        desired: &DesiredState,
        settings: &BTreeMap<ServiceKey, ServiceSettings>,
    ) -> UpdateSummary {
        let wanted = self.wanted(desired, settings);
        let mut summary = UpdateSummary::default();
        let mut removed = Vec::new();
        self.probes.retain(|key, running| {
            let keep = wanted.get(key).is_some_and(|want| want.spec == running.spec);
            if !keep {
                running.task.abort();
                if !wanted.contains_key(key) {
                    removed.push(*key);
                }
            }
            keep
        });
        summary.removed = removed.len();
        summary.kept = self.probes.len();

        let mut starting = Vec::new();
        let current = self.snapshot();
        for (key, want) in wanted {
            if self.probes.contains_key(&key) {
                continue;
            }
            let carried = current.get(&key.0, &key.1).map(|status| status.state.healthy);
            let healthy = carried.unwrap_or(matches!(self.initial, InitialState::Healthy));
            match carried {
                Some(_) => summary.restarted += 1,
                None => summary.added += 1,
            }
            self.generation += 1;
            starting.push((key, want, healthy, self.generation));
        }

        self.shared.table.send_modify(|table| {
            for (service, backend) in &removed {
                table.remove(service, backend);
            }
            for ((service, backend), want, healthy, generation) in &starting {
                let state =
                    BackendState { healthy: *healthy, consecutive_successes: 0, consecutive_failures: 0 };
                let mut status = BackendStatus::new(want.check_type, state);
                status.generation = *generation;
                table.insert(*service, *backend, status);
            }
        });
        for ((service, backend), want, healthy, generation) in starting {
            let task = ProbeTask {
                service,
                backend,
                spec: want.spec.clone(),
                checker: want.checker,
                check_type: want.check_type,
                state: BackendState { healthy, consecutive_successes: 0, consecutive_failures: 0 },
                generation,
                rng: fastrand::Rng::with_seed(self.seed ^ key_hash(&service, &backend)),
                shared: self.shared.clone(),
            };
            let running = Running { spec: want.spec, task: tokio::spawn(task.run()) };
            self.probes.insert((service, backend), running);
        }
        summary
    }

    /// Every (service, backend) that has a supported check, with what its probe needs.
    fn wanted(
        &mut self,
        desired: &DesiredState,
        settings: &BTreeMap<ServiceKey, ServiceSettings>,
    ) -> BTreeMap<(ServiceKey, DestKey), Wanted> {
        self.unsupported.clear();
        let mut wanted = BTreeMap::new();
        for (key, service) in desired {
            let Some(health) = settings.get(key).map(|settings| &settings.health) else { continue };
            let checker = match (self.checkers)(&health.check) {
                Ok(Some(checker)) => checker,
                Ok(None) => continue,
                Err(unsupported) => {
                    self.unsupported.insert(*key, unsupported);
                    continue;
                }
            };
            for backend in service.destinations.keys() {
                let target = SocketAddr::new(backend.addr, health.port.unwrap_or(backend.port));
                let want = Wanted {
                    spec: ProbeSpec { health: health.clone(), target },
                    checker: Arc::clone(&checker),
                    check_type: type_name(&health.check),
                };
                wanted.insert((*key, *backend), want);
            }
        }
        wanted
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        for running in self.probes.values() {
            running.task.abort();
        }
    }
}

struct Wanted {
    spec: ProbeSpec,
    checker: Arc<dyn Checker>,
    check_type: &'static str,
}

/// One backend's probe loop.
struct ProbeTask {
    service: ServiceKey,
    backend: DestKey,
    spec: ProbeSpec,
    checker: Arc<dyn Checker>,
    check_type: &'static str,
    state: BackendState,
    generation: u64,
    rng: fastrand::Rng,
    shared: Shared,
}

impl ProbeTask {
    async fn run(mut self) {
        let interval = self.spec.health.interval.max(MIN_INTERVAL);
        let mut next = Instant::now() + first_delay(interval, self.rng.f64());
        loop {
            tokio::time::sleep_until(next).await;
            let round = Instant::now();
            next = round + round_delay(interval, self.rng.f64());
            let outcome = {
                let Ok(_permit) = self.shared.permits.acquire().await else { return };
                probe_bounded(self.checker.as_ref(), self.spec.target, self.spec.health.timeout).await
            };
            let transition =
                self.state.record(outcome.result.is_ok(), self.spec.health.rise, self.spec.health.fall);
            if !self.publish(&outcome, transition) {
                return;
            }
            let event = HealthEvent {
                service: self.service,
                backend: self.backend,
                check_type: self.check_type,
                result: outcome.result,
                latency: outcome.latency,
                healthy: self.state.healthy,
                transition,
            };
            // A dropped receiver is a daemon shutting down; the table still serves until then.
            let _ = self.shared.events.send(event).await;
        }
    }

    /// Writes this backend's state into the table; false when a reload has replaced or removed
    /// this task (its entry now belongs to another generation, or is gone). The table's receivers
    /// are notified only when the verdict changed: every probe's details are written silently.
    fn publish(&self, outcome: &ProbeOutcome, transition: Option<Transition>) -> bool {
        let mut current = false;
        self.shared.table.send_if_modified(|table| match table.get_mut(&self.service, &self.backend) {
            Some(status) if status.generation == self.generation => {
                status.state = self.state;
                status.last_probe =
                    Some(LastProbe { failure: outcome.result.clone().err(), latency: outcome.latency });
                current = true;
                transition.is_some()
            }
            _ => false,
        });
        current
    }
}

fn describe(transition: Transition, last: &Result<(), CheckFailure>) -> String {
    match (transition, last) {
        (Transition::BecameHealthy { successes }, _) => {
            format!("healthy after {successes} consecutive successful probes")
        }
        (Transition::BecameUnhealthy { failures }, Err(failure)) => {
            format!("unhealthy after {failures} consecutive failed probes, last: {failure}")
        }
        (Transition::BecameUnhealthy { failures }, Ok(())) => {
            format!("unhealthy after {failures} consecutive failed probes")
        }
    }
}

/// The first probe waits `unit` (uniform in [0, 1)) of the interval, so the probes of many
/// backends started together spread over the interval instead of arriving as one burst.
fn first_delay(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(unit.clamp(0.0, 1.0))
}

/// Later rounds wait the interval within ±10%, so backends started together drift apart.
fn round_delay(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0))
}

/// Mixed into the seed so each backend gets its own, reproducible, jitter sequence.
fn key_hash(service: &ServiceKey, backend: &DestKey) -> u64 {
    let mut hasher = DefaultHasher::new();
    service.hash(&mut hasher);
    backend.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests;
