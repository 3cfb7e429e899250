//! The one task that runs every probe: a queue of due times ordered by time, the probes in flight
//! in one set, and the results of all probes that end together published at once.
//!
//! One task instead of a task and a timer per backend: a probe costs no task wakeup of its own,
//! probes due within [`COALESCE`] of each other start in the same wakeup, and the health table's
//! lock is taken once per batch of results instead of once per probe (docs/benchmarks.md shows
//! where the time went before).

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    net::SocketAddr,
    sync::Arc,
    task::Poll,
    time::Duration,
};

use futures_util::{StreamExt as _, future::BoxFuture, stream::FuturesUnordered};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use super::{HealthEvent, describe, first_delay, round_delay};
use crate::{
    config::Health,
    health::{
        checker::{Checker, ProbeOutcome, probe_bounded},
        state::{BackendState, Transition},
        table::{HealthTable, LastProbe},
    },
    model::{DestKey, ServiceKey},
};

/// Probes due this close together start in one wakeup: at most this much early, and at most 1 %
/// of their interval (see [`slack`]).
pub(super) const COALESCE: Duration = Duration::from_millis(10);

/// How much earlier than its due time a probe of this interval may start.
pub(super) fn slack(interval: Duration) -> Duration {
    COALESCE.min(interval / 100)
}

/// One checked backend, as the scheduler hands it to the driver.
pub(super) struct Probe {
    pub service: ServiceKey,
    pub backend: DestKey,
    pub target: SocketAddr,
    pub health: Health,
    pub interval: Duration,
    pub checker: Arc<dyn Checker>,
    pub check_type: &'static str,
    pub state: BackendState,
    pub rng: fastrand::Rng,
}

/// What the scheduler tells the driver; a probe is known by its generation, unique per start.
pub(super) enum Command {
    Start { generation: u64, probe: Box<Probe> },
    Stop { generation: u64 },
}

/// What the driver shares with the scheduler.
pub(super) struct Outputs {
    pub table: Arc<watch::Sender<HealthTable>>,
    pub events: mpsc::Sender<HealthEvent>,
}

struct Entry {
    probe: Probe,
    /// When the next round is due, set when a round starts.
    next: Instant,
}

type InFlight = FuturesUnordered<BoxFuture<'static, (u64, ProbeOutcome)>>;

pub(super) struct Driver {
    entries: HashMap<u64, Entry>,
    /// (due, generation); an entry has one item here unless its probe is in flight. Items of
    /// stopped entries are skipped when they come up.
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    in_flight: InFlight,
    max_in_flight: usize,
    outputs: Outputs,
}

impl Driver {
    pub fn new(outputs: Outputs, max_in_flight: usize) -> Self {
        Self {
            entries: HashMap::new(),
            due: BinaryHeap::new(),
            in_flight: FuturesUnordered::new(),
            max_in_flight: max_in_flight.max(1),
            outputs,
        }
    }

