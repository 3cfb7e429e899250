//! What the daemon says about itself: systemd's status line and the `/status` document (also
//! the control socket's `status` answer).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::{Daemon, canary};

impl Daemon {
    /// systemd's status line (`STATUS=`): converged, or degraded and why.
    pub(super) fn status_line(&self) -> String {
        match &self.degraded {
            None if self.continue_with.is_some() => {
                format!(
                    "converging: {} services, a plan larger than one turn under way",
                    self.config.desired.len()
                )
            }
            None => format!("converged: {} services", self.config.desired.len()),
            Some(why) => format!(
                "degraded: the last reconcile failed ({why}); retrying every {:?}",
                self.options.reconcile_interval
            ),
        }
    }

    /// Updates only the eBPF traffic view of the status document: a full [`Daemon::publish_status`]
    /// renders every drain and health entry, too much to do on every collect of a large node.
    pub(super) fn publish_traffic(&self) {
        let traffic = json!(self.observer.traffic());
        self.status.send_modify(|status| {
            if let Some(status) = status.as_object_mut() {
                status.insert("traffic".to_owned(), traffic);
            }
        });
    }

    pub(super) fn publish_status(&self) {
        let record = &self.record;
        let unix = |time: SystemTime| time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let status = json!({
            "node": self.config.node.name,
            "services": self.config.desired.len(),
            "reconciles": record.reconciles,
            "drift_repairs": record.drift_repairs,
            "reloads": { "ok": record.reloads_ok, "failed": record.reloads_failed },
            "config_generation": record.config_generation,
            "last_successful_reconcile_unix": record.last_success.map(unix),
            "fail_open": self.fail_open.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "degraded": self.degraded,
            "health": self.health.snapshot(),
            "ebpf_attached": self.observer.attached(),
            "drains": self.drain_entries,
            "canaries": self.canaries.iter().map(canary::status).collect::<Vec<_>>(),
            "circuit_breakers": self.breakers_status(),
            "replication": self.config.replication.as_ref().map(|_| self.replicator.status()),
            "etcd": self.etcd.status(self.config.source.as_ref()),
            "traffic": self.observer.traffic(),
            "sync": self.sync.json(self.config.sync.is_some()),
            "announce": self.announce_status(),
            "last_reconcile": record.last_outcome.map(|(trigger, result, operations)| json!({
                "trigger": format!("{trigger:?}").to_lowercase(),
                "result": result,
                "operations": operations,
            })),
        });
        self.status.send_replace(status);
    }
}
