//! The daemon's side of `source.etcd` (docs/fleet.md): it follows the prefix
//! ([`crate::etcd::follow`]) and puts every new configuration there through the same path as a
//! reload ([`Daemon::put_in_force`]), after the checks a bundle's files get and validation with
//! the node's own files. A refusal is logged and counted, and the running configuration stays;
//! so it does while etcd cannot be read. What was put in force is kept on disk as the last good
//! configuration ([`crate::etcd::last_good`]).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Daemon, Reload, blocking};
use crate::{
    config::EtcdSource,
    etcd::{
        Client,
        follow::{self, Follower, Report},
        last_good,
        node::{self, InForce, Refusal, Started},
    },
};

/// What the daemon knows of etcd.
pub(super) struct EtcdView {
    running: Option<(EtcdSource, Follower)>,
    /// The tag of the running follower's reports.
    tag: u64,
    reports: mpsc::Sender<(u64, Report)>,
    /// The configuration from etcd in force.
    in_force: Option<InForce>,
    /// Why the configuration in force is the last good one from disk, until etcd is read.
    from_last_good: Option<String>,
    connected: bool,
    last_error: Option<Value>,
    /// The digest of the last configuration refused, so that reading it again (after a lost
    /// watch) is not refused and counted again.
    refused_sha256: Option<String>,
    last_refused: Option<Value>,
    last_change_unix: Option<u64>,
}

impl EtcdView {
    pub fn new(reports: mpsc::Sender<(u64, Report)>) -> Self {
        Self {
            running: None,
            tag: 0,
            reports,
            in_force: None,
            from_last_good: None,
            connected: false,
            last_error: None,
            refused_sha256: None,
            last_refused: None,
            last_change_unix: None,
        }
    }

    /// The `etcd` object of `/status`; `None` for a node without `source.etcd`.
    pub fn status(&self, source: Option<&EtcdSource>) -> Option<Value> {
        let source = source?;
        let in_force = self.in_force.as_ref();
        Some(json!({
            "endpoints": source.endpoints,
            "prefix": source.prefix,
            "connected": self.connected,
            "revision": in_force.map(|in_force| in_force.revision),
            "sha256": in_force.map(|in_force| &in_force.sha256),
            "files": in_force.map(|in_force| in_force.files.iter().map(|file| &file.name).collect::<Vec<_>>()),
            "from_last_good": self.from_last_good.is_some(),
            "from_last_good_reason": self.from_last_good,
            "last_change_unix": self.last_change_unix,
            "last_error": self.last_error,
            "last_refused": self.last_refused,
        }))
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|since| since.as_secs()).unwrap_or(0)
}

impl Daemon {
    /// At start: what the configuration was read from ([`node::at_start`]); the last good copy
    /// is written when it came from etcd (it has passed the change limits by now).
    pub(super) async fn start_etcd(&mut self, started: Option<Started>) {
        let Some(started) = started else { return };
        self.metrics.start_etcd();
        self.metrics.set_etcd_revision(started.in_force.revision);
        if let Some(why) = &started.from_last_good {
            tracing::warn!(
                revision = started.in_force.revision,
                sha256 = %started.in_force.sha256,
                "started on the last good configuration from etcd, kept on disk: {why}"
            );
            self.metrics.set_etcd_from_last_good(true);
        } else {
            tracing::info!(
                revision = started.in_force.revision,
                sha256 = %started.in_force.sha256,
                prefix = %started.source.prefix,
                "started on the configuration in etcd"
            );
            self.save_last_good(&started.source.prefix, &started.in_force).await;
        }
        if let Some((read, refusal)) = started.refused {
            self.etcd_refused(&read, refusal);
        }
        self.etcd.in_force = Some(started.in_force);
        self.etcd.from_last_good = started.from_last_good;
        self.etcd.last_change_unix = Some(unix_now());
    }

    /// Starts, restarts or stops following etcd to match the configuration in force.
    pub(super) fn sync_etcd(&mut self) {
        let wanted = self.config.source.clone();
        if self.etcd.running.as_ref().map(|(source, _)| source) == wanted.as_ref() {
            return;
        }
        self.etcd.running = None;
        self.etcd.connected = false;
        self.metrics.set_etcd_connected(false);
        let Some(source) = wanted else {
            tracing::info!("no longer following etcd: the configuration has no source.etcd");
            return;
        };
        match Client::new(&source.endpoints, source.tls.as_ref()) {
            Ok(client) => {
                self.etcd.tag += 1;
                let follower =
                    follow::spawn(client, source.prefix.clone(), self.etcd.tag, self.etcd.reports.clone());
                tracing::info!(endpoints = ?source.endpoints, prefix = %source.prefix, "following etcd");
                self.etcd.running = Some((source, follower));
            }
            Err(err) => {
                tracing::error!("cannot follow etcd: {err}; the running configuration stays");
                self.etcd.last_error =
                    Some(json!({ "reason": "client", "detail": err.to_string(), "at_unix": unix_now() }));
            }
        }
        self.publish_status();
    }

