//! The pure planner: desired state (from the config) and observed state (from the kernel) in, a
//! [`Plan`] value out. Apply executes exactly [`Plan::ops`]; dry-run prints the same value with
//! [`render_text`] or [`render_json`]; [`check_limits`] refuses it before anything is touched.
//!
//! Declarative: a service observed but not desired is deleted, unless [`Ignore`] covers it (by key
//! or by VIP); ignored services are never created, changed or deleted, even when configured.
//! Everything is ordered by service key, then backend key.

mod json;
mod limits;
mod ops;
mod removal;
mod text;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use crate::ipvs::Op;
pub use json::{JSON_SCHEMA_VERSION, render_json};
pub use limits::{LimitViolation, check_limits};
pub use ops::Phases;
pub use removal::{Leaving, Removal, plan_removals};
pub use text::render_text;

pub use crate::config::{Ignore, Limits};
use crate::model::{DestKey, Destination, Forwarding, Service, ServiceKey};

/// What to change in IPVS to reach the desired state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Services to create, with the backends to add to them.
    pub create: Vec<Service>,
    /// Services that exist and differ.
    pub update: Vec<ServiceUpdate>,
    /// Services to delete, as observed (the kernel drops their backends with them).
    pub delete: Vec<Service>,
    /// What leaves the configuration but is kept at weight 0 until drained
    /// ([`plan_removals`]); empty for a plain [`plan`].
    pub leaving: Leaving,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// An old and a new value of one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change<T> {
    pub old: T,
    pub new: T,
}

impl<T: PartialEq + Clone> Change<T> {
    /// A change when the values differ.
    fn between(old: &T, new: &T) -> Option<Self> {
        (old != new).then(|| Self { old: old.clone(), new: new.clone() })
    }
}

/// The changes to one existing service, field by field and backend by backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceUpdate {
    /// The service as IPVS should hold it afterwards, with all its desired backends.
    pub target: Service,
    pub scheduler: Option<Change<String>>,
    pub persistence: Option<Change<Option<u32>>>,
    pub persistence_netmask: Option<Change<Option<u8>>>,
    /// Backends to add, update and remove, each by key.
    pub add: Vec<Destination>,
    pub update: Vec<DestinationUpdate>,
    pub remove: Vec<Destination>,
}

impl ServiceUpdate {
    pub fn key(&self) -> ServiceKey {
        self.target.key
    }

    /// Whether the service's own attributes change (not only its backends).
    pub fn changes_service(&self) -> bool {
        self.scheduler.is_some() || self.persistence.is_some() || self.persistence_netmask.is_some()
    }
}

/// The changes to one existing backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestinationUpdate {
    /// The backend as IPVS should hold it afterwards.
    pub target: Destination,
    pub weight: Option<Change<u32>>,
    pub forwarding: Option<Change<Forwarding>>,
    pub upper_threshold: Option<Change<u32>>,
    pub lower_threshold: Option<Change<u32>>,
}

impl DestinationUpdate {
    pub fn key(&self) -> DestKey {
        self.target.key
    }
}

/// Plans the change from `observed` to `desired`, leaving alone every service `ignore` covers.
pub fn plan(
    desired: &BTreeMap<ServiceKey, Service>,
    observed: &BTreeMap<ServiceKey, Service>,
    ignore: &Ignore,
) -> Plan {
    let mut plan = Plan::default();
    for (key, wanted) in desired {
        if ignore.covers(key) {
            continue;
        }
        match observed.get(key) {
            None => plan.create.push(wanted.clone()),
            Some(present) => plan.update.extend(diff_service(wanted, present)),
        }
    }
    plan.delete = observed
        .iter()
        .filter(|(key, _)| !ignore.covers(key) && !desired.contains_key(key))
        .map(|(_, present)| present.clone())
        .collect();
    plan
}

/// The update that turns `present` into `wanted`, if they differ. A desired persistence netmask
/// of `None` means "as the kernel has it": the config does not set one, and the kernel always
/// reports one, so comparing would never converge.
fn diff_service(wanted: &Service, present: &Service) -> Option<ServiceUpdate> {
    let mut target = wanted.clone();
    target.persistence_netmask = wanted.persistence_netmask.or(present.persistence_netmask);
    let mut update = ServiceUpdate {
        scheduler: Change::between(&present.scheduler, &target.scheduler),
        persistence: Change::between(&present.persistence, &target.persistence),
        persistence_netmask: Change::between(&present.persistence_netmask, &target.persistence_netmask),
        add: Vec::new(),
        update: Vec::new(),
        remove: Vec::new(),
        target,
    };
    for (key, dest) in &wanted.destinations {
        match present.destinations.get(key) {
            None => update.add.push(*dest),
            Some(old) => update.update.extend(diff_destination(dest, old)),
        }
    }
    update.remove = present
        .destinations
        .iter()
        .filter(|(key, _)| !wanted.destinations.contains_key(key))
        .map(|(_, dest)| *dest)
        .collect();
    let unchanged = !update.changes_service()
        && update.add.is_empty()
        && update.update.is_empty()
        && update.remove.is_empty();
    (!unchanged).then_some(update)
}

fn diff_destination(wanted: &Destination, present: &Destination) -> Option<DestinationUpdate> {
    let update = DestinationUpdate {
        target: *wanted,
        weight: Change::between(&present.weight, &wanted.weight),
        forwarding: Change::between(&present.forwarding, &wanted.forwarding),
        upper_threshold: Change::between(&present.upper_threshold, &wanted.upper_threshold),
        lower_threshold: Change::between(&present.lower_threshold, &wanted.lower_threshold),
    };
    let changed = update.weight.is_some()
        || update.forwarding.is_some()
        || update.upper_threshold.is_some()
        || update.lower_threshold.is_some();
    changed.then_some(update)
}
