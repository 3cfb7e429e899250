//! `libraflux daemon`: keeps IPVS converged. Loads and validates the config before touching
//! anything (the CLI runs the pre-flight checks), reconciles once, tells systemd it is ready,
//! then reconciles on config reload (SIGHUP), on a change in etcd (`source.etcd`) and on an
//! interval that also repairs drift.
//! SIGTERM exits without flushing IPVS, so traffic keeps flowing while the daemon is down; VIPs
//! announced through BIRD are withdrawn first.

mod accepted;
mod announce;
mod background;
mod breaker;
mod canary;
mod control;
mod drains;
mod etcd;
mod health_events;
mod loading;
mod observer;
mod persist;
pub mod reconcile;
mod reload;
mod replication;
mod requests;
mod status;
mod sync;
mod watch;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::signal::unix::{SignalKind, signal};

pub use self::control::ControlError;
use self::{
    background::Background,
    observer::Observer,
    reconcile::{Outcome, Trigger},
    reload::{Reload, admit_at_start},
};
use crate::{
    config::{self, Config},
    control::Access,
    drain::{self, DrainEntry, DrainStore},
    health::{self, Scheduler, SchedulerOptions},
    ipvs::IpvsClient,
    metrics::{self, Metrics, ReconcileResult},
    model::ServiceKey,
    plan::Removal,
};

/// How the daemon runs, from the command line.
#[derive(Clone, Debug)]
pub struct Options {
    pub config_path: Option<PathBuf>,
    /// Where drains are kept (`drains.json`).
    pub state_dir: PathBuf,
    /// How often to reconcile when nothing else asks for it; this is what repairs drift.
    pub reconcile_interval: Duration,
    /// Where the control socket listens (`/run/libraflux/control.sock`).
    pub control_socket: PathBuf,
    /// Where replication bundles are made (primary) or kept (secondary).
    pub bundles_dir: PathBuf,
    /// What a node with `source.etcd` started on ([`crate::etcd::node::at_start`]).
    pub etcd: Option<crate::etcd::node::Started>,
}

