//! `libraflux drain` and `undrain`: ask the daemon to drain a backend (weight 0, then wait for
//! the protocol's signal) by recording the drain in the state directory, where the daemon picks
//! it up within a second and keeps it across its own restarts. With `--wait`, follow it.

use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    time::{Duration, Instant},
};

use libraflux::{
    config::Config,
    drain::{DrainEntry, DrainStore, Ending, Rules, now_ms},
    ipvs::IpvsClient,
    model::{DestKey, Protocol, ServiceKey},
};

use super::{
    common::{ConfigArg, DEFAULT_STATE_DIR, Failure, exit, load_config, runtime},
    status::daemon_status,
};

/// `drain --wait` exit code when a drain ended by its timeout (traffic may have been cut).
pub const EXIT_DRAIN_TIMEOUT: u8 = 4;

#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// The backend, as ADDRESS:PORT ([ADDRESS]:PORT for IPv6).
    backend: DestKey,
    /// Only in this service (default: every configured service that has the backend).
    #[arg(long)]
    service: Option<ServiceKey>,
    /// Minimum time at weight 0 (default: the service's drain.grace).
    #[arg(long, value_parser = humantime::parse_duration)]
    grace: Option<Duration>,
    /// Give up waiting after this long (default: the service's drain.timeout).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// UDP: how long without a packet counts as drained (default: the service's drain.quiet).
    #[arg(long, value_parser = humantime::parse_duration)]
    quiet: Option<Duration>,
    /// TCP: also wait for inactive connections.
    #[arg(long)]
    include_inactive: bool,
    /// Delete the backend from IPVS when drained (otherwise it stays at weight 0).
    #[arg(long)]
    remove: bool,
    /// Follow the drain until it ends; exit 0 when drained, 4 on timeout.
    #[arg(long)]
    wait: bool,
    /// Drain even the last backend that serves a service (the service then fails open on its
    /// unhealthy backends, or serves nothing).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    config: ConfigArg,
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct UndrainArgs {
    backend: DestKey,
    #[arg(long)]
    service: Option<ServiceKey>,
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

pub fn run(args: &DrainArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config)?;
    let services = services_with(&config, args.backend, args.service)?;
    let status = daemon_status(config.metrics.listen).map_err(|why| {
        Failure::new(exit::RUNTIME_FAILURE, format!("{why}: drains are run by `libraflux daemon`"))
    })?;
    if !args.force {
        refuse_last_serving(&config, &status, &services, args.backend)?;
    }
    let started_unix_ms = now_ms();
    let entries: Vec<DrainEntry> = services
        .iter()
        .map(|service| DrainEntry {
            service: *service,
            backend: args.backend,
            rules: rules(&config, service, args),
            remove: args.remove,
            removed_from_config: false,
            started_unix_ms,
            at_zero_unix_ms: None,
            ended: None,
        })
        .collect();
    let store = DrainStore::new(args.state_dir.join("state"));
    store.update(|drains| {
        drains.retain(|d| !entries.iter().any(|e| (e.service, e.backend) == (d.service, d.backend)));
        drains.extend(entries.iter().cloned());
    })?;
    for entry in &entries {
        println!("draining {} in {}: weight 0 now; {}", entry.backend, entry.service, describe_rules(entry));
    }
    if args.remove
        && entries.iter().any(|e| matches!(e.service, ServiceKey::Addr { protocol: Protocol::Udp, .. }))
    {
        warn_if_udp_stays_pinned();
    }
    if args.wait { follow(&store, &entries) } else { Ok(()) }
}

pub fn undrain(args: &UndrainArgs) -> anyhow::Result<()> {
    let store = DrainStore::new(args.state_dir.join("state"));
    let removed = store.update(|drains| {
        let before = drains.len();
        drains.retain(|d| d.backend != args.backend || args.service.is_some_and(|s| s != d.service));
        before - drains.len()
    })?;
    if removed == 0 {
        return Err(
            Failure::new(exit::RUNTIME_FAILURE, format!("{} is not being drained", args.backend)).into()
        );
    }
    println!("undrained {} ({removed} service(s)): the daemon restores its configured weight", args.backend);
    Ok(())
}

/// With `expire_nodest_conn = 0`, IPVS keeps sending a UDP client's datagrams to a removed
/// backend (dropped) until the connection entry times out: say so before removing one.
fn warn_if_udp_stays_pinned() {
    const SYSCTL: &str = "/proc/sys/net/ipv4/vs/expire_nodest_conn";
    if std::fs::read_to_string(SYSCTL).is_ok_and(|value| value.trim() == "0") {
        eprintln!(
            "warning: net.ipv4.vs.expire_nodest_conn is 0: UDP clients stay pinned to a removed backend until \
             their IPVS connection entry expires (timeout udp); see docs/connection-behavior.md"
        );
    }
}

