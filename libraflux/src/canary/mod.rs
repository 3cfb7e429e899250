//! Canary backends: a backend rolled in gradually. Each step of a rollout is the share of its
//! service's new connections the backend should get; its weight is computed from the other
//! backends' weights in force ([`weight::split`]), each step is held for the rollout's interval,
//! and the last step (100 %) promotes the backend to its configured weight. A health check that
//! fails, a circuit breaker that trips or an operator aborts it: weight 0, then the service's
//! drain rules. Rollouts are persisted like drains (`store`), so a restarted daemon continues
//! them. Operator documentation: docs/canary.md.

mod store;
pub mod weight;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use store::{CanaryStore, StoreError};

use crate::{
    config::DesiredState,
    model::{DestKey, ServiceKey},
};

/// The schedulers that share new connections by weight, so that a weight gives a share: `wrr`
/// exactly, `wlc`, `sed` and `nq` in proportion to weight under load, `sh` and `mh` by the share
/// of their hash table (of client addresses, not of connections).
pub const WEIGHTED_SCHEDULERS: &[&str] = &["wrr", "wlc", "sed", "nq", "sh", "mh"];

/// Why `scheduler` cannot run a canary; `None` when it can.
pub fn unweighted_reason(scheduler: &str) -> Option<String> {
    if WEIGHTED_SCHEDULERS.contains(&scheduler) {
        return None;
    }
    let why = match scheduler {
        "rr" | "lc" | "dh" => "ignores weights other than 0",
        "fo" => "sends everything to the backend of the highest weight",
        "ovf" => "uses weights as connection limits",
        "lblc" | "lblcr" => "keeps clients on a backend by locality; weights only bound its load",
        _ => "is not known to share connections by weight",
    };
    Some(format!(
        "scheduler {scheduler} {why}, so a weight cannot give a canary a share of new connections; canaries need \
         one of {}",
        WEIGHTED_SCHEDULERS.join(", ")
    ))
}

/// The steps when none are given: the shares Flagger-style rollouts commonly use.
pub const DEFAULT_STEPS: &[u8] = &[5, 25, 50, 100];
/// How long each step is held when no interval is given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(120);

/// A rollout: its steps in percent (increasing, the last 100) and how long each is held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub steps: Vec<u8>,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for Rollout {
    fn default() -> Self {
        Self { steps: DEFAULT_STEPS.to_vec(), interval: DEFAULT_INTERVAL }
    }
}

impl Rollout {
    /// Why these steps cannot make a rollout; `None` when they can.
    pub fn invalid(&self) -> Option<String> {
        if self.steps.last() != Some(&100) {
            return Some("the last step must be 100%: the step that promotes the canary".to_owned());
        }
        if self.steps.len() < 2 {
            return Some("a rollout needs at least one step below 100%".to_owned());
        }
        if let Some(zero) = self.steps.iter().find(|step| **step == 0 || **step > 100) {
            return Some(format!("{zero}% is not a step: steps are 1% to 100%"));
        }
        if self.steps.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Some("steps must increase".to_owned());
        }
        if self.interval < Duration::from_secs(1) {
            return Some("the interval must be at least 1s".to_owned());
        }
        None
    }
}

/// Why a rollout was aborted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortReason {
    /// The canary's health check found it unhealthy.
    HealthCheck,
    /// Its circuit breaker ejected it.
    CircuitBreaker,
    /// `libraflux canary abort`.
    Operator,
}

impl AbortReason {
    pub const ALL: [Self; 3] = [Self::HealthCheck, Self::CircuitBreaker, Self::Operator];

    /// The `reason` label of `libraflux_canary_aborts_total`.
    pub const fn label(self) -> &'static str {
        match self {
            Self::HealthCheck => "health_check",
            Self::CircuitBreaker => "circuit_breaker",
            Self::Operator => "operator",
        }
    }
}

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Phase {
    /// At step `step` (an index into the steps) since `since_unix_ms`.
    Running { step: usize, since_unix_ms: u64 },
    /// The last step was reached or an operator promoted it: the configured weight.
    Promoted { at_unix_ms: u64 },
    /// Weight 0 (and drained by the service's rules) until started again or promoted.
    Aborted { reason: AbortReason, detail: String, at_unix_ms: u64 },
}

