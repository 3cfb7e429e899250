//! Running canaries (docs/canary.md): the configuration's `canary:` backends start and follow
//! their rollout, each step is held for its interval, an unhealthy canary is aborted, and the
//! control socket starts, promotes and aborts them. Every change is persisted
//! (`state/canaries.json`) and reconciled at once.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Daemon, blocking,
    reconcile::Trigger,
    requests::{Answer, failed, json, services_with},
};
use crate::{
    canary::{AbortReason, CanaryEntry, CanaryStore, Phase, Rollout, unweighted_reason},
    control::{
        ErrorKind, ReplyError,
        protocol::{CanaryAction, CanaryReply, CanaryRequest, CanaryView},
    },
    drain::{self, DrainEntry},
    model::{DestKey, ServiceKey},
};

impl Daemon {
    /// After start and each reload: a configured `canary:` without a rollout starts one; one
    /// whose steps changed follows them; a rollout whose backend left the configuration, or whose
    /// `canary:` did, is dropped (the backend gets its configured weight).
    pub(super) fn sync_canaries(&mut self) {
        let now = drain::now_ms();
        let config = &self.config;
        let configured: BTreeMap<(ServiceKey, DestKey), Rollout> = config
            .settings
            .iter()
            .flat_map(|(service, settings)| {
                settings
                    .canaries
                    .iter()
                    .map(move |(backend, rollout)| ((*service, *backend), rollout.clone()))
            })
            .collect();
        let backends: BTreeSet<(ServiceKey, DestKey)> = self
            .canaries
            .iter()
            .map(|c| (c.service, c.backend))
            .filter(|(service, backend)| {
                config.desired.get(service).is_some_and(|service| service.destinations.contains_key(backend))
            })
            .collect();
        let in_config = |c: &CanaryEntry| backends.contains(&(c.service, c.backend));
        let had: BTreeSet<(ServiceKey, DestKey)> =
            self.canaries.iter().map(|c| (c.service, c.backend)).collect();
        let started: Vec<CanaryEntry> = configured
            .iter()
            .filter(|(key, _)| !had.contains(key))
            .map(|((service, backend), rollout)| {
                tracing::info!(%service, %backend, steps = ?rollout.steps, interval = ?rollout.interval, "canary: rollout starts");
                CanaryEntry::start(*service, *backend, rollout.clone(), true, now)
            })
            .collect();
        self.change_canaries(|canaries| {
            canaries.retain(|c| {
                let keep = in_config(c) && (!c.from_config || configured.contains_key(&(c.service, c.backend)));
                if !keep && c.is_running() {
                    tracing::warn!(service = %c.service, backend = %c.backend, "canary: no longer configured; the rollout ends and the backend gets its configured weight");
                }
                keep
            });
            for canary in canaries.iter_mut().filter(|c| c.from_config) {
                let Some(rollout) = configured.get(&(canary.service, canary.backend)) else { continue };
                if canary.rollout != *rollout {
                    canary.rollout = rollout.clone();
                    if let Phase::Running { step, .. } = &mut canary.phase {
                        *step = (*step).min(canary.rollout.steps.len().saturating_sub(2));
                    }
                }
            }
            canaries.extend(started);
        });
    }

    /// Moves rollouts whose step was held for its interval to the next, and aborts those whose
    /// health check finds the canary unhealthy; reconciles when anything changed.
    pub(super) async fn canary_tick(&mut self) {
        if !self.canaries.iter().any(CanaryEntry::is_running) {
            return;
        }
        let now = drain::now_ms();
        let unhealthy: Vec<(ServiceKey, DestKey)> = self
            .canaries
            .iter()
            .filter(|c| c.is_running() && !self.health.is_healthy(&c.service, &c.backend))
            .map(|c| (c.service, c.backend))
            .collect();
        for (service, backend) in &unhealthy {
            self.abort_canary(
                *service,
                *backend,
                AbortReason::HealthCheck,
                "its health check found it unhealthy",
            );
        }
        let mut moved = Vec::new();
        self.change_canaries(|canaries| {
            for canary in canaries.iter_mut().filter(|c| c.is_running()) {
                if canary.advance(now) {
                    moved.push(canary.clone());
                }
            }
        });
        for canary in &moved {
            match canary.target_percent() {
                Some(percent) => {
                    tracing::info!(service = %canary.service, backend = %canary.backend, percent, "canary: next step")
                }
                None => {
                    tracing::info!(service = %canary.service, backend = %canary.backend, "canary: promoted after its last step")
                }
            }
        }
        if !moved.is_empty() || !unhealthy.is_empty() {
            self.reconcile(Trigger::Canary).await;
        }
    }

