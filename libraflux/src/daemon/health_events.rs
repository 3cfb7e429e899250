//! The daemon's side of health checking: every probe result counted, verdict changes coalesced
//! into one reconcile, probes kept in step with the configuration, and services that fail open.

use crate::{
    health::{self, CheckFailure, HealthEvent},
    metrics::CheckOutcome,
    model::ServiceKey,
};

use super::{Daemon, HEALTH_COALESCE};

impl Daemon {
    /// Every probe result is counted; a change of verdict re-plans the weights.
    pub(super) fn health_event(&mut self, event: HealthEvent) {
        // A probe's result may still be queued when a reload removes its backend: counting it
        // would bring back the series the reload dropped.
        let configured = self.config.desired.get(&event.service);
        if !configured.is_some_and(|service| service.destinations.contains_key(&event.backend)) {
            return;
        }
        let Some(settings) = self.config.settings.get(&event.service) else { return };
        let outcome = match &event.result {
            Ok(()) => CheckOutcome::Success,
            Err(CheckFailure::TimedOut(_)) => CheckOutcome::Timeout,
            Err(_) => CheckOutcome::Failure,
        };
        self.metrics.record_health(
            event.service,
            event.backend,
            &settings.health.check,
            outcome,
            event.latency,
        );
        self.metrics.set_backend_healthy(event.service, event.backend, event.healthy);
        if event.result.is_ok() {
            self.announce_probe_passed(event.service, event.backend);
        }
        if self.breakers.has(event.service, event.backend) {
            self.breaker_check(event.service, event.backend, event.result.is_ok());
        }
        if event.transition.is_some() {
            let state = if event.healthy { "healthy" } else { "unhealthy" };
            tracing::warn!(service = %event.service, backend = %event.backend, reason = %event.reason(), "backend is now {state}");
            self.health_due.get_or_insert_with(|| tokio::time::Instant::now() + HEALTH_COALESCE);
        }
    }

    /// Starts, keeps or stops probes to match the config; says which services go unchecked.
    pub(super) fn update_health_checks(&mut self) {
        let summary = self.health.update(&self.config.desired, &self.config.settings);
        tracing::info!(?summary, "health checks updated");
        for (service, unsupported) in self.health.unsupported() {
            tracing::warn!(%service, check = unsupported.check_type, "check type not supported yet: backends stay unchecked");
        }
    }

    /// Logs loudly and exports every service that fails open: all backends are unhealthy, so
    /// they all stay in service rather than dropping the VIP's traffic.
    pub(super) fn set_fail_open(&mut self, fail_open: Vec<health::FailOpen>) {
        let now: std::collections::BTreeSet<ServiceKey> = fail_open.iter().map(|f| f.service).collect();
        for failing in &fail_open {
            tracing::error!(
                service = %failing.service,
                unhealthy = failing.unhealthy.len(),
                "every backend is unhealthy: failing open, all stay in service"
            );
        }
        for service in self.fail_open.difference(&now) {
            tracing::warn!(%service, "no longer failing open");
            self.metrics.set_fail_open(*service, false);
        }
        for service in &now {
            self.metrics.set_fail_open(*service, true);
        }
        self.fail_open = now;
    }
}
