//! Announcing VIPs through BIRD in the daemon (docs/fleet.md): after every reconcile, when a
//! hold-down ends and when a backend first passes its check, the VIPs of `announce:` are
//! weighed by what serves them ([`crate::announce::gate`]); when that differs from what BIRD
//! runs for us, the include file is rewritten and BIRD reconfigured. Nothing is announced before
//! the first reconcile that succeeded; everything is withdrawn before the daemon exits.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Instant,
};

use serde_json::{Value, json};

use super::{Daemon, HEALTH_COALESCE};
use crate::{
    announce::{self, Announcer, HoldDown, VipServing},
    config::{Announce, DesiredState},
    health::HealthTable,
    model::{DestKey, ServiceKey},
};

/// The daemon's side of announcing.
#[derive(Debug, Default)]
pub(super) struct Announcing {
    announcer: Announcer,
    hold: HoldDown,
    /// A reconcile succeeded: from now on VIPs may be announced.
    ready: bool,
    /// When to weigh the VIPs again without a reconcile: a hold-down ends, or a backend passed
    /// its first check.
    pub due: Option<tokio::time::Instant>,
    /// The VIPs as last weighed, and those held back until when.
    serving: Vec<VipServing>,
    held: BTreeMap<IpAddr, Instant>,
    /// Backends whose check has passed once since they were configured.
    probed: BTreeSet<(ServiceKey, DestKey)>,
}

impl Announcing {
    /// Starts from the include file as it is (BIRD presumably runs it).
    pub(super) async fn start(announce: Option<&Announce>) -> Self {
        let Some(announce) = announce else { return Self::default() };
        let path = announce.include.clone();
        let found = super::blocking(move || announce::file::read(&path)).await.unwrap_or_else(|err| {
            tracing::warn!(error = %err, "cannot read the announce file; a refused reconfigure will remove it");
            None
        });
        Self { announcer: Announcer::new(found), ..Self::default() }
    }
}

impl Daemon {
    /// The VIPs of `announce:` as `effective` (the state the reconcile plans for) serves them.
    pub(super) fn weigh_vips(
        &self,
        effective: &DesiredState,
        fail_open: &BTreeSet<ServiceKey>,
        health: &HealthTable,
    ) -> Vec<VipServing> {
        let Some(announce) = &self.config.announce else { return Vec::new() };
        announce.vips.iter().map(|vip| announce::serving(vip, effective, fail_open, health)).collect()
    }

    /// After a reconcile (`reconciled`: it succeeded and converged), or when due: decides which
    /// VIPs to announce and has BIRD announce exactly those.
    pub(super) async fn announce(&mut self, serving: Vec<VipServing>, reconciled: bool) {
        let Some(config) = self.config.announce.clone() else { return };
        let state = &mut self.announcing;
        state.due = None;
        if reconciled && !state.ready {
            state.ready = true;
            tracing::info!("first reconcile done: VIPs are announced from now on while their services serve");
        }
        let serves: BTreeMap<IpAddr, bool> = serving.iter().map(|vip| (vip.vip, vip.serves())).collect();
        state.serving = serving;
        let wanted = if state.ready {
            let decision = state.hold.decide(&serves, config.hold_down, Instant::now());
            state.held = decision.held.clone();
            state.due = decision.next_due().map(tokio::time::Instant::from_std);
            decision.announce
        } else {
            BTreeSet::new()
        };
        self.put_vips(&config, wanted).await;
    }

    /// Weighs the VIPs again without a reconcile: a hold-down ended or a backend passed its first
    /// check.
    pub(super) async fn announce_due(&mut self) {
        let (effective, fail_open, health) = self.effective();
        let fail_open = fail_open.iter().map(|failing| failing.service).collect();
        let serving = self.weigh_vips(&effective, &fail_open, &health);
        self.announce(serving, false).await;
        self.publish_status();
    }

    /// A probe of `backend` succeeded: the first since it was configured may make its VIP serve,
    /// which is weighed shortly (coalesced like health transitions).
    pub(super) fn announce_probe_passed(&mut self, service: ServiceKey, backend: DestKey) {
        let Some(config) = &self.config.announce else { return };
        let on_vip = service.vip().is_some_and(|addr| config.vips.iter().any(|vip| vip.address == addr));
        if on_vip && self.announcing.probed.insert((service, backend)) {
            self.announcing.due.get_or_insert_with(|| tokio::time::Instant::now() + HEALTH_COALESCE);
        }
    }

