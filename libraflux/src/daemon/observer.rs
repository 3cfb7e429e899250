//! The daemon's use of the eBPF observer: attach to the node's interfaces, keep the watched set
//! equal to the configured VIPs and NAT backends, and report traffic per destination. When eBPF
//! cannot load (no capability, old kernel, verifier refusal) the daemon goes on with IPVS's own
//! counters: that is said once in the log and as `libraflux_ebpf_attached 0`.
//!
//! Two counters, so that every packet is counted once, under the role of its destination: VIPs
//! where clients' packets arrive (ingress), NAT backends where IPVS sends them after DNAT
//! (egress). One counter at both hooks would count a DR service's VIP twice: IPVS forwards the
//! packet with the VIP still its destination, out of the same interface on a one-armed director
//! or out of the backend-facing one otherwise (docs/observer.md).
//!
//! Both also count how connection attempts to the NAT backends end (docs/observer.md,
//! "Connection outcomes"): the ingress counter sees the backends' replies, the egress one the
//! SYNs to them; [`Observer::connect_outcomes`] sums the two.
//!
//! Loading happens on the blocking pool (`loading`): the daemon waits for it at start, before it
//! says it is ready, but not after: a retry or a start after a reload comes back to the loop when
//! it is done.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::loading::{Loaded, Loader};
use crate::{
    config::Config,
    model::{Forwarding, Service, ServiceKey},
    observe::{
        ConnectOutcomes, ConnectSide, DestKey, Direction, FlowCounter, FlowSnapshot, FlowSource as _, Limits,
        ObserveError, RefusalShield, SyncReport,
    },
};

/// Room for destinations added by reloads without reloading the programs.
const MIN_DESTINATIONS: u32 = 1024;

/// The first wait before an observer that failed to start is tried again; it doubles after
/// every failure, up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// The attached counters, if eBPF could be loaded.
#[derive(Debug)]
pub struct Observer {
    counters: Option<Counters>,
    /// When a failed start is tried again, and the wait after that.
    retry: Option<(Instant, Duration)>,
    /// A load under way on the blocking pool, and the wait before the next try if it fails.
    loading: Option<Duration>,
    loader: Loader,
}

/// Both counters, loaded and attached.
#[derive(Debug)]
pub(super) struct Counters {
    /// At ingress of every `node.interface`, watching the VIPs.
    vips: FlowCounter,
    /// At egress of every `node.interface`, watching the NAT backends.
    backends: FlowCounter,
    /// Where both are attached.
    interfaces: Vec<String>,
}

impl Observer {
    /// Loads and attaches both counters to every `node.interface`, on the blocking pool; the
    /// daemon's other tasks go on meanwhile. When that fails, the daemon goes on without them and
    /// [`Observer::retry_if_due`] tries again, with backoff.
    pub async fn start(config: &Config, loader: Loader) -> Self {
        let mut observer = Self { counters: None, retry: None, loading: None, loader };
        if let Some(request) = observer.begin_load(config, RETRY_FIRST) {
            let loaded = super::blocking(move || attach(request)).await;
            observer.loaded(loaded, config);
        }
        observer
    }

    /// Starts a load on the blocking pool, unless one is under way or no interface is configured;
    /// [`Observer::loaded`] takes its result.
    fn try_start(&mut self, config: &Config, backoff: Duration) {
        if let Some(request) = self.begin_load(config, backoff) {
            self.loader.spawn(move || Loaded::Observer(attach(request)));
        }
    }

    /// What to load, and the load marked as under way (`backoff` is the wait if it fails); `None`
    /// while a load is under way or when no interface is configured.
    fn begin_load(&mut self, config: &Config, backoff: Duration) -> Option<Request> {
        self.retry = None;
        if self.loading.is_some() {
            return None;
        }
        if config.node.interfaces.is_empty() {
            tracing::info!("no node.interface configured: the eBPF observer is off");
            return None;
        }
        self.loading = Some(backoff);
        Some(Request::of(config))
    }