/// One canary backend of one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryEntry {
    pub service: ServiceKey,
    pub backend: DestKey,
    pub rollout: Rollout,
    /// Started because the configuration has `canary:` on the backend (rather than by
    /// `libraflux canary start`): it follows the configuration's steps and interval.
    pub from_config: bool,
    pub started_unix_ms: u64,
    #[serde(flatten)]
    pub phase: Phase,
}

impl CanaryEntry {
    /// A rollout starting at its first step now.
    pub fn start(
        service: ServiceKey,
        backend: DestKey,
        rollout: Rollout,
        from_config: bool,
        now_ms: u64,
    ) -> Self {
        Self {
            service,
            backend,
            rollout,
            from_config,
            started_unix_ms: now_ms,
            phase: Phase::Running { step: 0, since_unix_ms: now_ms },
        }
    }

    /// The share of new connections it should get now, in percent; `None` unless running.
    pub fn target_percent(&self) -> Option<u8> {
        match self.phase {
            Phase::Running { step, .. } => self.rollout.steps.get(step).copied(),
            _ => None,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.phase, Phase::Running { .. })
    }

    /// Moves to the next step when the current one has been held for the interval at `now_ms`;
    /// the step of 100 % promotes. True when it moved.
    pub fn advance(&mut self, now_ms: u64) -> bool {
        let Phase::Running { step, since_unix_ms } = self.phase else { return false };
        let held = Duration::from_millis(now_ms.saturating_sub(since_unix_ms));
        if held < self.rollout.interval {
            return false;
        }
        let next = step + 1;
        self.phase = match self.rollout.steps.get(next) {
            Some(percent) if *percent < 100 => Phase::Running { step: next, since_unix_ms: now_ms },
            _ => Phase::Promoted { at_unix_ms: now_ms },
        };
        true
    }

    pub fn abort(&mut self, reason: AbortReason, detail: impl Into<String>, now_ms: u64) {
        self.phase = Phase::Aborted { reason, detail: detail.into(), at_unix_ms: now_ms };
    }
}

/// What a running canary's step did to its service's weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weighted {
    pub service: ServiceKey,
    pub backend: DestKey,
    pub percent: u8,
    /// `None` when no other backend of the service is in service: the canary keeps its weight.
    pub split: Option<weight::Split>,
}

