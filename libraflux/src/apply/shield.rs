//! The refusal shield of a command that changes IPVS with no daemon running (`apply`,
//! `snapshot restore`). The daemon holds the kernel's refusals back during a scheduler change
//! with its observer's counter program; a command has no observer, so for a plan that changes a
//! scheduler it loads the program itself, attaches it at the egress of every `node.interface`
//! (where refusals leave towards clients) for as long as it runs, and detaches it when dropped.

use super::{Executed, execute_shielded};
use crate::{
    ipvs::Ipvs,
    observe::{Direction, FlowCounter, Limits, ObserveError, RefusalShield},
    plan::Phases,
};

/// [`execute_shielded`] for a command with no daemon: with its own [`CommandShield`] over
/// `interfaces` (`node.interface`) while a scheduler changes. Says what the shield did.
pub async fn execute_alone<I: Ipvs>(
    ipvs: &mut I,
    phases: &Phases,
    interfaces: &[String],
) -> (Executed, ShieldReport) {
    let shield = CommandShield::for_phases(phases, interfaces);
    let executed = execute_shielded(ipvs, phases, shield.shield().as_ref()).await;
    (executed, shield.report())
}

/// What a command's shield did, for its report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShieldReport {
    /// The plan changed no scheduler.
    NotNeeded,
    /// Refusals were held back at the egress of `interfaces`; `held_back` counts them (`None`:
    /// the count could not be read).
    Held { interfaces: Vec<String>, held_back: Option<u64> },
    /// The scheduler changed unshielded, for this reason.
    Unavailable(String),
}

/// What a command did about the refusals of the scheduler changes in its plan.
#[derive(Debug)]
pub enum CommandShield {
    /// The plan changes no scheduler: nothing to hold back.
    NotNeeded,
    /// The counter program is attached at the egress of `interfaces` and holds refusals back.
    Attached { counter: FlowCounter, interfaces: Vec<String> },
    /// Refusals may reach clients, for this reason.
    Unavailable(String),
}

impl CommandShield {
    /// Attaches a shield when `phases` change a scheduler. It never fails the command: a node
    /// where eBPF cannot load changes the scheduler unshielded, and says so.
    pub fn for_phases(phases: &Phases, interfaces: &[String]) -> Self {
        if phases.scheduler_changes.is_empty() {
            return Self::NotNeeded;
        }
        if interfaces.is_empty() {
            return Self::Unavailable(
                "no node.interface is configured, so nothing sees the refusals leave".to_owned(),
            );
        }
        match attach(interfaces) {
            Ok(counter) => Self::Attached { counter, interfaces: interfaces.to_vec() },
            Err(err) => Self::Unavailable(format!("{:#}", anyhow::Error::from(err))),
        }
    }

    /// The shield to pass to [`super::execute_shielded`].
    pub fn shield(&self) -> Option<RefusalShield> {
        match self {
            Self::Attached { counter, .. } => Some(counter.refusal_shield()),
            _ => None,
        }
    }

    /// What the shield did: for [`Self::Attached`], how many refusals the program held back
    /// since this command loaded it.
    pub fn report(&self) -> ShieldReport {
        match self {
            Self::NotNeeded => ShieldReport::NotNeeded,
            Self::Attached { counter, interfaces } => {
                let held_back = counter.refusal_shield().held_back();
                if let Err(err) = &held_back {
                    tracing::warn!(error = %err, "cannot read how many refusals the shield held back");
                }
                ShieldReport::Held { interfaces: interfaces.clone(), held_back: held_back.ok() }
            }
            Self::Unavailable(why) => ShieldReport::Unavailable(why.clone()),
        }
    }
}

fn attach(interfaces: &[String]) -> Result<FlowCounter, ObserveError> {
    // The shield maps have their own size; nothing is watched, so the counters stay small.
    let mut counter =
        FlowCounter::load(Limits { max_destinations: 16, max_udp_flows: 1024, max_pending_syns: 1 })?;
    for interface in interfaces {
        counter.attach(interface, Direction::Egress)?;
    }
    Ok(counter)
}
