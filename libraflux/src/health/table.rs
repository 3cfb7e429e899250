//! The health of every checked backend, by service key then backend key: what the daemon's plan
//! and `/status` read. A backend that is not in the table has no check and counts as healthy.

use std::{collections::BTreeMap, time::Duration};

use serde::{Serialize, Serializer};

use super::{checker::CheckFailure, state::BackendState};
use crate::model::{DestKey, ServiceKey};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HealthTable {
    services: BTreeMap<ServiceKey, BTreeMap<DestKey, BackendStatus>>,
}

/// One checked backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendStatus {
    /// The check type as configured (`tcp`, `http`).
    pub check: &'static str,
    #[serde(flatten)]
    pub state: BackendState,
    /// The latest probe, once one has run.
    pub last_probe: Option<LastProbe>,
    /// Which run of the scheduler owns this entry: a probe task that was replaced or removed by a
    /// reload must not write here any more.
    #[serde(skip)]
    pub(super) generation: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LastProbe {
    #[serde(serialize_with = "failure_text")]
    pub failure: Option<CheckFailure>,
    #[serde(serialize_with = "seconds")]
    pub latency: Duration,
}

impl BackendStatus {
    pub const fn new(check: &'static str, state: BackendState) -> Self {
        Self { check, state, last_probe: None, generation: 0 }
    }

    pub const fn healthy(&self) -> bool {
        self.state.healthy
    }
}

impl HealthTable {
    pub fn get(&self, service: &ServiceKey, backend: &DestKey) -> Option<&BackendStatus> {
        self.services.get(service)?.get(backend)
    }

    /// Whether the backend may carry traffic: unchecked backends are healthy.
    pub fn is_healthy(&self, service: &ServiceKey, backend: &DestKey) -> bool {
        self.get(service, backend).is_none_or(BackendStatus::healthy)
    }

    /// The checked backends of `service`, by key.
    pub fn service(&self, service: &ServiceKey) -> Option<&BTreeMap<DestKey, BackendStatus>> {
        self.services.get(service)
    }

    pub fn services(&self) -> impl Iterator<Item = (&ServiceKey, &BTreeMap<DestKey, BackendStatus>)> {
        self.services.iter()
    }

    pub fn insert(&mut self, service: ServiceKey, backend: DestKey, status: BackendStatus) {
        self.services.entry(service).or_default().insert(backend, status);
    }

    pub fn remove(&mut self, service: &ServiceKey, backend: &DestKey) -> Option<BackendStatus> {
        let backends = self.services.get_mut(service)?;
        let removed = backends.remove(backend);
        if backends.is_empty() {
            self.services.remove(service);
        }
        removed
    }

    pub(super) fn get_mut(&mut self, service: &ServiceKey, backend: &DestKey) -> Option<&mut BackendStatus> {
        self.services.get_mut(service)?.get_mut(backend)
    }
}

fn failure_text<S: Serializer>(failure: &Option<CheckFailure>, serializer: S) -> Result<S::Ok, S::Error> {
    match failure {
        Some(failure) => serializer.collect_str(failure),
        None => serializer.serialize_none(),
    }
}

fn seconds<S: Serializer>(latency: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(latency.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::InitialState;

    #[test]
    fn unchecked_backends_are_healthy_and_checked_ones_as_recorded() {
        let web: ServiceKey = "tcp:192.0.2.1:80".parse().unwrap();
        let a: DestKey = "10.0.0.1:80".parse().unwrap();
        let b: DestKey = "10.0.0.2:80".parse().unwrap();
        let mut table = HealthTable::default();
        table.insert(web, a, BackendStatus::new("tcp", BackendState::new(InitialState::Unhealthy)));
        assert!(!table.is_healthy(&web, &a));
        assert!(table.is_healthy(&web, &b));
        assert!(table.is_healthy(&"udp:192.0.2.1:53".parse().unwrap(), &a));
        assert!(table.remove(&web, &a).is_some());
        assert_eq!(table, HealthTable::default(), "an emptied service leaves no entry");
    }

    #[test]
    fn serialises_by_key_with_reasons_as_text() {
        let web: ServiceKey = "tcp:192.0.2.1:80".parse().unwrap();
        let mut status = BackendStatus::new("http", BackendState::new(InitialState::Healthy));
        status.last_probe = Some(LastProbe {
            failure: Some(CheckFailure::HttpStatus { got: 503, expected: 200 }),
            latency: Duration::from_millis(250),
        });
        let mut table = HealthTable::default();
        table.insert(web, "10.0.0.1:80".parse().unwrap(), status);
        let json = serde_json::to_value(&table).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"tcp:192.0.2.1:80": {"10.0.0.1:80": {
                "check": "http", "healthy": true, "consecutive_successes": 0, "consecutive_failures": 0,
                "last_probe": {"failure": "HTTP status 503, expected 200", "latency": 0.25}
            }}})
        );
    }
}
