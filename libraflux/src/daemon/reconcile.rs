//! One reconcile: read the table, plan against the desired state, apply it in phases. The same
//! `plan()` and execution as `libraflux apply`. Change limits are not checked here: they bound
//! changes of the configuration, which the daemon checks when it accepts one (at start and on
//! reload, `super::admit`); health, drains and drift repair only move the table towards a
//! configuration already accepted, and a limit must never stop a backend being quiesced.

use crate::{
    config::{Config, DesiredState, Ignore, Limits},
    ipvs::{self, Ipvs, IpvsError, Op},
    observe::RefusalShield,
    plan::{self, Leaving, LimitViolation, Removal},
};

pub use crate::metrics::Trigger;

/// What a reconcile did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    NoChanges,
    /// Every operation applied. `drift` when nothing on LibraFlux's side had changed.
    Applied {
        ops: Vec<Op>,
        drift: bool,
    },
    /// The kernel refused an operation; `applied` of `ops` went through.
    Failed {
        ops: Vec<Op>,
        applied: usize,
        errors: Vec<String>,
    },
}

impl Outcome {
    /// The operations this turn tried: all of them, whether or not the kernel took them.
    pub fn planned(&self) -> usize {
        match self {
            Self::NoChanges => 0,
            Self::Applied { ops, .. } | Self::Failed { ops, .. } => ops.len(),
        }
    }

    /// The label of `libraflux_reconcile_runs_total{result}`.
    pub fn result_label(&self) -> &'static str {
        match self {
            Self::NoChanges | Self::Applied { .. } => "ok",
            Self::Failed { .. } => "error",
        }
    }
}

/// Whether `config` may be accepted: its change from `from` (the configuration in force, or the
/// table) stays within its change limits.
pub fn admit(config: &Config, from: &DesiredState) -> Result<(), Vec<LimitViolation>> {
    admit_parts(&config.desired, &config.ignore, &config.limits, from)
}

fn admit_parts(
    desired: &DesiredState,
    ignore: &Ignore,
    limits: &Limits,
    from: &DesiredState,
) -> Result<(), Vec<LimitViolation>> {
    plan::check_limits(&plan::plan(desired, from, ignore), limits)
}

/// At start: `config` is accepted when it is within its limits of the configuration accepted
/// last (a restart in the middle of applying it finishes it), or of the table as it is (a change
/// applied with `libraflux apply` since).
pub fn admit_at_start(
    config: &Config,
    accepted: Option<&DesiredState>,
    observed: &DesiredState,
) -> Result<(), Vec<LimitViolation>> {
    either(accepted, observed, |from| admit(config, from))
}

fn either(
    accepted: Option<&DesiredState>,
    observed: &DesiredState,
    admit: impl Fn(&DesiredState) -> Result<(), Vec<LimitViolation>>,
) -> Result<(), Vec<LimitViolation>> {
    match accepted.map(&admit) {
        Some(Ok(())) => Ok(()),
        _ => admit(observed),
    }
}

/// The configuration was not accepted: it changes more than its limits allow.
#[derive(Debug, thiserror::Error)]
#[error(
    "the configuration exceeds a change limit against the running table and the configuration accepted \
     last: {}; apply it with `libraflux apply --force` first, or raise the limit",
    .violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
)]
pub struct LimitRefusal {
    pub violations: Vec<LimitViolation>,
}

/// The most operations one reconcile sends. A larger plan is carried out over several turns of
/// the daemon loop, so that signals, health and drains are answered between them (a reload of
/// 10,000 operations no longer holds SIGTERM back until it ends). The barrier holds across turns
/// ([`plan::Phases::split_turn`]); the rest of a plan is sent as planned only while nothing it was
/// planned from changed, and planned again from the table otherwise ([`next_turn`]).
pub const MAX_OPS_PER_TURN: usize = 1000;

/// What one reconcile did.
#[derive(Debug)]
pub struct Turn {
    pub outcome: Outcome,
    /// What leaves the configuration and is kept at weight 0 until drained.
    pub leaving: Leaving,
    /// The plan was larger than one turn, and this turn went through whole: the rest, for the
    /// next turns.
    pub rest: Option<plan::Phases>,
}

/// What one reconcile is asked to do.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// What IPVS should hold for the configured services (health and drains applied).
    pub desired: &'a DesiredState,
    /// The configuration: what is not in it is leaving, and drained before it goes.
    pub configured: &'a DesiredState,
    pub removal: Removal<'a>,
    pub ignore: &'a Ignore,
    pub trigger: Trigger,
    /// Holds refusals back while a scheduler changes.
    pub shield: Option<&'a RefusalShield>,
    /// At most this many operations ([`MAX_OPS_PER_TURN`]).
    pub max_ops: usize,
}