/// Shapes `desired` (the configured state with drains and health applied) by the canaries: a
/// running one gets the weight of its step's share among the other backends in service, whose
/// weights are scaled together when the share needs it; an aborted one weight 0; a promoted one
/// is left as configured. A canary already at weight 0 (drained, unhealthy) stays there.
pub fn apply_to(desired: &mut DesiredState, canaries: &[CanaryEntry]) -> Vec<Weighted> {
    let mut weighted = Vec::new();
    for canary in canaries {
        let Some(service) = desired.get_mut(&canary.service) else { continue };
        let Some(weight) = service.destinations.get(&canary.backend).map(|dest| dest.weight) else {
            continue;
        };
        match &canary.phase {
            Phase::Promoted { .. } => {}
            Phase::Aborted { .. } => {
                if let Some(dest) = service.destinations.get_mut(&canary.backend) {
                    dest.weight = 0;
                }
            }
            Phase::Running { .. } if weight == 0 => {}
            Phase::Running { .. } => {
                let Some(percent) = canary.target_percent() else { continue };
                let others = service.destinations.values().filter(|dest| dest.key != canary.backend);
                let (sum, largest) = others.fold((0u64, 0u32), |(sum, largest), dest| {
                    (sum + u64::from(dest.weight), largest.max(dest.weight))
                });
                let split = weight::split(percent, sum, largest);
                if let Some(split) = split {
                    for dest in service.destinations.values_mut() {
                        if dest.key == canary.backend {
                            dest.weight = split.canary;
                        } else {
                            dest.weight *= split.scale;
                        }
                    }
                }
                weighted.push(Weighted { service: canary.service, backend: canary.backend, percent, split });
            }
        }
    }
    weighted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Destination, Forwarding, Service};

    fn service(weights: &[(&str, u32)]) -> DesiredState {
        let key: ServiceKey = "tcp:10.0.0.1:80".parse().unwrap();
        let mut service = Service::new(key, "wrr");
        for (backend, weight) in weights {
            let key: DestKey = backend.parse().unwrap();
            let dest = Destination {
                key,
                weight: *weight,
                forwarding: Forwarding::Nat,
                upper_threshold: 0,
                lower_threshold: 0,
            };
            service.destinations.insert(key, dest);
        }
        [(key, service)].into()
    }

    fn weights(desired: &DesiredState) -> Vec<u32> {
        desired.values().flat_map(|service| service.destinations.values().map(|dest| dest.weight)).collect()
    }

    fn canary(phase: Phase) -> CanaryEntry {
        let mut entry = CanaryEntry::start(
            "tcp:10.0.0.1:80".parse().unwrap(),
            "10.0.1.4:80".parse().unwrap(),
            Rollout { steps: vec![10, 50, 100], interval: Duration::from_secs(60) },
            true,
            1_000,
        );
        entry.phase = phase;
        entry
    }

    const THREE_AND_CANARY: &[(&str, u32)] =
        &[("10.0.1.1:80", 1), ("10.0.1.2:80", 1), ("10.0.1.3:80", 1), ("10.0.1.4:80", 5)];

    #[test]
    fn a_running_step_sets_the_share_and_scales_the_others_when_needed() {
        let mut desired = service(THREE_AND_CANARY);
        let applied = apply_to(&mut desired, &[canary(Phase::Running { step: 0, since_unix_ms: 0 })]);
        // 10 % among three of weight 1: the others x3, the canary 1: 1 of 10.
        assert_eq!(weights(&desired), [3, 3, 3, 1]);
        assert_eq!(applied[0].split.map(|split| split.share), Some(0.1));
        let mut desired = service(THREE_AND_CANARY);
        apply_to(&mut desired, &[canary(Phase::Running { step: 1, since_unix_ms: 0 })]);
        assert_eq!(weights(&desired), [1, 1, 1, 3]);
    }

    #[test]
    fn promoted_keeps_the_configured_weight_and_aborted_is_zero() {
        let mut desired = service(THREE_AND_CANARY);
        apply_to(&mut desired, &[canary(Phase::Promoted { at_unix_ms: 5 })]);
        assert_eq!(weights(&desired), [1, 1, 1, 5]);
        let aborted = Phase::Aborted { reason: AbortReason::Operator, detail: String::new(), at_unix_ms: 5 };
        apply_to(&mut desired, &[canary(aborted)]);
        assert_eq!(weights(&desired), [1, 1, 1, 0]);
    }

    #[test]
    fn a_canary_already_at_zero_or_alone_in_service_is_left_as_it_is() {
        let mut desired = service(&[("10.0.1.1:80", 2), ("10.0.1.4:80", 0)]);
        assert_eq!(apply_to(&mut desired, &[canary(Phase::Running { step: 0, since_unix_ms: 0 })]), []);
        assert_eq!(weights(&desired), [2, 0]);
        let mut desired = service(&[("10.0.1.1:80", 0), ("10.0.1.4:80", 4)]);
        let applied = apply_to(&mut desired, &[canary(Phase::Running { step: 0, since_unix_ms: 0 })]);
        assert_eq!((weights(&desired), applied[0].split), (vec![0, 4], None));
    }

    #[test]
    fn steps_are_held_for_the_interval_and_the_last_promotes() {
        let mut entry = canary(Phase::Running { step: 0, since_unix_ms: 1_000 });
        assert!(!entry.advance(60_999));
        assert!(entry.advance(61_000));
        assert_eq!(entry.phase, Phase::Running { step: 1, since_unix_ms: 61_000 });
        assert_eq!(entry.target_percent(), Some(50));
        assert!(entry.advance(121_000));
        assert_eq!(entry.phase, Phase::Promoted { at_unix_ms: 121_000 });
        assert!(!entry.advance(999_999));
        entry.abort(AbortReason::HealthCheck, "unhealthy", 5);
        assert!(!entry.advance(999_999));
    }

    #[test]
    fn rollouts_must_increase_to_100() {
        let rollout = |steps: &[u8]| Rollout { steps: steps.to_vec(), interval: Duration::from_secs(1) };
        assert_eq!(rollout(&[5, 25, 100]).invalid(), None);
        assert!(rollout(&[5, 25]).invalid().unwrap().contains("last step must be 100%"));
        assert!(rollout(&[100]).invalid().unwrap().contains("at least one step below"));
        assert!(rollout(&[25, 5, 100]).invalid().unwrap().contains("increase"));
        assert!(rollout(&[0, 100]).invalid().unwrap().contains("0% is not a step"));
        assert_eq!(Rollout::default().invalid(), None);
        assert!(unweighted_reason("rr").unwrap().contains("ignores weights"));
        assert_eq!(unweighted_reason("wlc"), None);
    }
}