    /// Aborts the running canary `backend` of `service` (a circuit breaker, or the health check):
    /// weight 0 at the next reconcile, then the service's drain rules.
    pub(super) fn abort_canary(
        &mut self,
        service: ServiceKey,
        backend: DestKey,
        reason: AbortReason,
        detail: &str,
    ) {
        let now = drain::now_ms();
        let aborted = self.change_canaries(|canaries| {
            for canary in
                canaries.iter_mut().filter(|c| c.is_running() && (c.service, c.backend) == (service, backend))
            {
                canary.abort(reason, detail, now);
            }
        });
        if aborted.is_some() {
            self.aborted(service, backend, reason, detail);
        }
    }

    /// Says so, counts it, and starts the drain that follows an abort.
    fn aborted(&mut self, service: ServiceKey, backend: DestKey, reason: AbortReason, detail: &str) {
        tracing::error!(%service, %backend, reason = reason.label(), "canary ABORTED: {detail}; weight 0, then the drain rules");
        self.metrics.record_canary_abort(reason);
        let rules = self.config.settings.get(&service).map(|s| s.drain).unwrap_or_default();
        let started_unix_ms = drain::now_ms();
        self.change_drains(|drains| {
            if drains.iter().any(|d| (d.service, d.backend) == (service, backend)) {
                return;
            }
            drains.push(DrainEntry {
                service,
                backend,
                rules: drain::Rules {
                    grace: rules.grace,
                    timeout: rules.timeout,
                    quiet: rules.quiet,
                    include_inactive: false,
                },
                remove: false,
                removed_from_config: false,
                started_unix_ms,
                at_zero_unix_ms: None,
                ended: None,
            });
        });
    }

    /// `libraflux canary start|promote|abort`.
    pub(super) async fn canary_answer(&mut self, ask: &CanaryRequest) -> Answer {
        let service = self.canary_service(ask)?;
        let backend = ask.backend;
        let now = drain::now_ms();
        let current = self.canaries.iter().find(|c| (c.service, c.backend) == (service, backend)).cloned();
        let change: Box<Change> = match ask.action {
            CanaryAction::Start => {
                let rollout = self.rollout_for(ask, service, backend)?;
                let from_config = self.configured_rollout(service, backend).is_some_and(|r| *r == rollout);
                let entry = CanaryEntry::start(service, backend, rollout, from_config, now);
                Box::new(move |canaries| {
                    canaries.retain(|c| (c.service, c.backend) != (service, backend));
                    canaries.push(entry);
                })
            }
            CanaryAction::Promote => {
                if current.is_none() {
                    return Err(not_a_canary(service, backend));
                }
                Box::new(move |canaries| {
                    for canary in canaries.iter_mut().filter(|c| (c.service, c.backend) == (service, backend))
                    {
                        canary.phase = Phase::Promoted { at_unix_ms: now };
                    }
                })
            }
            CanaryAction::Abort => {
                if !current.as_ref().is_some_and(CanaryEntry::is_running) {
                    let why = current.map_or_else(
                        || not_a_canary(service, backend).message,
                        |_| format!("the canary {backend} of {service} is not rolling out: nothing to abort"),
                    );
                    return Err(ReplyError::new(ErrorKind::Refused, why));
                }
                Box::new(move |canaries| {
                    for canary in canaries.iter_mut().filter(|c| (c.service, c.backend) == (service, backend))
                    {
                        canary.abort(AbortReason::Operator, "aborted by an operator", now);
                    }
                })
            }
        };
        self.record_canaries(change)
            .await
            .map_err(|why| failed(format!("cannot record the canary: {why}; nothing was changed")))?;
        match ask.action {
            CanaryAction::Abort => {
                self.aborted(service, backend, AbortReason::Operator, "aborted by an operator")
            }
            // Traffic on it is what was asked for: the drain an abort started is undone.
            CanaryAction::Start | CanaryAction::Promote => {
                self.change_drains(|drains| {
                    drains.retain(|d| d.removed_from_config || (d.service, d.backend) != (service, backend));
                });
            }
        }
        self.reconcile(Trigger::Canary).await;
        let views = self.canary_views(Some((service, backend))).await?;
        json(&CanaryReply { canaries: views })
    }

