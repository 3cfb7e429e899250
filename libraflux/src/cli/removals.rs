//! `apply` without a daemon: what left the configuration is at weight 0; wait for each drain by
//! its service's rules (TCP: IPVS connections; UDP: IPVS InPkts, as no eBPF counter runs here),
//! with the same progress display as `drain --wait`, then delete what drained.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

use libraflux::{
    config::{Config, DesiredState, Ignore, ServiceSettings},
    drain::{self, Backend, Ending, PacketWatch, Progress, Rules, Seen, Signal, TrafficSource},
    ipvs::{self, IpvsClient},
    model::{Protocol, ServiceKey},
    plan::{self, Leaving, Removal},
};
use serde_json::json;

use super::{
    apply::{Outcome, incomplete},
    common::{Failure, Output, exit},
    drain::EXIT_DRAIN_TIMEOUT,
};

/// How often the table is read while waiting.
const TICK: Duration = Duration::from_millis(500);

/// What the table is being brought to: the desired state, what to leave alone, and the drain
/// rules of the configured services.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub desired: &'a DesiredState,
    pub ignore: &'a Ignore,
    pub settings: Option<&'a BTreeMap<ServiceKey, ServiceSettings>>,
}

impl<'a> Target<'a> {
    pub fn of(config: &'a Config) -> Self {
        Self { desired: &config.desired, ignore: &config.ignore, settings: Some(&config.settings) }
    }

    /// The plan with `removal`.
    pub fn plan(&self, observed: &DesiredState, removal: Removal<'_>) -> plan::Plan {
        plan::plan_removals(self.desired, self.desired, observed, self.ignore, removal)
    }
}

/// Waits for the drains of `leaving` (unless `no_wait`), then deletes what drained.
pub async fn finish(
    client: &mut IpvsClient,
    target: Target<'_>,
    leaving: &Leaving,
    no_wait: bool,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let count = leaving.backends.len();
    if no_wait {
        if outcome.output == Output::Text {
            println!(
                "{count} backend(s) that left the configuration are at weight 0 (--no-wait): the next apply, or \
                 the daemon, drains and deletes them."
            );
        }
        outcome.json["drain_then_delete"] = json!({ "waited": false });
        outcome.finish();
        return Ok(());
    }
    let endings = wait(client, target, leaving, outcome.output).await?;
    let drained: BTreeSet<Backend> = endings.iter().map(|(backend, _)| *backend).collect();
    let observed = ipvs::observed(client).await?;
    let plan = target.plan(&observed, Removal::Graceful { drained: &drained });
    let executed = libraflux::apply::execute(client, &plan.phases()).await;
    let timed_out: Vec<String> = endings
        .iter()
        .filter(|(_, ending)| *ending == Ending::Timeout)
        .map(|((service, backend), _)| format!("{backend} in {service}"))
        .collect();
    match outcome.output {
        Output::Text => {
            for ((service, backend), ending) in &endings {
                println!("{backend} in {service}: {}", ending.describe());
            }
            println!(
                "Deleted {} of {} operations after the drains.",
                executed.report.applied(),
                plan.phases().len()
            );
        }
        Output::Json => {
            outcome.json["drain_then_delete"] = json!({
                "waited": true,
                "drained": endings.iter().map(|((s, b), e)| json!({
                    "service": s.to_string(), "backend": b.to_string(), "ending": e,
                })).collect::<Vec<_>>(),
                "delete_operations": plan.phases().len(),
                "deleted": executed.report.applied(),
            })
        }
    }
    outcome.finish();
    incomplete(&executed, "apply")?;
    if !timed_out.is_empty() {
        let message = format!(
            "the drain of {} timed out: it still had traffic when it was deleted",
            timed_out.join(", ")
        );
        return Err(Failure::new(EXIT_DRAIN_TIMEOUT, message).into());
    }
    Ok(())
}

/// Evaluates every drain each [`TICK`] until all have ended; returns how each ended.
async fn wait(
    client: &mut IpvsClient,
    target: Target<'_>,
    leaving: &Leaving,
    output: Output,
) -> anyhow::Result<Vec<(Backend, Ending)>> {
    let backends: Vec<Backend> = leaving.backends.iter().copied().collect();
    let rules: Vec<Rules> = backends.iter().map(|(service, _)| rules_of(target, service)).collect();
    let started = Instant::now();
    let deadline = rules.iter().map(|r| r.timeout).max().unwrap_or_default() + Duration::from_secs(30);
    let mut at_zero: Vec<Option<Instant>> = vec![None; backends.len()];
    let mut ended: Vec<Option<Ending>> = vec![None; backends.len()];
    let mut packets = PacketWatch::default();
    let tty = std::io::stdout().is_terminal() && output == Output::Text;
    let mut last_line = Instant::now();
    while ended.iter().any(Option::is_none) {
        if started.elapsed() > deadline {
            return Err(
                Failure::new(exit::RUNTIME_FAILURE, "the drains did not end by their timeouts").into()
            );
        }
        let open: Vec<Backend> =
            backends.iter().zip(&ended).filter(|(_, e)| e.is_none()).map(|(b, _)| *b).collect();
        let seen = Seen::from_dumps(client.dests_of(&drain::services_of(&open)).await?);
        let now = Instant::now();
        packets.update(&open, &seen, now);
        let mut connections = 0u64;
        for (index, backend) in backends.iter().enumerate() {
            if ended[index].is_some() {
                continue;
            }
            if at_zero[index].is_none() && seen.at_weight_zero(*backend) {
                at_zero[index] = Some(now);
            }
            let progress =
                Progress { elapsed: started.elapsed(), at_zero: at_zero[index].map(|since| now - since) };
            let signal = signal(&seen, &packets, *backend, now);
            if let Signal::Tcp { active, .. } = signal {
                connections += u64::from(active);
            }
            ended[index] = drain::evaluate(&rules[index], progress, signal);
        }
        let left = ended.iter().filter(|e| e.is_none()).count();
        let line = format!(
            "draining {left} backend(s) that left the configuration: {connections} active connection(s), {} elapsed",
            humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()))
        );
        if tty {
            print!("\r{line}\x1b[K");
            std::io::stdout().flush()?;
        } else if output == Output::Text && last_line.elapsed() >= Duration::from_secs(5) {
            println!("{line}");
            last_line = Instant::now();
        }
        if left > 0 {
            tokio::time::sleep(TICK).await;
        }
    }
    if tty {
        println!();
    }
    Ok(backends.into_iter().zip(ended.into_iter().flatten()).collect())
}

/// TCP and firewall-mark services: IPVS connections. UDP: IPVS InPkts (no eBPF counter here).
fn signal(seen: &Seen, packets: &PacketWatch, backend: Backend, now: Instant) -> Signal {
    match backend.0 {
        ServiceKey::Addr { protocol: Protocol::Udp, .. } => {
            Signal::Udp { quiet_for: packets.quiet_for(backend, now), source: TrafficSource::IpvsInPkts }
        }
        _ => seen.connections(backend),
    }
}

/// The service's drain rules; the defaults for a service that left the configuration.
fn rules_of(target: Target<'_>, service: &ServiceKey) -> Rules {
    let drain =
        target.settings.and_then(|settings| settings.get(service)).map(|s| s.drain).unwrap_or_default();
    Rules { grace: drain.grace, timeout: drain.timeout, quiet: drain.quiet, include_inactive: false }
}
