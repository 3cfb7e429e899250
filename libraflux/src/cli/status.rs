//! `libraflux status`: the IPVS table and the connection sync daemons with the daemon's view
//! (health, drains, eBPF traffic, last reconcile), all as the daemon reads them, over its control
//! socket. When no daemon answers it reads the kernel's table and sync daemons itself and says so;
//! a daemon that refuses us is an error.

use libraflux::{
    control::{
        Client, ClientError, Request,
        protocol::{self, Status, TableService},
    },
    ipvs::{Ipvs as _, IpvsClient, SyncDaemon, sync},
    model::ServiceKey,
};
use serde_json::{Value, json};

use super::{
    common::{Failure, Output, exit, runtime},
    control::failure,
    render_error,
};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub fn run(args: &StatusArgs, daemon: &Client) -> anyhow::Result<()> {
    let (status, sync, without) = match daemon.call::<Status>(&Request::Status) {
        Ok(status) => {
            let sync = status.daemon["sync"]["daemons"].clone();
            (status, sync, None)
        }
        Err(err @ ClientError::NoDaemon { .. }) => {
            let (status, sync) = kernel_only(&err)?;
            (status, sync, Some(err.to_string()))
        }
        Err(err) => return Err(failure(err)),
    };
    let services = status.services.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "the daemon could not read IPVS: {}",
            status.ipvs_error.as_deref().unwrap_or("no reason given")
        )
    })?;
    match args.output {
        Output::Json => {
            let mut document = json!({ "daemon": status.daemon, "sync": sync, "services": services });
            if let Some(why) = &without {
                document["daemon_error"] = json!(why);
            }
            println!("{}", serde_json::to_string_pretty(&document)?);
        }
        Output::Text => {
            let header = match &without {
                None => daemon_line(daemon, &status.daemon),
                Some(why) => format!("daemon: {why} (showing the kernel's table only)\n"),
            };
            let announce = announce_lines(&status.daemon["announce"]);
            let etcd = etcd_lines(&status.daemon["etcd"]);
            print!("{header}{etcd}{}{announce}{}", sync_line(&sync), render_table(&status.daemon, services));
        }
    }
    Ok(())
}

/// No daemon: the kernel's table and sync daemons, read here (which needs root). When that fails
/// too, the exit code says that no daemon answered.
fn kernel_only(no_daemon: &ClientError) -> anyhow::Result<(Status, Value)> {
    let read = runtime()?.block_on(async {
        let mut client = IpvsClient::connect().await?;
        Ok::<_, libraflux::ipvs::IpvsError>((client.services().await?, client.sync_daemons().await?))
    });
    let (table, sync) = read.map_err(|err| {
        let message =
            format!("{no_daemon}, and reading the IPVS table here failed too: {}", render_error(&err.into()));
        Failure::new(exit::NO_DAEMON, message)
    })?;
    let status = Status { daemon: Value::Null, services: Some(protocol::table(&table)), ipvs_error: None };
    Ok((status, json!(sync)))
}

/// `sync: the kernel runs the master sync daemon (...)`, from the daemons as JSON.
fn sync_line(daemons: &Value) -> String {
    let daemons: Vec<SyncDaemon> = serde_json::from_value(daemons.clone()).unwrap_or_default();
    format!("sync: the kernel runs {}\n", sync::describe(&daemons))
}

/// `announce: 192.0.2.10 ANNOUNCED (any: 1 of 2 services serve)` per VIP of `announce:`, and the
/// last reconfigure when it failed; empty without `announce:`.
fn announce_lines(announce: &Value) -> String {
    let Some(vips) = announce["vips"].as_array() else { return String::new() };
    let mut out = String::new();
    for vip in vips {
        let services = vip["services"].as_object().map_or(0, serde_json::Map::len);
        let serving = vip["services"]
            .as_object()
            .map_or(0, |s| s.values().filter(|v| v.as_bool() == Some(true)).count());
        let state = match (vip["announced"].as_bool(), vip["held_until_unix"].as_u64()) {
            (Some(true), _) => "ANNOUNCED".to_owned(),
            (_, Some(until)) => format!("withdrawn, held down until unix {until}"),
            _ => "withdrawn".to_owned(),
        };
        out.push_str(&format!(
            "announce: {} {state} ({}: {serving} of {services} services serve)\n",
            vip["vip"].as_str().unwrap_or("?"),
            vip["require"].as_str().unwrap_or("any"),
        ));
    }
    let last = &announce["last_reconfigure"];
    if let Some(error) = last["error"].as_str() {
        out.push_str(&format!(
            "announce: last BIRD reconfigure FAILED ({}): {error}\n",
            last["result"].as_str().unwrap_or("?")
        ));
    }
    if announce["ready"].as_bool() == Some(false) {
        out.push_str("announce: nothing is announced before the first reconcile succeeds\n");
    }
    out
}