    /// `libraflux canary status`: every canary.
    pub(super) async fn canaries_answer(&mut self) -> Answer {
        let views = self.canary_views(None).await?;
        json(&CanaryReply { canaries: views })
    }

    /// The service the request is about: the one given, or the one configured service that has
    /// the backend; refused for an unweighted scheduler.
    fn canary_service(&self, ask: &CanaryRequest) -> Result<ServiceKey, ReplyError> {
        let services = services_with(&self.config, ask.backend, ask.service)?;
        let [service] = services[..] else {
            let list: Vec<String> = services.iter().map(ToString::to_string).collect();
            return Err(ReplyError::new(
                ErrorKind::Refused,
                format!(
                    "{} is a backend of several services ({}): say which with --service",
                    ask.backend,
                    list.join(", ")
                ),
            ));
        };
        let scheduler = self.config.desired.get(&service).map(|s| s.scheduler.as_str()).unwrap_or_default();
        if ask.action == CanaryAction::Start
            && let Some(why) = unweighted_reason(scheduler)
        {
            return Err(ReplyError::new(ErrorKind::Refused, format!("{service}: {why}")));
        }
        Ok(service)
    }

    fn configured_rollout(&self, service: ServiceKey, backend: DestKey) -> Option<&Rollout> {
        self.config.settings.get(&service)?.canaries.get(&backend)
    }

    /// The rollout `start` asks for: its steps and interval, else the configuration's, else the
    /// defaults; refused when invalid, when another canary of the service is rolling out, or when
    /// the backend's configured weight is 0.
    fn rollout_for(
        &self,
        ask: &CanaryRequest,
        service: ServiceKey,
        backend: DestKey,
    ) -> Result<Rollout, ReplyError> {
        let base = self.configured_rollout(service, backend).cloned().unwrap_or_default();
        let rollout = Rollout {
            steps: ask.steps.clone().unwrap_or(base.steps),
            interval: ask.interval.unwrap_or(base.interval),
        };
        let refuse = |why: String| Err(ReplyError::new(ErrorKind::Refused, why));
        if let Some(why) = rollout.invalid() {
            return refuse(format!("not a rollout: {why}"));
        }
        if let Some(other) =
            self.canaries.iter().find(|c| c.service == service && c.backend != backend && c.is_running())
        {
            return refuse(format!(
                "{} is already rolling out in {service}: one canary per service at a time (each step's share is \
                 computed from the other backends' weights)",
                other.backend
            ));
        }
        let weight =
            self.config.desired.get(&service).and_then(|s| s.destinations.get(&backend)).map(|d| d.weight);
        if weight == Some(0) {
            return refuse(format!(
                "{backend} has weight 0 in {service}'s configuration: nothing to roll in to"
            ));
        }
        Ok(rollout)
    }

