//! Decoding one `services:` item: its identity (name and key), IPVS attributes, backends, and
//! the per-backend checks that need the service (family, VIP, port rewriting, duplicates).

use std::{collections::BTreeMap, net::IpAddr};

use marked_yaml::Node;

use super::{
    Drain, OnUnhealthy, ServiceSettings, breaker, canary,
    decode::{Diagnostics, Field, Map, position},
    error::Position,
    health,
    schema::Located,
};
use crate::{
    canary::Rollout,
    model::{DestKey, Destination, Family, Forwarding, Protocol, Service, ServiceKey},
};

/// What a service item declares. Name and key are kept even when other fields are invalid, so
/// that duplicates are still found; `built` is there only when the item has no error.
#[derive(Clone, Debug)]
pub(super) struct ServiceDecl {
    pub name: Option<Located<String>>,
    pub key: Option<Located<ServiceKey>>,
    pub built: Option<(Service, ServiceSettings)>,
}

const SERVICE_KEYS: &[&str] = &[
    "name",
    "protocol",
    "vip",
    "port",
    "fwmark",
    "family",
    "scheduler",
    "forwarding",
    "persistence",
    "health",
    "on_unhealthy",
    "drain",
    "circuit_breaker",
    "backends",
];

/// The schedulers of the mainline kernel (`net/netfilter/ipvs/ip_vs_*.c`).
pub(super) const SCHEDULERS: &[&str] =
    &["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"];

pub(super) fn service(d: &mut Diagnostics<'_>, item: &Node) -> ServiceDecl {
    let Some(map) = d.mapping(item, position(item.span()), "service", SERVICE_KEYS) else {
        return ServiceDecl { name: None, key: None, built: None };
    };
    let before = d.errors.len();
    let name = d.required(&map, "name").and_then(|field| service_name(d, field));
    let key = service_key(d, &map);
    let service_key = key.as_ref().map(|key| key.value);
    let scheduler = d.required(&map, "scheduler").and_then(|field| d.choice(field, SCHEDULERS));
    let forwarding = map.get("forwarding").map_or(Some(Forwarding::Nat), |field| forwarding(d, field));
    let persistence = map.get("persistence").map_or(Some(None), |field| persistence(d, field).map(Some));
    let backends = d
        .required(&map, "backends")
        .and_then(|field| backends(d, field, service_key, forwarding.unwrap_or(Forwarding::Nat)));
    let (destinations, canaries) =
        backends.map_or((None, None), |(dests, canaries)| (Some(dests), Some(canaries)));
    if let Some(canaries) = &canaries {
        let weights: Vec<(Option<Position>, u32)> =
            canaries.values().map(|(at, _, weight)| (*at, *weight)).collect();
        canary::check_service(d, scheduler, &weights);
    }
    let health = health::health(d, map.get("health"), service_key, destinations.as_ref());
    let on_unhealthy = map.get("on_unhealthy").map_or(Some(OnUnhealthy::default()), |field| {
        d.choice(field, &["quiesce", "remove"]).map(|choice| match choice {
            "remove" => OnUnhealthy::Remove,
            _ => OnUnhealthy::Quiesce,
        })
    });
    let drain = map.get("drain").map_or(Some(Drain::default()), |field| health::drain(d, field));
    let circuit_breaker = match map.get("circuit_breaker") {
        Some(field) => breaker::circuit_breaker(d, field).map(Some),
        None => Some(None),
    };
    if let (Some(destinations), Some(key), Some(name)) = (&destinations, &key, &name)
        && destinations.is_empty()
    {
        let message = format!(
            "service {:?} ({}) has no backends: IPVS will refuse its connections",
            name.value, key.value
        );
        d.warning(map.position(), message);
    }
    let built = (d.errors.len() == before)
        .then(|| {
            let service = Service {
                key: service_key?,
                scheduler: scheduler?.to_owned(),
                persistence: persistence?,
                persistence_netmask: None,
                destinations: destinations?,
            };
            let settings = ServiceSettings {
                name: name.as_ref()?.value.clone(),
                health: health?,
                on_unhealthy: on_unhealthy?,
                drain: drain?,
                canaries: canaries?.into_iter().map(|(key, (_, rollout, _))| (key, rollout)).collect(),
                circuit_breaker: circuit_breaker?,
            };
            Some((service, settings))
        })
        .flatten();
    ServiceDecl { name, key, built }
}

