//! Graceful removal: a backend or a service that leaves the configuration is not deleted at once.
//! It is kept at weight 0 (new connections go elsewhere, established ones live on) and listed in
//! [`Plan::leaving`]; the caller drains it by its service's drain rules and plans again with it
//! among the `drained`, and only then is it deleted. A backend put back in the configuration is
//! simply configured again: nothing of the removal is left.

use std::collections::BTreeSet;

use super::{Ignore, Plan, plan};
use crate::{
    config::DesiredState,
    model::{DestKey, Destination, Service, ServiceKey},
};

/// What leaves the configuration and is kept at weight 0 until drained.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leaving {
    /// Every backend kept at weight 0 for its drain, by service then backend.
    pub backends: BTreeSet<(ServiceKey, DestKey)>,
    /// Services that leave whole: deleted once all their backends are drained.
    pub services: BTreeSet<ServiceKey>,
}

impl Leaving {
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }
}

/// How a plan removes what left the configuration.
#[derive(Clone, Copy, Debug)]
pub enum Removal<'a> {
    /// Delete at once (`apply --immediate`).
    Immediate,
    /// Drain first; `drained` are the backends whose drain has ended, now deleted.
    Graceful { drained: &'a BTreeSet<(ServiceKey, DestKey)> },
}

/// [`plan`], with removals as `removal` says. `configured` is the configuration (what counts as
/// leaving); `desired` what IPVS should hold for the configured services (with health and drains
/// applied: a backend health removes is configured, so it is not "leaving").
pub fn plan_removals(
    desired: &DesiredState,
    configured: &DesiredState,
    observed: &DesiredState,
    ignore: &Ignore,
    removal: Removal<'_>,
) -> Plan {
    let Removal::Graceful { drained } = removal else { return plan(desired, observed, ignore) };
    let mut kept = desired.clone();
    let mut leaving = Leaving::default();
    let quiesced = |dest: &Destination| Destination { weight: 0, ..*dest };
    for (key, present) in observed.iter().filter(|(key, _)| !ignore.covers(key)) {
        let draining = present.destinations.values().filter(|dest| !drained.contains(&(*key, dest.key)));
        match (configured.get(key), kept.get_mut(key)) {
            (Some(config), Some(service)) => {
                for dest in draining.filter(|dest| !config.destinations.contains_key(&dest.key)) {
                    service.destinations.insert(dest.key, quiesced(dest));
                    leaving.backends.insert((*key, dest.key));
                }
            }
            (None, _) => {
                let destinations: std::collections::BTreeMap<DestKey, Destination> =
                    draining.map(|dest| (dest.key, quiesced(dest))).collect();
                if destinations.is_empty() {
                    continue;
                }
                leaving.backends.extend(destinations.keys().map(|dest| (*key, *dest)));
                leaving.services.insert(*key);
                kept.insert(*key, Service { destinations, ..present.clone() });
            }
            (Some(_), None) => {}
        }
    }
    let mut plan = plan(&kept, observed, ignore);
    plan.leaving = leaving;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Forwarding;

    fn service(key: &str, backends: &[(&str, u32)]) -> (ServiceKey, Service) {
        let key: ServiceKey = key.parse().unwrap();
        let dests = backends.iter().map(|(b, w)| Destination::new(b.parse().unwrap(), *w, Forwarding::Nat));
        (key, Service::new(key, "wrr").with_destinations(dests))
    }

    fn table(services: &[(&str, &[(&str, u32)])]) -> DesiredState {
        services.iter().map(|(key, backends)| service(key, backends)).collect()
    }

    const WEB: &str = "tcp:192.0.2.1:80";
    const DNS: &str = "udp:192.0.2.1:53";

    fn pair(service: &str, backend: &str) -> (ServiceKey, DestKey) {
        (service.parse().unwrap(), backend.parse().unwrap())
    }

    #[test]
    fn a_removed_backend_goes_to_weight_0_and_is_deleted_once_drained() {
        let observed = table(&[(WEB, &[("192.0.2.10:80", 3), ("192.0.2.11:80", 1)])]);
        let configured = table(&[(WEB, &[("192.0.2.11:80", 1)])]);
        let none = BTreeSet::new();
        let graceful = Removal::Graceful { drained: &none };
        let first = plan_removals(&configured, &configured, &observed, &Ignore::default(), graceful);
        assert_eq!(first.leaving.backends, BTreeSet::from([pair(WEB, "192.0.2.10:80")]));
        assert!(first.update[0].remove.is_empty(), "nothing deleted before the drain");
        assert_eq!(first.update[0].update[0].weight.map(|w| (w.old, w.new)), Some((3, 0)));

        let drained = BTreeSet::from([pair(WEB, "192.0.2.10:80")]);
        let later = plan_removals(
            &configured,
            &configured,
            &observed,
            &Ignore::default(),
            Removal::Graceful { drained: &drained },
        );
        assert!(later.leaving.is_empty());
        assert_eq!(later.update[0].remove.len(), 1);

        let now = plan_removals(&configured, &configured, &observed, &Ignore::default(), Removal::Immediate);
        assert_eq!(now, plan(&configured, &observed, &Ignore::default()));
    }

    #[test]
    fn a_removed_service_keeps_its_backends_at_weight_0_until_all_are_drained() {
        let observed =
            table(&[(WEB, &[("192.0.2.10:80", 1)]), (DNS, &[("192.0.2.20:53", 1), ("192.0.2.21:53", 2)])]);
        let configured = table(&[(WEB, &[("192.0.2.10:80", 1)])]);
        let one = BTreeSet::from([pair(DNS, "192.0.2.20:53")]);
        let plan = plan_removals(
            &configured,
            &configured,
            &observed,
            &Ignore::default(),
            Removal::Graceful { drained: &one },
        );
        assert_eq!(plan.leaving.services, BTreeSet::from([DNS.parse().unwrap()]));
        assert_eq!(plan.leaving.backends, BTreeSet::from([pair(DNS, "192.0.2.21:53")]));
        assert!(plan.delete.is_empty());
        let update = &plan.update[0];
        assert_eq!(update.remove.len(), 1, "the drained backend goes");
        assert_eq!(update.update[0].weight.map(|w| w.new), Some(0));

        let all = BTreeSet::from([pair(DNS, "192.0.2.20:53"), pair(DNS, "192.0.2.21:53")]);
        let plan = plan_removals(
            &configured,
            &configured,
            &observed,
            &Ignore::default(),
            Removal::Graceful { drained: &all },
        );
        assert_eq!(plan.delete.len(), 1, "deleted once every backend is drained");
    }

    #[test]
    fn health_removed_backends_are_not_leaving() {
        let observed = table(&[(WEB, &[("192.0.2.10:80", 1), ("192.0.2.11:80", 1)])]);
        let configured = observed.clone();
        let healthy_only = table(&[(WEB, &[("192.0.2.11:80", 1)])]);
        let none = BTreeSet::new();
        let plan = plan_removals(
            &healthy_only,
            &configured,
            &observed,
            &Ignore::default(),
            Removal::Graceful { drained: &none },
        );
        assert!(plan.leaving.is_empty());
        assert_eq!(plan.update[0].remove.len(), 1);
    }
}
