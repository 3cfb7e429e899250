//! The kernel's connection sync daemon as the daemon runs it (issue 17; operators:
//! docs/operations.md, "HA pairs"). The kernel is the source of truth for the node's role: the
//! daemon never keeps one of its own, it reads the kernel's sync daemons whenever it needs them.
//!
//! - At start, with `sync:` configured: a daemon with the configured parameters that runs is
//!   kept, whatever its state, so a restart of LibraFlux does not change the role; otherwise the
//!   configured parameters are started in the role the kernel runs (`start_as` when it runs none).
//! - A reload that changes `sync:` restarts the daemons that ran with the old parameters, in
//!   their roles, with the new ones; a reload that removes `sync:` stops them.
//! - `sync_role` on the control socket (keepalived's notify scripts run `libraflux sync
//!   master|backup`) gives the node that role: [`crate::ipvs::sync::changes_for_role`].
//! - Without `sync:` nothing here ever sends a change: keepalived may run the sync daemons.
//! - SIGTERM leaves them running, as it leaves IPVS: connections keep syncing while LibraFlux
//!   restarts.

use serde_json::{Value, json};

use super::{Daemon, requests::Answer};
use crate::{
    config::SyncConfig,
    control::{ErrorKind, ReplyError, protocol::SyncReply},
    ipvs::{
        SyncChange, SyncDaemon, SyncState,
        sync::{carry_out, changes_for_role, set_role},
    },
};

/// What the kernel ran when the daemon last looked: shown in `/status` and the metrics.
#[derive(Debug, Default)]
pub(super) struct SyncView {
    daemons: Vec<SyncDaemon>,
    /// Why they could not be read last time.
    error: Option<String>,
}

impl SyncView {
    /// `/status`'s `sync`: whether `sync:` is configured, and what the kernel runs.
    pub(super) fn json(&self, configured: bool) -> Value {
        json!({ "configured": configured, "daemons": self.daemons, "error": self.error })
    }
}

/// What to send at start (and when a reload adds `sync:`): see the module documentation.
fn changes_at_start(config: &SyncConfig, running: &[SyncDaemon]) -> Vec<SyncChange> {
    if running.iter().any(|daemon| daemon.runs_as(&config.daemon(daemon.state))) {
        return Vec::new();
    }
    let role = match running {
        [only] => only.state,
        _ => config.start_as,
    };
    changes_for_role(running, &config.daemon(role))
}

/// What to send when a reload takes `sync:` from `old` to `new`.
fn changes_on_reload(
    old: Option<&SyncConfig>,
    new: Option<&SyncConfig>,
    running: &[SyncDaemon],
) -> Vec<SyncChange> {
    let ran_with = |config: &SyncConfig| -> Vec<SyncState> {
        running
            .iter()
            .filter(|daemon| daemon.runs_as(&config.daemon(daemon.state)))
            .map(|d| d.state)
            .collect()
    };
    match (old, new) {
        (None, None) => Vec::new(),
        (Some(old), None) => ran_with(old).into_iter().map(SyncChange::Stop).collect(),
        (Some(old), Some(new)) if old.daemon(SyncState::Master) != new.daemon(SyncState::Master) => {
            let roles = ran_with(old);
            if roles.is_empty() {
                return changes_at_start(new, running);
            }
            roles
                .into_iter()
                .flat_map(|state| [SyncChange::Stop(state), SyncChange::Start(new.daemon(state))])
                .collect()
        }
        (_, Some(new)) => changes_at_start(new, running),
    }
}

impl Daemon {
    /// At start, after the first reconcile (the backup's connections find their services).
    pub(super) async fn start_sync(&mut self) {
        let Some(config) = self.config.sync.clone() else {
            self.refresh_sync().await;
            return;
        };
        match self.ipvs.sync_daemons().await {
            Ok(running) => {
                let changes = changes_at_start(&config, &running);
                if changes.is_empty() {
                    for daemon in &running {
                        tracing::info!(%daemon, "sync: the kernel runs it; kept, in its role");
                    }
                    if running.len() > 1 {
                        tracing::warn!(
                            "sync: the kernel runs both a master and a backup sync daemon; `libraflux sync \
                             master|backup` keeps the one of the node's role"
                        );
                    }
                }
                self.send_sync_changes(&changes, "at start").await;
            }
            Err(err) => {
                tracing::error!(error = %err, "sync: cannot read the kernel's sync daemons; none started")
            }
        }
        self.refresh_sync().await;
    }