/// Plans the request against the kernel's table and applies at most `max_ops` of it; also says
/// what is leaving the configuration and kept at weight 0 until drained.
pub async fn reconcile<I: Ipvs>(ipvs: &mut I, request: Request<'_>) -> Result<Turn, IpvsError> {
    let observed = ipvs::observed(ipvs).await?;
    let Request { desired, configured, removal, ignore, trigger, shield, max_ops } = request;
    let mut plan = plan::plan_removals(desired, configured, &observed, ignore, removal);
    let leaving = std::mem::take(&mut plan.leaving);
    if plan.is_empty() {
        return Ok(Turn { outcome: Outcome::NoChanges, leaving, rest: None });
    }
    let (outcome, rest) = next_turn(ipvs, plan.phases(), trigger, shield, max_ops).await;
    Ok(Turn { outcome, leaving, rest })
}

/// Sends the first `max_ops` of `phases` (the rest of a plan a turn before left, or a new plan);
/// returns what is left, unless this turn failed: then nothing of this plan is sent any more.
pub async fn next_turn<I: Ipvs>(
    ipvs: &mut I,
    phases: plan::Phases,
    trigger: Trigger,
    shield: Option<&RefusalShield>,
    max_ops: usize,
) -> (Outcome, Option<plan::Phases>) {
    let (turn, rest) = phases.split_turn(max_ops);
    let outcome = execute(ipvs, &turn, trigger, shield).await;
    let rest = rest.filter(|_| outcome.result_label() == "ok");
    (outcome, rest)
}