    /// What a load gave: the counters are made to fit `config` as it is now (a reload may have
    /// come while they loaded) and attached; a failure is tried again after its backoff.
    pub fn loaded(&mut self, result: Result<Box<Counters>, ObserveError>, config: &Config) {
        let backoff = self.loading.take().unwrap_or(RETRY_FIRST);
        match result {
            Ok(_) if config.node.interfaces.is_empty() => {
                tracing::info!("node.interface became empty while the eBPF observer loaded: it is off");
            }
            Ok(counters) => {
                self.counters = Some(*counters);
                self.reconfigure(config);
                self.sync(config);
            }
            Err(err) => {
                tracing::warn!(
                    error = %render(&err),
                    retry_in = ?backoff,
                    "eBPF observer unavailable; using IPVS counters only until it starts"
                );
                self.retry = Some((Instant::now() + backoff, (backoff * 2).min(RETRY_MAX)));
            }
        }
    }

    /// Starts a failed start again once its backoff has passed (its result comes back to the
    /// loop, see [`Observer::loaded`]).
    pub fn retry_if_due(&mut self, config: &Config) {
        if let Some((at, next)) = self.retry
            && Instant::now() >= at
        {
            self.try_start(config, next);
        }
    }

    /// After a reload: attaches both counters to the interfaces `config` adds to
    /// `node.interface` and detaches them from those it drops; starts the observer if it was
    /// off or had failed (at once, not at its backoff), and stops it when no interface is left.
    pub fn reconfigure(&mut self, config: &Config) {
        if config.node.interfaces.is_empty() && self.counters.take().is_some() {
            tracing::info!("node.interface is now empty: the eBPF observer is detached and off");
        }
        let Some(counters) = &mut self.counters else {
            self.try_start(config, RETRY_FIRST);
            return;
        };
        let wanted: BTreeSet<String> = config.node.interfaces.iter().cloned().collect();
        let had: BTreeSet<String> = counters.interfaces.iter().cloned().collect();
        if wanted == had {
            return;
        }
        let mut result = Ok(());
        for interface in had.difference(&wanted) {
            result = result.and(counters.detach(interface));
        }
        for interface in wanted.difference(&had) {
            result = result.and(counters.attach(interface));
        }
        match result {
            Ok(()) => tracing::info!(interfaces = ?config.node.interfaces, "eBPF observer re-attached"),
            Err(err) => tracing::error!(
                error = %render(&err),
                attached = ?counters.interfaces,
                "cannot re-attach the eBPF observer to every node.interface"
            ),
        }
    }

    pub fn attached(&self) -> bool {
        self.counters.is_some()
    }

    /// The shield that holds back the node's refusals of a VIP while its scheduler changes:
    /// the NAT-backend counter's, which sits at egress of every `node.interface`.
    pub fn refusal_shield(&self) -> Option<RefusalShield> {
        self.counters.as_ref().map(|counters| counters.backends.refusal_shield())
    }

    /// Makes the watched sets equal what `config` wants counted, and tracks the connection
    /// outcomes of its NAT backends.
    pub fn sync(&mut self, config: &Config) {
        let Some(counters) = &mut self.counters else { return };
        match counters.sync(&watched(config)) {
            Ok((vips, backends)) if vips.added + vips.removed + backends.added + backends.removed > 0 => {
                tracing::info!(
                    vips_added = vips.added,
                    vips_removed = vips.removed,
                    backends_added = backends.added,
                    backends_removed = backends.removed,
                    "eBPF watch list updated"
                )
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %render(&err), "cannot update the eBPF watch list"),
        }
    }

    /// How connection attempts to each NAT backend ended since it was first tracked, both
    /// counters summed: what a circuit breaker compares between two calls. `None` without an
    /// observer or on a read error (logged).
    pub fn connect_outcomes(&self) -> Option<BTreeMap<DestKey, ConnectOutcomes>> {
        let counters = self.counters.as_ref()?;
        // Replies from the ingress counter, SYN timeouts from the egress one.
        let both = counters.vips.connect_outcomes().and_then(|mut all| {
            for (key, outcomes) in counters.backends.connect_outcomes()? {
                all.entry(key).and_modify(|seen| *seen = seen.combine(outcomes)).or_insert(outcomes);
            }
            Ok(all)
        });
        match both {
            Ok(outcomes) => Some(outcomes),
            Err(err) => {
                tracing::warn!(error = %render(&err), "cannot read the eBPF connection outcomes");
                None
            }
        }
    }

