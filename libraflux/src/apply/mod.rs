//! Carrying out a plan: the make phase, a barrier, then the reduce phase (see
//! [`crate::plan::Phases`]). Every caller that changes IPVS from a plan (`apply`, snapshot
//! restore, the daemon's reconcile) goes through [`execute`].

use crate::{
    ipvs::{ApplyReport, Ipvs, OnFailure, OpOutcome},
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
    let mut report = ipvs.apply(&phases.make, OnFailure::Stop).await;
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

#[cfg(test)]
mod tests;
