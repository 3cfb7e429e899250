//! The daemon's use of the eBPF observer: attach to the node's interfaces, keep the watched set
//! equal to the configured VIPs and NAT backends, and report traffic per destination. When eBPF
//! cannot load (no capability, old kernel, verifier refusal) the daemon goes on with IPVS's own
//! counters: that is said once in the log and as `libraflux_ebpf_attached 0`.

use std::{collections::BTreeSet, time::Instant};

use serde_json::{Value, json};

use crate::{
    config::Config,
    model::{Forwarding, ServiceKey},
    observe::{DestKey, Direction, FlowCounter, FlowSource as _, Limits},
};

/// Room for destinations added by reloads without reloading the programs.
const MIN_DESTINATIONS: u32 = 1024;

/// The attached counter, or the reason there is none.
#[derive(Debug)]
pub struct Observer {
    counter: Option<FlowCounter>,
}

impl Observer {
    /// Loads and attaches at ingress and egress of every `node.interface`.
    pub fn start(config: &Config) -> Self {
        if config.node.interfaces.is_empty() {
            tracing::info!("no node.interface configured: the eBPF observer is off");
            return Self { counter: None };
        }
        match attach(config) {
            Ok(counter) => Self { counter: Some(counter) },
            Err(err) => {
                tracing::warn!(error = %render(&err), "eBPF observer unavailable; using IPVS counters only");
                Self { counter: None }
            }
        }
    }

    pub fn attached(&self) -> bool {
        self.counter.is_some()
    }

    /// Makes the watched set equal what `config` wants counted.
    pub fn sync(&mut self, config: &Config) {
        let Some(counter) = &mut self.counter else { return };
        match counter.sync(&watched(config)) {
            Ok(report) if report.added + report.removed > 0 => {
                tracing::info!(added = report.added, removed = report.removed, "eBPF watch list updated")
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %render(&err), "cannot update the eBPF watch list"),
        }
    }

    /// How long since the last packet to `key`: `Some(None)` if watched and none seen yet,
    /// `None` if it is not watched or no observer runs (no traffic signal).
    pub fn idle(&self, key: &DestKey) -> Option<Option<std::time::Duration>> {
        let snapshot = self.counter.as_ref()?.snapshot().ok()?;
        snapshot.get(key).map(|flows| flows.idle_for(Instant::now()))
    }

    /// The counters of every watched destination; `None` without an observer or on a read error.
    pub fn snapshot(&self) -> Option<std::collections::BTreeMap<DestKey, crate::observe::FlowSnapshot>> {
        self.counter.as_ref()?.snapshot().ok()
    }

    /// Per watched destination: packets, bytes, new flows and seconds since the last packet.
    pub fn traffic(&self) -> Value {
        let Some(counter) = &self.counter else { return Value::Null };
        let snapshot = match counter.snapshot() {
            Ok(snapshot) => snapshot,
            Err(err) => {
                tracing::warn!(error = %render(&err), "cannot read the eBPF counters");
                return Value::Null;
            }
        };
        let now = Instant::now();
        snapshot
            .iter()
            .map(|(key, flows)| {
                let name =
                    format!("{}:{}", protocol_name(key.proto), std::net::SocketAddr::new(key.ip(), key.port));
                let value = json!({
                    "packets": flows.packets,
                    "bytes": flows.bytes,
                    "new_flows": flows.new_flows,
                    "idle_seconds": flows.idle_for(now).map(|idle| idle.as_secs_f64()),
                });
                (name, value)
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

fn attach(config: &Config) -> Result<FlowCounter, crate::observe::ObserveError> {
    let wanted = u32::try_from(watched(config).len()).unwrap_or(u32::MAX);
    let mut counter =
        FlowCounter::load(Limits::destinations(wanted.saturating_mul(2).max(MIN_DESTINATIONS)))?;
    for interface in &config.node.interfaces {
        for direction in [Direction::Ingress, Direction::Egress] {
            counter.attach(interface, direction)?;
        }
    }
    tracing::info!(interfaces = ?config.node.interfaces, "eBPF observer attached (ingress and egress)");
    Ok(counter)
}

/// Every address service's VIP, and the backends of NAT services: after DNAT their address is
/// on the packet. DR and tunnel backends are not watched (the packet still carries the VIP;
/// docs/observer.md), so their per-backend figures are absent rather than wrong.
fn watched(config: &Config) -> BTreeSet<DestKey> {
    let mut keys = BTreeSet::new();
    for service in config.desired.values() {
        let ServiceKey::Addr { protocol, addr, port } = service.key else { continue };
        keys.insert(DestKey::new(addr, port, protocol.number()));
        for dest in service.destinations.values() {
            if dest.forwarding == Forwarding::Nat {
                keys.insert(DestKey::new(dest.key.addr, dest.key.port, protocol.number()));
            }
        }
    }
    keys
}

fn protocol_name(number: u8) -> &'static str {
    crate::model::Protocol::from_number(number).map_or("ip", crate::model::Protocol::as_str)
}

fn render(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