/// `config: etcd revision 42 (sha256 3f5c9a0e1b2d), watching /libraflux/fleet/`, and what is
/// wrong when something is: etcd not read, the last good configuration in use, the last refusal.
/// Empty without `source.etcd`.
fn etcd_lines(etcd: &Value) -> String {
    let Some(prefix) = etcd["prefix"].as_str() else { return String::new() };
    let revision =
        etcd["revision"].as_i64().map_or_else(|| "none".to_owned(), |revision| revision.to_string());
    let sha256 = etcd["sha256"].as_str().unwrap_or("-");
    let state =
        if etcd["connected"].as_bool() == Some(true) { "watching" } else { "NOT CONNECTED to etcd for" };
    let mut out = format!(
        "config: etcd revision {revision} (sha256 {}), {state} {prefix}\n",
        &sha256[..sha256.len().min(12)]
    );
    if let Some(why) = etcd["from_last_good_reason"].as_str() {
        out.push_str(&format!("config: running the LAST GOOD configuration kept on disk: {why}\n"));
    }
    if let Some(error) = etcd["last_error"]["detail"].as_str()
        && etcd["connected"].as_bool() != Some(true)
    {
        out.push_str(&format!("config: etcd: {error}\n"));
    }
    let refused = &etcd["last_refused"];
    // A refusal older than the configuration in force is history, which the JSON keeps.
    if let Some(reason) = refused["reason"].as_str()
        && refused["revision"].as_i64() > etcd["revision"].as_i64()
    {
        out.push_str(&format!(
            "config: etcd revision {} REFUSED ({reason}); the running configuration stays\n",
            refused["revision"].as_i64().unwrap_or(0)
        ));
    }
    out
}

fn daemon_line(daemon: &Client, status: &Value) -> String {
    format!(
        "daemon on {}: last reconcile {}, {} drift repair(s), reloads ok {} / failed {}\n",
        daemon.path().display(),
        status["last_reconcile"]["result"].as_str().unwrap_or("none yet"),
        status["drift_repairs"],
        status["reloads"]["ok"],
        status["reloads"]["failed"],
    )
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

/// `, canary step 1 of 3 (5%)` or `, canary ABORTED (reason)` from the daemon's canaries.
fn canary_state(status: &Value, service: &str, backend: &str) -> String {
    let Some(canaries) = status["canaries"].as_array() else { return String::new() };
    let Some(canary) = canaries.iter().find(|c| c["service"] == service && c["backend"] == backend) else {
        return String::new();
    };
    let steps = canary["rollout"]["steps"].as_array().map_or(0, Vec::len).saturating_sub(1);
    match canary["state"].as_str() {
        Some("running") => format!(
            ", canary step {} of {steps} ({}%)",
            canary["step"].as_u64().unwrap_or(0) + 1,
            canary["target_percent"].as_u64().unwrap_or(0)
        ),
        Some("aborted") => format!(", canary ABORTED ({})", canary["reason"].as_str().unwrap_or("?")),
        _ => String::new(),
    }
}

/// `, circuit OPEN` or `, circuit half-open` from the daemon's circuit breakers.
fn circuit_state(status: &Value, service: &str, backend: &str) -> String {
    let Some(breakers) = status["circuit_breakers"].as_array() else { return String::new() };
    let breaker = breakers.iter().find(|b| b["service"] == service && b["backend"] == backend);
    match breaker.and_then(|b| b["state"].as_str()) {
        Some("open") => ", circuit OPEN".to_owned(),
        Some("half_open") => ", circuit half-open".to_owned(),
        _ => String::new(),
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

/// The table with the daemon's view of each backend (`status` is null without a daemon).
fn render_table(status: &Value, services: &[TableService]) -> String {
    let mut out = String::new();
    if services.is_empty() {
        out.push_str("IPVS holds no services.\n");
    }
    let daemon = (!status.is_null()).then_some(status);
    for service in services {
        let key = service.service.to_string();
        out.push_str(&format!("\n{key}  {}\n", service.scheduler));
        let protocol = match service.service {
            ServiceKey::Addr { protocol, .. } => Some(protocol),
            ServiceKey::Fwmark { .. } => None,
        };
        for dest in &service.backends {
            let backend = dest.backend.to_string();
            let health = daemon
                .and_then(|status| status["health"][&key][&backend]["healthy"].as_bool())
                .map_or("unchecked", |healthy| if healthy { "healthy" } else { "UNHEALTHY" });
            let drain = daemon
                .map(|status| {
                    drain_state(status, &key, &backend)
                        + &canary_state(status, &key, &backend)
                        + &circuit_state(status, &key, &backend)
                })
                .unwrap_or_default();
            let traffic = protocol
                .zip(daemon)
                .map(|(protocol, status)| last_traffic(&status["traffic"][format!("{protocol}:{backend}")]))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {backend:<28} weight {:<5} active {:<6} inactive {:<6} {health}{traffic}{drain}\n",
                dest.weight, dest.active_connections, dest.inactive_connections
            ));
        }
    }
    out
}