    /// After a reload that replaced `previous` with the configuration now in force.
    pub(super) async fn reload_sync(&mut self, previous: Option<&SyncConfig>) {
        let new = self.config.sync.clone();
        if previous.is_none() && new.is_none() {
            return;
        }
        match self.ipvs.sync_daemons().await {
            Ok(running) => {
                let changes = changes_on_reload(previous, new.as_ref(), &running);
                if new.is_none() {
                    tracing::info!(
                        stopping = changes.len(),
                        "sync: removed from the configuration: stopping the sync daemons LibraFlux ran with its \
                         parameters; any other is left alone"
                    );
                }
                self.send_sync_changes(&changes, "on reload").await;
            }
            Err(err) => {
                tracing::error!(error = %err, "sync: cannot read the kernel's sync daemons; nothing changed")
            }
        }
        self.refresh_sync().await;
    }

    /// Sends `changes`, logging each; the first refusal ends them (logged with the fix).
    async fn send_sync_changes(&mut self, changes: &[SyncChange], when: &str) {
        let (done, result) = carry_out(&mut self.ipvs, changes).await;
        for change in &changes[..done] {
            tracing::info!("sync {when}: {change}");
        }
        if let Err(err) = result {
            tracing::error!(
                error = %err,
                "sync {when}: the kernel refused; no sync daemon was started in its place (`libraflux sync \
                 master|backup`, or a reload, tries again)"
            );
        }
    }

    /// Reads what the kernel runs, for `/status` and `libraflux_ipvs_sync_daemon` (every collect,
    /// and after every change): someone may have changed it with ipvsadm.
    pub(super) async fn refresh_sync(&mut self) {
        match self.ipvs.sync_daemons().await {
            Ok(daemons) => {
                self.metrics.set_sync_daemons(&daemons.iter().map(|d| d.state).collect::<Vec<_>>());
                self.sync = SyncView { daemons, error: None };
            }
            Err(err) => {
                if self.sync.error.is_none() {
                    tracing::warn!(error = %err, "sync: cannot read the kernel's sync daemons");
                }
                self.sync.error = Some(err.to_string());
            }
        }
        let view = self.sync.json(self.config.sync.is_some());
        self.status.send_modify(|status| {
            if let Some(status) = status.as_object_mut() {
                status.insert("sync".to_owned(), view);
            }
        });
    }

    /// `sync_role`: gives the node `role` and answers with what the kernel shows afterwards.
    pub(super) async fn sync_role_answer(&mut self, role: SyncState) -> Answer {
        let config = self.config.sync.clone().ok_or_else(not_configured)?;
        let wanted = config.daemon(role);
        let changed = set_role(&mut self.ipvs, &wanted).await;
        self.refresh_sync().await;
        let changed = changed.map_err(|err| failed(format!("nothing was changed: {err}")))?;
        for change in &changed.done {
            tracing::info!("sync: {change}");
        }
        if let Some(problem) = changed.problem(&wanted) {
            return Err(failed(problem));
        }
        let actions = changed.done.iter().map(ToString::to_string).collect();
        super::requests::json(&SyncReply { actions, daemons: changed.after.unwrap_or_default() })
    }

    /// `sync_status`: what the kernel runs now.
    pub(super) async fn sync_status_answer(&mut self) -> Answer {
        let daemons = self.ipvs.sync_daemons().await.map_err(|err| failed(err.to_string()))?;
        super::requests::json(&SyncReply { actions: Vec::new(), daemons })
    }
}

fn not_configured() -> ReplyError {
    ReplyError::new(
        ErrorKind::Refused,
        "sync: is not configured in the daemon's configuration, so LibraFlux leaves the sync daemons alone; \
         nothing was changed",
    )
}

