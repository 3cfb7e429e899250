//! The kernel operations that carry out a plan, in two phases with a barrier between them.
//!
//! 1. **Make** ([`Phases::make`]): creates (each service immediately followed by its backends),
//!    then per updated service its own attributes, backends added, and backend edits that take
//!    no capacity away (weight raised, forwarding or a threshold loosened).
//! 2. **Reduce** ([`Phases::reduce`]): backend edits that take capacity away (weight lowered,
//!    upper threshold tightened), backends removed, services deleted.
//!
//! Apply sends the reduce phase only after the kernel acknowledged every op of the make phase,
//! and not at all if it refused one (`crate::apply::execute`). So a partial failure never takes
//! capacity away without the capacity that was to replace it, and the kernel's batch behaviour
//! (ops after a refused one in the same netlink datagram still run) cannot reach across phases.
//!
//! Why this order keeps a service serving: every backend that carries traffic in the desired
//! state has its final, positive weight before any weight is lowered or any backend removed
//! (raises and adds are in the make phase; a lowered backend that keeps a positive weight stays
//! positive throughout). So no step leaves every backend of a service at weight 0 unless the
//! desired state does. A created service has no backends for one round trip per backend, which
//! costs nothing: before it existed its VIP:port was not served either.
//!
//! Within each phase services go by key, and backends by key.

use super::{DestinationUpdate, Plan};
use crate::{ipvs::Op, model::Service};

/// A plan's ops, split at the barrier.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Phases {
    /// What adds or keeps capacity; runs first.
    pub make: Vec<Op>,
    /// What takes capacity away; runs only when every `make` op was acknowledged.
    pub reduce: Vec<Op>,
    /// Services whose scheduler the make phase changes in place: on 6.1 the kernel refuses new
    /// connections to them for a moment (`crate::observe::RefusalShield`).
    pub scheduler_changes: Vec<crate::model::ServiceKey>,
}

impl Phases {
    pub fn is_empty(&self) -> bool {
        self.make.is_empty() && self.reduce.is_empty()
    }

    pub fn len(&self) -> usize {
        self.make.len() + self.reduce.len()
    }

    /// Both phases in execution order.
    pub fn all(&self) -> impl Iterator<Item = &Op> {
        self.make.iter().chain(&self.reduce)
    }

    /// Splits off the first `max_ops` ops, for one turn of a loop that must stay responsive (the
    /// daemon); the rest, if any, is for later turns, each sent only when the turn before it was
    /// acknowledged whole. The barrier holds across turns: a turn that leaves make ops behind sends
    /// no reduce op, and each part names only the scheduler changes its own make ops carry out.
    pub fn split_turn(self, max_ops: usize) -> (Self, Option<Self>) {
        if self.len() <= max_ops {
            return (self, None);
        }
        let Self { mut make, mut reduce, scheduler_changes } = self;
        let changes_in = |make: &[Op]| -> Vec<crate::model::ServiceKey> {
            scheduler_changes
                .iter()
                .filter(|key| make.iter().any(|op| matches!(op, Op::UpdateService(s) if s.key == **key)))
                .copied()
                .collect()
        };
        if make.len() >= max_ops {
            let rest_make = make.split_off(max_ops);
            let (first_changes, rest_changes) = (changes_in(&make), changes_in(&rest_make));
            let first = Self { make, reduce: Vec::new(), scheduler_changes: first_changes };
            return (first, Some(Self { make: rest_make, reduce, scheduler_changes: rest_changes }));
        }
        let rest_reduce = reduce.split_off(max_ops - make.len());
        let rest = Self { make: Vec::new(), reduce: rest_reduce, scheduler_changes: Vec::new() };
        (Self { make, reduce, scheduler_changes }, Some(rest))
    }
}

/// The service without its destinations.
fn bare(service: &Service) -> Service {
    Service { destinations: Default::default(), ..service.clone() }
}

impl DestinationUpdate {
    /// Whether the edit takes capacity away: a lower weight, or a tighter upper connection
    /// threshold (0 means none).
    pub fn reduces_capacity(&self) -> bool {
        let lowered = self.weight.is_some_and(|change| change.new < change.old);
        let tightened = self
            .upper_threshold
            .is_some_and(|change| change.new != 0 && (change.old == 0 || change.new < change.old));
        lowered || tightened
    }
}

impl DestinationUpdate {
    /// The backend as it is now, with only its weight raised to the target, when the update
    /// raises the weight.
    fn raise_alone(&self) -> Option<crate::model::Destination> {
        let weight = self.weight.filter(|change| change.new > change.old)?;
        let mut present = self.target;
        present.weight = weight.new;
        if let Some(forwarding) = self.forwarding {
            present.forwarding = forwarding.old;
        }
        if let Some(upper) = self.upper_threshold {
            present.upper_threshold = upper.old;
        }
        if let Some(lower) = self.lower_threshold {
            present.lower_threshold = lower.old;
        }
        Some(present)
    }
}

impl Plan {
    /// The exact kernel operations for this plan, in two phases (see the module docs).
    pub fn phases(&self) -> Phases {
        let mut phases = Phases::default();
        for service in &self.create {
            phases.make.push(Op::AddService(bare(service)));
            phases.make.extend(service.destinations.values().map(|dest| Op::AddDest(service.key, *dest)));
        }
        for update in &self.update {
            let service = update.key();
            if update.changes_service() {
                phases.make.push(Op::UpdateService(bare(&update.target)));
            }
            if update.scheduler.is_some() {
                phases.scheduler_changes.push(service);
            }
            phases.make.extend(update.add.iter().map(|dest| Op::AddDest(service, *dest)));
            for change in &update.update {
                let op = Op::UpdateDest(service, change.target);
                if !change.reduces_capacity() {
                    phases.make.push(op);
                    continue;
                }
                // A weight raised while a threshold tightens: the raise cannot wait behind the
                // barrier (the backend may be what the service is to serve with), so it goes
                // first on its own, with the fields it had.
                if let Some(raised) = change.raise_alone() {
                    phases.make.push(Op::UpdateDest(service, raised));
                }
                phases.reduce.push(op);
            }
            phases.reduce.extend(update.remove.iter().map(|dest| Op::DeleteDest(service, dest.key)));
        }
        phases.reduce.extend(self.delete.iter().map(|service| Op::DeleteService(service.key)));
        phases
    }

    /// [`Plan::phases`] as one list, in execution order.
    pub fn ops(&self) -> Vec<Op> {
        self.phases().all().cloned().collect()
    }
}
