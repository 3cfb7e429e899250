//! Putting a configuration in force: at start (measured against the configuration accepted
//! last), on SIGHUP or a control-socket `reload`, for a replicated configuration on a secondary,
//! and for a configuration from etcd on a fleet node; all through [`Daemon::put_in_force`].

use std::time::Duration;

use super::{Daemon, Options, accepted, blocking, reconcile, reconcile::Trigger};
use crate::{
    config::{Config, ConfigErrors},
    ipvs::IpvsClient,
    metrics::ReconcileResult,
    plan::LimitViolation,
};

/// What a reload did with the configuration.
#[derive(Debug)]
pub(super) enum Reload {
    /// In force and reconciled.
    Accepted,
    /// Over a change limit: the running configuration stays.
    Refused(Vec<LimitViolation>),
    /// Does not validate: the running configuration stays.
    Invalid(ConfigErrors),
    /// Valid, but cannot be put in force (its `metrics.listen` cannot be bound): the running
    /// configuration stays.
    Failed(String),
}

/// Refuses a configuration that changes more than its limits allow from both the configuration
/// accepted last and the table; records it as accepted otherwise.
pub(super) async fn admit_at_start(
    options: &Options,
    config: &Config,
    ipvs: &mut IpvsClient,
) -> anyhow::Result<()> {
    let observed = crate::ipvs::observed(ipvs).await?;
    let accepted = accepted::load(&options.state_dir).unwrap_or_else(|err| {
        tracing::warn!(error = %err, "cannot read the configuration accepted last; measuring against the table");
        None
    });
    reconcile::admit_at_start(config, accepted.as_ref(), &observed)
        .map_err(|violations| reconcile::LimitRefusal { violations })?;
    record_accepted(options, config).await;
    Ok(())
}

pub(super) async fn record_accepted(options: &Options, config: &Config) {
    let (dir, desired) = (options.state_dir.clone(), config.desired.clone());
    if let Err(err) = blocking(move || accepted::save(&dir, &desired)).await {
        tracing::error!(error = %err, "cannot record the accepted configuration; a restart measures limits against the table");
    }
}

impl Daemon {
    /// SIGHUP, or `reload` on the control socket: a config that fails validation, changes more
    /// than its limits allow (unless `force`), or cannot be put in force is rejected, and the
    /// running one stays in force.
    pub(super) async fn reload(&mut self, force: bool) -> Reload {
        let (path, state_dir) = (self.options.config_path.clone(), self.options.state_dir.clone());
        match blocking(move || crate::replication::load_config(path.as_deref(), &state_dir, None)).await {
            Ok(config) => self.put_in_force(config, force).await,
            Err(errors) => {
                self.reject_invalid(&errors);
                Reload::Invalid(errors)
            }
        }
    }

    /// A configuration that does not validate: logged and counted as a failed reload; the
    /// running one stays in force.
    pub(super) fn reject_invalid(&mut self, errors: &ConfigErrors) {
        self.record.reloads_failed += 1;
        self.metrics.record_reload(false);
        for error in &errors.0 {
            tracing::error!(%error, "config reload rejected; the running config stays in force");
        }
        self.publish_status();
        self.metrics.record_change_refused("invalid_config");
    }

    /// Puts a validated configuration in force, as a reload does: refused over a change limit
    /// (unless `force`), rejected when it cannot be put in force; reconciled otherwise.
    pub(super) async fn put_in_force(&mut self, config: Config, force: bool) -> Reload {
        if !force && let Err(violations) = reconcile::admit(&config, &self.config.desired) {
            self.record.reloads_failed += 1;
            self.metrics.record_reload(false);
            self.metrics.record_reconcile(ReconcileResult::Refused, Duration::ZERO, &[]);
            for violation in &violations {
                tracing::error!(%violation, "config reload refused by a change limit; the running config stays in force");
            }
            self.publish_status();
            for violation in &violations {
                self.metrics.record_change_refused(violation.limit_name());
            }
            return Reload::Refused(violations);
        }
        let prepared = match self.background.prepare(&config).await {
            Ok(prepared) => prepared,
            Err(err) => {
                self.record.reloads_failed += 1;
                self.metrics.record_reload(false);
                let error = format!("{:#}", anyhow::Error::from(err));
                tracing::error!(%error, "config reload rejected; the running config stays in force");
                self.publish_status();
                self.metrics.record_change_refused("failed");
                return Reload::Failed(error);
            }
        };
        let over = if force { reconcile::admit(&config, &self.config.desired).err() } else { None };
        for violation in over.unwrap_or_default() {
            tracing::warn!(%violation, "config reload over a change limit, accepted as forced");
        }
        record_accepted(&self.options, &config).await;
        self.record.reloads_ok += 1;
        self.metrics.record_reload(true);
        tracing::info!(services = config.desired.len(), "config reloaded");
        self.update_control_access(&config);
        if config != self.config {
            self.record.config_generation += 1;
            self.metrics.record_config_change(self.record.config_generation);
        }
        let previous = std::mem::replace(&mut self.config, config);
        self.background.reconfigure(&self.config, prepared).await;
        self.metrics.set_max_series(self.config.metrics.max_series);
        self.forget_series(&previous);
        self.observer.reconfigure(&self.config);
        self.metrics.set_ebpf_attached(self.observer.attached());
        self.update_health_checks();
        self.sync_canaries();
        self.configure_breakers();
        self.reload_announce(previous.announce.as_ref()).await;
        self.reconcile(Trigger::ConfigReload).await;
        self.reload_sync(previous.sync.as_ref()).await;
        if let Err(err) = self.sync_replication().await {
            tracing::error!("replication is not running: {err}");
            self.metrics.record_replication_failure("listen");
        }
        self.sync_etcd();
        Reload::Accepted
    }

    /// Drops the health series of the backends and services `previous` had and the running
    /// config has not. (Their IPVS series go when IPVS no longer lists them: a removed backend
    /// keeps its counters while it drains.)
    fn forget_series(&self, previous: &Config) {
        for (key, service) in previous.desired.iter() {
            let Some(now) = self.config.desired.get(key) else {
                self.metrics.forget_service(*key);
                continue;
            };
            for backend in service.destinations.keys().filter(|b| !now.destinations.contains_key(b)) {
                self.metrics.forget_backend(*key, *backend);
            }
        }
    }
}
