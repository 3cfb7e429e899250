//! Every metric's name, help and starting values, in the order `docs/metrics.md` lists them.

use super::*;

impl Metrics {
    pub(super) fn with_registrations(mut self) -> Self {
        // Closed label sets start at zero, so rate() and absent() work from the first scrape.
        for result in [ReconcileResult::Ok, ReconcileResult::Error, ReconcileResult::Refused] {
            self.reconcile_runs.with(ReconcileLabels { result }, |_| {});
        }
        for trigger in Trigger::ALL {
            self.reconcile_triggers.with(TriggerLabels { trigger }, |_| {});
        }
        for reason in REFUSAL_REASONS {
            self.changes_refused.with(ReasonLabels { reason }, |_| {});
        }
        for reason in crate::canary::AbortReason::ALL {
            self.canary_aborts.with(ReasonLabels { reason: reason.label() }, |_| {});
        }
        for result in [ReloadResult::Ok, ReloadResult::Failed] {
            self.config_reloads.with(ReloadLabels { result }, |_| {});
        }
        for state in SyncState::ALL {
            self.sync_daemons.with(SyncLabels { state }, |_| {});
        }
        for kind in [
            OperationKind::AddService,
            OperationKind::UpdateService,
            OperationKind::DeleteService,
            OperationKind::AddBackend,
            OperationKind::UpdateBackend,
            OperationKind::DeleteBackend,
        ] {
            self.reconcile_operations.with(OperationLabels { kind }, |_| {});
        }
        let build_info = SortedFamily::<VersionLabels, Gauge>::default();
        build_info.with(VersionLabels { version: env!("CARGO_PKG_VERSION") }, |gauge| {
            gauge.set(1);
        });

        let registry = &mut self.registry;
        registry.register("libraflux_build_info", "LibraFlux build; always 1", build_info);
        registry.register(
            "libraflux_reconcile_runs",
            "Reconcile runs by result (ok, error, refused by a limit or pre-flight check)",
            self.reconcile_runs.clone(),
        );
        registry.register(
            "libraflux_reconcile_triggers",
            "Reconciles by what started them (a plan carried out over several turns counts each turn)",
            self.reconcile_triggers.clone(),
        );
        registry.register(
            "libraflux_reconcile_duration_seconds",
            "Time a reconcile run took, observe to apply",
            self.reconcile_duration.clone(),
        );
        registry.register(
            "libraflux_reconcile_operations",
            "IPVS changes applied by reconcile runs, by kind",
            self.reconcile_operations.clone(),
        );
        registry.register(
            "libraflux_drift_repairs",
            "Changes made because IPVS had drifted from the desired state",
            self.drift_repairs.clone(),
        );
        registry.register(
            "libraflux_config_reloads",
            "Configuration reloads by result",
            self.config_reloads.clone(),
        );
        registry.register(
            "libraflux_last_successful_reconcile_timestamp_seconds",
            "Unix time of the last reconcile run that succeeded; 0 before the first",
            self.last_success.clone(),
        );
        registry.register(
            "libraflux_rollbacks",
            "Snapshot restores (libraflux snapshot restore) recorded in the snapshot directory",
            self.rollbacks.clone(),
        );
        registry.register(
            "libraflux_ebpf_attached",
            "1 while the eBPF flow counters are attached to the node's interfaces",
            self.ebpf_attached.clone(),
        );
        registry.register(
            "libraflux_ipvs_sync_daemon",
            "1 while the kernel runs the IPVS connection sync daemon of this state (master or backup)",
            self.sync_daemons.clone(),
        );
        registry.register(
            "libraflux_backend_healthy",
            "1 if the backend passes its health check, 0 if not",
            self.backend_healthy.clone(),
        );
        registry.register(
            "libraflux_health_checks",
            "Health checks run, by backend and outcome",
            self.health_checks.clone(),
        );
        registry.register(
            "libraflux_health_check_latency_seconds",
            "Time from sending a health check to its outcome",
            self.check_latency.clone(),
        );
        registry.register(
            "libraflux_service_fail_open",
            "1 if every backend of the service is unhealthy and all are kept in service (fail open)",
            self.fail_open.clone(),
        );
        registry.register(
            "libraflux_config_generation",
            "Configurations put in force by this daemon that changed what it runs; 1 at start",
            self.config_generation.clone(),
        );
        registry.register(
            "libraflux_config_last_change_timestamp_seconds",
            "Unix time the daemon last put in force a configuration that changed what it runs (or started)",
            self.config_last_change.clone(),
        );
        registry.register(
            "libraflux_plan_operations",
            "IPVS operations each reconcile planned (a plan carried out over several turns counts once)",
            self.plan_operations.clone(),
        );
        registry.register(
            "libraflux_changes_refused",
            "Configuration changes not put in force, by reason: a change limit by name, invalid_config, failed",
            self.changes_refused.clone(),
        );
        registry.register(
            "libraflux_replication_generation",
            "The configuration generation this node announced (primary) or runs (secondary); 0 without replication",
            self.replication_generation.clone(),
        );
        registry.register(
            "libraflux_replication_last_success_timestamp_seconds",
            "Unix time the peer last answered that it runs the announced generation (primary), or this node last took or confirmed one (secondary); 0 before",
            self.replication_last_success.clone(),
        );
        registry.register(
            "libraflux_replication_failures",
            "Replications that failed or were refused, by reason (docs/ha.md)",
            self.replication_failures.clone(),
        );
        registry.register(
            "libraflux_canary_step",
            "The step (1 for the first) each rolling-out canary backend is at",
            self.canary_step.clone(),
        );
        registry.register(
            "libraflux_canary_target_percent",
            "The share of its service's new connections each rolling-out canary's step asks for, in percent",
            self.canary_target.clone(),
        );
        registry.register(
            "libraflux_canary_aborts",
            "Canary rollouts aborted, by reason: health_check, circuit_breaker, operator",
            self.canary_aborts.clone(),
        );
        registry.register(
            "libraflux_backend_draining",
            "1 while a drain of the backend runs, 0 once it ended (it stays at weight 0 until undrained or deleted)",
            self.backend_draining.clone(),
        );
        registry.register(
            "libraflux_circuit_open",
            "1 while the backend's circuit breaker has it ejected (weight 0), 0 otherwise",
            self.circuit_open.clone(),
        );
        registry.register(
            "libraflux_circuit_ejections",
            "Times the backend's circuit breaker ejected it",
            self.circuit_ejections.clone(),
        );
        self.announce.register(registry);
        self.watch.register(registry);
        self.etcd.register(registry);
        registry.register_collector(Box::new(Arc::clone(&self.ipvs)));
        registry.register_collector(Box::new(Arc::clone(&self.ebpf)));
        self
    }
}
