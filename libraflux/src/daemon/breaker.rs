//! Circuit breakers in the daemon (docs/circuit-breakers.md): every 0.5 s the eBPF connection
//! outcomes of the NAT backends are compared with the last reading, every health check result is
//! an outcome too, and ejections that passed are let back half-open. A transition is logged,
//! exported, aborts a rolling-out canary when it ejects it, and is reconciled like a health
//! transition (coalesced, trigger `health_change`).

use std::{collections::BTreeMap, time::Instant};

use serde_json::{Value, json};

use super::{Daemon, HEALTH_COALESCE};
use crate::{
    breaker::{Source, State, Transition},
    canary::AbortReason,
    model::{DestKey, ServiceKey},
    observe::{self, ConnectOutcomes},
};

/// The last eBPF reading of each backend with a breaker, by its observer key.
pub(super) type Seen = BTreeMap<observe::DestKey, ConnectOutcomes>;

impl Daemon {
    /// After start and each reload: a breaker for every backend of every service with
    /// `circuit_breaker:`; those that stay keep their state.
    pub(super) fn configure_breakers(&mut self) {
        let config = &self.config;
        let services: Vec<_> = config
            .settings
            .iter()
            .filter_map(|(key, settings)| {
                let backends = config.desired.get(key)?.destinations.keys().copied().collect();
                Some((*key, settings.circuit_breaker?, backends))
            })
            .collect();
        self.breakers.configure(services, Instant::now());
        let kept: std::collections::BTreeSet<observe::DestKey> = self
            .breakers
            .iter()
            .filter_map(|((service, backend), _)| observer_key(*service, *backend))
            .collect();
        self.breaker_seen.retain(|key, _| kept.contains(key));
        self.metrics.set_circuits(self.breakers.iter().map(|((s, b), breaker)| (*s, *b, breaker.is_open())));
    }

    /// Real traffic since the last reading, and ejections that passed.
    pub(super) fn breaker_tick(&mut self) {
        let now = Instant::now();
        let mut transitions = self.breakers.tick(now);
        if self.breakers.iter().next().is_some()
            && let Some(outcomes) = self.observer.connect_outcomes()
        {
            let keys: Vec<(ServiceKey, DestKey)> = self.breakers.iter().map(|(key, _)| *key).collect();
            for (service, backend) in keys {
                let Some(key) = observer_key(service, backend) else { continue };
                let Some(reading) = outcomes.get(&key).copied() else { continue };
                let Some(last) = self.breaker_seen.insert(key, reading) else { continue };
                // Counters only grow while the backend is tracked; a smaller one was tracked anew.
                let failures = reading.failures().checked_sub(last.failures()).unwrap_or(reading.failures());
                let answers = reading.answered.checked_sub(last.answered).unwrap_or(reading.answered);
                if let Some(transition) = self.breakers.traffic(service, backend, failures, answers, now) {
                    transitions.push((service, backend, transition));
                }
            }
        }
        self.breaker_transitions(transitions);
    }

    /// One health check result of a backend with a breaker.
    pub(super) fn breaker_check(&mut self, service: ServiceKey, backend: DestKey, ok: bool) {
        if let Some(transition) = self.breakers.check(service, backend, ok, Instant::now()) {
            self.breaker_transitions(vec![(service, backend, transition)]);
        }
    }

    fn breaker_transitions(&mut self, transitions: Vec<(ServiceKey, DestKey, Transition)>) {
        if transitions.is_empty() {
            return;
        }
        let mut reconcile = false;
        for (service, backend, transition) in transitions {
            match transition {
                Transition::Opened { source, failures, for_, ejections } => {
                    let seen = match source {
                        Source::Traffic => "connection attempts of real traffic failed",
                        Source::Check => "health checks failed",
                    };
                    tracing::error!(%service, %backend, failures, ejection = ?for_, ejections, "circuit OPEN: {failures} {seen} in a row; weight 0 until it is let back half-open");
                    self.metrics.record_circuit_ejection(service, backend);
                    let detail = format!("its circuit breaker ejected it ({failures} {seen} in a row)");
                    self.abort_canary(service, backend, AbortReason::CircuitBreaker, &detail);
                    reconcile = true;
                }
                Transition::HalfOpened => {
                    tracing::warn!(%service, %backend, "circuit half-open: back in service; its next outcome closes or re-opens it");
                    reconcile = true;
                }
                Transition::Closed => {
                    tracing::info!(%service, %backend, "circuit closed: a success while half-open");
                }
                Transition::Held { source, failures, ejected, allowed } => {
                    tracing::warn!(%service, %backend, failures, source = source.label(), ejected, allowed, "circuit held closed: the service already has as many backends ejected as max_ejected_percent allows");
                }
            }
            let open = self.breakers.get(service, backend).is_some_and(|breaker| breaker.is_open());
            self.metrics.set_circuit_open(service, backend, open);
        }
        if reconcile {
            self.health_due.get_or_insert_with(|| tokio::time::Instant::now() + HEALTH_COALESCE);
        }
    }

    /// The breakers that are not closed or have failures counted, for `/status`.
    pub(super) fn breakers_status(&self) -> Value {
        let now = Instant::now();
        self.breakers
            .iter()
            .filter(|(_, b)| {
                b.state != State::Closed || b.traffic_failures + b.check_failures > 0 || b.ejections > 0
            })
            .map(|((service, backend), breaker)| {
                let (state, open_for) = match breaker.state {
                    State::Closed => ("closed", None),
                    State::HalfOpen => ("half_open", None),
                    State::Open { until } => {
                        ("open", Some(until.saturating_duration_since(now).as_secs_f64()))
                    }
                };
                json!({
                    "service": service, "backend": backend, "state": state,
                    "traffic_failures": breaker.traffic_failures, "check_failures": breaker.check_failures,
                    "ejections": breaker.ejections, "open_for_seconds": open_for,
                })
            })
            .collect::<Vec<_>>()
            .into()
    }
}

/// The observer's key of a backend: its address, port and the service's protocol; none for a
/// firewall-mark service (the mark does not say the protocol).
fn observer_key(service: ServiceKey, backend: DestKey) -> Option<observe::DestKey> {
    let ServiceKey::Addr { protocol, .. } = service else { return None };
    Some(observe::DestKey::new(backend.addr, backend.port, protocol.number()))
}