    /// Makes BIRD run exactly `wanted` for us, unless it does already; a failure is logged,
    /// counted and shown, and retried after the next reconcile.
    async fn put_vips(&mut self, config: &Announce, wanted: BTreeSet<IpAddr>) {
        if self.announcing.announcer.runs(&wanted) {
            return;
        }
        let before = self.announcing.announcer.announced();
        let started = Instant::now();
        let outcome = self.announcing.announcer.publish(config, wanted.clone()).await;
        let took = started.elapsed();
        match &outcome {
            Ok(()) => {
                for vip in wanted.difference(&before) {
                    tracing::info!(%vip, ?took, "VIP announced through BIRD");
                }
                for vip in before.difference(&wanted) {
                    tracing::warn!(%vip, ?took, "VIP withdrawn through BIRD");
                }
            }
            Err(err) => {
                tracing::error!(error = %err, wanted = ?wanted, announced = ?before, "BIRD reconfigure failed; BIRD keeps announcing the VIPs it did; retried after the next reconcile");
            }
        }
        let result = outcome.as_ref().map_or_else(announce::PublishError::result, |()| "ok");
        self.metrics.record_bird_reconfigure(result);
        self.export_announced(config);
    }

    fn export_announced(&self, config: &Announce) {
        let announced = self.announcing.announcer.announced();
        let vips: Vec<(IpAddr, bool)> =
            config.vips.iter().map(|vip| (vip.address, announced.contains(&vip.address))).collect();
        self.metrics.set_announced(&vips);
    }

    /// SIGTERM: every VIP withdrawn before the daemon exits, so that the routers stop sending
    /// here while IPVS still forwards what arrives.
    pub(super) async fn withdraw_before_exit(&mut self) {
        let Some(config) = self.config.announce.clone() else { return };
        self.announcing.hold.withdraw_all(Instant::now());
        self.announcing.ready = false;
        let started = Instant::now();
        self.put_vips(&config, BTreeSet::new()).await;
        tracing::info!(took = ?started.elapsed(), "stopping: VIPs withdrawn");
    }

    /// A reload: `previous` was the `announce:` before it. Without one now, everything this
    /// daemon announced is withdrawn through the previous settings; with one, backends that
    /// left are forgotten and the VIPs are weighed again by the reconcile that follows.
    pub(super) async fn reload_announce(&mut self, previous: Option<&Announce>) {
        match (previous, self.config.announce.clone()) {
            (Some(previous), None) => {
                self.put_vips(previous, BTreeSet::new()).await;
                self.metrics.set_announced(&[]);
                self.announcing = Announcing::default();
            }
            (None, Some(now)) => self.announcing = Announcing::start(Some(&now)).await,
            (Some(previous), Some(now)) => {
                if previous.include != now.include || previous.socket != now.socket {
                    tracing::warn!(
                        "announce: the include file or socket changed; the old file is left as it is"
                    );
                    let ready = self.announcing.ready;
                    self.announcing = Announcing { ready, ..Announcing::start(Some(&now)).await };
                }
                let desired = &self.config.desired;
                self.announcing.probed.retain(|(service, backend)| {
                    desired.get(service).is_some_and(|s| s.destinations.contains_key(backend))
                });
            }
            (None, None) => {}
        }
    }

    /// The `announce` part of `/status`: null without `announce:`.
    pub(super) fn announce_status(&self) -> Value {
        let Some(config) = &self.config.announce else { return Value::Null };
        let state = &self.announcing;
        let announced = state.announcer.announced();
        let unix = |at: Instant| {
            let ahead = at.saturating_duration_since(Instant::now());
            (std::time::SystemTime::now() + ahead)
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs())
        };
        let vips: Vec<Value> = config
            .vips
            .iter()
            .map(|vip| {
                let serving = state.serving.iter().find(|view| view.vip == vip.address);
                json!({
                    "vip": vip.address,
                    "require": vip.require,
                    "announced": announced.contains(&vip.address),
                    "serving": serving.is_some_and(VipServing::serves),
                    "services": serving.map(|view| &view.services),
                    "held_until_unix": state.held.get(&vip.address).map(|at| unix(*at)),
                })
            })
            .collect();
        json!({
            "socket": config.socket,
            "include": config.include,
            "hold_down_seconds": config.hold_down.as_secs_f64(),
            "ready": state.ready,
            "vips": vips,
            "last_reconfigure": state.announcer.last,
        })
    }
}
