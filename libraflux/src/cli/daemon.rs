//! `libraflux daemon`: the systemd service.

use std::time::Duration;

use libraflux::{
    daemon,
    etcd::node::{self, StartError},
    ipvs::IpvsClient,
    replication,
};

use super::common::{
    ConfigArg, Failure, SkipChecks, check_web_config, exit, invalid_config, preflight, report_config,
    require_passed, runtime,
};

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// How often to reconcile when nothing else asks; this also repairs drift.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    reconcile_interval: Duration,
    /// State directory: drains are kept in STATE_DIR/state/drains.json.
    #[arg(long, default_value = super::common::DEFAULT_STATE_DIR)]
    state_dir: std::path::PathBuf,
    #[command(flatten)]
    skip: SkipChecks,
}

pub fn run(args: &DaemonArgs, control_socket: &std::path::Path) -> anyhow::Result<()> {
    let state_dir = args.state_dir.join("state");
    let runtime = runtime()?;
    // A fleet node runs its config.yaml with the config.d in etcd (or the last good one from it);
    // a replication secondary with the primary's config.d; neither runs its own.
    let (config, etcd) = match runtime.block_on(node::at_start(args.config.path.as_deref(), &state_dir)) {
        Ok(Some((config, started))) => (report_config(Ok(config))?, Some(started)),
        Ok(None) => {
            (report_config(replication::load_config(args.config.path.as_deref(), &state_dir, None))?, None)
        }
        Err(StartError::Invalid(errors)) => {
            return Err(invalid_config(&errors, "in the configuration; nothing was changed"));
        }
        Err(err @ StartError::NothingToRun { .. }) => {
            return Err(Failure::new(exit::RUNTIME_FAILURE, err.to_string()).into());
        }
    };
    check_web_config(&config)?;
    runtime.block_on(async {
        let (client, report) = preflight(&config, &args.skip.names).await?;
        for check in &report.checks {
            tracing::info!(check = check.name, verdict = %check.verdict, reason = %check.reason, "pre-flight");
        }
        require_passed(&report)?;
        let client: IpvsClient = client.map_err(|why| Failure::new(exit::RUNTIME_FAILURE, why))?;
        let options = daemon::Options {
            config_path: args.config.path.clone(),
            state_dir,
            reconcile_interval: args.reconcile_interval,
            control_socket: control_socket.to_owned(),
            bundles_dir: args.state_dir.join("bundles"),
            etcd,
        };
        daemon::run(options, config, client).await.map_err(|err| {
            match err.downcast::<daemon::reconcile::LimitRefusal>() {
                Ok(refusal) => Failure::new(exit::REFUSED, refusal.to_string()).into(),
                Err(err) => err,
            }
        })
    })
}