fn service_name(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<Located<String>> {
    let name = d.string(field)?;
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        let message = format!("{}: {name:?} must be 1 to 63 characters of a-z, 0-9, _ and -", field.label());
        d.error(field.position(), message);
        return None;
    }
    Some(Located { value: name.to_owned(), at: field.position() })
}

/// `protocol` + `vip` + `port`, or `fwmark` (+ `family`).
fn service_key(d: &mut Diagnostics<'_>, map: &Map<'_>) -> Option<Located<ServiceKey>> {
    if let Some(fwmark) = map.get("fwmark") {
        for key in ["protocol", "vip", "port"] {
            if let Some(field) = map.get(key) {
                let message =
                    format!("{key} does not apply to a fwmark service: the mark selects its traffic");
                d.error(field.key_position(), message);
            }
        }
        let family = match map.get("family") {
            Some(field) => d.choice(field, &["ipv4", "ipv6"]).map(|choice| match choice {
                "ipv6" => Family::V6,
                _ => Family::V4,
            }),
            None => Some(first_backend_family(map).unwrap_or(Family::V4)),
        };
        let mark = d.integer(fwmark, 1, u64::from(u32::MAX));
        return Some(Located {
            value: ServiceKey::Fwmark { mark: mark?, family: family? },
            at: fwmark.position(),
        });
    }
    if let Some(field) = map.get("family") {
        let message = "family applies only to fwmark services: a VIP's address gives its family";
        d.error(field.key_position(), message);
    }
    let protocol = d.required(map, "protocol").and_then(|field| d.choice(field, &["tcp", "udp"]));
    let vip_field = d.required(map, "vip");
    let vip = vip_field.and_then(|field| {
        let addr = d.ip(field)?;
        if addr.is_unspecified() || addr.is_multicast() {
            d.error(field.position(), format!("{}: {addr} cannot be a VIP", field.label()));
            return None;
        }
        Some(addr)
    });
    let port = d.required(map, "port").and_then(|field| d.integer(field, 1, 65535));
    let protocol: Protocol = protocol?.parse().ok()?;
    Some(Located { value: ServiceKey::Addr { protocol, addr: vip?, port: port? }, at: vip_field?.position() })
}

/// A fwmark service without `family` takes the family of its first backend.
fn first_backend_family(map: &Map<'_>) -> Option<Family> {
    let Node::Sequence(items) = map.get("backends")?.value else { return None };
    let Node::Mapping(backend) = items.first()? else { return None };
    let address: IpAddr = backend.get_scalar("address")?.as_str().parse().ok()?;
    Some(family_of(address))
}

