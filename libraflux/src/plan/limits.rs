//! Change limits: a plan that creates or deletes too many services, adds too many backends to a
//! service, or takes too large a share of a service's backends out of service, is refused before
//! anything is touched, unless the operator forces it.
//!
//! The limits bound what one change does, not what the table holds: a service that already has
//! more backends than `max_backends_per_service` (applied once with `--force`) is not refused
//! again for it.

use super::{Limits, Plan, ServiceUpdate};
use crate::model::ServiceKey;

/// One limit a plan exceeds, with the figures.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitViolation {
    #[error("plan creates {count} services; limit max_services_created is {limit} (use --force to override)")]
    ServicesCreated { count: usize, limit: u32 },
    #[error("plan deletes {count} services; limit max_services_deleted is {limit} (use --force to override)")]
    ServicesDeleted { count: usize, limit: u32 },
    #[error(
        "plan adds {count} backends to service {service}; limit max_backends_per_service is {limit} \
         (use --force to override)"
    )]
    BackendsPerService { service: ServiceKey, count: usize, limit: u32 },
    #[error(
        "plan takes {count} of the {of} backends of service {service} out of service (removed or set to \
         weight 0); limit max_backends_removed_percent is {percent} %, {allowed} backend(s) here (use --force \
         to override)"
    )]
    BackendsRemoved { service: ServiceKey, count: usize, of: usize, percent: u32, allowed: usize },
}

impl LimitViolation {
    /// The limit's name in the configuration (`limits.NAME`): also its metrics label.
    pub const fn limit_name(&self) -> &'static str {
        match self {
            Self::ServicesCreated { .. } => "max_services_created",
            Self::ServicesDeleted { .. } => "max_services_deleted",
            Self::BackendsPerService { .. } => "max_backends_per_service",
            Self::BackendsRemoved { .. } => "max_backends_removed_percent",
        }
    }
}

/// Every limit `plan` exceeds, services in key order.
pub fn check_limits(plan: &Plan, limits: &Limits) -> Result<(), Vec<LimitViolation>> {
    let mut violations = Vec::new();
    let exceeds = |count: usize, limit: u32| u64::try_from(count).unwrap_or(u64::MAX) > u64::from(limit);
    if exceeds(plan.create.len(), limits.max_services_created) {
        violations.push(LimitViolation::ServicesCreated {
            count: plan.create.len(),
            limit: limits.max_services_created,
        });
    }
    let added = plan
        .create
        .iter()
        .map(|service| (service.key, service.destinations.len()))
        .chain(plan.update.iter().map(|update| (update.key(), update.add.len())));
    let mut per_service: Vec<LimitViolation> = added
        .filter(|(_, count)| exceeds(*count, limits.max_backends_per_service))
        .map(|(service, count)| LimitViolation::BackendsPerService {
            service,
            count,
            limit: limits.max_backends_per_service,
        })
        .collect();
    per_service.extend(plan.update.iter().filter_map(|update| removed_share(update, limits)));
    per_service.sort_by_key(|violation| match violation {
        LimitViolation::BackendsPerService { service, .. } => (Some(*service), 0),
        LimitViolation::BackendsRemoved { service, .. } => (Some(*service), 1),
        _ => (None, 0),
    });
    violations.append(&mut per_service);
    if exceeds(plan.delete.len(), limits.max_services_deleted) {
        violations.push(LimitViolation::ServicesDeleted {
            count: plan.delete.len(),
            limit: limits.max_services_deleted,
        });
    }
    if violations.is_empty() { Ok(()) } else { Err(violations) }
}

/// The backends an update takes out of service (removed, or lowered from a positive weight to
/// 0) against its share limit. At least one backend may always go, so a one-backend service can
/// still have its backend replaced.
fn removed_share(update: &ServiceUpdate, limits: &Limits) -> Option<LimitViolation> {
    let zeroed =
        update.update.iter().filter(|change| change.weight.is_some_and(|w| w.old > 0 && w.new == 0)).count();
    let count = update.remove.len() + zeroed;
    // The backends the service has now: those it keeps (all desired but the added), and the removed.
    let of = update.target.destinations.len() - update.add.len() + update.remove.len();
    let percent = limits.max_backends_removed_percent;
    let allowed = (of * percent.min(100) as usize / 100).max(1);
    (count > allowed).then_some(LimitViolation::BackendsRemoved {
        service: update.key(),
        count,
        of,
        percent,
        allowed,
    })
}
