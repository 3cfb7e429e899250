//! What the daemon answers on its control socket (docs/control.md). Each request runs on the
//! daemon's own loop, between reconciles, so a drain is recorded in the daemon's state directory
//! by the daemon itself, reconciled at once, and answered with what IPVS then shows.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::Value;

use super::{Daemon, Reload, control::Call, observer::render, reconcile::Trigger};
use crate::{
    config::{self, Config},
    control::{
        Access, ErrorKind, ReplyError, Request,
        protocol::{
            self, BackendNow, DrainReply, DrainRequest, DrainView, Drained, DrainsReply, Ping, Reloaded,
            Status, UndrainReply, Undrained,
        },
    },
    drain::{self, DrainEntry, Rules},
    ipvs::{DestinationStatus, IpvsError, Op},
    model::{DestKey, Service, ServiceKey},
};

pub(super) type Answer = Result<Value, ReplyError>;

pub(super) fn json(value: &impl Serialize) -> Answer {
    Ok(serde_json::to_value(value).expect("replies serialise"))
}

impl Daemon {
    pub(super) async fn answer(&mut self, call: Call) {
        let Call { request, peer, reply } = call;
        let started = Instant::now();
        let name = match &request {
            Request::Ping => "ping",
            Request::Status => "status",
            Request::Drain(_) => "drain",
            Request::Undrain { .. } => "undrain",
            Request::Drains => "drains",
            Request::Reload { .. } => "reload",
            Request::Replication => "replication",
            Request::SyncRole { .. } => "sync_role",
            Request::SyncStatus => "sync_status",
            Request::Canary(_) => "canary",
            Request::Canaries => "canaries",
        };
        if matches!(
            request,
            Request::Drain(_)
                | Request::Undrain { .. }
                | Request::Reload { .. }
                | Request::SyncRole { .. }
                | Request::Canary(_)
        ) {
            tracing::info!(uid = peer.uid, pid = ?peer.pid, ?request, "control: {name} asked");
        }
        let answer = match request {
            Request::Ping => self.ping(),
            Request::Status => self.status_answer().await,
            Request::Drain(ask) => self.drain(&ask).await,
            Request::Undrain { backend, service } => self.undrain(backend, service).await,
            Request::Drains => self.drains_answer().await,
            Request::Reload { config, force } => self.reload_answer(&config, force).await,
            Request::Replication => match &self.config.replication {
                Some(_) => json(&self.replicator.status()),
                None => Err(ReplyError::new(
                    ErrorKind::NotFound,
                    "replication is not configured on this node (no replication: section)",
                )),
            },
            Request::SyncRole { role } => self.sync_role_answer(role).await,
            Request::SyncStatus => self.sync_status_answer().await,
            Request::Canary(ask) => self.canary_answer(&ask).await,
            Request::Canaries => self.canaries_answer().await,
        };
        match &answer {
            Err(error) => {
                tracing::warn!(uid = peer.uid, kind = ?error.kind, "control: {name} refused: {error}")
            }
            Ok(_) => tracing::debug!(uid = peer.uid, took = ?started.elapsed(), "control: {name} answered"),
        }
        // The client may have gone; the work is done either way.
        let _ = reply.send(answer);
    }

    /// The files the daemon's configuration is made of, resolved.
    fn config_files(&self) -> Vec<PathBuf> {
        let paths = config::source_paths(self.options.config_path.as_deref()).unwrap_or_default();
        paths.into_iter().map(|path| path.canonicalize().unwrap_or(path)).collect()
    }

    fn ping(&self) -> Answer {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        json(&Ping { pid: std::process::id(), uid, config: self.config_files() })
    }

    async fn status_answer(&mut self) -> Answer {
        let daemon = self.status.borrow().clone();
        let status = match self.ipvs.list_services().await {
            Ok(table) => Status { daemon, services: Some(protocol::table(&table)), ipvs_error: None },
            Err(err) => Status { daemon, services: None, ipvs_error: Some(render(&err)) },
        };
        json(&status)
    }

