//! `libraflux drain` and `undrain`: ask the daemon, over its control socket, to drain a backend
//! (weight 0, then wait for the protocol's signal) or to undo that. The daemon records the drain
//! in its own state, reconciles, and answers with the weight IPVS then shows; that is what is
//! printed. With `--wait`, follow the drain until the daemon says it ended.

use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

use libraflux::{
    control::{
        Client, Request,
        protocol::{DrainReply, DrainRequest, DrainView, Drained, DrainsReply, UndrainReply},
    },
    drain::{Ending, Rules},
    model::{DestKey, Protocol, ServiceKey},
};
use serde_json::json;

use super::{
    common::{Failure, Output, exit},
    control::failure,
};

/// `drain --wait` exit code when a drain ended by its timeout (traffic may have been cut).
pub const EXIT_DRAIN_TIMEOUT: u8 = 4;

/// How often `--wait` asks the daemon how the drain goes.
const POLL: Duration = Duration::from_millis(500);

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
    /// json: the daemon's answer as one document (with --wait, once the drains ended).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct UndrainArgs {
    backend: DestKey,
    #[arg(long)]
    service: Option<ServiceKey>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub fn run(args: &DrainArgs, daemon: &Client) -> anyhow::Result<()> {
    let request = Request::Drain(DrainRequest {
        backend: args.backend,
        service: args.service,
        grace: args.grace,
        timeout: args.timeout,
        quiet: args.quiet,
        include_inactive: args.include_inactive,
        remove: args.remove,
        force: args.force,
    });
    let reply: DrainReply = daemon.call(&request).map_err(failure)?;
    if args.output == Output::Text {
        for drain in &reply.drains {
            let now =
                drain.weight.map_or_else(|| "not in IPVS".to_owned(), |weight| format!("weight {weight}"));
            println!(
                "draining {} in {}: IPVS shows {now}; {}",
                drain.backend,
                drain.service,
                describe_rules(drain)
            );
        }
    }
    if args.remove
        && reply.drains.iter().any(|d| matches!(d.service, ServiceKey::Addr { protocol: Protocol::Udp, .. }))
    {
        warn_if_udp_stays_pinned();
    }
    if args.wait {
        return follow(daemon, &reply, args.output);
    }
    if args.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    }
    Ok(())
}

pub fn undrain(args: &UndrainArgs, daemon: &Client) -> anyhow::Result<()> {
    let request = Request::Undrain { backend: args.backend, service: args.service };
    let reply: UndrainReply = daemon.call(&request).map_err(failure)?;
    if args.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    for undone in &reply.undrained {
        let now = undone.weight.map_or_else(|| "not in IPVS".to_owned(), |weight| format!("weight {weight}"));
        println!("undrained {} in {}: IPVS shows {now}", undone.backend, undone.service);
    }
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

fn describe_rules(drain: &Drained) -> String {
    let Rules { grace, timeout, quiet, .. } = drain.rules;
    let timeout = humantime::format_duration(timeout);
    match drain.service {
        ServiceKey::Addr { protocol: Protocol::Udp, .. } => format!(
            "done after {} and {} without a packet, or at the timeout ({timeout})",
            humantime::format_duration(grace),
            humantime::format_duration(quiet)
        ),
        _ => format!("done when its connections close, or at the timeout ({timeout})"),
    }
}

/// Follows the drains until the daemon records their end: a live line on a terminal, a plain
/// line every few seconds otherwise, nothing but the final document with `--output json`. A
/// daemon that restarts meanwhile is waited for: the drains are in its state and it finishes them.
fn follow(daemon: &Client, asked: &DrainReply, output: Output) -> anyhow::Result<()> {
    let drains = &asked.drains[..];
    let deadline = drains.iter().map(|d| d.rules.timeout).max().unwrap_or_default() + Duration::from_secs(30);
    let started = Instant::now();
    let text = output == Output::Text;
    let tty = text && std::io::stdout().is_terminal();
    let mut last_line = Instant::now();
    loop {
        if started.elapsed() > deadline {
            return Err(Failure::new(
                exit::RUNTIME_FAILURE,
                "the daemon did not finish the drain within its timeout; is it running?",
            )
            .into());
        }
        let line = match daemon.call::<DrainsReply>(&Request::Drains) {
            Ok(reply) => {
                let ours: Vec<&DrainView> =
                    reply.drains.iter().filter(|view| is_ours(view, drains)).collect();
                if ours.len() < drains.len() {
                    return Err(Failure::new(
                        exit::RUNTIME_FAILURE,
                        "the drain was undone (undrain) or replaced",
                    )
                    .into());
                }
                if ours.iter().all(|view| view.drain.ended.is_some()) {
                    if tty {
                        println!();
                    }
                    return finish(asked, &ours, output);
                }
                let connections: u64 = ours
                    .iter()
                    .filter_map(|view| view.ipvs)
                    .map(|now| u64::from(now.active_connections))
                    .sum();
                format!("{connections} active connection(s)")
            }
            Err(err) if err.daemon_is_away() => "waiting for the daemon".to_owned(),
            Err(err) => return Err(failure(err)),
        };
        let elapsed = Duration::from_secs(started.elapsed().as_secs());
        let left = drains[0].rules.timeout.saturating_sub(elapsed);
        let line = format!(
            "draining {}: {line}, {} elapsed, {} until the timeout",
            drains[0].backend,
            humantime::format_duration(elapsed),
            humantime::format_duration(left)
        );
        if tty {
            print!("\r{line}\x1b[K");
            std::io::stdout().flush()?;
        } else if text && last_line.elapsed() >= Duration::from_secs(5) {
            println!("{line}");
            last_line = Instant::now();
        }
        std::thread::sleep(POLL);
    }
}

/// One of the drains this command asked for, not a later drain of the same backend.
fn is_ours(view: &DrainView, drains: &[Drained]) -> bool {
    let entry = &view.drain;
    drains.iter().any(|d| {
        (d.service, d.backend, d.started_unix_ms) == (entry.service, entry.backend, entry.started_unix_ms)
    })
}

/// How each drain ended; with `--output json`, the answer to `drain` with `ended` beside it.
fn finish(reply: &DrainReply, ours: &[&DrainView], output: Output) -> anyhow::Result<()> {
    let mut timed_out = false;
    let mut ended = Vec::new();
    for view in ours {
        let end = view.drain.ended.expect("all ended");
        timed_out |= end.ending == Ending::Timeout;
        match output {
            Output::Text => {
                println!("{} in {}: {}", view.drain.backend, view.drain.service, end.ending.describe())
            }
            Output::Json => ended.push(json!({
                "service": view.drain.service,
                "backend": view.drain.backend,
                "ending": end.ending,
                "description": end.ending.describe(),
                "at_unix_ms": end.at_unix_ms,
            })),
        }
    }
    if output == Output::Json {
        let mut document = serde_json::to_value(reply)?;
        document["ended"] = json!(ended);
        println!("{}", serde_json::to_string_pretty(&document)?);
    }
    if timed_out {
        return Err(Failure::new(EXIT_DRAIN_TIMEOUT, "the drain timed out").into());
    }
    Ok(())
}
