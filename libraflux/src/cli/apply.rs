//! `libraflux apply`: plan the change, refuse it if a pre-flight check or a change limit says
//! so, and otherwise snapshot the table and carry out exactly the plan that was shown.

use libraflux::{
    apply::{Executed, ShieldReport, Stage, timed},
    ipvs::{self, IpvsClient, OpOutcome},
    plan::{self, LimitViolation, Plan, Removal},
    preflight::Report,
};
use serde_json::json;

use super::common::{
    ConfigArg, Failure, Output, SkipChecks, colour, exit, load_config, preflight, require_passed, runtime,
};
use super::{control::running_daemon, handoff, removals::Target, snapshot};

/// `--immediate` / `--no-wait`, for every command that may remove backends.
#[derive(Debug, clap::Args)]
pub(super) struct RemovalArgs {
    /// Delete backends and services that leave the table at once, without draining them (their
    /// established connections are cut).
    #[arg(long, conflicts_with = "no_wait")]
    pub(super) immediate: bool,
    /// Set what leaves the table to weight 0 and return without waiting for the drains; the next
    /// apply (or the daemon) finishes them.
    #[arg(long)]
    pub(super) no_wait: bool,
}

impl RemovalArgs {
    pub(super) fn removal<'a>(
        &self,
        drained: &'a std::collections::BTreeSet<libraflux::drain::Backend>,
    ) -> Removal<'a> {
        if self.immediate { Removal::Immediate } else { Removal::Graceful { drained } }
    }
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Show the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Go on even when the plan exceeds a change limit.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    removal: RemovalArgs,
    #[command(flatten)]
    skip: SkipChecks,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub fn run(args: &ApplyArgs, daemon: &libraflux::control::Client) -> anyhow::Result<()> {
    let config = timed("config_load", || load_config(&args.config))?;
    // One writer per node: beside a daemon, apply hands the configuration to it.
    if let Some(ping) = timed("daemon_check", || running_daemon(daemon))? {
        if !args.dry_run {
            let handoff = handoff::Handoff {
                config: args.config.path.as_deref(),
                force: args.force,
                output: args.output,
            };
            return handoff.run(daemon, &ping, args.removal.immediate, &args.skip.names);
        }
        eprintln!(
            "warning: a LibraFlux daemon (pid {}) answers on {}: without --dry-run, apply hands this \
             configuration to it (it reloads its own configuration files) instead of writing IPVS itself",
            ping.pid,
            daemon.path().display()
        );
    }
    runtime()?.block_on(async {
        let stage = Stage::start("preflight");
        let (client, report) = preflight(&config, &args.skip.names).await?;
        drop(stage);
        let mut outcome = Outcome { output: args.output, json: json!({ "dry_run": args.dry_run }) };
        outcome.preflight(&report);
        let checks = require_passed(&report);
        // A dry run still shows the plan when IPVS answers, so the operator sees both problems.
        let can_plan = args.dry_run && client.is_ok();
        if checks.is_err() && !can_plan {
            outcome.finish();
            return checks;
        }
        let mut client: IpvsClient = client.map_err(|why| Failure::new(exit::RUNTIME_FAILURE, why))?;
        let stage = Stage::start("observe");
        let observed = ipvs::observed(&mut client).await?;
        drop(stage);
        let none = std::collections::BTreeSet::new();
        let removal = args.removal.removal(&none);
        let target = Target::of(&config);
        let plan = timed("plan", || target.plan(&observed, removal));
        timed("plan_text", || outcome.plan(&plan));
        // Limits bound the change of configuration: what leaves counts as removed, drained or not.
        timed("limits", || {
            let intent = plan::plan(&config.desired, &observed, &config.ignore);
            outcome.enforce_limits(
                &intent,
                &config.limits,
                args.force,
                "the plan exceeds a change limit; nothing was changed",
            )
        })?;
        if args.dry_run || (plan.is_empty() && plan.leaving.is_empty()) {
            outcome.finish();
            return checks;
        }
        if plan.is_empty() {
            return super::removals::finish(
                &mut client,
                target,
                &plan.leaving,
                args.removal.no_wait,
                &mut outcome,
            )
            .await;
        }
        // The table as it was, so that this apply can be undone with `snapshot restore`.
        let stage = Stage::start("snapshot");
        let taken = snapshot::take_automatic(&mut client, &observed, &config).await;
        drop(stage);
        let taken = match taken {
            Ok(taken) => taken,
            Err(why) => {
                outcome.finish();
                return Err(
                    Failure::new(exit::RUNTIME_FAILURE, format!("{why:#}; nothing was changed")).into()
                );
            }
        };
        outcome.snapshot_taken(&taken);
        let stage = Stage::start("program");
        let phases = plan.phases();
        let (executed, shield) =
            libraflux::apply::execute_alone(&mut client, &phases, &config.node.interfaces).await;
        drop(stage);
        outcome.applied(&executed);
        outcome.shield(&shield);
        if !executed.is_complete() || plan.leaving.is_empty() {
            outcome.finish();
            return incomplete(&executed, "apply");
        }
        super::removals::finish(&mut client, target, &plan.leaving, args.removal.no_wait, &mut outcome).await
    })
}

