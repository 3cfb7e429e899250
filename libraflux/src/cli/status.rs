//! `libraflux status`: the live IPVS table, overlaid with the daemon's view (health, last
//! reconcile) when a daemon answers on the metrics address. Without a daemon it still shows the
//! kernel's table, and says the daemon did not answer.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::Context as _;
use libraflux::{
    config::{self, Metrics},
    ipvs::{Ipvs as _, IpvsClient, ServiceStatus},
    model::ServiceKey,
};
use serde_json::{Value, json};

use super::common::{ConfigArg, Output, runtime};

/// The daemon's answer is small; anything bigger is not the daemon.
const MAX_STATUS_BYTES: u64 = 16 << 20;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Where to find the daemon's address (`metrics.listen`); the default config if omitted.
    #[command(flatten)]
    config: ConfigArg,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub fn run(args: &StatusArgs) -> anyhow::Result<()> {
    // A broken config must not hide the table: fall back to the default address.
    let listen = config::load(args.config.path.as_deref())
        .map(|config| config.metrics.listen)
        .unwrap_or_else(|_| Metrics::default().listen);
    let daemon = daemon_status(listen);
    let table = runtime()?.block_on(async {
        let mut client = IpvsClient::connect().await?;
        client.services().await
    });
    let table = table.context("reading the IPVS table")?;
    match args.output {
        Output::Json => {
            let daemon_json = daemon.as_ref().map_or(Value::Null, Clone::clone);
            let services: Vec<Value> = table.iter().map(service_json).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "daemon": daemon_json, "services": services }))?
            );
        }
        Output::Text => print!("{}", render_text(listen, daemon.as_ref(), &table)),
    }
    Ok(())
}

/// GET /status from the daemon, bounded in time and size.
pub(super) fn daemon_status(listen: SocketAddr) -> Result<Value, String> {
    let fetch = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&listen, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(
            format!("GET /status HTTP/1.1\r\nHost: {listen}\r\nConnection: close\r\n\r\n").as_bytes(),
        )?;
        let mut response = String::new();
        stream.take(MAX_STATUS_BYTES).read_to_string(&mut response)?;
        Ok(response)
    };
    let response = fetch().map_err(|err| format!("no daemon answers on {listen} ({err})"))?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("the daemon's answer is not HTTP")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("the daemon answered {}", head.lines().next().unwrap_or_default()));
    }
    serde_json::from_str(body).map_err(|err| format!("the daemon's /status is not JSON: {err}"))
}

/// `, DRAINING` or `, drained (rule)` from the daemon's drains for this backend.
fn drain_state(status: &Value, service: &str, backend: &str) -> String {
    let Some(drains) = status["drains"].as_array() else { return String::new() };
    let Some(drain) = drains.iter().find(|d| d["service"] == service && d["backend"] == backend) else {
        return String::new();
    };
    match drain["ended"]["ending"].as_str() {
        None => ", DRAINING".to_owned(),
        Some(ending) => format!(", drained ({ending})"),
    }
}

/// `, last packet 3.2s ago` from the daemon's eBPF view of one destination; empty if unwatched.
fn last_traffic(flows: &Value) -> String {
    if flows.is_null() {
        return String::new();
    }
    match flows["idle_seconds"].as_f64() {
        Some(idle) => format!(", last packet {idle:.1}s ago"),
        None => ", no packet seen".to_owned(),
    }
}

fn service_json(status: &ServiceStatus) -> Value {
    let backends: Vec<Value> = status
        .destinations
        .values()
        .map(|dest| {
            json!({
                "backend": dest.destination.key.to_string(),
                "weight": dest.destination.weight,
                "forwarding": dest.destination.forwarding,
                "active_connections": dest.active_connections,
                "inactive_connections": dest.inactive_connections,
                "connections_total": dest.stats.connections,
                "packets_in": dest.stats.packets_in,
                "bytes_in": dest.stats.bytes_in,
            })
        })
        .collect();
    json!({
        "service": status.service.key.to_string(),
        "scheduler": status.service.scheduler,
        "persistence": status.service.persistence,
        "backends": backends,
    })
}

fn render_text(listen: SocketAddr, daemon: Result<&Value, &String>, table: &[ServiceStatus]) -> String {
    let mut out = String::new();
    match daemon {
        Ok(status) => out.push_str(&format!(
            "daemon on {listen}: last reconcile {}, {} drift repair(s), reloads ok {} / failed {}\n",
            status["last_reconcile"]["result"].as_str().unwrap_or("none yet"),
            status["drift_repairs"],
            status["reloads"]["ok"],
            status["reloads"]["failed"],
        )),
        Err(why) => out.push_str(&format!("daemon: {why} (showing the kernel's table only)\n")),
    }
    if table.is_empty() {
        out.push_str("IPVS holds no services.\n");
    }
    for status in table {
        let key = status.service.key.to_string();
        out.push_str(&format!("\n{key}  {}\n", status.service.scheduler));
        let protocol = match status.service.key {
            ServiceKey::Addr { protocol, .. } => Some(protocol),
            ServiceKey::Fwmark { .. } => None,
        };
        for dest in status.destinations.values() {
            let backend = dest.destination.key.to_string();
            let health = daemon
                .ok()
                .and_then(|status| status["health"][&key][&backend]["healthy"].as_bool())
                .map_or("unchecked", |healthy| if healthy { "healthy" } else { "UNHEALTHY" });
            let drain = daemon.ok().map(|status| drain_state(status, &key, &backend)).unwrap_or_default();
            let traffic = protocol
                .zip(daemon.ok())
                .map(|(protocol, status)| last_traffic(&status["traffic"][format!("{protocol}:{backend}")]))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {backend:<28} weight {:<5} active {:<6} inactive {:<6} {health}{traffic}{drain}\n",
                dest.destination.weight, dest.active_connections, dest.inactive_connections
            ));
        }
    }
    out
}
