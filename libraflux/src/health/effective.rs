//! What IPVS should hold once health is taken into account. Pure: the daemon plans against its
//! result exactly as it would against the configured state.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    config::{DesiredState, OnUnhealthy, ServiceSettings},
    model::{DestKey, Service, ServiceKey},
};

use super::{BackendStatus, HealthTable};

/// A service whose every traffic-carrying backend is unhealthy, left as configured so it keeps
/// serving what it can. The daemon logs it at error level and exports it: it is an outage of the
/// backends or of the check itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailOpen {
    pub service: ServiceKey,
    /// The unhealthy backends that keep their configured weight.
    pub unhealthy: Vec<DestKey>,
}

/// The configured state with unhealthy backends quiesced (weight 0) or removed, as each service's
/// `on_unhealthy` says; and the services that failed open.
///
/// A service fails open when it has unhealthy backends and no healthy backend with a configured
/// weight above 0 (a backend the operator set to weight 0 carries no traffic, so it cannot take
/// over). Then all its backends stay exactly as configured: quiescing every backend would turn a
/// partial outage, or a broken check, into a total one. A service without settings counts as
/// `quiesce`. Changes `desired` in place, and only where health changes it: a state shared with
/// the configuration is copied only then (on a large table a copy costs more than everything
/// else here).
pub fn effective(
    desired: &mut Arc<DesiredState>,
    settings: &BTreeMap<ServiceKey, ServiceSettings>,
    health: &HealthTable,
) -> Vec<FailOpen> {
    let mut fail_open = Vec::new();
    let mut changes = Vec::new();
    for (key, service) in desired.iter() {
        // A service none of whose backends is checked has nothing to change.
        let Some(checked) = health.service(key) else { continue };
        let healthy = |dest: &DestKey| checked.get(dest).is_none_or(BackendStatus::healthy);
        let unhealthy: Vec<DestKey> =
            service.destinations.keys().filter(|dest| !healthy(dest)).copied().collect();
        if unhealthy.is_empty() {
            continue;
        }
        let serving = service.destinations.values().any(|dest| dest.weight > 0 && healthy(&dest.key));
        if serving {
            let on_unhealthy = settings.get(key).map_or(OnUnhealthy::default(), |s| s.on_unhealthy);
            changes.push((*key, on_unhealthy, unhealthy));
        } else {
            fail_open.push(FailOpen { service: *key, unhealthy });
        }
    }
    if !changes.is_empty() {
        let desired = Arc::make_mut(desired);
        for (key, on_unhealthy, unhealthy) in changes {
            let Some(service) = desired.get_mut(&key) else { continue };
            take_out(service, on_unhealthy, &unhealthy);
        }
    }
    fail_open
}