/// Refuses (exit 3) to drain a backend that is the last one serving one of `services`: every
/// other backend there is at weight 0, draining or unhealthy, as the daemon sees them.
fn refuse_last_serving(
    config: &Config,
    status: &serde_json::Value,
    services: &[ServiceKey],
    backend: DestKey,
) -> anyhow::Result<()> {
    for service in services {
        let name = service.to_string();
        let draining = |other: &DestKey| {
            status["drains"].as_array().is_some_and(|drains| {
                drains
                    .iter()
                    .any(|d| d["service"] == name.as_str() && d["backend"] == other.to_string().as_str())
            })
        };
        let healthy =
            |other: &DestKey| status["health"][&name][other.to_string()]["healthy"].as_bool() != Some(false);
        let others_serving = config.desired[service]
            .destinations
            .values()
            .filter(|dest| {
                dest.key != backend && dest.weight > 0 && !draining(&dest.key) && healthy(&dest.key)
            })
            .count();
        if others_serving == 0 {
            return Err(Failure::new(
                exit::REFUSED,
                format!(
                    "{backend} is the last backend serving {service}: every other one is at weight 0, draining or \
                     unhealthy, so draining it would take the service's traffic away; nothing was changed (use \
                     --force to drain it anyway)"
                ),
            )
            .into());
        }
    }
    Ok(())
}

fn services_with(
    config: &Config,
    backend: DestKey,
    only: Option<ServiceKey>,
) -> anyhow::Result<Vec<ServiceKey>> {
    let services: Vec<ServiceKey> = config
        .desired
        .values()
        .filter(|service| only.is_none_or(|key| key == service.key))
        .filter(|service| service.destinations.contains_key(&backend))
        .map(|service| service.key)
        .collect();
    if services.is_empty() {
        let scope = only.map_or_else(|| "any configured service".to_owned(), |key| key.to_string());
        return Err(
            Failure::new(exit::RUNTIME_FAILURE, format!("{backend} is not a backend of {scope}")).into()
        );
    }
    Ok(services)
}

fn rules(config: &Config, service: &ServiceKey, args: &DrainArgs) -> Rules {
    let defaults = config.settings.get(service).map(|settings| settings.drain).unwrap_or_default();
    Rules {
        grace: args.grace.unwrap_or(defaults.grace),
        timeout: args.timeout.unwrap_or(defaults.timeout),
        quiet: args.quiet.unwrap_or(defaults.quiet),
        include_inactive: args.include_inactive,
    }
}

fn describe_rules(entry: &DrainEntry) -> String {
    let timeout = humantime::format_duration(entry.rules.timeout);
    match entry.service {
        ServiceKey::Addr { protocol: Protocol::Udp, .. } => format!(
            "done after {} and {} without a packet, or at the timeout ({timeout})",
            humantime::format_duration(entry.rules.grace),
            humantime::format_duration(entry.rules.quiet)
        ),
        _ => format!("done when its connections close, or at the timeout ({timeout})"),
    }
}

/// Follows the drains until the daemon records their end: a live line on a terminal, a plain
/// line every few seconds otherwise.
fn follow(store: &DrainStore, entries: &[DrainEntry]) -> anyhow::Result<()> {
    let deadline =
        entries.iter().map(|e| e.rules.timeout).max().unwrap_or_default() + Duration::from_secs(30);
    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut last_line = Instant::now();
    let runtime = runtime()?;
    let mut ipvs = runtime.block_on(IpvsClient::connect()).ok();
    loop {
        let drains = store.load()?;
        let ours: Vec<&DrainEntry> = drains
            .iter()
            .filter(|d| {
                entries.iter().any(|e| {
                    (e.service, e.backend, e.started_unix_ms) == (d.service, d.backend, d.started_unix_ms)
                })
            })
            .collect();
        if ours.len() < entries.len() {
            return Err(
                Failure::new(exit::RUNTIME_FAILURE, "the drain was undone (undrain) or replaced").into()
            );
        }
        if ours.iter().all(|d| d.ended.is_some()) {
            if tty {
                println!();
            }
            return finish(&ours);
        }
        if started.elapsed() > deadline {
            return Err(Failure::new(
                exit::RUNTIME_FAILURE,
                "the daemon did not finish the drain; is it running?",
            )
            .into());
        }
        let connections =
            ipvs.as_mut().map(|client| active_connections(&runtime, client, entries)).unwrap_or_default();
        let elapsed = Duration::from_secs(started.elapsed().as_secs());
        let left = entries[0].rules.timeout.saturating_sub(elapsed);
        let line = format!(
            "draining {}: {connections} active connection(s), {} elapsed, {} until the timeout",
            entries[0].backend,
            humantime::format_duration(elapsed),
            humantime::format_duration(left)
        );
        if tty {
            print!("\r{line}\x1b[K");
            std::io::stdout().flush()?;
        } else if last_line.elapsed() >= Duration::from_secs(5) {
            println!("{line}");
            last_line = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn active_connections(
    runtime: &tokio::runtime::Runtime,
    client: &mut IpvsClient,
    entries: &[DrainEntry],
) -> u64 {
    let Ok(table) = runtime.block_on(client.list_services()) else { return 0 };
    entries
        .iter()
        .filter_map(|e| table.iter().find(|s| s.service.key == e.service)?.destinations.get(&e.backend))
        .map(|dest| u64::from(dest.active_connections))
        .sum()
}

fn finish(ours: &[&DrainEntry]) -> anyhow::Result<()> {
    let mut timed_out = false;
    for drain in ours {
        let ending = drain.ended.map(|ended| ended.ending).expect("all ended");
        timed_out |= ending == Ending::Timeout;
        println!("{} in {}: {}", drain.backend, drain.service, ending.describe());
    }
    if timed_out {
        return Err(Failure::new(EXIT_DRAIN_TIMEOUT, "the drain timed out").into());
    }
    Ok(())
}