    /// A report of the follower: a failure is recorded; what the prefix holds is put in force
    /// when it differs from the configuration in force and was not refused already.
    pub(super) async fn etcd_report(&mut self, (tag, report): (u64, Report)) {
        if tag != self.etcd.tag || self.etcd.running.is_none() {
            return;
        }
        match report {
            Report::Failed { reason, error, retry } => {
                if self.etcd.connected {
                    tracing::warn!(
                        reason = reason.label(),
                        "lost etcd: {error}; the running configuration stays, reading again in {retry:?}"
                    );
                } else {
                    tracing::warn!(
                        reason = reason.label(),
                        "cannot read etcd: {error}; the running configuration stays, trying again in {retry:?}"
                    );
                }
                self.etcd.connected = false;
                self.metrics.set_etcd_connected(false);
                self.metrics.record_etcd_watch_failure(reason);
                self.etcd.last_error = Some(
                    json!({ "reason": reason.label(), "detail": error, "at_unix": unix_now(), "retry_in_s": retry.as_secs_f64() }),
                );
                self.publish_status();
            }
            Report::Holds(read) => {
                if !self.etcd.connected {
                    tracing::info!(revision = read.revision, "reading and watching etcd");
                }
                self.etcd.connected = true;
                self.metrics.set_etcd_connected(true);
                if self.etcd.from_last_good.take().is_some() {
                    self.metrics.set_etcd_from_last_good(false);
                }
                let same = self.etcd.in_force.as_ref().is_some_and(|in_force| in_force.sha256 == read.sha256);
                if !same && self.etcd.refused_sha256.as_deref() != Some(&read.sha256) {
                    self.put_etcd_in_force(read).await;
                }
                self.publish_status();
            }
        }
    }

    async fn put_etcd_in_force(&mut self, read: InForce) {
        let Some(prefix) = self.config.source.as_ref().map(|source| source.prefix.clone()) else { return };
        let path = self.options.config_path.clone();
        let node_local = blocking(move || crate::config::node_local_sources(path.as_deref())).await;
        let checked = node::check(&prefix, &read).and_then(|()| {
            let node_local = node_local.map_err(|errors| node::invalid(&errors))?;
            node::validate(node_local, &read).map_err(|errors| {
                self.reject_invalid(&errors);
                node::invalid(&errors)
            })
        });
        let config = match checked {
            Ok(config) => config,
            Err(refusal) => return self.etcd_refused(&read, refusal),
        };
        let refusal = match self.put_in_force(config, false).await {
            Reload::Accepted => None,
            Reload::Refused(violations) => Some(Refusal::new(
                "limits",
                violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
            )),
            Reload::Invalid(errors) => Some(node::invalid(&errors)),
            Reload::Failed(error) => Some(Refusal::new("failed", error)),
        };
        if let Some(refusal) = refusal {
            return self.etcd_refused(&read, refusal);
        }
        tracing::info!(revision = read.revision, sha256 = %read.sha256, files = read.files.len(), "configuration from etcd in force");
        // Written once in force, not before: a restart starts on it, and one refused by a change
        // limit would be refused again at start.
        self.save_last_good(&prefix, &read).await;
        self.metrics.set_etcd_revision(read.revision);
        self.etcd.in_force = Some(read);
        self.etcd.refused_sha256 = None;
        self.etcd.last_change_unix = Some(unix_now());
    }

    fn etcd_refused(&mut self, read: &InForce, refusal: Refusal) {
        tracing::error!(
            revision = read.revision,
            reason = refusal.reason,
            "configuration from etcd refused; the running configuration stays: {}",
            refusal.detail
        );
        self.metrics.record_etcd_refused(refusal.reason);
        self.etcd.refused_sha256 = Some(read.sha256.clone());
        self.etcd.last_refused = Some(json!({
            "revision": read.revision,
            "sha256": read.sha256,
            "reason": refusal.reason,
            "detail": refusal.detail,
            "at_unix": unix_now(),
        }));
    }

    async fn save_last_good(&self, prefix: &str, in_force: &InForce) {
        let (state_dir, prefix, in_force) =
            (self.options.state_dir.clone(), prefix.to_owned(), in_force.clone());
        if let Err(err) = blocking(move || last_good::save(&state_dir, &prefix, &in_force)).await {
            tracing::error!(
                "cannot keep the configuration from etcd on disk: {err}; a restart while etcd is unreachable starts on an older one"
            );
        }
    }
}