fn failed(message: String) -> ReplyError {
    ReplyError::new(ErrorKind::Failed, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::sync::example as config,
        ipvs::{Ipvs, MemoryIpvs},
    };

    /// The end state of `changes` on `ipvs`.
    async fn after<I: Ipvs>(ipvs: &mut I, changes: &[SyncChange]) -> Vec<SyncDaemon> {
        let (_, result) = carry_out(ipvs, changes).await;
        result.expect("the changes apply");
        ipvs.sync_daemons().await.expect("listing")
    }

    fn block_on<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    fn states(daemons: &[SyncDaemon]) -> Vec<SyncState> {
        daemons.iter().map(|daemon| daemon.state).collect()
    }

    #[test]
    fn a_start_keeps_a_daemon_with_the_configured_parameters_in_its_role() {
        let eth1 = config("eth1", SyncState::Backup);
        let mut kernel = MemoryIpvs::new();
        let running = block_on(after(&mut kernel, &changes_at_start(&eth1, &[])));
        assert_eq!(states(&running), [SyncState::Backup], "none runs: start_as");
        // keepalived made the node master; LibraFlux restarts: the kernel's role stays.
        block_on(after(&mut kernel, &changes_for_role(&running, &eth1.daemon(SyncState::Master))));
        let running = block_on(kernel.sync_daemons()).unwrap();
        assert_eq!(changes_at_start(&eth1, &running), []);
        // The configuration changed while LibraFlux was down: same role, new parameters.
        let eth2 = config("eth2", SyncState::Backup);
        let running = block_on(after(&mut kernel, &changes_at_start(&eth2, &running)));
        assert_eq!(running, [with_defaults(eth2.daemon(SyncState::Master))]);
    }

    #[test]
    fn a_reload_restarts_changed_parameters_in_the_same_role_and_stops_on_removal() {
        let eth1 = config("eth1", SyncState::Backup);
        let mut kernel = MemoryIpvs::new();
        block_on(after(&mut kernel, &changes_for_role(&[], &eth1.daemon(SyncState::Master))));
        let running = block_on(kernel.sync_daemons()).unwrap();
        let start_as_only = SyncConfig { start_as: SyncState::Master, ..eth1.clone() };
        assert_eq!(changes_on_reload(Some(&eth1), Some(&start_as_only), &running), [], "nothing to restart");
        let ttl2 = SyncConfig { ttl: 2, ..eth1.clone() };
        let changes = changes_on_reload(Some(&eth1), Some(&ttl2), &running);
        assert_eq!(
            changes,
            [SyncChange::Stop(SyncState::Master), SyncChange::Start(ttl2.daemon(SyncState::Master))]
        );
        let running = block_on(after(&mut kernel, &changes));
        // Someone else's backup beside it is left alone when sync: goes.
        let other = SyncDaemon { interface: "eth9".to_owned(), ..eth1.daemon(SyncState::Backup) };
        block_on(kernel.start_sync_daemon(&other)).unwrap();
        let mut with_other = running.clone();
        with_other.push(with_defaults(other.clone()));
        assert_eq!(changes_on_reload(Some(&ttl2), None, &with_other), [SyncChange::Stop(SyncState::Master)]);
        assert_eq!(changes_on_reload(None, None, &with_other), []);
        // sync: added by a reload: as at start.
        assert_eq!(changes_on_reload(None, Some(&ttl2), &running), []);
    }

    #[test]
    fn the_kernels_refusal_ends_the_changes() {
        let mut kernel = MemoryIpvs::new();
        kernel.set_interfaces(["eth1"]);
        let changes = changes_at_start(&config("eth9", SyncState::Master), &[]);
        let (done, result) = block_on(carry_out(&mut kernel, &changes));
        assert_eq!(done, 0);
        let err = result.unwrap_err();
        assert_eq!(
            err.to_string(),
            "starting the master sync daemon on eth9 (syncid 1): No such device (os error 19)"
        );
    }

    /// `daemon` as the kernel reports it (MTU 1500, IPv4 group).
    fn with_defaults(daemon: SyncDaemon) -> SyncDaemon {
        SyncDaemon { max_len: Some(1472), ..daemon }
    }
}
