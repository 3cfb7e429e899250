//! Change limits: a plan that creates or deletes too many services, or gives a service too many
//! backends, is refused before anything is touched, unless the operator forces it.

use super::{Limits, Plan};
use crate::model::ServiceKey;

/// One limit a plan exceeds, with the figures.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitViolation {
    #[error("plan creates {count} services; limit max_services_created is {limit} (use --force to override)")]
    ServicesCreated { count: usize, limit: u32 },
    #[error("plan deletes {count} services; limit max_services_deleted is {limit} (use --force to override)")]
    ServicesDeleted { count: usize, limit: u32 },
    #[error(
        "service {service} would have {count} backends; limit max_backends_per_service is {limit} \
         (use --force to override)"
    )]
    BackendsPerService { service: ServiceKey, count: usize, limit: u32 },
}

/// Every limit `plan` exceeds. The backend limit applies to the desired backend count of each
/// service the plan creates or updates, not to services it leaves alone.
pub fn check_limits(plan: &Plan, limits: &Limits) -> Result<(), Vec<LimitViolation>> {
    let mut violations = Vec::new();
    let exceeds = |count: usize, limit: u32| u64::try_from(count).unwrap_or(u64::MAX) > u64::from(limit);
    if exceeds(plan.create.len(), limits.max_services_created) {
        violations.push(LimitViolation::ServicesCreated {
            count: plan.create.len(),
            limit: limits.max_services_created,
        });
    }
    let touched = plan.create.iter().chain(plan.update.iter().map(|update| &update.target));
    let mut crowded: Vec<LimitViolation> = touched
        .filter(|service| exceeds(service.destinations.len(), limits.max_backends_per_service))
        .map(|service| LimitViolation::BackendsPerService {
            service: service.key,
            count: service.destinations.len(),
            limit: limits.max_backends_per_service,
        })
        .collect();
    crowded.sort_by_key(|violation| match violation {
        LimitViolation::BackendsPerService { service, .. } => Some(*service),
        _ => None,
    });
    violations.append(&mut crowded);
    if exceeds(plan.delete.len(), limits.max_services_deleted) {
        violations.push(LimitViolation::ServicesDeleted {
            count: plan.delete.len(),
            limit: limits.max_services_deleted,
        });
    }
    if violations.is_empty() { Ok(()) } else { Err(violations) }
}
