//! `apply` beside a running daemon. The daemon owns IPVS on the node (it would revert another
//! writer's changes as drift), so apply does not write IPVS: it asks the daemon, over its control
//! socket, to reload its own configuration, exactly as SIGHUP does, and prints what the daemon
//! did. The daemon refuses when `-c` names other files than the ones it runs.

use std::{path::Path, time::Duration};

use libraflux::{
    config,
    control::{
        Client, ClientError, Request,
        protocol::{Ping, Reloaded},
    },
};
use serde_json::json;

use super::{
    common::{Failure, Output, exit},
    control::failure,
};

/// A reload answers once its reconcile is done: minutes for tens of thousands of backends.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug)]
pub struct Handoff<'a> {
    /// `-c`, as given.
    pub config: Option<&'a Path>,
    pub force: bool,
    pub output: Output,
}

impl Handoff<'_> {
    /// Hands the configuration (already validated here) to the daemon that answered `ping`.
    /// `immediate` and `skip` are apply's own ways of changing IPVS, which a reload has not.
    pub fn run(&self, daemon: &Client, ping: &Ping, immediate: bool, skip: &[String]) -> anyhow::Result<()> {
        if immediate || !skip.is_empty() {
            let flag = if immediate { "--immediate" } else { "--skip-check" };
            return Err(Failure::new(
                2,
                format!(
                    "{flag} does not apply beside a running daemon: apply hands the configuration to it (a reload, \
                     which drains what leaves the configuration and runs no pre-flight checks); nothing was changed"
                ),
            )
            .into());
        }
        let files = config::source_paths(self.config)
            .map_err(|err| Failure::new(exit::INVALID_CONFIG, err.to_string()))?
            .into_iter()
            .map(|path| path.canonicalize().unwrap_or(path))
            .collect();
        let request = Request::Reload { config: files, force: self.force };
        let client = daemon.clone().with_timeout(RELOAD_TIMEOUT);
        let handoff = json!({ "daemon_pid": ping.pid, "socket": daemon.path() });
        match client.call::<Reloaded>(&request) {
            Ok(reloaded) => self.report(ping, &reloaded, handoff),
            Err(err) => {
                if let (Output::Json, ClientError::Daemon(error)) = (self.output, &err) {
                    let document = json!({ "dry_run": false, "handoff": handoff, "error": error });
                    println!("{}", serde_json::to_string_pretty(&document)?);
                }
                Err(failure(err)
                    .context(format!("the daemon (pid {}) did not take the configuration", ping.pid)))
            }
        }
    }

    fn report(&self, ping: &Ping, reloaded: &Reloaded, handoff: serde_json::Value) -> anyhow::Result<()> {
        match self.output {
            Output::Json => {
                let document = json!({ "dry_run": false, "handoff": handoff, "reloaded": reloaded });
                println!("{}", serde_json::to_string_pretty(&document)?);
            }
            Output::Text => {
                println!(
                    "Handed to the daemon (pid {}): it reloaded its configuration ({} services).",
                    ping.pid, reloaded.services
                );
                for operation in &reloaded.operations {
                    println!("  {operation}");
                }
                match reloaded.reconcile.as_str() {
                    "no_changes" => println!("No changes."),
                    "applied" => println!("Applied {} operations.", reloaded.operations.len()),
                    _ => {}
                }
                if reloaded.leaving > 0 {
                    println!(
                        "{} backend(s) left the configuration: at weight 0, the daemon deletes each once drained \
                         (`libraflux status` shows them).",
                        reloaded.leaving
                    );
                }
            }
        }
        if reloaded.errors.is_empty() {
            return Ok(());
        }
        let message = format!(
            "the daemon reloaded, but its reconcile {} after {} operation(s): {}; it retries on its interval",
            if reloaded.reconcile == "error" { "could not read IPVS" } else { "was refused by the kernel" },
            reloaded.operations.len(),
            reloaded.errors.join("; ")
        );
        Err(Failure::new(exit::RUNTIME_FAILURE, message).into())
    }
}
