//! Which VIPs should be announced, and when: a VIP serves while any (or all, per VIP) of its
//! services has a serving backend; the hold-down keeps a flapping VIP from being announced and
//! withdrawn faster than `hold_down` allows. Pure: time comes in as an argument.
//!
//! The hold-down is asymmetric on purpose. A withdraw is never delayed: a VIP announced with
//! nothing serving behind it blackholes every flow the routers hash to this node. What waits is
//! the announce that follows a withdraw, until `hold_down` after it: a backend pool that flaps
//! then costs the fleet one reshuffle of ECMP flows per `hold_down`, not one per flap.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::{
    config::{DesiredState, Require, VipPolicy},
    health::HealthTable,
    model::{Service, ServiceKey},
};

/// One VIP's services and whether each serves.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VipServing {
    pub vip: IpAddr,
    pub require: Require,
    /// Each service on the VIP (by key) and whether it has a serving backend.
    pub services: BTreeMap<ServiceKey, bool>,
}

impl VipServing {
    /// Whether the VIP may be announced, by its `require`; a VIP without services never is.
    pub fn serves(&self) -> bool {
        let mut each = self.services.values();
        match self.require {
            Require::Any => each.any(|serves| *serves),
            Require::All => !self.services.is_empty() && each.all(|serves| *serves),
        }
    }
}

/// `policy`'s VIP as the effective state (health, drains, breakers and canaries applied) shows
/// it. A backend serves when its weight is above 0 and its health check has passed at least once
/// (or it has none); a service that fails open (every backend unhealthy, all kept) does not serve.
pub fn serving(
    policy: &VipPolicy,
    effective: &DesiredState,
    fail_open: &BTreeSet<ServiceKey>,
    health: &HealthTable,
) -> VipServing {
    let services = effective
        .iter()
        .filter(|(key, _)| key.vip() == Some(policy.address))
        .map(|(key, service)| (*key, !fail_open.contains(key) && has_serving_backend(service, health)))
        .collect();
    VipServing { vip: policy.address, require: policy.require, services }
}

fn has_serving_backend(service: &Service, health: &HealthTable) -> bool {
    service.destinations.values().any(|dest| {
        dest.weight > 0
            && health.get(&service.key, &dest.key).is_none_or(|status| {
                // A check that has not answered yet proves nothing: the daemon starts backends
                // healthy so as not to pull traffic on a restart, which must not announce a VIP.
                status.healthy() && (status.last_probe.is_some() || status.check == "none")
            })
    })
}

/// The announce decisions so far, per VIP.
#[derive(Clone, Debug, Default)]
pub struct HoldDown {
    vips: BTreeMap<IpAddr, Held>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Held {
    announced: bool,
    last_change: Option<Instant>,
}

/// What [`HoldDown::decide`] decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// The VIPs to announce now.
    pub announce: BTreeSet<IpAddr>,
    /// VIPs that serve but wait for their hold-down, and until when.
    pub held: BTreeMap<IpAddr, Instant>,
}

impl Decision {
    /// When a held VIP's hold-down ends first: decide again then.
    pub fn next_due(&self) -> Option<Instant> {
        self.held.values().min().copied()
    }
}

impl HoldDown {
    /// Decides at `now` which of the VIPs in `serves` (VIP → it serves) to announce. VIPs not in
    /// `serves` are forgotten.
    pub fn decide(&mut self, serves: &BTreeMap<IpAddr, bool>, hold_down: Duration, now: Instant) -> Decision {
        self.vips.retain(|vip, _| serves.contains_key(vip));
        let mut decision = Decision::default();
        for (vip, serves) in serves {
            let held = self.vips.entry(*vip).or_default();
            match (held.announced, *serves) {
                (true, false) => *held = Held { announced: false, last_change: Some(now) },
                (false, true) => match held.last_change.map(|at| at + hold_down).filter(|until| *until > now)
                {
                    Some(until) => {
                        decision.held.insert(*vip, until);
                    }
                    None => *held = Held { announced: true, last_change: Some(now) },
                },
                _ => {}
            }
            if held.announced {
                decision.announce.insert(*vip);
            }
        }
        decision
    }

