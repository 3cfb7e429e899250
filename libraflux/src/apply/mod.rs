//! Carrying out a plan: the make phase, a barrier, then the reduce phase (see
//! [`crate::plan::Phases`]). Every caller that changes IPVS from a plan (`apply`, snapshot
//! restore, the daemon's reconcile) goes through [`execute`].

mod shield;
mod stage;

pub use shield::{CommandShield, ShieldReport, execute_alone};
pub use stage::{Stage, timed};

use crate::{
    ipvs::{ApplyReport, Ipvs, OnFailure, OpOutcome},
    observe::{RefusalShield, ShieldHold},
    plan::Phases,
};

/// What became of a plan's ops.
#[derive(Debug)]
pub struct Executed {
    /// One outcome per op, in [`Phases::all`] order.
    pub report: ApplyReport,
    /// The reduce phase was not sent because the make phase was not fully acknowledged.
    pub reduce_withheld: bool,
}

impl Executed {
    pub fn is_complete(&self) -> bool {
        self.report.is_complete()
    }
}

/// Sends the make phase; then, only if the kernel acknowledged every one of its ops, the
/// reduce phase. Within a phase a refusal stops what was not yet sent (`OnFailure::Stop`).
pub async fn execute<I: Ipvs>(ipvs: &mut I, phases: &Phases) -> Executed {
    execute_shielded(ipvs, phases, None).await
}

/// [`execute`], with the VIPs whose scheduler changes held behind `shield` for the make phase,
/// so that the kernel's refusals of new connections in the middle of the change never reach a
/// client (they retry instead). A VIP that cannot be held is logged and changed anyway.
pub async fn execute_shielded<I: Ipvs>(
    ipvs: &mut I,
    phases: &Phases,
    shield: Option<&RefusalShield>,
) -> Executed {
    let holds = shield.map(|shield| hold(shield, phases)).unwrap_or_default();
    let mut report = ipvs.apply(&phases.make, OnFailure::Stop).await;
    release(holds);
    let reduce_withheld = !report.is_complete() && !phases.reduce.is_empty();
    if report.is_complete() {
        let reduced = ipvs.apply(&phases.reduce, OnFailure::Stop).await;
        report.outcomes.extend(reduced.outcomes);
        report.transport_error = reduced.transport_error;
    } else {
        report.outcomes.extend(phases.reduce.iter().map(|_| OpOutcome::NotSent));
    }
    Executed { report, reduce_withheld }
}

fn hold(shield: &RefusalShield, phases: &Phases) -> Vec<ShieldHold> {
    let mut holds = Vec::new();
    for service in &phases.scheduler_changes {
        match shield.hold_service(service) {
            Ok(hold) => holds.extend(hold),
            Err(err) => {
                tracing::warn!(%service, error = %err, "cannot hold back refusals while the scheduler changes")
            }
        }
    }
    holds
}

fn release(holds: Vec<ShieldHold>) {
    for hold in holds {
        let vip = hold.vip();
        if let Err(err) = hold.release() {
            tracing::warn!(?vip, error = %err, "cannot release a refusal shield; it lapses on its own");
        }
    }
}

#[cfg(test)]
mod tests;
