//! Circuit breakers (docs/circuit-breakers.md): a backend whose connection attempts fail N times
//! in a row, as the eBPF programs see real traffic or as its active health check sees it, is
//! ejected (weight 0) for `ejection` x the number of times it was ejected, at most
//! `max_ejection`; then it is let back half-open: its next outcome decides, one success closes the
//! circuit, one failure ejects it again. Never more than `max_ejected_percent` of a service's
//! backends are ejected at once, and at least one may always be.
//!
//! Pure: the daemon feeds it outcomes and the time, and applies the weights it says.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::{
    config::DesiredState,
    model::{DestKey, ServiceKey},
};

/// A service's `circuit_breaker:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub consecutive_failures: u32,
    pub ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejected_percent: u8,
}

impl Settings {
    pub const DEFAULT: Self = Self {
        consecutive_failures: 5,
        ejection: Duration::from_secs(30),
        max_ejection: Duration::from_secs(300),
        max_ejected_percent: 50,
    };
}

impl Default for Settings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Where a backend's circuit stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// In service; failures are counted.
    Closed,
    /// Ejected until `until`.
    Open { until: Instant },
    /// Back in service on probation: the next outcome closes or re-opens it.
    HalfOpen,
}

/// Where an outcome was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The eBPF programs, in the clients' own connection attempts.
    Traffic,
    /// The backend's active health check.
    Check,
}

impl Source {
    pub const fn label(self) -> &'static str {
        match self {
            Self::Traffic => "traffic",
            Self::Check => "health_check",
        }
    }
}

/// A change of one backend's circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Ejected: after `failures` in a row seen by `source` (or one failure while half-open), for
    /// `for_`, its `ejections`-th ejection.
    Opened { source: Source, failures: u32, for_: Duration, ejections: u32 },
    /// The ejection passed: back in service, half-open.
    HalfOpened,
    /// A success while half-open.
    Closed,
    /// `failures` in a row, but the service already has as many backends ejected as it may.
    Held { source: Source, failures: u32, ejected: usize, allowed: usize },
}

/// One backend's circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breaker {
    pub state: State,
    /// Failures in a row as real traffic shows them, and as the health check does.
    pub traffic_failures: u32,
    pub check_failures: u32,
    /// How many times it was ejected: the next ejection lasts this many + 1 times `ejection`.
    /// Forgotten once the circuit has stayed closed for `max_ejection`.
    pub ejections: u32,
    /// When the circuit last closed (or the breaker was made).
    closed_at: Instant,
}

impl Breaker {
    fn new(now: Instant) -> Self {
        Self { state: State::Closed, traffic_failures: 0, check_failures: 0, ejections: 0, closed_at: now }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }
}

/// What the daemon keeps: one breaker per backend of every service that has `circuit_breaker:`.
#[derive(Clone, Debug, Default)]
pub struct Breakers {
    settings: BTreeMap<ServiceKey, Settings>,
    breakers: BTreeMap<(ServiceKey, DestKey), Breaker>,
}

impl Breakers {
    /// Follows a configuration: the services with `settings`, each with `backends`. Breakers of
    /// backends that stay are kept as they are; the others go.
    pub fn configure(
        &mut self,
        services: impl IntoIterator<Item = (ServiceKey, Settings, Vec<DestKey>)>,
        now: Instant,
    ) -> &mut Self {
        let mut breakers = BTreeMap::new();
        let mut settings = BTreeMap::new();
        for (service, service_settings, backends) in services {
            settings.insert(service, service_settings);
            for backend in backends {
                let kept = self.breakers.get(&(service, backend)).copied();
                breakers.insert((service, backend), kept.unwrap_or_else(|| Breaker::new(now)));
            }
        }
        self.settings = settings;
        self.breakers = breakers;
        self
    }

    pub fn get(&self, service: ServiceKey, backend: DestKey) -> Option<&Breaker> {
        self.breakers.get(&(service, backend))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&(ServiceKey, DestKey), &Breaker)> {
        self.breakers.iter()
    }

    /// The backends `service` has breakers for (those of services without `circuit_breaker:`
    /// have none).
    pub fn has(&self, service: ServiceKey, backend: DestKey) -> bool {
        self.breakers.contains_key(&(service, backend))
    }