    /// What IPVS shows of `backends` now: the destinations of their services only, not the whole
    /// table (`drain --wait` asks twice a second). Absent: not in IPVS.
    async fn backends_now(
        &mut self,
        backends: impl IntoIterator<Item = drain::Backend>,
        after: &str,
    ) -> Result<BTreeMap<drain::Backend, DestinationStatus>, ReplyError> {
        let backends: BTreeSet<drain::Backend> = backends.into_iter().collect();
        // A service IPVS does not hold has no destinations: its dump is empty.
        let dumps = self.ipvs.dests_of(&drain::services_of(&backends)).await.map_err(|err: IpvsError| {
            failed(format!("{after}, but IPVS cannot be read back: {}", render(&err)))
        })?;
        let seen = drain::Seen::from_dumps(dumps);
        Ok(backends
            .into_iter()
            .filter_map(|backend| seen.destination(backend).map(|dest| (backend, dest.clone())))
            .collect())
    }

    async fn drain(&mut self, ask: &DrainRequest) -> Answer {
        let services = services_with(&self.config, ask.backend, ask.service)?;
        if !ask.force {
            self.refuse_last_serving(&services, ask.backend)?;
        }
        let started_unix_ms = drain::now_ms();
        let entries: Vec<DrainEntry> = services
            .iter()
            .map(|service| DrainEntry {
                service: *service,
                backend: ask.backend,
                rules: rules(&self.config, service, ask),
                remove: ask.remove,
                removed_from_config: false,
                started_unix_ms,
                at_zero_unix_ms: None,
                ended: None,
            })
            .collect();
        let same = |d: &DrainEntry| entries.iter().any(|e| (e.service, e.backend) == (d.service, d.backend));
        self.record_drains(|drains| {
            drains.retain(|d| !same(d));
            drains.extend(entries.iter().cloned());
        })
        .await
        .map_err(|why| failed(format!("cannot record the drain: {why}; nothing was changed")))?;
        self.reconcile(Trigger::Drain).await;
        let now = self
            .backends_now(entries.iter().map(|e| (e.service, e.backend)), "the drain is recorded")
            .await?;
        let drains: Vec<Drained> = entries
            .iter()
            .map(|entry| Drained {
                service: entry.service,
                backend: entry.backend,
                weight: now.get(&(entry.service, entry.backend)).map(|d| d.destination.weight),
                rules: entry.rules,
                remove: entry.remove,
                started_unix_ms,
            })
            .collect();
        if let Some(held) = drains.iter().find(|d| d.weight.is_some_and(|weight| weight > 0)) {
            return Err(failed(format!(
                "the drain is recorded, but IPVS still shows {} in {} at weight {}: {}",
                held.backend,
                held.service,
                held.weight.unwrap_or_default(),
                self.last_reconcile_errors()
            )));
        }
        json(&DrainReply { drains })
    }