    /// Runs until the scheduler is gone (its command sender dropped).
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut done = Vec::new();
        let sleep = tokio::time::sleep_until(Instant::now());
        tokio::pin!(sleep);
        loop {
            let wake = self.next_wake();
            if let Some(wake) = wake {
                sleep.as_mut().reset(wake);
            }
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(command) => self.apply(command),
                    None => return,
                },
                Some(result) = self.in_flight.next(), if !self.in_flight.is_empty() => done.push(result),
                () = &mut sleep, if wake.is_some() => {}
            }
            // Everything else that is ready now joins this wakeup: commands first, so that no
            // result of a probe stopped by a reload is published.
            while let Ok(command) = commands.try_recv() {
                self.apply(command);
            }
            // Polled with this task's own waker (not `now_or_never`'s no-op one), so that a
            // probe that becomes ready later still wakes the driver.
            let in_flight = &mut self.in_flight;
            std::future::poll_fn(|cx| {
                while let Poll::Ready(Some(result)) = in_flight.poll_next_unpin(cx) {
                    done.push(result);
                }
                Poll::Ready(())
            })
            .await;
            if !done.is_empty() {
                self.finish(&mut done).await;
            }
            self.start_due(Instant::now());
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Start { generation, mut probe } => {
                let next = Instant::now() + first_delay(probe.interval, probe.rng.f64());
                self.due.push(Reverse((next, generation)));
                self.entries.insert(generation, Entry { probe: *probe, next });
            }
            Command::Stop { generation } => {
                self.entries.remove(&generation);
            }
        }
    }

    /// When the earliest waiting probe is due; `None` when none waits or no slot is free.
    fn next_wake(&mut self) -> Option<Instant> {
        if self.in_flight.len() >= self.max_in_flight {
            return None;
        }
        while let Some(&Reverse((due, generation))) = self.due.peek() {
            if self.entries.contains_key(&generation) {
                return Some(due);
            }
            self.due.pop();
        }
        None
    }

    /// Starts every probe due by `now` (or within its [`slack`] of it), as slots allow.
    fn start_due(&mut self, now: Instant) {
        while self.in_flight.len() < self.max_in_flight {
            let Some(&Reverse((due, generation))) = self.due.peek() else { return };
            let Some(entry) = self.entries.get_mut(&generation) else {
                self.due.pop();
                continue;
            };
            if due > now + slack(entry.probe.interval) {
                return;
            }
            self.due.pop();
            let probe = &mut entry.probe;
            entry.next = now + round_delay(probe.interval, probe.rng.f64());
            let (checker, target, timeout) = (Arc::clone(&probe.checker), probe.target, probe.health.timeout);
            self.in_flight.push(Box::pin(async move {
                (generation, probe_bounded(checker.as_ref(), target, timeout).await)
            }));
        }
    }

    /// Records a batch of results: each backend's state, the table once, then one event each.
    async fn finish(&mut self, done: &mut Vec<(u64, ProbeOutcome)>) {
        let mut recorded: Vec<(u64, ProbeOutcome, Option<Transition>)> = Vec::with_capacity(done.len());
        for (generation, outcome) in done.drain(..) {
            // Stopped while in flight: a reload removed or replaced the backend.
            let Some(entry) = self.entries.get_mut(&generation) else { continue };
            let health = &entry.probe.health;
            let transition = entry.probe.state.record(outcome.result.is_ok(), health.rise, health.fall);
            self.due.push(Reverse((entry.next, generation)));
            recorded.push((generation, outcome, transition));
        }
        let entries = &self.entries;
        self.outputs.table.send_if_modified(|table| {
            // An entry the table gives to another generation is being replaced by a reload: its
            // result is not published, and the Stop that follows removes it.
            recorded.retain(|(generation, outcome, _)| {
                let probe = &entries[generation].probe;
                match table.get_mut(&probe.service, &probe.backend) {
                    Some(status) if status.generation == *generation => {
                        status.state = probe.state;
                        status.last_probe = Some(LastProbe {
                            failure: outcome.result.clone().err(),
                            latency: outcome.latency,
                        });
                        true
                    }
                    _ => false,
                }
            });
            !recorded.is_empty()
        });
        for (generation, outcome, transition) in recorded {
            let probe = &self.entries[&generation].probe;
            let reason = match transition {
                Some(transition) => describe(transition, &outcome.result),
                None => outcome
                    .result
                    .as_ref()
                    .map_or_else(ToString::to_string, |()| "probe succeeded".to_owned()),
            };
            let event = HealthEvent {
                service: probe.service,
                backend: probe.backend,
                check_type: probe.check_type,
                result: outcome.result,
                latency: outcome.latency,
                healthy: probe.state.healthy,
                transition,
                reason,
            };
            // A dropped receiver is a daemon shutting down; the table still serves until then.
            let _ = self.outputs.events.send(event).await;
        }
    }
}