/// Quiesces or removes the `unhealthy` backends of `service`.
fn take_out(service: &mut Service, on_unhealthy: OnUnhealthy, unhealthy: &[DestKey]) {
    for dest in unhealthy {
        match on_unhealthy {
            OnUnhealthy::Quiesce => {
                if let Some(destination) = service.destinations.get_mut(dest) {
                    destination.weight = 0;
                }
            }
            OnUnhealthy::Remove => {
                service.destinations.remove(dest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{Check, Drain, Health},
        health::{BackendState, BackendStatus, InitialState},
        model::{Destination, Forwarding},
    };

    /// [`effective`] of a copy of `desired`, and what it made of it.
    fn effective_of(
        desired: &DesiredState,
        settings: &BTreeMap<ServiceKey, ServiceSettings>,
        health: &HealthTable,
    ) -> (DesiredState, Vec<FailOpen>) {
        let mut state = Arc::new(desired.clone());
        let fail_open = effective(&mut state, settings, health);
        (Arc::unwrap_or_clone(state), fail_open)
    }

    const WEB: &str = "tcp:192.0.2.1:80";
    const DNS: &str = "udp:192.0.2.1:53";

    fn service(key: &str, weights: &[(&str, u32)]) -> Service {
        let key: ServiceKey = key.parse().unwrap();
        let destinations = weights
            .iter()
            .map(|(dest, weight)| {
                let dest: DestKey = dest.parse().unwrap();
                let destination = Destination {
                    key: dest,
                    weight: *weight,
                    forwarding: Forwarding::Nat,
                    upper_threshold: 0,
                    lower_threshold: 0,
                };
                (dest, destination)
            })
            .collect();
        Service { key, scheduler: "wrr".into(), persistence: None, persistence_netmask: None, destinations }
    }

    fn desired(services: &[Service]) -> DesiredState {
        services.iter().map(|service| (service.key, service.clone())).collect()
    }

    fn settings(on_unhealthy: OnUnhealthy) -> BTreeMap<ServiceKey, ServiceSettings> {
        [WEB, DNS]
            .iter()
            .map(|key| {
                let settings = ServiceSettings {
                    name: "svc".into(),
                    health: Health::with_check(Check::Tcp),
                    on_unhealthy,
                    drain: Drain::default(),
                    canaries: Default::default(),
                    circuit_breaker: None,
                };
                (key.parse().unwrap(), settings)
            })
            .collect()
    }

    fn table(entries: &[(&str, &str, bool)]) -> HealthTable {
        let mut table = HealthTable::default();
        for (service, dest, healthy) in entries {
            let initial = if *healthy { InitialState::Healthy } else { InitialState::Unhealthy };
            table.insert(
                service.parse().unwrap(),
                dest.parse().unwrap(),
                BackendStatus::new("tcp", BackendState::new(initial)),
            );
        }
        table
    }

    fn weights(state: &DesiredState, key: &str) -> Vec<(String, u32)> {
        let key: ServiceKey = key.parse().unwrap();
        state[&key].destinations.values().map(|dest| (dest.key.to_string(), dest.weight)).collect()
    }

    fn web() -> Service {
        service(WEB, &[("10.0.0.1:80", 100), ("10.0.0.2:80", 50), ("10.0.0.3:80", 1)])
    }

    #[test]
    fn all_healthy_or_unchecked_is_the_configured_state() {
        let desired = desired(&[web()]);
        let health = table(&[(WEB, "10.0.0.1:80", true)]);
        let (effective, fail_open) = effective_of(&desired, &settings(OnUnhealthy::Quiesce), &health);
        assert_eq!(effective, desired);
        assert!(fail_open.is_empty());
    }

    #[test]
    fn quiesce_sets_unhealthy_backends_to_weight_zero() {
        let desired = desired(&[web()]);
        let health = table(&[(WEB, "10.0.0.1:80", false), (WEB, "10.0.0.2:80", true)]);
        let (effective, fail_open) = effective_of(&desired, &settings(OnUnhealthy::Quiesce), &health);
        assert_eq!(
            weights(&effective, WEB),
            [("10.0.0.1:80".into(), 0), ("10.0.0.2:80".into(), 50), ("10.0.0.3:80".into(), 1)]
        );
        assert!(fail_open.is_empty());
    }

    #[test]
    fn remove_drops_unhealthy_backends() {
        let desired = desired(&[web()]);
        let health = table(&[(WEB, "10.0.0.1:80", false), (WEB, "10.0.0.3:80", false)]);
        let (effective, fail_open) = effective_of(&desired, &settings(OnUnhealthy::Remove), &health);
        assert_eq!(weights(&effective, WEB), [("10.0.0.2:80".into(), 50)]);
        assert!(fail_open.is_empty());
    }

    #[test]
    fn every_backend_unhealthy_fails_open_and_is_reported() {
        for on_unhealthy in [OnUnhealthy::Quiesce, OnUnhealthy::Remove] {
            let desired = desired(&[web()]);
            let health = table(&[
                (WEB, "10.0.0.1:80", false),
                (WEB, "10.0.0.2:80", false),
                (WEB, "10.0.0.3:80", false),
            ]);
            let (effective, fail_open) = effective_of(&desired, &settings(on_unhealthy), &health);
            assert_eq!(effective, desired, "{on_unhealthy:?}: kept as configured");
            let unhealthy =
                ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(|d| d.parse().unwrap()).to_vec();
            assert_eq!(fail_open, [FailOpen { service: WEB.parse().unwrap(), unhealthy }]);
        }
    }

    #[test]
    fn healthy_backends_at_configured_weight_zero_do_not_prevent_fail_open() {
        let desired = desired(&[service(WEB, &[("10.0.0.1:80", 100), ("10.0.0.2:80", 0)])]);
        let health = table(&[(WEB, "10.0.0.1:80", false)]);
        let (effective, fail_open) = effective_of(&desired, &settings(OnUnhealthy::Quiesce), &health);
        assert_eq!(effective, desired);
        assert_eq!(fail_open.len(), 1);
    }

    #[test]
    fn fail_open_is_per_service() {
        let dns = service(DNS, &[("10.0.1.1:53", 1), ("10.0.1.2:53", 1)]);
        let desired = desired(&[web(), dns]);
        let health =
            table(&[(WEB, "10.0.0.1:80", false), (DNS, "10.0.1.1:53", false), (DNS, "10.0.1.2:53", false)]);
        let (effective, fail_open) = effective_of(&desired, &settings(OnUnhealthy::Quiesce), &health);
        assert_eq!(weights(&effective, WEB)[0], ("10.0.0.1:80".into(), 0));
        assert_eq!(weights(&effective, DNS), weights(&desired, DNS));
        assert_eq!(fail_open.iter().map(|f| f.service.to_string()).collect::<Vec<_>>(), [DNS]);
    }

    #[test]
    fn a_service_without_backends_or_settings_is_left_alone_and_quiesces_by_default() {
        let empty = service(DNS, &[]);
        let desired = desired(&[web(), empty]);
        let health = table(&[(WEB, "10.0.0.2:80", false)]);
        let (effective, fail_open) = effective_of(&desired, &BTreeMap::new(), &health);
        assert_eq!(weights(&effective, WEB)[1], ("10.0.0.2:80".into(), 0));
        assert!(weights(&effective, DNS).is_empty());
        assert!(fail_open.is_empty());
    }

    #[test]
    fn health_of_backends_no_longer_configured_is_ignored() {
        let desired = desired(&[web()]);
        let health = table(&[(WEB, "10.0.0.9:80", false)]);
        let (effective, fail_open) = effective_of(&desired, &settings(OnUnhealthy::Remove), &health);
        assert_eq!(effective, desired);
        assert!(fail_open.is_empty());
    }
}
