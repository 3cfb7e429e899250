//! The daemon's side of replication ([`crate::replication`]): starting and restarting its tasks
//! with the configuration, bundling and announcing after each reload on a primary, and putting
//! a replicated configuration in force on a secondary, through the same path as a reload.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
};

use super::{Daemon, Reload, blocking};
use crate::{
    bundle,
    config::{Config, Role},
    replication::{self, Incoming, Keys, Refusal, State, store},
};

/// What the daemon keeps of replication between reloads.
pub(super) struct Replicator {
    pub running: Option<replication::Running>,
    pub status: Arc<Mutex<replication::Status>>,
    pub apply: tokio::sync::mpsc::Sender<Incoming>,
}

impl Replicator {
    pub fn new(apply: tokio::sync::mpsc::Sender<Incoming>) -> Self {
        Self { running: None, status: Arc::default(), apply }
    }

    pub fn status(&self) -> replication::Status {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Daemon {
    pub(super) fn replication_paths(&self) -> replication::Paths {
        replication::Paths {
            state_dir: self.options.state_dir.clone(),
            bundles_dir: self.options.bundles_dir.clone(),
        }
    }

    /// Starts, restarts or stops the replication tasks to match the configuration in force;
    /// then, on a primary, announces its bundle. Keys are read again on every restart.
    pub(super) async fn sync_replication(&mut self) -> Result<(), String> {
        let wanted = self.config.replication.clone();
        let running = self.replicator.running.as_ref().map(|running| running.settings().clone());
        if wanted != running {
            // The old tasks go first: a new listener may need the same address.
            self.replicator.running = None;
            if let Some(settings) = wanted.clone() {
                if settings.role == Role::Primary
                    && replication::drop_in_dir(self.options.config_path.as_deref()).is_none()
                {
                    return Err("replication: a primary replicates its config.d, and the configuration is one file (give -c a directory)".to_owned());
                }
                let files = settings.key_files.clone();
                let keys = blocking(move || Keys::load(&files)).await.map_err(|err| err.to_string())?;
                self.metrics.start_replication_failures();
                let start = replication::Start {
                    node: self.config.node.name.clone(),
                    settings,
                    keys,
                    paths: self.replication_paths(),
                    status: Arc::clone(&self.replicator.status),
                    metrics: Arc::clone(&self.metrics),
                    apply: self.replicator.apply.clone(),
                };
                self.replicator.running =
                    Some(replication::start(start).await.map_err(|err| err.to_string())?);
            } else {
                tracing::info!("replication stopped: the configuration has no replication section");
                *self.replicator.status.lock().unwrap_or_else(PoisonError::into_inner) =
                    replication::Status::default();
            }
        }
        if wanted.is_some_and(|settings| settings.role == Role::Primary) {
            self.announce_bundle().await;
        }
        Ok(())
    }

    /// Primary: bundles `config.d` as it is now and hands the bundle to the announcer.
    async fn announce_bundle(&mut self) {
        let Some(drop_in) = replication::drop_in_dir(self.options.config_path.as_deref()) else { return };
        let bundles = self.options.bundles_dir.clone();
        match blocking(move || bundle::create(&drop_in, &bundles)).await {
            Ok(bundle) => {
                tracing::info!(sha256 = %bundle.sha256, files = bundle.files.len(), "bundle made");
                if let Some(running) = &self.replicator.running {
                    running.announce(bundle.sha256);
                }
            }
            Err(err) => {
                let reason = replication::reason_label(err.reason());
                tracing::error!(
                    reason,
                    "cannot make the replication bundle; the secondary keeps its configuration: {err}"
                );
                self.metrics.record_replication_failure(reason);
            }
        }
    }

    /// Secondary: validates the node's own files with the replicated ones, swaps them in and
    /// reloads; answers the announcement with what happened.
    pub(super) async fn replicated(&mut self, incoming: Incoming) {
        let Incoming { generation, sha256, dir, reply } = incoming;
        let result = self.put_replicated_in_force(generation, &sha256, dir).await;
        let _ = reply.send(result);
    }

    async fn put_replicated_in_force(
        &mut self,
        generation: u64,
        sha256: &str,
        dir: PathBuf,
    ) -> Result<(), Refusal> {
        let replicated = self.replication_paths().replicated();
        let (path, generation_dir) = (self.options.config_path.clone(), dir.clone());
        let state_dir = self.options.state_dir.clone();
        let loaded =
            blocking(move || replication::load_config(path.as_deref(), &state_dir, Some(&generation_dir)))
                .await;
        let config: Config = loaded.map_err(|errors| Refusal::new("invalid_config", errors.to_string()))?;
        if config.replication.as_ref().map(|settings| settings.role) != Some(Role::Secondary) {
            return Err(Refusal::new("role", "this node is no longer a replication secondary"));
        }
        let swapped = {
            let (replicated, dir) = (replicated.clone(), dir.clone());
            blocking(move || store::swap(&replicated, &dir)).await
        };
        let previous =
            swapped.map_err(|err| Refusal::new("io", format!("cannot swap in {}: {err}", dir.display())))?;
        let refusal = match self.put_in_force(config, false).await {
            Reload::Accepted => None,
            Reload::Refused(violations) => Some(Refusal::new(
                "limits",
                violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
            )),
            Reload::Invalid(errors) => Some(Refusal::new("invalid_config", errors.to_string())),
            Reload::Failed(error) => Some(Refusal::new("failed", error)),
        };
        if let Some(refusal) = refusal {
            let restored = {
                let (replicated, previous) = (replicated.clone(), previous.clone());
                blocking(move || store::restore(&replicated, previous.as_deref())).await
            };
            if let Err(err) = restored {
                tracing::error!("cannot put the previous replicated configuration back as current: {err}");
            }
            return Err(refusal);
        }
        let state = State { generation, sha256: Some(sha256.to_owned()) };
        let (state_dir, saved) = (self.options.state_dir.clone(), state.clone());
        if let Err(err) = blocking(move || saved.save(&state_dir)).await {
            tracing::error!(
                "cannot record replicated generation {generation}: {err}; a restart takes it again"
            );
        }
        if let Some(running) = &self.replicator.running {
            running.set_state(state);
        }
        let kept =
            blocking(move || store::prune(&replicated, &[&dir, previous.as_deref().unwrap_or(&dir)])).await;
        if let Err(err) = kept {
            tracing::warn!("cannot remove old replicated configurations: {err}");
        }
        Ok(())
    }
}
