//! `libraflux debug ...`: hidden tools for checking a node by hand.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use libraflux::{
    model::ServiceKey,
    observe::{DestKey, Direction, FlowCounter, FlowSource as _, Limits},
};

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Attach the eBPF counter to interfaces, count traffic to the given destinations for a
    /// while, and print the counts.
    CountFlows {
        /// Interface to attach to; repeat for several.
        #[arg(long = "interface", required = true)]
        interfaces: Vec<String>,
        #[arg(long, value_enum, default_value_t = DirectionArg::Ingress)]
        direction: DirectionArg,
        /// Destination to count, as a service key: tcp:10.0.0.1:80, udp:[2001:db8::1]:53.
        #[arg(long = "watch", required = true)]
        watch: Vec<ServiceKey>,
        /// How long to count before printing.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DirectionArg {
    Ingress,
    Egress,
}

pub fn run(command: DebugCommand) -> anyhow::Result<()> {
    match command {
        DebugCommand::CountFlows { interfaces, direction, watch, duration } => {
            count_flows(&interfaces, direction, &watch, duration)
        }
    }
}

fn count_flows(
    interfaces: &[String],
    direction: DirectionArg,
    watch: &[ServiceKey],
    duration: Duration,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let max = u32::try_from(watch.len()).context("too many destinations")?;
        let mut counter = FlowCounter::load(Limits::destinations(max)).context("loading the eBPF counter")?;
        let direction = match direction {
            DirectionArg::Ingress => Direction::Ingress,
            DirectionArg::Egress => Direction::Egress,
        };
        for interface in interfaces {
            counter.attach(interface, direction)?;
        }
        for key in watch {
            counter.watch(ebpf_key(key)?)?;
        }
        tokio::time::sleep(duration).await;
        let counts = counter.snapshot()?;
        let now = std::time::Instant::now();
        println!(
            "{:<40} {:>12} {:>14} {:>10} {:>10}",
            "DESTINATION", "PACKETS", "BYTES", "NEW_FLOWS", "IDLE"
        );
        for key in watch {
            let value = counts.get(&ebpf_key(key)?).copied().unwrap_or_default();
            let idle = match value.idle_for(now) {
                Some(idle) => format!("{:.1}s", idle.as_secs_f64()),
                None => "-".to_owned(),
            };
            println!(
                "{:<40} {:>12} {:>14} {:>10} {:>10}",
                key.to_string(),
                value.packets,
                value.bytes,
                value.new_flows,
                idle
            );
        }
        Ok(())
    })
}

fn ebpf_key(key: &ServiceKey) -> anyhow::Result<DestKey> {
    let ServiceKey::Addr { protocol, addr, port } = *key else {
        anyhow::bail!("{key}: only address services can be counted, not firewall marks");
    };
    Ok(DestKey::new(addr, port, protocol.number()))
}
