//! What several commands share: loading the config, failing with an exit code, output format.

use std::{io::IsTerminal as _, path::PathBuf};

use libraflux::{
    config::{self, Config},
    ipvs::{Ipvs as _, IpvsClient},
    preflight::{self, CheckInput, Report},
};

/// Where state lives: `snapshots/`, `bundles/`, `state/` (PRODUCT.md).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/libraflux";

/// Exit codes (PRODUCT.md).
pub mod exit {
    pub const RUNTIME_FAILURE: u8 = 1;
    /// `config diff`: a push would change something (diff(1)'s 1; its failures exit 1 too,
    /// with a message on stderr).
    pub const DIFFERENT: u8 = 1;
    /// A command line that cannot work (clap's own usage errors exit 2 too).
    pub const USAGE: u8 = 2;
    /// A plan refused by a change limit or a failed pre-flight check.
    pub const REFUSED: u8 = 3;
    /// Invalid configuration (sysexits EX_DATAERR).
    pub const INVALID_CONFIG: u8 = 65;
    /// Invalid input data, such as a corrupt snapshot (sysexits EX_DATAERR, like a bad config).
    pub const INVALID_DATA: u8 = 65;
    /// No daemon answers on the control socket (sysexits EX_UNAVAILABLE).
    pub const NO_DAEMON: u8 = 69;
    /// The control socket refused us: not root, the daemon's user or in `control.group`
    /// (sysexits EX_NOPERM).
    pub const NO_PERMISSION: u8 = 77;
}

/// A failure with the exit code it maps to; `message` is printed after `error: `, unless it is
/// empty (an exit code that is the answer, as `config diff`'s).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Config file, or a directory of *.yaml (and its config.d/). Default:
    /// /etc/libraflux/config.yaml plus /etc/libraflux/config.d/*.yaml.
    #[arg(short = 'c', long = "config")]
    pub path: Option<PathBuf>,
}

/// `--skip-check NAME` (repeatable), for every command that runs the pre-flight checks.
#[derive(Debug, clap::Args)]
pub struct SkipChecks {
    /// Skip a pre-flight check by name (repeatable).
    #[arg(
        long = "skip-check",
        value_name = "NAME",
        value_parser = clap::builder::PossibleValuesParser::new(libraflux::preflight::CHECK_NAMES)
    )]
    pub names: Vec<String>,
}

/// Loads and validates the whole configuration; every error is printed, each as
/// `file:line:col: message`, and the command fails with exit code 65 before touching anything.
pub fn load_config(arg: &ConfigArg) -> anyhow::Result<Config> {
    report_config(config::load(arg.path.as_deref()))
}

/// The configuration, with its warnings on stderr; or its errors on stderr and exit 65.
pub fn report_config(loaded: Result<Config, config::ConfigErrors>) -> anyhow::Result<Config> {
    match loaded {
        Ok(config) => {
            warn(&config);
            Ok(config)
        }
        Err(errors) => Err(invalid_config(&errors, "in the configuration; nothing was changed")),
    }
}

/// Loads `metrics.web_config` as the daemon will: its warnings on stderr, or its errors on stderr
/// and exit 65.
pub fn check_web_config(config: &Config) -> anyhow::Result<()> {
    let Some(path) = &config.metrics.web_config else { return Ok(()) };
    match libraflux::metrics::web::check(path) {
        Ok(warnings) => {
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            Ok(())
        }
        Err(errors) => Err(invalid_config(&errors, "in metrics.web_config; nothing was changed")),
    }
}

/// Prints every error, one `file:line:col: message` a line, and fails with exit code 65 and
/// `N errors <what>`.
pub fn invalid_config(errors: &config::ConfigErrors, what: &str) -> anyhow::Error {
    eprintln!("{errors}");
    config_failure(errors.len(), what)
}

/// Exit code 65 with `N errors <what>`.
pub fn config_failure(count: usize, what: &str) -> anyhow::Error {
    let noun = if count == 1 { "error" } else { "errors" };
    Failure::new(exit::INVALID_CONFIG, format!("{count} {noun} {what}")).into()
}

/// Prints the configuration's warnings.
pub fn warn(config: &Config) {
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
}

/// Colour only when stdout is a terminal and NO_COLOR is unset.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// Connects to IPVS and runs the pre-flight checks; the client is `Err` (with the reason) when
/// IPVS cannot be reached, which the `ipvs_available` check reports.
pub async fn preflight(
    config: &Config,
    skip: &[String],
) -> anyhow::Result<(Result<IpvsClient, String>, Report)> {
    let node = &config.node;
    preflight_for(&config.desired, &node.interfaces, node.expected_connections, config.sync.as_ref(), skip)
        .await
}

/// [`preflight`] for a desired state that is not the config's (a snapshot being restored).
pub async fn preflight_for(
    desired: &config::DesiredState,
    interfaces: &[String],
    expected_connections: Option<u64>,
    sync: Option<&config::SyncConfig>,
    skip: &[String],
) -> anyhow::Result<(Result<IpvsClient, String>, Report)> {
    let mut client = IpvsClient::connect().await.map_err(|err| err.to_string());
    let info = match &mut client {
        Ok(client) => client.info().await.map_err(|err| err.to_string()),
        Err(why) => Err(why.clone()),
    };
    let facts = preflight::gather(info).await?;
    let input = CheckInput { desired, interfaces, expected_connections, skip, sync };
    Ok((client, preflight::run_checks(&input, &facts)))
}

/// Fails with exit code 3 when a check failed.
pub fn require_passed(report: &Report) -> anyhow::Result<()> {
    let failed: Vec<&str> = report.failed().map(|check| check.name).collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(Failure::new(
        exit::REFUSED,
        format!(
            "pre-flight check(s) failed: {}; nothing was changed (skip one with --skip-check NAME)",
            failed.join(", ")
        ),
    )
    .into())
}

/// One writer per node: when a daemon answers on its control socket, a command that would change
/// IPVS beside it is refused (exit 3) with `what_instead`; a dry run only warns.
pub fn refuse_beside_a_daemon(
    daemon: &libraflux::control::Client,
    dry_run: bool,
    what_instead: &str,
) -> anyhow::Result<()> {
    let Some(ping) = super::control::running_daemon(daemon)? else { return Ok(()) };
    let why = format!(
        "a LibraFlux daemon (pid {}) answers on {}; {what_instead}",
        ping.pid,
        daemon.path().display()
    );
    if dry_run {
        eprintln!("warning: {why}");
        return Ok(());
    }
    Err(Failure::new(exit::REFUSED, why).into())
}