    /// Refuses to drain the last backend serving one of `services`: every other one is at
    /// weight 0, draining or unhealthy.
    fn refuse_last_serving(&self, services: &[ServiceKey], backend: DestKey) -> Result<(), ReplyError> {
        let health = self.health.snapshot();
        for key in services {
            let draining =
                |dest: &DestKey| self.drain_entries.iter().any(|d| (d.service, d.backend) == (*key, *dest));
            let unhealthy = |dest: &DestKey| !health.is_healthy(key, dest);
            if last_serving(&self.config.desired[key], backend, draining, unhealthy) {
                return Err(ReplyError::new(
                    ErrorKind::Refused,
                    format!(
                        "{backend} is the last backend serving {key}: every other one is at weight 0, draining \
                         or unhealthy, so draining it would take the service's traffic away; nothing was \
                         changed (use --force to drain it anyway)"
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn undrain(&mut self, backend: DestKey, service: Option<ServiceKey>) -> Answer {
        let matches = |d: &DrainEntry| d.backend == backend && service.is_none_or(|key| key == d.service);
        let undone: Vec<ServiceKey> =
            self.drain_entries.iter().filter(|d| matches(d)).map(|d| d.service).collect();
        if undone.is_empty() {
            let scope = service.map(|key| format!(" in {key}")).unwrap_or_default();
            return Err(ReplyError::new(
                ErrorKind::NotFound,
                format!("{backend} is not being drained{scope}"),
            ));
        }
        self.record_drains(|drains| drains.retain(|d| !matches(d)))
            .await
            .map_err(|why| failed(format!("cannot record the undrain: {why}; nothing was changed")))?;
        self.reconcile(Trigger::Drain).await;
        let now = self
            .backends_now(undone.iter().map(|service| (*service, backend)), "the drain is undone")
            .await?;
        let undrained = undone
            .into_iter()
            .map(|service| Undrained {
                service,
                backend,
                weight: now.get(&(service, backend)).map(|d| d.destination.weight),
            })
            .collect();
        json(&UndrainReply { undrained })
    }

    async fn drains_answer(&mut self) -> Answer {
        let backends: Vec<drain::Backend> =
            self.drain_entries.iter().map(|d| (d.service, d.backend)).collect();
        let now = self.backends_now(backends, "the drains are known").await?;
        let drains = self
            .drain_entries
            .iter()
            .map(|entry| DrainView {
                drain: entry.clone(),
                ipvs: now.get(&(entry.service, entry.backend)).map(|dest| BackendNow {
                    weight: dest.destination.weight,
                    active_connections: dest.active_connections,
                    inactive_connections: dest.inactive_connections,
                }),
            })
            .collect();
        json(&DrainsReply { drains })
    }

    async fn reload_answer(&mut self, files: &[PathBuf], force: bool) -> Answer {
        let own = self.config_files();
        if files != own {
            let list = |paths: &[PathBuf]| {
                paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            };
            return Err(ReplyError::new(
                ErrorKind::Refused,
                format!(
                    "the daemon runs the configuration in {}, not {}: put the change there and apply again \
                     (or run the daemon with -c); nothing was changed",
                    list(&own),
                    list(files)
                ),
            ));
        }
        match self.reload(force).await {
            Reload::Accepted => {
                let last = &self.record.last_detail;
                let leaving = drain::running(&self.drain_entries).filter(|d| d.removed_from_config).count();
                json(&Reloaded {
                    services: self.config.desired.len(),
                    reconcile: last.result.to_owned(),
                    operations: last.operations.clone(),
                    errors: last.errors.clone(),
                    leaving,
                })
            }
            Reload::Refused(violations) => Err(ReplyError::new(
                ErrorKind::Refused,
                "the configuration exceeds a change limit; the running configuration stays in force (--force \
                 accepts it anyway)",
            )
            .with_details(violations.iter().map(ToString::to_string).collect())),
            Reload::Failed(error) => Err(failed(format!(
                "the configuration cannot be put in force: {error}; the running configuration stays in force"
            ))),
            Reload::Invalid(errors) => Err(ReplyError::new(
                ErrorKind::InvalidConfig,
                format!(
                    "{} error(s) in the configuration; the running configuration stays in force",
                    errors.len()
                ),
            )
            .with_details(errors.iter().map(ToString::to_string).collect())),
        }
    }

    fn last_reconcile_errors(&self) -> String {
        let errors = &self.record.last_detail.errors;
        if errors.is_empty() { "the reconcile did not change it".to_owned() } else { errors.join("; ") }
    }

    /// After a reload: who may use the socket, and the socket file's group.
    pub(super) fn update_control_access(&self, config: &Config) {
        let group = config.control.group.clone();
        if group == self.access.borrow().group {
            return;
        }
        super::control::give_to(&self.options.control_socket, group.as_ref());
        let daemon_uid = self.access.borrow().daemon_uid;
        self.access.send_replace(Access { daemon_uid, group });
    }
}

/// One applied operation as a reload's answer lists it.
pub(super) fn describe(op: &Op) -> String {
    match op {
        Op::AddService(service) => format!("create service {} ({})", service.key, service.scheduler),
        Op::UpdateService(service) => format!("update service {} ({})", service.key, service.scheduler),
        Op::DeleteService(key) => format!("delete service {key}"),
        Op::AddDest(key, dest) => format!("add backend {} to {key} (weight {})", dest.key, dest.weight),
        Op::UpdateDest(key, dest) => format!("set backend {} in {key} to weight {}", dest.key, dest.weight),
        Op::DeleteDest(key, dest) => format!("delete backend {dest} from {key}"),
    }
}

pub(super) fn failed(message: String) -> ReplyError {
    ReplyError::new(ErrorKind::Failed, message)
}

/// The configured services that have `backend` (only `only`, when given).
pub(super) fn services_with(
    config: &Config,
    backend: DestKey,
    only: Option<ServiceKey>,
) -> Result<Vec<ServiceKey>, ReplyError> {
    let services: Vec<ServiceKey> = config
        .desired
        .values()
        .filter(|service| only.is_none_or(|key| key == service.key))
        .filter(|service| service.destinations.contains_key(&backend))
        .map(|service| service.key)
        .collect();
    if services.is_empty() {
        let scope = only.map_or_else(|| "any configured service".to_owned(), |key| key.to_string());
        return Err(ReplyError::new(ErrorKind::NotFound, format!("{backend} is not a backend of {scope}")));
    }
    Ok(services)
}

/// The service's `drain` settings with the request's overrides.
fn rules(config: &Config, service: &ServiceKey, ask: &DrainRequest) -> Rules {
    let defaults = config.settings.get(service).map(|settings| settings.drain).unwrap_or_default();
    let pick = |asked: Option<Duration>, default: Duration| asked.unwrap_or(default);
    Rules {
        grace: pick(ask.grace, defaults.grace),
        timeout: pick(ask.timeout, defaults.timeout),
        quiet: pick(ask.quiet, defaults.quiet),
        include_inactive: ask.include_inactive,
    }
}

/// Whether draining `backend` leaves `service` with no backend serving: every other one has a
/// configured weight of 0, is draining, or is unhealthy.
fn last_serving(
    service: &Service,
    backend: DestKey,
    draining: impl Fn(&DestKey) -> bool,
    unhealthy: impl Fn(&DestKey) -> bool,
) -> bool {
    !service
        .destinations
        .values()
        .any(|dest| dest.key != backend && dest.weight > 0 && !draining(&dest.key) && !unhealthy(&dest.key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Destination, Forwarding};

    fn service(weights: &[(&str, u32)]) -> Service {
        let key: ServiceKey = "tcp:10.0.0.1:80".parse().unwrap();
        Service::new(key, "rr").with_destinations(
            weights
                .iter()
                .map(|(dest, weight)| Destination::new(dest.parse().unwrap(), *weight, Forwarding::Nat)),
        )
    }

    fn key(text: &str) -> DestKey {
        text.parse().unwrap()
    }

    #[test]
    fn the_last_serving_backend_is_the_one_whose_peers_are_all_out() {
        let two = service(&[("10.0.1.1:80", 1), ("10.0.1.2:80", 1)]);
        let none = |_: &DestKey| false;
        assert!(!last_serving(&two, key("10.0.1.1:80"), none, none));
        let other_draining = |dest: &DestKey| *dest == key("10.0.1.2:80");
        assert!(last_serving(&two, key("10.0.1.1:80"), other_draining, none));
        assert!(last_serving(&two, key("10.0.1.1:80"), none, other_draining), "the other is unhealthy");
        let zero = service(&[("10.0.1.1:80", 1), ("10.0.1.2:80", 0)]);
        assert!(last_serving(&zero, key("10.0.1.1:80"), none, none), "the other is configured at weight 0");
        assert!(
            !last_serving(&zero, key("10.0.1.2:80"), none, none),
            "draining a weight-0 backend leaves one"
        );
    }

    #[test]
    fn a_drain_takes_the_services_rules_unless_the_request_overrides_them() {
        let config = config::validate(
            &[config::Source::new(
                "/c.yaml",
                "services:\n  - name: web\n    protocol: tcp\n    vip: 10.0.0.1\n    port: 80\n    scheduler: rr\n    \
                 drain: { grace: 7s, timeout: 1m, quiet: 3s }\n    backends:\n      - address: 10.0.1.1\n",
            )],
            "lb",
        )
        .unwrap();
        let ask = DrainRequest {
            backend: key("10.0.1.1:80"),
            service: None,
            grace: Some(Duration::ZERO),
            timeout: None,
            quiet: None,
            include_inactive: true,
            remove: false,
            force: false,
        };
        let services = services_with(&config, ask.backend, None).unwrap();
        assert_eq!(services.len(), 1);
        let rules = rules(&config, &services[0], &ask);
        assert_eq!(
            rules,
            Rules {
                grace: Duration::ZERO,
                timeout: Duration::from_secs(60),
                quiet: Duration::from_secs(3),
                include_inactive: true
            }
        );
        let missing = services_with(&config, key("10.0.1.9:80"), None).unwrap_err();
        assert_eq!(missing.kind, ErrorKind::NotFound);
        assert_eq!(missing.message, "10.0.1.9:80 is not a backend of any configured service");
        let other =
            services_with(&config, ask.backend, Some("udp:10.0.0.1:53".parse().unwrap())).unwrap_err();
        assert_eq!(other.message, "10.0.1.1:80 is not a backend of udp:10.0.0.1:53");
    }
}