    /// How long since the last packet to `key`: `Some(None)` if watched and none seen yet,
    /// `None` if it is not watched or no observer runs (no traffic signal).
    pub fn idle(&self, key: &DestKey) -> Option<Option<Duration>> {
        let flows = self.counters.as_ref()?.flows(key).ok()??;
        Some(flows.idle_for(Instant::now()))
    }

    /// The counters of every watched destination; `None` without an observer or on a read error.
    pub fn snapshot(&self) -> Option<BTreeMap<DestKey, FlowSnapshot>> {
        self.counters.as_ref()?.snapshot().ok()
    }

    /// Per watched destination: packets, bytes, new flows and seconds since the last packet.
    pub fn traffic(&self) -> Value {
        let Some(counters) = &self.counters else { return Value::Null };
        let snapshot = match counters.snapshot() {
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

impl Counters {
    fn attach(&mut self, interface: &str) -> Result<(), ObserveError> {
        self.vips.attach(interface, Direction::Ingress)?;
        self.backends.attach(interface, Direction::Egress)?;
        self.interfaces.push(interface.to_owned());
        Ok(())
    }

    fn detach(&mut self, interface: &str) -> Result<(), ObserveError> {
        self.vips.detach(interface, Direction::Ingress)?;
        self.backends.detach(interface, Direction::Egress)?;
        self.interfaces.retain(|attached| attached != interface);
        Ok(())
    }

    /// Tracks the NAT backends' replies at ingress and their SYNs at egress, then makes the
    /// watched sets equal `wanted`: tracking first, so that a new backend's counters entry is
    /// created with its SYN timeouts flag (no rewrite of an entry that counts already).
    fn sync(&mut self, wanted: &Watched) -> Result<(SyncReport, SyncReport), ObserveError> {
        self.vips.sync_connects(&wanted.backends, ConnectSide::Replies)?;
        self.backends.sync_connects(&wanted.backends, ConnectSide::Attempts)?;
        Ok((self.vips.sync(&wanted.vips)?, self.backends.sync(&wanted.backends)?))
    }

    /// Both counters' destinations; one watched in both (a VIP that is also a NAT backend of
    /// another service) has both places' counts combined, and so has a NAT backend's connection
    /// outcomes (its replies counted at ingress, its SYN timeouts at egress).
    fn snapshot(&self) -> Result<BTreeMap<DestKey, FlowSnapshot>, ObserveError> {
        let mut all = self.vips.snapshot()?;
        for (key, flows) in self.backends.snapshot()? {
            all.entry(key).and_modify(|seen| *seen = seen.combine(flows)).or_insert(flows);
        }
        Ok(all)
    }

    /// One destination, from whichever counters watch it (combined if both do).
    fn flows(&self, key: &DestKey) -> Result<Option<FlowSnapshot>, ObserveError> {
        Ok(match (self.vips.flows(key)?, self.backends.flows(key)?) {
            (Some(vip), Some(backend)) => Some(vip.combine(backend)),
            (vip, backend) => vip.or(backend),
        })
    }
}

/// What a load needs of the config: where to attach, and how many destinations to make room for.
struct Request {
    interfaces: Vec<String>,
    vips: usize,
    backends: usize,
}

impl Request {
    fn of(config: &Config) -> Self {
        let wanted = watched(config);
        Self {
            interfaces: config.node.interfaces.clone(),
            vips: wanted.vips.len(),
            backends: wanted.backends.len(),
        }
    }
}

/// Loads both counters and attaches them to every interface of `request` (blocking: the verifier
/// runs in the kernel as each program loads).
fn attach(request: Request) -> Result<Box<Counters>, ObserveError> {
    // The ingress counter tracks no SYNs (they are seen at egress): no pending-SYN table.
    let vips = Limits { max_pending_syns: 1, ..limits(request.vips.max(request.backends)) };
    let counters = Counters {
        vips: attach_at(&request.interfaces, Direction::Ingress, vips)?,
        backends: attach_at(&request.interfaces, Direction::Egress, limits(request.backends))?,
        interfaces: request.interfaces,
    };
    tracing::info!(
        interfaces = ?counters.interfaces,
        "eBPF observer attached (VIPs at ingress, NAT backends at egress)"
    );
    Ok(Box::new(counters))
}

/// Room for twice `wanted` destinations (and as many tracked backends).
fn limits(wanted: usize) -> Limits {
    let wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
    Limits::destinations(wanted.saturating_mul(2).max(MIN_DESTINATIONS))
}

/// A counter sized by `limits`, attached at `direction` of every one of `interfaces`.
fn attach_at(
    interfaces: &[String],
    direction: Direction,
    limits: Limits,
) -> Result<FlowCounter, ObserveError> {
    let mut counter = FlowCounter::load(limits)?;
    for interface in interfaces {
        counter.attach(interface, direction)?;
    }
    Ok(counter)
}

/// What the daemon counts, by role.
#[derive(Debug, Default, PartialEq, Eq)]
struct Watched {
    /// Every address service's VIP.
    vips: BTreeSet<DestKey>,
    /// The backends of NAT services: after DNAT their address is on the packet. DR and tunnel
    /// backends are not watched (the packet still carries the VIP; docs/observer.md), so their
    /// per-backend figures are absent rather than wrong.
    backends: BTreeSet<DestKey>,
}

fn watched(config: &Config) -> Watched {
    watched_in(config.desired.values())
}

fn watched_in<'a>(services: impl IntoIterator<Item = &'a Service>) -> Watched {
    let mut watched = Watched::default();
    for service in services {
        let ServiceKey::Addr { protocol, addr, port } = service.key else { continue };
        watched.vips.insert(DestKey::new(addr, port, protocol.number()));
        for dest in service.destinations.values() {
            if dest.forwarding == Forwarding::Nat {
                watched.backends.insert(DestKey::new(dest.key.addr, dest.key.port, protocol.number()));
            }
        }
    }
    watched
}

fn protocol_name(number: u8) -> &'static str {
    crate::model::Protocol::from_number(number).map_or("ip", crate::model::Protocol::as_str)
}

/// An error and its causes, `a: b: c`.
pub(super) fn render(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Destination;

    fn service(key: &str, forwarding: Forwarding, backends: &[&str]) -> Service {
        let key: ServiceKey = key.parse().unwrap();
        let dests = backends.iter().map(|text| Destination::new(text.parse().unwrap(), 1, forwarding));
        Service::new(key, "rr").with_destinations(dests)
    }

    fn keys(texts: &[&str], proto: u8) -> BTreeSet<DestKey> {
        texts
            .iter()
            .map(|text| {
                let addr: std::net::SocketAddr = text.parse().unwrap();
                DestKey::new(addr.ip(), addr.port(), proto)
            })
            .collect()
    }

    #[test]
    fn vips_and_nat_backends_are_watched_apart_and_dr_backends_not_at_all() {
        let services = [
            service("udp:10.0.0.1:53", Forwarding::Nat, &["10.0.1.1:5353", "10.0.1.2:5353"]),
            service("tcp:10.0.0.2:80", Forwarding::Dr, &["10.0.2.1:80"]),
            service("tcp:[2001:db8::2]:443", Forwarding::Nat, &["[2001:db8:1::1]:8443"]),
        ];
        let fwmark = Service::new("fwmark:7".parse().unwrap(), "rr").with_destinations([Destination::new(
            "10.0.3.1:80".parse().unwrap(),
            1,
            Forwarding::Nat,
        )]);
        let watched = watched_in(services.iter().chain([&fwmark]));
        let tcp = crate::observe::IPPROTO_TCP;
        let udp = crate::observe::IPPROTO_UDP;
        let mut vips = keys(&["10.0.0.1:53"], udp);
        vips.extend(keys(&["10.0.0.2:80", "[2001:db8::2]:443"], tcp));
        let mut backends = keys(&["10.0.1.1:5353", "10.0.1.2:5353"], udp);
        backends.extend(keys(&["[2001:db8:1::1]:8443"], tcp));
        assert_eq!(watched, Watched { vips, backends }, "no DR backend, nothing of the fwmark service");
    }
}