    /// Every VIP withdrawn at `now` (the daemon stops); a start after this begins afresh.
    pub fn withdraw_all(&mut self, now: Instant) {
        for held in self.vips.values_mut().filter(|held| held.announced) {
            *held = Held { announced: false, last_change: Some(now) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        health::{BackendState, BackendStatus, InitialState},
        model::{Destination, Forwarding},
    };

    const VIP: &str = "192.0.2.10";

    fn service(key: &str, weights: &[(&str, u32)]) -> (ServiceKey, Service) {
        let key: ServiceKey = key.parse().unwrap();
        let backends = weights
            .iter()
            .map(|(backend, weight)| Destination::new(backend.parse().unwrap(), *weight, Forwarding::Nat));
        (key, Service::new(key, "wrr").with_destinations(backends))
    }

    fn probed(healthy: bool) -> BackendStatus {
        let mut status = BackendStatus::new("tcp", BackendState::new(InitialState::Healthy));
        status.state.healthy = healthy;
        status.last_probe =
            Some(crate::health::LastProbe { failure: None, latency: Duration::from_millis(1) });
        status
    }

    fn policy(require: Require) -> VipPolicy {
        VipPolicy { address: VIP.parse().unwrap(), require }
    }

    #[test]
    fn a_vip_serves_by_its_services_backends_and_its_require() {
        let effective: DesiredState = [
            service("tcp:192.0.2.10:80", &[("10.0.0.1:80", 1), ("10.0.0.2:80", 0)]),
            service("tcp:192.0.2.10:443", &[("10.0.0.1:443", 1)]),
            service("tcp:192.0.2.99:80", &[("10.0.0.1:80", 1)]),
        ]
        .into_iter()
        .collect();
        let mut health = HealthTable::default();
        let web: ServiceKey = "tcp:192.0.2.10:80".parse().unwrap();
        let tls: ServiceKey = "tcp:192.0.2.10:443".parse().unwrap();
        health.insert(web, "10.0.0.1:80".parse().unwrap(), probed(true));
        health.insert(tls, "10.0.0.1:443".parse().unwrap(), probed(false));
        let none = BTreeSet::new();
        let any = serving(&policy(Require::Any), &effective, &none, &health);
        assert_eq!(any.services.len(), 2, "only the VIP's own services: {any:?}");
        assert!(any.serves() && any.services[&web] && !any.services[&tls]);
        assert!(!serving(&policy(Require::All), &effective, &none, &health).serves());

        // Failing open keeps every backend at its weight, yet nothing healthy serves.
        let fail_open: BTreeSet<ServiceKey> = [web].into();
        assert!(!serving(&policy(Require::Any), &effective, &fail_open, &health).serves());

        // Started healthy but never probed: not yet.
        let mut unprobed = health.clone();
        let mut fresh = BackendStatus::new("tcp", BackendState::new(InitialState::Healthy));
        unprobed.insert(web, "10.0.0.1:80".parse().unwrap(), fresh.clone());
        assert!(!serving(&policy(Require::Any), &effective, &none, &unprobed).serves());
        fresh.check = "none";
        unprobed.insert(web, "10.0.0.1:80".parse().unwrap(), fresh);
        assert!(
            serving(&policy(Require::Any), &effective, &none, &unprobed).serves(),
            "type none needs no probe"
        );

        // Unchecked backends serve by their weight; a VIP without services never.
        assert!(serving(&policy(Require::All), &effective, &none, &HealthTable::default()).serves());
        assert!(!serving(&policy(Require::All), &DesiredState::new(), &none, &health).serves());
    }

    #[test]
    fn withdraw_is_at_once_and_announce_again_waits_for_the_hold_down() {
        let vip: IpAddr = VIP.parse().unwrap();
        let hold = Duration::from_secs(10);
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let serves = |yes: bool| -> BTreeMap<IpAddr, bool> { [(vip, yes)].into() };
        let mut holddown = HoldDown::default();
        let announced = |decision: &Decision| decision.announce.contains(&vip);

        let first = holddown.decide(&serves(true), hold, at(0));
        assert!(announced(&first), "the first announce does not wait");
        let down = holddown.decide(&serves(false), hold, at(1));
        assert!(!announced(&down) && down.held.is_empty(), "withdrawn at once, within the hold-down");
        let back = holddown.decide(&serves(true), hold, at(3));
        assert!(!announced(&back));
        assert_eq!(back.next_due(), Some(at(11)), "held until 10 s after the withdraw");
        let flap = holddown.decide(&serves(false), hold, at(5));
        assert!(!announced(&flap) && flap.next_due().is_none());
        assert!(!announced(&holddown.decide(&serves(true), hold, at(10))), "the withdraw at 1 s counts");
        let again = holddown.decide(&serves(true), hold, at(11));
        assert!(announced(&again) && again.held.is_empty());
        // Announced at 11: a failure at 12 still withdraws at once.
        assert!(!announced(&holddown.decide(&serves(false), hold, at(12))));

        assert!(announced(&holddown.decide(&serves(true), hold, at(25))));
        holddown.withdraw_all(at(30));
        assert!(!announced(&holddown.decide(&serves(true), hold, at(31))), "a stop counts as a change");
        assert!(holddown.decide(&BTreeMap::new(), hold, at(32)).announce.is_empty());
        assert!(announced(&holddown.decide(&serves(true), hold, at(33))), "a VIP that left starts afresh");
    }
}