async fn execute<I: Ipvs>(
    ipvs: &mut I,
    phases: &plan::Phases,
    trigger: Trigger,
    shield: Option<&RefusalShield>,
) -> Outcome {
    let ops: Vec<Op> = phases.all().cloned().collect();
    let executed = crate::apply::execute_shielded(ipvs, phases, shield).await;
    let report = executed.report;
    if report.is_complete() {
        return Outcome::Applied { ops, drift: trigger == Trigger::Interval };
    }
    let mut errors: Vec<String> = report.refusals().map(|(_, err)| err.to_string()).collect();
    if let Some(err) = &report.transport_error {
        errors.push(err.to_string());
    }
    Outcome::Failed { applied: report.applied(), ops, errors }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        ipvs::MemoryIpvs,
        model::{Destination, Forwarding, Service, ServiceKey},
    };

    fn desired(backends: &[&str]) -> DesiredState {
        let key: ServiceKey = "tcp:10.0.0.1:80".parse().unwrap();
        let dests = backends.iter().map(|text| Destination::new(text.parse().unwrap(), 1, Forwarding::Nat));
        BTreeMap::from([(key, Service::new(key, "rr").with_destinations(dests))])
    }

    async fn run(ipvs: &mut MemoryIpvs, desired: &DesiredState, trigger: Trigger) -> Outcome {
        let request = Request {
            desired,
            configured: desired,
            removal: Removal::Immediate,
            ignore: &Ignore::default(),
            trigger,
            shield: None,
            max_ops: MAX_OPS_PER_TURN,
        };
        reconcile(ipvs, request).await.expect("in-memory IPVS answers").outcome
    }

    #[tokio::test]
    async fn a_plan_larger_than_a_turn_converges_over_turns_and_reduces_only_after_all_is_made() {
        let key: ServiceKey = "tcp:10.0.0.1:80".parse().unwrap();
        let old = Destination::new("10.0.9.9:80".parse().unwrap(), 1, Forwarding::Nat);
        let mut ipvs = MemoryIpvs::with_services([Service::new(key, "rr").with_destinations([old])]);
        let seven: Vec<String> = (1..=7).map(|i| format!("10.0.1.{i}:80")).collect();
        let want = desired(&seven.iter().map(String::as_str).collect::<Vec<_>>());
        let mut turns = Vec::new();
        loop {
            let request = Request {
                desired: &want,
                configured: &want,
                removal: Removal::Immediate,
                ignore: &Ignore::default(),
                trigger: Trigger::ConfigReload,
                shield: None,
                max_ops: 3,
            };
            let turn = reconcile(&mut ipvs, request).await.expect("in-memory IPVS answers");
            let Outcome::Applied { ops, .. } = &turn.outcome else { break };
            let present = ipvs::observed(&mut ipvs).await.unwrap()[&key].destinations.len();
            turns.push((ops.len(), turn.rest.is_some(), present));
            assert!(turns.len() < 10, "{turns:?}");
        }
        // 7 adds, then the delete: 3 + 3 adds with the old backend kept, then 1 add + the delete.
        assert_eq!(turns, [(3, true, 4), (3, true, 7), (2, false, 7)]);
        assert_eq!(ipvs::observed(&mut ipvs).await.unwrap(), want);
    }

    #[tokio::test]
    async fn the_rest_of_a_plan_goes_as_planned_and_a_failed_turn_ends_it() {
        let key: ServiceKey = "tcp:10.0.0.1:80".parse().unwrap();
        let seven: Vec<String> = (1..=7).map(|i| format!("10.0.1.{i}:80")).collect();
        let want = desired(&seven.iter().map(String::as_str).collect::<Vec<_>>());
        let ignore = Ignore::default();
        let request = |max_ops| Request {
            desired: &want,
            configured: &want,
            removal: Removal::Immediate,
            ignore: &ignore,
            trigger: Trigger::ConfigReload,
            shield: None,
            max_ops,
        };
        let mut ipvs = MemoryIpvs::new();
        let first = reconcile(&mut ipvs, request(3)).await.unwrap();
        let mut sizes = vec![first.outcome.clone()];
        let mut rest = first.rest;
        while let Some(phases) = rest.take() {
            let (outcome, left) = next_turn(&mut ipvs, phases, Trigger::ConfigReload, None, 3).await;
            sizes.push(outcome);
            rest = left;
        }
        let sizes: Vec<usize> = sizes
            .iter()
            .map(|outcome| match outcome {
                Outcome::Applied { ops, .. } => ops.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        // The service and 7 backends: 8 ops in turns of 3, 3 and 2, from one read of the table.
        assert_eq!(sizes, [3, 3, 2]);
        assert_eq!(ipvs::observed(&mut ipvs).await.unwrap(), want);

        // The service is deleted behind the daemon's back after the first turn: the second turn's
        // adds are refused, and nothing of the plan is left to send.
        let mut ipvs = MemoryIpvs::new();
        let first = reconcile(&mut ipvs, request(3)).await.unwrap();
        ipvs.apply(&[Op::DeleteService(key)], ipvs::OnFailure::Stop).await;
        let (outcome, left) = next_turn(&mut ipvs, first.rest.unwrap(), Trigger::ConfigReload, None, 3).await;
        assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
        assert!(left.is_none());
    }

    #[tokio::test]
    async fn converges_then_finds_nothing_to_do() {
        let mut ipvs = MemoryIpvs::new();
        let want = desired(&["10.0.1.1:80", "10.0.1.2:80"]);
        let first = run(&mut ipvs, &want, Trigger::Startup).await;
        assert!(matches!(&first, Outcome::Applied { ops, drift: false } if ops.len() == 3), "{first:?}");
        assert_eq!(run(&mut ipvs, &want, Trigger::Interval).await, Outcome::NoChanges);
    }

    #[tokio::test]
    async fn a_hand_made_change_found_on_the_interval_is_drift_and_is_repaired() {
        let want = desired(&["10.0.1.1:80", "10.0.1.2:80"]);
        let drifted = desired(&["10.0.1.1:80"]);
        let mut ipvs = MemoryIpvs::with_services(drifted.into_values());
        let outcome = run(&mut ipvs, &want, Trigger::Interval).await;
        assert!(matches!(&outcome, Outcome::Applied { ops, drift: true } if ops.len() == 1), "{outcome:?}");
        assert_eq!(ipvs::observed(&mut ipvs).await.unwrap(), want);
    }

    #[test]
    fn a_start_is_admitted_against_the_accepted_config_or_the_table() {
        let limits = Limits { max_backends_per_service: 1, ..Default::default() };
        let three = desired(&["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"]);
        let admit = |from: &DesiredState| admit_parts(&three, &Ignore::default(), &limits, from);
        let half_applied = desired(&["10.0.1.1:80"]);
        assert!(admit(&half_applied).is_err(), "two backends added at once");
        assert_eq!(either(Some(&three), &half_applied, admit), Ok(()));
        assert_eq!(either(None, &three, admit), Ok(()));
        let refused = either(Some(&half_applied), &half_applied, admit).unwrap_err();
        assert_eq!(refused.len(), 1);
        let message = LimitRefusal { violations: refused }.to_string();
        assert!(message.contains("adds 2 backends to service tcp:10.0.0.1:80"), "{message}");
    }
}
