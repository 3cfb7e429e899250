//! `libraflux daemon`: the systemd service.

use std::time::Duration;

use libraflux::{daemon, ipvs::IpvsClient};

use super::common::{
    ConfigArg, Failure, SkipChecks, check_web_config, exit, preflight, report_config, require_passed, runtime,
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
    // A replication secondary runs its config.yaml with the primary's config.d, not its own.
    let replicated = args.state_dir.join("state").join(libraflux::replication::store::REPLICATED_DIR);
    let config =
        report_config(libraflux::replication::load_config(args.config.path.as_deref(), &replicated, None))?;
    check_web_config(&config)?;
    runtime()?.block_on(async {
        let (client, report) = preflight(&config, &args.skip.names).await?;
        for check in &report.checks {
            tracing::info!(check = check.name, verdict = %check.verdict, reason = %check.reason, "pre-flight");
        }
        require_passed(&report)?;
        let client: IpvsClient = client.map_err(|why| Failure::new(exit::RUNTIME_FAILURE, why))?;
        let options = daemon::Options {
            config_path: args.config.path.clone(),
            state_dir: args.state_dir.join("state"),
            reconcile_interval: args.reconcile_interval,
            control_socket: control_socket.to_owned(),
            bundles_dir: args.state_dir.join("bundles"),
        };
        daemon::run(options, config, client).await.map_err(|err| {
            match err.downcast::<daemon::reconcile::LimitRefusal>() {
                Ok(refusal) => Failure::new(exit::REFUSED, refusal.to_string()).into(),
                Err(err) => err,
            }
        })
    })
}
