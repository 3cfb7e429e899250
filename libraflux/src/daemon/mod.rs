//! `libraflux daemon`: keeps IPVS converged. Loads and validates the config before touching
//! anything (the CLI runs the pre-flight checks), reconciles once, tells systemd it is ready,
//! then reconciles on config reload (SIGHUP) and on an interval that also repairs drift.
//! SIGTERM exits without flushing IPVS, so traffic keeps flowing while the daemon is down.

pub mod reconcile;

use std::{
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use self::reconcile::{Outcome, Trigger};
use crate::{
    config::{self, Config},
    ipvs::IpvsClient,
};

/// How the daemon runs, from the command line.
#[derive(Clone, Debug)]
pub struct Options {
    pub config_path: Option<PathBuf>,
    /// How often to reconcile when nothing else asks for it; this is what repairs drift.
    pub reconcile_interval: Duration,
}

/// Counts and times the daemon keeps about itself; `/status` and the metrics read them.
#[derive(Clone, Debug, Default)]
struct Record {
    reconciles: u64,
    drift_repairs: u64,
    reloads_ok: u64,
    reloads_failed: u64,
    last_success: Option<SystemTime>,
    last_outcome: Option<(Trigger, &'static str, usize)>,
}

struct Daemon {
    options: Options,
    config: Config,
    ipvs: IpvsClient,
    record: Record,
    status: tokio::sync::watch::Sender<serde_json::Value>,
}

/// Runs until SIGTERM or SIGINT. `config` is the validated configuration the CLI loaded.
pub async fn run(options: Options, config: Config, ipvs: IpvsClient) -> anyhow::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let (status, _) = tokio::sync::watch::channel(serde_json::Value::Null);
    let mut daemon = Daemon { options, config, ipvs, record: Record::default(), status };
    daemon.reconcile(Trigger::Startup).await;
    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(
        services = daemon.config.desired.len(),
        interval = ?daemon.options.reconcile_interval,
        "daemon ready"
    );
    let mut tick = tokio::time::interval(daemon.options.reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = hangup.recv() => daemon.reload().await,
            _ = tick.tick() => daemon.reconcile(Trigger::Interval).await,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping; IPVS is left as it is, so traffic keeps flowing");
    Ok(())
}

impl Daemon {
    async fn reconcile(&mut self, trigger: Trigger) {
        let config = &self.config;
        let result =
            reconcile::reconcile(&mut self.ipvs, &config.desired, &config.ignore, &config.limits, trigger)
                .await;
        self.record.reconciles += 1;
        match result {
            Ok(outcome) => self.log_outcome(trigger, &outcome),
            Err(err) => {
                tracing::error!(?trigger, error = %err, "reconcile failed: cannot read IPVS");
                self.record.last_outcome = Some((trigger, "error", 0));
            }
        }
        self.publish_status();
    }

    fn log_outcome(&mut self, trigger: Trigger, outcome: &Outcome) {
        let operations = match outcome {
            Outcome::NoChanges => {
                tracing::debug!(?trigger, "reconcile: no changes");
                0
            }
            Outcome::Applied { ops, drift } => {
                for op in ops {
                    tracing::info!(?trigger, drift, operation = %op.operation(), "applied");
                }
                if *drift {
                    self.record.drift_repairs += 1;
                    tracing::warn!(
                        operations = ops.len(),
                        "drift repaired: IPVS was changed outside LibraFlux"
                    );
                }
                ops.len()
            }
            Outcome::Refused { violations } => {
                for violation in violations {
                    tracing::error!(?trigger, %violation, "plan refused by a change limit; not forced");
                }
                0
            }
            Outcome::Failed { ops, applied, errors } => {
                for error in errors {
                    tracing::error!(?trigger, %error, applied, total = ops.len(), "the kernel refused an operation");
                }
                *applied
            }
        };
        if outcome.result_label() == "ok" {
            self.record.last_success = Some(SystemTime::now());
        }
        self.record.last_outcome = Some((trigger, outcome.result_label(), operations));
    }

    /// SIGHUP: a config that fails validation is rejected and the running one stays in force.
    async fn reload(&mut self) {
        match config::load(self.options.config_path.as_deref()) {
            Ok(config) => {
                self.record.reloads_ok += 1;
                tracing::info!(services = config.desired.len(), "config reloaded");
                self.config = config;
                self.reconcile(Trigger::ConfigReload).await;
            }
            Err(errors) => {
                self.record.reloads_failed += 1;
                for error in &errors.0 {
                    tracing::error!(%error, "config reload rejected; the running config stays in force");
                }
                self.publish_status();
            }
        }
    }

    fn publish_status(&self) {
        let record = &self.record;
        let unix = |time: SystemTime| time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let status = json!({
            "node": self.config.node.name,
            "services": self.config.desired.len(),
            "reconciles": record.reconciles,
            "drift_repairs": record.drift_repairs,
            "reloads": { "ok": record.reloads_ok, "failed": record.reloads_failed },
            "last_successful_reconcile_unix": record.last_success.map(unix),
            "last_reconcile": record.last_outcome.map(|(trigger, result, operations)| json!({
                "trigger": format!("{trigger:?}").to_lowercase(),
                "result": result,
                "operations": operations,
            })),
        });
        self.status.send_replace(status);
    }
}

/// Tells systemd (Type=notify) about the daemon's state; a no-op outside systemd.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(state) {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}