/// Counts and times the daemon keeps about itself; `/status` and the metrics read them.
#[derive(Clone, Debug, Default)]
struct Record {
    reconciles: u64,
    drift_repairs: u64,
    reloads_ok: u64,
    reloads_failed: u64,
    /// Configurations put in force that changed what the daemon runs; 1 from start.
    config_generation: u64,
    last_success: Option<SystemTime>,
    last_outcome: Option<(Trigger, &'static str, usize)>,
    /// What the last reconcile did, for the control socket's answers.
    last_detail: LastReconcile,
}

/// What the last reconcile did: `no_changes`, `applied`, `failed` (the kernel refused an
/// operation) or `error` (IPVS could not be read); the operations; the errors.
#[derive(Clone, Debug, Default)]
struct LastReconcile {
    result: &'static str,
    operations: Vec<String>,
    errors: Vec<String>,
}

struct Daemon {
    options: Options,
    background: Background,
    config: Config,
    ipvs: IpvsClient,
    record: Record,
    metrics: Arc<Metrics>,
    health: Scheduler,
    observer: Observer,
    drain_writer: persist::DrainWriter,
    canary_writer: persist::CanaryWriter,
    /// The canaries' rollouts: read from the state directory at start, then changed here only.
    canaries: Vec<crate::canary::CanaryEntry>,
    /// The circuit breakers of the services with `circuit_breaker:`, and the eBPF readings they
    /// were last fed.
    breakers: crate::breaker::Breakers,
    breaker_seen: breaker::Seen,
    /// What the running canaries did to their services' weights at the last reconcile.
    canary_weights: Vec<crate::canary::Weighted>,
    /// The drains: read from the state directory at start, then changed here only.
    drain_entries: Vec<DrainEntry>,
    /// IPVS InPkts of each running drain's backend, and when it last grew.
    drain_packets: drain::PacketWatch,
    /// Services kept whole although every backend is unhealthy, as of the last reconcile.
    fail_open: std::collections::BTreeSet<ServiceKey>,
    status: tokio::sync::watch::Sender<serde_json::Value>,
    /// When the health transitions seen since the last reconcile are reconciled
    /// ([`HEALTH_COALESCE`] after the first of them).
    health_due: Option<tokio::time::Instant>,
    /// Why the last reconcile did not converge; `None` when it did.
    degraded: Option<String>,
    /// The last reconcile left ops for another turn, which runs next (with this trigger).
    continue_with: Option<Trigger>,
    /// Those ops, and what they were planned from.
    pending: Option<Pending>,
    /// Who may use the control socket; a reload may change its group.
    access: tokio::sync::watch::Sender<Access>,
    /// Why the rollback log could not be read last time, so that it is said once, not every interval.
    rollbacks_unreadable: Option<String>,
    replicator: replication::Replicator,
    /// The kernel's connection sync daemons, as last read.
    sync: sync::SyncView,
    /// The VIPs announced through BIRD (`announce:`).
    announcing: announce::Announcing,
    /// Who else writes to IPVS: the interval reads the table only after someone did.
    table_watch: watch::TableWatch,
    /// `source.etcd`: the follower and what it read.
    etcd: etcd::EtcdView,
}

/// The rest of a plan larger than one turn: sent as planned while what it was planned from
/// (the configuration with health and drains applied, and the drains that ended) is unchanged,
/// without reading the table again; planned again from the table otherwise.
struct Pending {
    desired: Arc<config::DesiredState>,
    drained: std::collections::BTreeSet<drain::Backend>,
    leaving: crate::plan::Leaving,
    rest: crate::plan::Phases,
}

/// How often drains are looked for and evaluated.
const DRAIN_TICK: Duration = Duration::from_millis(500);

/// Health transitions within this long of the first one are reconciled together, once: a burst
/// (a switch port flapping under many backends) costs one plan and one table read, not one each.
/// This is the most a transition waits before IPVS follows it.
const HEALTH_COALESCE: Duration = Duration::from_millis(250);

/// `/healthz` fails when no reconcile finished for this many intervals.
const STALE_INTERVALS: u32 = 3;

/// Runs until SIGTERM or SIGINT. `config` is the validated configuration the CLI loaded; a
/// configuration over a change limit is refused ([`reconcile::LimitRefusal`]) before anything
/// is touched.
pub async fn run(mut options: Options, config: Config, mut ipvs: IpvsClient) -> anyhow::Result<()> {
    // First: a second daemon must stop here, before it reads or touches anything.
    let socket = control::Socket::bind(&options.control_socket, config.control.group.as_ref())?;
    admit_at_start(&options, &config, &mut ipvs).await?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let (status, status_reader) = tokio::sync::watch::channel(serde_json::Value::Null);
    let metrics = Arc::new(Metrics::new(&config.node.name, config.metrics.max_series));
    let staleness = options.reconcile_interval * STALE_INTERVALS;
    let endpoint = metrics::http::Endpoint::new(Arc::clone(&metrics), status_reader, staleness);
    let (table_writes, table_writes_reader) = tokio::sync::watch::channel(None);
    let background = Background::start(&config, endpoint, table_writes_reader).await?;
    let table_watch = watch::TableWatch::new(table_writes);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let daemon_uid = unsafe { libc::geteuid() };
    let (access, access_reader) =
        tokio::sync::watch::channel(Access { daemon_uid, group: config.control.group.clone() });
    let (control, mut calls) = socket.spawn(access_reader);
    tracing::info!(path = %options.control_socket.display(), "control socket ready");
    let (health, mut health_events) = Scheduler::new(SchedulerOptions::default());
    let drains = DrainStore::new(&options.state_dir);
    let drain_entries = drains::load(&drains).await;
    let canary_store = crate::canary::CanaryStore::new(&options.state_dir);
    let canaries = canary::load(&canary_store).await;
    let (replicated_to_apply, mut replicated) = tokio::sync::mpsc::channel(1);
    let (etcd_reports, mut from_etcd) = tokio::sync::mpsc::channel(4);
    let etcd_started = options.etcd.take();
    let announcing = announce::Announcing::start(config.announce.as_ref()).await;
    let (loader, mut loads) = loading::channel();
    let observer = Observer::start(&config, loader.clone()).await;
    let mut daemon = Daemon {
        options,
        background,
        observer,
        drain_writer: persist::DrainWriter::drains(drains),
        canary_writer: persist::CanaryWriter::canaries(canary_store),
        canaries,
        canary_weights: Vec::new(),
        breakers: Default::default(),
        breaker_seen: Default::default(),
        drain_entries,
        drain_packets: Default::default(),
        config,
        ipvs,
        record: Record::default(),
        metrics,
        health,
        fail_open: Default::default(),
        status,
        health_due: None,
        degraded: None,
        continue_with: None,
        pending: None,
        access,
        rollbacks_unreadable: None,
        replicator: replication::Replicator::new(replicated_to_apply),
        sync: Default::default(),
        announcing,
        table_watch,
        etcd: etcd::EtcdView::new(etcd_reports),
    };
    daemon.metrics.set_ebpf_attached(daemon.observer.attached());
    daemon.record.config_generation = 1;
    daemon.metrics.record_config_change(1);
    daemon.start_etcd(etcd_started).await;
    daemon.count_rollbacks().await;
    daemon.update_health_checks();
    daemon.export_drains();
    daemon.sync_canaries();
    daemon.export_canaries();
    daemon.configure_breakers();
    daemon.reconcile(Trigger::Startup).await;
    daemon.sync_replication().await.map_err(|err| anyhow::anyhow!(err))?;
    daemon.start_sync().await;
    daemon.sync_etcd();
    // Ready either way: a daemon whose first reconcile failed still serves health checks, drains
    // and metrics, and retries every interval; systemd's status line says it is degraded.
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&daemon.status_line())]);
    // After READY, and the loop goes on while it loads (seconds on a slow machine): until the
    // watch works every interval reads the table, as without it.
    daemon.table_watch.start(&loader);
    tracing::info!(
        services = daemon.config.desired.len(),
        interval = ?daemon.options.reconcile_interval,
        degraded = daemon.degraded.as_deref(),
        "daemon ready"
    );
    let watchdog = sd_notify::watchdog_enabled();
    let mut watchdog_tick =
        tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |every| every / 2));
    // A loop that was held up pings once when it is back, not once per missed tick.
    watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tick = tokio::time::interval(daemon.options.reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut flows_tick = tokio::time::interval(daemon.config.metrics.collect_interval);
    flows_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain_tick = tokio::time::interval(DRAIN_TICK);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if daemon.continue_with.is_some() {
            // A turn may never have waited (netlink answers at once), and the runtime takes in a
            // signal only when it polls its driver, which a yield lets it do before the select.
            tokio::task::yield_now().await;
        }
        // In this order when several are ready: signals first (so that a plan carried out over
        // several turns never holds SIGTERM or SIGHUP back for more than one turn), then the
        // control socket and health, then the next turn of such a plan, then periodic work.
        tokio::select! {
            biased;
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => drop(daemon.reload(false).await),
            _ = watchdog_tick.tick(), if watchdog.is_some() => notify(&[sd_notify::NotifyState::Watchdog]),
            Some(call) = calls.recv() => daemon.answer(call).await,
            Some(incoming) = replicated.recv() => daemon.replicated(incoming).await,
            Some(report) = from_etcd.recv() => daemon.etcd_report(report).await,
            Some(event) = health_events.recv() => daemon.health_event(event),
            Some(loaded) = loads.recv() => daemon.loaded(loaded).await,
            () = sleep_until(daemon.health_due), if daemon.health_due.is_some() => {
                daemon.reconcile(Trigger::HealthChange).await;
            }
            () = sleep_until(daemon.announcing.due), if daemon.announcing.due.is_some() => {
                daemon.announce_due().await;
            }
            // Before the periodic work: when a drain tick or a collect takes longer than its period
            // (thousands of drains under an emulated CPU), they must not starve a plan's turns.
            () = std::future::ready(()), if daemon.continue_with.is_some() => {
                let trigger = daemon.continue_with.unwrap_or(Trigger::Interval);
                daemon.reconcile(trigger).await;
            }
            // Only while there is something to evaluate: at rest the daemon sleeps.
            _ = drain_tick.tick(), if daemon.ticks_wanted() => {
                daemon.drain_tick().await;
                daemon.canary_tick().await;
                daemon.breaker_tick();
            }
            _ = flows_tick.tick() => {
                if flows_tick.period() != daemon.config.metrics.collect_interval {
                    flows_tick = tokio::time::interval(daemon.config.metrics.collect_interval);
                    flows_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
                if let Some(snapshot) = daemon.observer.snapshot() {
                    daemon.metrics.set_ebpf_snapshot(&snapshot);
                }
                daemon.count_rollbacks().await;
                daemon.refresh_sync().await;
                // /status's traffic is as of this collect, not of the last reconcile.
                daemon.publish_traffic();
                release_freed_memory();
            }
            _ = tick.tick() => daemon.reconcile(Trigger::Interval).await,
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    // Calls waiting, and any that arrive until the socket closes, are answered `stopping` at once.
    calls.close();
    daemon.withdraw_before_exit().await;
    tracing::info!("stopping; IPVS is left as it is, so traffic keeps flowing");
    daemon.background.stop().await;
    control.stop().await;
    daemon.drain_writer.flush().await;
    daemon.canary_writer.flush().await;
    daemon.replicator.running = None;
    tracing::info!("stopped");
    Ok(())
}

/// Runs file I/O (or other blocking work) on tokio's blocking pool, so that the runtime's one
/// thread keeps serving metrics, health checks and the control socket meanwhile.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

impl Daemon {
    async fn reconcile(&mut self, trigger: Trigger) {
        let started = Instant::now();
        // This reconcile reads the health as it is now: transitions waiting to be coalesced are in.
        let health_waiting = self.health_due.take().is_some();
        // The interval's run while a larger plan is under way is that plan's next turn, not drift;
        // one that takes in waiting health transitions makes their changes, not drift's either.
        let continued = self.continue_with.take();
        let trigger = match continued {
            Some(continued) if trigger == Trigger::Interval => continued,
            _ if trigger == Trigger::Interval && health_waiting => Trigger::HealthChange,
            _ => trigger,
        };
        let pending = self.pending.take().filter(|_| continued == Some(trigger));
        self.metrics.record_trigger(trigger);
        let (mut desired, fail_open, health) = self.effective();
        // Last: a canary's share is of the backends that are in service.
        self.canary_weights = if self.canaries.is_empty() {
            Vec::new()
        } else {
            crate::canary::apply_to(Arc::make_mut(&mut desired), &self.canaries)
        };
        self.set_fail_open(fail_open);
        let serving = self.weigh_vips(&desired, &self.fail_open, &health);
        self.observer.retry_if_due(&self.config);
        self.observer.sync(&self.config);
        let config = &self.config;
        let shield = self.observer.refusal_shield();
        let drained = drains::removals_drained(&self.drain_entries);
        let request = reconcile::Request {
            desired: &desired,
            configured: &config.desired,
            removal: Removal::Graceful { drained: &drained },
            ignore: &config.ignore,
            trigger,
            shield: shield.as_ref(),
            max_ops: reconcile::MAX_OPS_PER_TURN,
        };
        // Drains that ended since the plan was made do not stop it: it keeps them at weight 0, and
        // a reconcile after its last turn deletes them.
        let mut planned_drained = None;
        let result = match pending {
            Some(pending) if pending.desired == desired => {
                let max_ops = request.max_ops;
                let (outcome, rest) =
                    reconcile::next_turn(&mut self.ipvs, pending.rest, trigger, shield.as_ref(), max_ops)
                        .await;
                planned_drained = Some(pending.drained);
                Ok(reconcile::Turn { outcome, leaving: pending.leaving, rest })
            }
            // Only the interval may skip its read: every other trigger reads, so it need not
            // compare the desired state with the last read's.
            _ => match (trigger == Trigger::Interval)
                .then(|| self.table_watch.unchanged(&desired, &self.metrics))
                .flatten()
            {
                // Nobody else wrote to the table and nothing here changed since it was last read
                // and found as wanted: what that read found stands.
                Some(leaving) => {
                    self.metrics.record_read_skipped();
                    Ok(reconcile::Turn { outcome: Outcome::NoChanges, leaving, rest: None })
                }
                None => {
                    let before = self.table_watch.before_read();
                    let turn = reconcile::reconcile(&mut self.ipvs, request).await;
                    if let Ok(turn) = &turn {
                        self.metrics.record_plan(
                            turn.outcome.planned() + turn.rest.as_ref().map_or(0, |rest| rest.len()),
                        );
                        self.table_watch.after_read(before, &desired, turn, &self.metrics);
                    }
                    turn
                }
            },
        };
        let drained = planned_drained.unwrap_or(drained);
        self.record.reconciles += 1;
        let degraded = match result {
            Ok(reconcile::Turn { outcome, leaving, rest }) => {
                self.log_outcome(trigger, &outcome);
                self.record_metrics(&outcome, started.elapsed());
                // A backend whose delete waits for a later turn still needs its drain's record.
                self.sync_removals(&leaving, outcome.result_label() == "ok" && rest.is_none());
                if let Some(rest) = rest {
                    tracing::info!(
                        ?trigger,
                        left = rest.len(),
                        "the plan is larger than one turn: the rest follows at once"
                    );
                    self.continue_with = Some(trigger);
                    self.pending = Some(Pending { desired, drained, leaving, rest });
                } else if outcome.result_label() == "ok"
                    && !drains::removals_drained(&self.drain_entries).is_subset(&drained)
                {
                    self.continue_with = Some(Trigger::Drain);
                }
                match outcome {
                    Outcome::Failed { errors, .. } => {
                        Some(errors.first().cloned().unwrap_or_else(|| "an operation failed".to_owned()))
                    }
                    _ => None,
                }
            }
            Err(err) => {
                tracing::error!(?trigger, error = %err, "reconcile failed: cannot read IPVS");
                self.record.last_outcome = Some((trigger, "error", 0));
                self.record.last_detail =
                    LastReconcile { result: "error", operations: Vec::new(), errors: vec![err.to_string()] };
                self.metrics.record_reconcile(ReconcileResult::Error, started.elapsed(), &[]);
                Some(format!("cannot read IPVS: {err}"))
            }
        };
        let converged = degraded.is_none() && self.continue_with.is_none();
        self.announce(serving, converged).await;
        let changed = degraded.is_some() != self.degraded.is_some();
        self.degraded = degraded;
        if changed && trigger != Trigger::Startup {
            notify(&[sd_notify::NotifyState::Status(&self.status_line())]);
        }
        self.publish_status();
    }

    /// Whether the drain, canary and breaker tick has anything to evaluate: a drain or a canary
    /// running, a circuit breaker configured, or a drain's packet watch to forget.
    fn ticks_wanted(&self) -> bool {
        drain::running(&self.drain_entries).next().is_some()
            || self.canaries.iter().any(crate::canary::CanaryEntry::is_running)
            || self.breakers.iter().next().is_some()
            || !self.drain_packets.is_empty()
    }

    /// The configuration with drains, health and circuit breakers applied (canaries not yet),
    /// the services that fail open, and the health it was made from. Drains first, then health:
    /// a service whose drains and unhealthy backends leave nothing serving fails open rather than
    /// going dark.
    fn effective(&self) -> (Arc<config::DesiredState>, Vec<health::FailOpen>, health::HealthTable) {
        // The configuration's own state, copied only by what changes it.
        let mut desired = Arc::clone(&self.config.desired);
        if !self.drain_entries.is_empty() {
            drain::apply_to(Arc::make_mut(&mut desired), &self.drain_entries);
        }
        let health = self.health.snapshot();
        let fail_open = health::effective(&mut desired, &self.config.settings, &health);
        if self.breakers.iter().any(|(_, breaker)| breaker.is_open()) {
            self.breakers.apply_to(Arc::make_mut(&mut desired));
        }
        (desired, fail_open, health)
    }

    /// `libraflux_rollbacks_total` from the rollback log that `snapshot restore` keeps; a log the
    /// daemon cannot read is said once and the count stays as it was.
    async fn count_rollbacks(&mut self) {
        let dir = self.config.snapshots.dir.clone();
        let read = blocking({
            let dir = dir.clone();
            move || crate::snapshot::rollbacks(&dir)
        });
        match read.await {
            Ok(count) => {
                self.metrics.set_rollbacks_recorded(count);
                self.rollbacks_unreadable = None;
            }
            Err(err) if self.rollbacks_unreadable.as_deref() != Some(&err.to_string()) => {
                tracing::warn!(
                    dir = %dir.display(),
                    "cannot read the rollback log ({err}); libraflux_rollbacks_total is not updated. The \
                     daemon's user needs to traverse the directory (chmod o+x) and read the log (chmod 0644)"
                );
                self.rollbacks_unreadable = Some(err.to_string());
            }
            Err(_) => {}
        }
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
        self.record.last_detail = match outcome {
            Outcome::NoChanges => LastReconcile { result: "no_changes", ..Default::default() },
            Outcome::Applied { ops, .. } => LastReconcile {
                result: "applied",
                operations: ops.iter().map(requests::describe).collect(),
                errors: Vec::new(),
            },
            Outcome::Failed { ops, applied, errors } => LastReconcile {
                result: "failed",
                operations: ops.iter().take(*applied).map(requests::describe).collect(),
                errors: errors.clone(),
            },
        };
        self.record.last_outcome = Some((trigger, outcome.result_label(), operations));
    }

    fn record_metrics(&self, outcome: &Outcome, duration: Duration) {
        let (result, applied) = match outcome {
            Outcome::NoChanges => (ReconcileResult::Ok, &[][..]),
            Outcome::Applied { ops, drift } => {
                if *drift {
                    self.metrics.record_drift_repair(ops.len() as u64);
                }
                (ReconcileResult::Ok, &ops[..])
            }
            // Which of the ops went through is in the log; the kinds are not counted here.
            Outcome::Failed { .. } => (ReconcileResult::Error, &[][..]),
        };
        self.metrics.record_reconcile(result, duration, applied);
    }
}

/// Completes at `due`; never when there is none (the select arm is disabled then anyway).
async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Gives the memory freed since the last call back to the system. A large table is read,
/// planned and rendered in transient allocations many times its own size; glibc keeps what they
/// freed for later, so without this the daemon's RSS stays at its peak (docs/benchmarks.md, the
/// daemon at rest).
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory of the allocator's arenas to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Tells systemd (Type=notify) about the daemon's state; a no-op outside systemd.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(state) {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}