fn family_of(addr: IpAddr) -> Family {
    if addr.is_ipv4() { Family::V4 } else { Family::V6 }
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

fn forwarding(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<Forwarding> {
    d.choice(field, &["nat", "dr", "tunnel"]).map(|choice| match choice {
        "dr" => Forwarding::Dr,
        "tunnel" => Forwarding::Tunnel,
        _ => Forwarding::Nat,
    })
}

/// IPVS keeps the persistence timeout in whole seconds.
fn persistence(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<u32> {
    let duration = d.duration(field)?;
    let seconds = u32::try_from(duration.as_secs()).ok().filter(|seconds| *seconds > 0);
    if duration.subsec_nanos() != 0 || seconds.is_none() {
        let message = format!(
            "{}: {} must be a whole number of seconds, at least 1s",
            field.label(),
            humantime::format_duration(duration)
        );
        d.error(field.position(), message);
        return None;
    }
    seconds
}

const BACKEND_KEYS: &[&str] = &["address", "port", "weight", "max_connections", "canary"];

/// The canaries of a service: where each is written, its rollout and its configured weight.
type Canaries = BTreeMap<DestKey, (Option<Position>, Rollout, u32)>;

fn backends(
    d: &mut Diagnostics<'_>,
    field: Field<'_>,
    service: Option<ServiceKey>,
    forwarding: Forwarding,
) -> Option<(BTreeMap<DestKey, Destination>, Canaries)> {
    let before = d.errors.len();
    let mut destinations = BTreeMap::new();
    let mut canaries = Canaries::new();
    let mut first_seen: BTreeMap<DestKey, Option<Position>> = BTreeMap::new();
    for item in d.sequence(field)? {
        let Some(Backend { at, key, weight, max_connections, canary }) =
            backend(d, item, service, forwarding)
        else {
            continue;
        };
        if let Some(first) = first_seen.get(&key) {
            let message =
                format!("backend {key} is listed twice in this service (first at {})", line_col(*first));
            d.error(at, message);
            continue;
        }
        first_seen.insert(key, at);
        // A lower threshold of 0 lets the kernel resume the backend at 3/4 of the upper one.
        let destination =
            Destination { key, weight, forwarding, upper_threshold: max_connections, lower_threshold: 0 };
        destinations.insert(key, destination);
        if let Some((canary_at, rollout)) = canary {
            canaries.insert(key, (canary_at, rollout, weight));
        }
    }
    (d.errors.len() == before).then_some((destinations, canaries))
}

pub(super) fn line_col(at: Option<Position>) -> String {
    at.map_or_else(|| "?".to_owned(), |at| format!("line {}, column {}", at.line, at.col))
}

/// One decoded backend item.
struct Backend {
    /// Where its address is written.
    at: Option<Position>,
    key: DestKey,
    weight: u32,
    /// IPVS's upper connection threshold; 0: no limit.
    max_connections: u32,
    /// Its `canary:`, and where it is written.
    canary: Option<(Option<Position>, Rollout)>,
}

fn backend(
    d: &mut Diagnostics<'_>,
    item: &Node,
    service: Option<ServiceKey>,
    forwarding: Forwarding,
) -> Option<Backend> {
    let map = d.mapping(item, position(item.span()), "backend", BACKEND_KEYS)?;
    let address = d.required(&map, "address");
    let addr = address.and_then(|field| {
        let addr = d.ip(field)?;
        if addr.is_unspecified() || addr.is_multicast() {
            d.error(field.position(), format!("{}: {addr} cannot be a backend", field.label()));
            return None;
        }
        Some(addr)
    });
    let port_field = map.get("port");
    let port = match (port_field, service) {
        (Some(field), _) => d.integer(field, 1, 65535),
        (None, Some(ServiceKey::Addr { port, .. })) => Some(port),
        // A fwmark service's backend without a port keeps the packet's destination port.
        (None, Some(ServiceKey::Fwmark { .. })) => Some(0),
        (None, None) => None,
    };
    let weight = map.get("weight").map_or(Some(1), |field| d.integer(field, 0, 65535));
    let max_connections =
        map.get("max_connections").map_or(Some(0), |field| d.integer(field, 0, u64::from(u32::MAX)));
    let canary = match map.get("canary") {
        Some(field) => Some((field.key_position(), canary::canary(d, field)?)),
        None => None,
    };
    let at = address.and_then(|field| field.position());
    let key = DestKey::new(addr?, port?);
    let service = service?;
    let port_at = port_field.map_or(at, |field| field.position());
    if !backend_fits(d, key, service, forwarding, at, port_at) {
        return None;
    }
    Some(Backend { at, key, weight: weight?, max_connections: max_connections?, canary })
}

/// The checks that relate a backend to its service; false when one failed.
fn backend_fits(
    d: &mut Diagnostics<'_>,
    backend: DestKey,
    service: ServiceKey,
    forwarding: Forwarding,
    at: Option<Position>,
    port_at: Option<Position>,
) -> bool {
    let family = match service {
        ServiceKey::Addr { addr, .. } => family_of(addr),
        ServiceKey::Fwmark { family, .. } => family,
    };
    if family_of(backend.addr) != family {
        let message = format!(
            "backend {} is {} but service {service} is {}",
            backend.addr,
            family_name(family_of(backend.addr)),
            family_name(family)
        );
        d.error(at, message);
        return false;
    }
    let ServiceKey::Addr { addr, port, .. } = service else { return true };
    if backend == DestKey::new(addr, port) {
        d.error(at, format!("backend {backend} is the service's own VIP and port"));
        return false;
    }
    if matches!(forwarding, Forwarding::Dr | Forwarding::Tunnel) && backend.port != port {
        let mode = if forwarding == Forwarding::Dr { "dr" } else { "tunnel" };
        let message = format!(
            "backend port {} differs from the service port {port}, but forwarding {mode} cannot rewrite ports",
            backend.port
        );
        d.error(port_at, message);
        return false;
    }
    true
}