    /// What one sample of real traffic showed: `failures` failed attempts and `answers` accepted
    /// ones since the last sample. Their order inside the sample is not known: one with any
    /// answer counts as a success (the run of failures ends), one with only failures adds them
    /// to the run.
    pub fn traffic(
        &mut self,
        service: ServiceKey,
        backend: DestKey,
        failures: u64,
        answers: u64,
        now: Instant,
    ) -> Option<Transition> {
        if failures == 0 && answers == 0 {
            return None;
        }
        let count = u32::try_from(failures).unwrap_or(u32::MAX);
        self.outcome(service, backend, Source::Traffic, if answers > 0 { None } else { Some(count) }, now)
    }

    /// One active health check of the backend.
    pub fn check(
        &mut self,
        service: ServiceKey,
        backend: DestKey,
        ok: bool,
        now: Instant,
    ) -> Option<Transition> {
        self.outcome(service, backend, Source::Check, (!ok).then_some(1), now)
    }

    /// `failed`: how many failures (`None`: a success).
    fn outcome(
        &mut self,
        service: ServiceKey,
        backend: DestKey,
        source: Source,
        failed: Option<u32>,
        now: Instant,
    ) -> Option<Transition> {
        let settings = *self.settings.get(&service)?;
        let ejected = self.ejected(service);
        let allowed = self.allowed(service, &settings);
        let breaker = self.breakers.get_mut(&(service, backend))?;
        let run = match source {
            Source::Traffic => &mut breaker.traffic_failures,
            Source::Check => &mut breaker.check_failures,
        };
        match (breaker.state, failed) {
            (State::Open { .. }, _) => None,
            (State::HalfOpen, None) => {
                *breaker = Breaker { ejections: breaker.ejections, ..Breaker::new(now) };
                Some(Transition::Closed)
            }
            (State::HalfOpen, Some(_)) => Some(eject(breaker, &settings, source, 1, now)),
            (State::Closed, None) => {
                *run = 0;
                None
            }
            (State::Closed, Some(count)) => {
                *run = run.saturating_add(count);
                let failures = *run;
                if failures < settings.consecutive_failures {
                    return None;
                }
                if ejected >= allowed {
                    return Some(Transition::Held { source, failures, ejected, allowed });
                }
                if now.duration_since(breaker.closed_at) >= settings.max_ejection {
                    breaker.ejections = 0;
                }
                Some(eject(breaker, &settings, source, failures, now))
            }
        }
    }

    /// Lets back, half-open, every backend whose ejection has passed at `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<(ServiceKey, DestKey, Transition)> {
        let mut changed = Vec::new();
        for (key, breaker) in &mut self.breakers {
            if let State::Open { until } = breaker.state
                && now >= until
            {
                breaker.state = State::HalfOpen;
                changed.push((key.0, key.1, Transition::HalfOpened));
            }
        }
        changed
    }

    /// Ejected backends get weight 0.
    pub fn apply_to(&self, desired: &mut DesiredState) {
        for ((service, backend), breaker) in &self.breakers {
            if breaker.is_open()
                && let Some(dest) = desired.get_mut(service).and_then(|s| s.destinations.get_mut(backend))
            {
                dest.weight = 0;
            }
        }
    }

    fn ejected(&self, service: ServiceKey) -> usize {
        self.of_service(service).filter(|breaker| breaker.is_open()).count()
    }

    fn of_service(&self, service: ServiceKey) -> impl Iterator<Item = &Breaker> {
        let first = DestKey::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0);
        self.breakers.range((service, first)..).take_while(move |((s, _), _)| *s == service).map(|(_, b)| b)
    }

    /// How many of `service`'s backends may be ejected at once: the percentage of them, rounded
    /// down, and at least one.
    fn allowed(&self, service: ServiceKey, settings: &Settings) -> usize {
        let backends = self.of_service(service).count();
        (backends * usize::from(settings.max_ejected_percent) / 100).max(1)
    }
}

fn eject(
    breaker: &mut Breaker,
    settings: &Settings,
    source: Source,
    failures: u32,
    now: Instant,
) -> Transition {
    breaker.ejections = breaker.ejections.saturating_add(1);
    let for_ = settings.ejection.saturating_mul(breaker.ejections).min(settings.max_ejection);
    breaker.state = State::Open { until: now + for_ };
    breaker.traffic_failures = 0;
    breaker.check_failures = 0;
    Transition::Opened { source, failures, for_, ejections: breaker.ejections }
}

#[cfg(test)]
mod tests;
