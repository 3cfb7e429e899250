//! One reconcile: read the table, plan against the desired state, refuse what a limit refuses,
//! apply the rest. The same `plan()` and limits as `libraflux apply`; a refused plan is never
//! forced by the daemon.

use crate::{
    config::{DesiredState, Ignore, Limits},
    ipvs::{self, Ipvs, IpvsError, Op},
    plan::{self, LimitViolation},
};

/// Why a reconcile ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Startup,
    ConfigReload,
    HealthChange,
    /// A drain was asked for, undone, or ended.
    Drain,
    /// The periodic run; if it finds anything to do, the kernel drifted (someone ran ipvsadm).
    Interval,
}

/// What a reconcile did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    NoChanges,
    /// Every operation applied. `drift` when nothing on LibraFlux's side had changed.
    Applied {
        ops: Vec<Op>,
        drift: bool,
    },
    /// The plan exceeds a change limit; nothing was touched.
    Refused {
        violations: Vec<LimitViolation>,
    },
    /// The kernel refused an operation; `applied` of `ops` went through.
    Failed {
        ops: Vec<Op>,
        applied: usize,
        errors: Vec<String>,
    },
}

impl Outcome {
    /// The label of `libraflux_reconcile_runs_total{result}`.
    pub fn result_label(&self) -> &'static str {
        match self {
            Self::NoChanges | Self::Applied { .. } => "ok",
            Self::Refused { .. } => "refused",
            Self::Failed { .. } => "error",
        }
    }
}

/// Plans `desired` against the kernel's table and applies it unless a limit refuses it.
pub async fn reconcile<I: Ipvs>(
    ipvs: &mut I,
    desired: &DesiredState,
    ignore: &Ignore,
    limits: &Limits,
    trigger: Trigger,
) -> Result<Outcome, IpvsError> {
    let observed = ipvs::observed(ipvs).await?;
    let plan = plan::plan(desired, &observed, ignore);
    if plan.is_empty() {
        return Ok(Outcome::NoChanges);
    }
    if let Err(violations) = plan::check_limits(&plan, limits) {
        return Ok(Outcome::Refused { violations });
    }
    let phases = plan.phases();
    let ops: Vec<Op> = phases.all().cloned().collect();
    let executed = crate::apply::execute(ipvs, &phases).await;
    let report = executed.report;
    if report.is_complete() {
        return Ok(Outcome::Applied { ops, drift: trigger == Trigger::Interval });
    }
    let mut errors: Vec<String> = report.refusals().map(|(_, err)| err.to_string()).collect();
    if let Some(err) = &report.transport_error {
        errors.push(err.to_string());
    }
    Ok(Outcome::Failed { applied: report.applied(), ops, errors })
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

    async fn run(
        ipvs: &mut MemoryIpvs,
        desired: &DesiredState,
        limits: &Limits,
        trigger: Trigger,
    ) -> Outcome {
        reconcile(ipvs, desired, &Ignore::default(), limits, trigger).await.expect("in-memory IPVS answers")
    }

    #[tokio::test]
    async fn converges_then_finds_nothing_to_do() {
        let mut ipvs = MemoryIpvs::new();
        let want = desired(&["10.0.1.1:80", "10.0.1.2:80"]);
        let first = run(&mut ipvs, &want, &Limits::default(), Trigger::Startup).await;
        assert!(matches!(&first, Outcome::Applied { ops, drift: false } if ops.len() == 3), "{first:?}");
        assert_eq!(run(&mut ipvs, &want, &Limits::default(), Trigger::Interval).await, Outcome::NoChanges);
    }

    #[tokio::test]
    async fn a_hand_made_change_found_on_the_interval_is_drift_and_is_repaired() {
        let want = desired(&["10.0.1.1:80", "10.0.1.2:80"]);
        let drifted = desired(&["10.0.1.1:80"]);
        let mut ipvs = MemoryIpvs::with_services(drifted.into_values());
        let outcome = run(&mut ipvs, &want, &Limits::default(), Trigger::Interval).await;
        assert!(matches!(&outcome, Outcome::Applied { ops, drift: true } if ops.len() == 1), "{outcome:?}");
        assert_eq!(ipvs::observed(&mut ipvs).await.unwrap(), want);
    }

    #[tokio::test]
    async fn a_plan_over_a_limit_is_refused_and_nothing_is_touched() {
        let mut ipvs = MemoryIpvs::new();
        let limits = Limits { max_services_created: 0, ..Limits::default() };
        let outcome = run(&mut ipvs, &desired(&["10.0.1.1:80"]), &limits, Trigger::ConfigReload).await;
        assert!(matches!(&outcome, Outcome::Refused { violations } if violations.len() == 1), "{outcome:?}");
        assert!(ipvs::observed(&mut ipvs).await.unwrap().is_empty());
        assert_eq!(outcome.result_label(), "refused");
    }
}