/// Exit 1 when the kernel refused an operation, saying how far it got; `Ok` when all applied.
pub(super) fn incomplete(executed: &Executed, command: &str) -> anyhow::Result<()> {
    let report = &executed.report;
    if report.is_complete() {
        return Ok(());
    }
    let withheld = if executed.reduce_withheld {
        "; nothing was removed or lowered (those wait until everything before them is acknowledged)"
    } else {
        ""
    };
    let message = format!(
        "applied {} of {} operations before the kernel refused one{withheld}; run {command} again to converge",
        report.applied(),
        report.outcomes.len()
    );
    Err(Failure::new(exit::RUNTIME_FAILURE, message).into())
}

/// What apply (and snapshot restore) prints: text as it goes, or one JSON document at the end.
pub(super) struct Outcome {
    pub(super) output: Output,
    pub(super) json: serde_json::Value,
}

impl Outcome {
    /// Shows the limits the plan exceeds; refuses it (exit 3, after printing everything so far)
    /// unless `force`.
    pub(super) fn enforce_limits(
        &mut self,
        plan: &Plan,
        limits: &libraflux::config::Limits,
        force: bool,
        refusal: &str,
    ) -> anyhow::Result<()> {
        let Err(violations) = plan::check_limits(plan, limits) else { return Ok(()) };
        self.limits(&violations, force);
        if force {
            return Ok(());
        }
        self.finish();
        Err(Failure::new(exit::REFUSED, refusal).into())
    }

    pub(super) fn preflight(&mut self, report: &Report) {
        match self.output {
            Output::Text => print!("Pre-flight checks:\n{}\n", indent(&report.render_text())),
            Output::Json => self.json["preflight"] = json!(report.checks),
        }
    }

    pub(super) fn plan(&mut self, plan: &Plan) {
        match self.output {
            Output::Text => print!("{}", plan::render_text(plan, colour())),
            Output::Json => {
                self.json["plan"] =
                    serde_json::from_str(&plan::render_json(plan)).expect("render_json emits JSON")
            }
        }
    }

    pub(super) fn limits(&mut self, violations: &[LimitViolation], forced: bool) {
        let messages: Vec<String> = violations.iter().map(ToString::to_string).collect();
        match self.output {
            Output::Text => {
                let lead = if forced { "over a change limit, applying anyway (--force)" } else { "refused" };
                for message in &messages {
                    println!("{lead}: {message}");
                }
            }
            Output::Json => self.json["limits"] = json!({ "violations": messages, "forced": forced }),
        }
    }

    pub(super) fn applied(&mut self, executed: &Executed) {
        let report = &executed.report;
        let not_applied = report.outcomes.iter().filter(|o| matches!(o, OpOutcome::NotSent)).count();
        let unknown = report.outcomes.iter().filter(|o| matches!(o, OpOutcome::Unknown)).count();
        let refused: Vec<String> = report.refusals().map(|(_, err)| err.to_string()).collect();
        match self.output {
            Output::Text => {
                for message in &refused {
                    println!("refused by the kernel: {message}");
                }
                if let Some(err) = &report.transport_error {
                    println!("netlink failure: {err}");
                }
                println!(
                    "\nApplied {} of {} operations ({} refused, {not_applied} not sent, {unknown} unknown).",
                    report.applied(),
                    report.outcomes.len(),
                    refused.len()
                );
            }
            Output::Json => {
                self.json["result"] = json!({
                    "operations": report.outcomes.len(),
                    "applied": report.applied(),
                    "refused": refused,
                    "not_sent": not_applied,
                    "unknown": unknown,
                    "transport_error": report.transport_error.as_ref().map(ToString::to_string),
                    "reduce_withheld": executed.reduce_withheld,
                })
            }
        }
    }

    /// What became of the refusals of a scheduler change (nothing when the plan had none).
    pub(super) fn shield(&mut self, shield: &ShieldReport) {
        let value = match shield {
            ShieldReport::NotNeeded => return,
            ShieldReport::Held { interfaces, held_back } => {
                if self.output == Output::Text {
                    let count =
                        held_back.map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string());
                    println!(
                        "While the scheduler changed, {count} refusal(s) of new connections were held back \
                         (eBPF at the egress of {}); those clients retry.",
                        interfaces.join(", ")
                    );
                }
                json!({ "held": true, "interfaces": interfaces, "held_back": held_back })
            }
            ShieldReport::Unavailable(why) => {
                if self.output == Output::Text {
                    println!(
                        "warning: the scheduler changed without holding back refusals ({why}): new connections \
                         in that moment may have been refused."
                    );
                }
                json!({ "held": false, "why": why })
            }
        };
        if self.output == Output::Json {
            self.json["refusal_shield"] = value;
        }
    }

    pub(super) fn snapshot_taken(&mut self, taken: &snapshot::Taken) {
        match self.output {
            Output::Text => println!("{}", taken.message()),
            Output::Json => self.json["snapshot"] = json!(taken.name.as_str()),
        }
    }

    pub(super) fn finish(&self) {
        if self.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&self.json).expect("JSON values serialise"));
        }
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}\n")).collect()
}