    /// The canaries (or one), with the weights IPVS shows now.
    async fn canary_views(
        &mut self,
        only: Option<(ServiceKey, DestKey)>,
    ) -> Result<Vec<CanaryView>, ReplyError> {
        let canaries: Vec<CanaryEntry> = self
            .canaries
            .iter()
            .filter(|c| only.is_none_or(|key| (c.service, c.backend) == key))
            .cloned()
            .collect();
        let services: Vec<ServiceKey> =
            canaries.iter().map(|c| c.service).collect::<BTreeSet<_>>().into_iter().collect();
        let dumps =
            self.ipvs.dests_of(&services).await.map_err(|err| {
                failed(format!("IPVS cannot be read back: {}", super::observer::render(&err)))
            })?;
        let weights: BTreeMap<ServiceKey, BTreeMap<DestKey, u32>> = dumps
            .into_iter()
            .map(|(service, dests)| {
                (service, dests.iter().map(|dest| (dest.destination.key, dest.destination.weight)).collect())
            })
            .collect();
        Ok(canaries
            .into_iter()
            .map(|canary| {
                let service_weights = weights.get(&canary.service).cloned().unwrap_or_default();
                let weighted_share = self
                    .canary_weights
                    .iter()
                    .find(|w| (w.service, w.backend) == (canary.service, canary.backend))
                    .and_then(|w| w.split.map(|split| split.share));
                CanaryView {
                    target_percent: canary.target_percent(),
                    weighted_share: weighted_share.filter(|_| canary.is_running()),
                    weight: service_weights.get(&canary.backend).copied(),
                    service_weights,
                    canary,
                }
            })
            .collect())
    }

    /// Changes the canaries and hands the new state to the writer without waiting for it;
    /// returns its generation, or none when nothing changed.
    fn change_canaries(&mut self, change: impl FnOnce(&mut Vec<CanaryEntry>)) -> Option<u64> {
        let mut canaries = self.canaries.clone();
        change(&mut canaries);
        canaries.sort_by_key(|canary| (canary.service, canary.backend));
        if canaries == self.canaries {
            return None;
        }
        let generation = self.canary_writer.hand(canaries.clone());
        self.canaries = canaries;
        self.export_canaries();
        Some(generation)
    }

    /// Changes the canaries and waits until the change is written: when it cannot be written,
    /// nothing changes, and the answer says why.
    async fn record_canaries(&mut self, change: impl FnOnce(&mut Vec<CanaryEntry>)) -> Result<(), String> {
        let before = self.canaries.clone();
        let Some(generation) = self.change_canaries(change) else { return Ok(()) };
        if let Err(why) = self.canary_writer.written(generation).await {
            self.canaries = before.clone();
            self.canary_writer.hand(before);
            self.export_canaries();
            return Err(why);
        }
        Ok(())
    }

    /// `libraflux_canary_step` of every running canary; the others' series go.
    pub(super) fn export_canaries(&self) {
        let running: Vec<(ServiceKey, DestKey, usize, u8)> = self
            .canaries
            .iter()
            .filter_map(|c| match c.phase {
                Phase::Running { step, .. } => Some((c.service, c.backend, step + 1, c.target_percent()?)),
                _ => None,
            })
            .collect();
        self.metrics.set_canaries(&running);
    }
}

/// A change to the canaries, decided before it is recorded.
type Change = dyn FnOnce(&mut Vec<CanaryEntry>) + Send;

fn not_a_canary(service: ServiceKey, backend: DestKey) -> ReplyError {
    ReplyError::new(
        ErrorKind::NotFound,
        format!("{backend} of {service} is not a canary: start it with `libraflux canary start`"),
    )
}

/// One canary in the status document: its record and the share its step asks for.
pub(super) fn status(canary: &CanaryEntry) -> serde_json::Value {
    let mut value = serde_json::to_value(canary).expect("canary entries serialise");
    value["target_percent"] = canary.target_percent().into();
    value
}

/// The rollouts recorded in `store`; none when they cannot be read (said in the log).
pub(super) async fn load(store: &CanaryStore) -> Vec<CanaryEntry> {
    let store = store.clone();
    blocking(move || store.load()).await.unwrap_or_else(|err| {
        tracing::error!(error = %err, "cannot read the canary state; starting without rollouts");
        Vec::new()
    })
}
