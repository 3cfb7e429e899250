//! `libraflux canary start|promote|abort|status`: ask the daemon, over its control socket, to
//! roll a backend in by steps, to give it its full weight now, or to take it out (weight 0, then
//! the drain rules). The daemon records the rollout, reconciles, and answers with the weights
//! IPVS then shows; that is what is printed (docs/canary.md).

use std::time::Duration;

use libraflux::{
    canary::Phase,
    control::{
        Client, Request,
        protocol::{CanaryAction, CanaryReply, CanaryRequest, CanaryView},
    },
    model::{DestKey, ServiceKey},
};

use super::{common::Output, control::failure};

#[derive(Debug, clap::Args)]
pub struct CanaryArgs {
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: CanaryCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CanaryCommand {
    /// Roll the backend in: each step's share of new connections, held for the interval, then
    /// its configured weight. Starts again from the first step after an abort.
    Start {
        #[command(flatten)]
        target: Target,
        /// The steps, in percent of the service's new connections, the last 100
        /// (default: the backend's `canary:` in the configuration, else 5,25,50,100).
        #[arg(long, value_delimiter = ',', value_parser = parse_step)]
        steps: Option<Vec<u8>>,
        /// How long each step is held (default: the configuration's, else 2m).
        #[arg(long, value_parser = humantime::parse_duration)]
        interval: Option<Duration>,
    },
    /// Give the backend its configured weight now (also after an abort).
    Promote {
        #[command(flatten)]
        target: Target,
    },
    /// Take the backend out: weight 0, then the service's drain rules.
    Abort {
        #[command(flatten)]
        target: Target,
    },
    /// Every canary and where its rollout stands.
    Status,
}

#[derive(Debug, clap::Args)]
struct Target {
    /// The backend, as ADDRESS:PORT ([ADDRESS]:PORT for IPv6).
    backend: DestKey,
    /// The service, when the backend is in several.
    #[arg(long)]
    service: Option<ServiceKey>,
}

fn parse_step(text: &str) -> Result<u8, String> {
    let number = text.trim().strip_suffix('%').unwrap_or(text.trim());
    number
        .parse::<u8>()
        .ok()
        .filter(|p| (1..=100).contains(p))
        .ok_or_else(|| format!("{text:?} is not a share from 1 to 100"))
}

pub fn run(args: &CanaryArgs, daemon: &Client) -> anyhow::Result<()> {
    let ask = |action, target: &Target, steps: &Option<Vec<u8>>, interval: Option<Duration>| {
        Request::Canary(CanaryRequest {
            action,
            backend: target.backend,
            service: target.service,
            steps: steps.clone(),
            interval,
        })
    };
    let request = match &args.command {
        CanaryCommand::Start { target, steps, interval } => {
            ask(CanaryAction::Start, target, steps, *interval)
        }
        CanaryCommand::Promote { target } => ask(CanaryAction::Promote, target, &None, None),
        CanaryCommand::Abort { target } => ask(CanaryAction::Abort, target, &None, None),
        CanaryCommand::Status => Request::Canaries,
    };
    let reply: CanaryReply = daemon.call(&request).map_err(failure)?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&reply)?),
        Output::Text if reply.canaries.is_empty() => println!("no canaries"),
        Output::Text => {
            for view in &reply.canaries {
                println!("{}", describe(view));
            }
        }
    }
    Ok(())
}

/// One canary in a few lines: where it stands, and the weights IPVS shows.
fn describe(view: &CanaryView) -> String {
    let canary = &view.canary;
    let steps: Vec<String> = canary.rollout.steps.iter().map(|step| format!("{step}%")).collect();
    let state = match &canary.phase {
        Phase::Running { step, .. } => format!(
            "rolling out: step {} of {} ({}% of new connections{}), each held {}",
            step + 1,
            canary.rollout.steps.len() - 1,
            view.target_percent.unwrap_or_default(),
            view.weighted_share
                .map_or_else(String::new, |share| format!(", the weights give {:.1}%", share * 100.0)),
            humantime::format_duration(canary.rollout.interval),
        ),
        Phase::Promoted { .. } => "promoted: its configured weight".to_owned(),
        Phase::Aborted { reason, detail, .. } => {
            format!("ABORTED ({}): {detail}; weight 0, then drained", reason.label())
        }
    };
    let weights: Vec<String> =
        view.service_weights.iter().map(|(backend, weight)| format!("{backend}={weight}")).collect();
    let weight = view.weight.map_or_else(|| "not in IPVS".to_owned(), |weight| format!("weight {weight}"));
    format!(
        "{} in {}: {state}\n  steps {}; IPVS: {weight}; the service's weights: {}",
        canary.backend,
        canary.service,
        steps.join(", "),
        if weights.is_empty() { "none".to_owned() } else { weights.join(" ") }
    )
}
