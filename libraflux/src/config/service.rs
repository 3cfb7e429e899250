//! Decoding one `services:` item: its identity (name and key), IPVS attributes, backends, and
//! the per-backend checks that need the service (family, VIP, port rewriting, duplicates).

use std::{collections::BTreeMap, net::IpAddr};

use marked_yaml::Node;

use super::{
    Drain, OnUnhealthy, ServiceSettings, breaker, canary,
    decode::{Diagnostics, Field, Map, position},
    error::Position,
    health,
    keys::{Default, Key, Presence, Section, Shape, Text},
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

pub(super) const SERVICE: Section = Section {
    context: "service",
    doc: "One IPVS virtual service: protocol, vip and port, or fwmark.",
    keys: &[
        &NAME,
        &PROTOCOL,
        &VIP,
        &PORT,
        &FWMARK,
        &FAMILY,
        &SCHEDULER,
        &FORWARDING,
        &PERSISTENCE,
        &HEALTH,
        &ON_UNHEALTHY,
        &DRAIN,
        &CIRCUIT_BREAKER,
        &BACKENDS,
    ],
};

pub(super) const HEALTH: Key = Key::optional("health", Shape::Health, "The health check.");
const DRAIN: Key = Key::optional("drain", Shape::Mapping(&health::DRAIN), "How a backend is drained.");
const CIRCUIT_BREAKER: Key = Key::optional(
    "circuit_breaker",
    Shape::Mapping(&breaker::CIRCUIT_BREAKER),
    "Eject backends whose connection attempts keep failing.",
);

/// What [`service_name`] takes.
const NAME: Key = Key::required(
    "name",
    Shape::Text(Text::matching("^[a-z0-9_-]{1,63}$")),
    "Unique across all files: 1 to 63 characters of a-z, 0-9, _ and -.",
);
pub(super) const PROTOCOL: Key = Key {
    name: "protocol",
    shape: Shape::Choice(&[Protocol::Tcp.as_str(), Protocol::Udp.as_str()]),
    presence: Presence::Unless(FWMARK.name),
    default: None,
    doc: "The transport protocol.",
};
const VIP: Key = Key {
    name: "vip",
    shape: Shape::Ip,
    presence: Presence::Unless(FWMARK.name),
    default: None,
    doc: "The virtual IP, IPv4 or IPv6 (not unspecified, not multicast).",
};
const PORT: Key = Key {
    name: "port",
    shape: Shape::Integer { min: 1, max: 65535 },
    presence: Presence::Unless(FWMARK.name),
    default: None,
    doc: "The virtual port.",
};
const FWMARK: Key = Key::optional(
    "fwmark",
    Shape::Integer { min: 1, max: u32::MAX as u64 },
    "A firewall-mark service, instead of protocol, vip and port.",
);
const FAMILY: Key = Key {
    name: "family",
    shape: Shape::Choice(&["ipv4", "ipv6"]),
    presence: Presence::OnlyWith(FWMARK.name),
    default: None,
    doc: "A fwmark service's address family; default: its first backend's (ipv4 without backends).",
};
const SCHEDULER: Key = Key::required("scheduler", Shape::Choice(SCHEDULERS), "The IPVS scheduler.");
const FORWARDING: Key = Key::defaults_to(
    "forwarding",
    Shape::Choice(&["nat", "dr", "tunnel"]),
    Default::Word("nat"),
    "How IPVS forwards to every backend; dr and tunnel cannot rewrite ports.",
);
const PERSISTENCE: Key = Key::optional(
    "persistence",
    Shape::Duration,
    "IPVS persistent timeout, whole seconds, at least 1s; default: not persistent.",
);
const ON_UNHEALTHY: Key = Key::defaults_to(
    "on_unhealthy",
    Shape::Choice(&["quiesce", "remove"]),
    Default::Word("quiesce"),
    "quiesce: weight 0, established connections live on; remove: delete the backend.",
);
const BACKENDS: Key = Key::required(
    "backends",
    Shape::List { item: &Shape::Mapping(&BACKEND), min: 0, max: None },
    "The real servers; may be empty (a warning).",
);

/// The schedulers of the mainline kernel (`net/netfilter/ipvs/ip_vs_*.c`).
pub(super) const SCHEDULERS: &[&str] =
    &["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"];

pub(super) fn service(d: &mut Diagnostics<'_>, item: &Node) -> ServiceDecl {
    let Some(map) = d.section(item, position(item.span()), &SERVICE) else {
        return ServiceDecl { name: None, key: None, built: None };
    };
    let before = d.errors.len();
    let name = NAME.field(d, &map).and_then(|field| service_name(d, field));
    let key = service_key(d, &map);
    let service_key = key.as_ref().map(|key| key.value);
    let scheduler = SCHEDULER.field(d, &map).and_then(|field| SCHEDULER.choice(d, field));
    let forwarding = forwarding(d, &map);
    let persistence = map.get(PERSISTENCE.name).map_or(Some(None), |field| persistence(d, field).map(Some));
    let backends = BACKENDS
        .field(d, &map)
        .and_then(|field| backends(d, field, service_key, forwarding.unwrap_or(Forwarding::Nat)));
    let (destinations, canaries) =
        backends.map_or((None, None), |(dests, canaries)| (Some(dests), Some(canaries)));
    if let Some(canaries) = &canaries {
        let weights: Vec<(Option<Position>, u32)> =
            canaries.values().map(|(at, _, weight)| (*at, *weight)).collect();
        canary::check_service(d, scheduler, &weights);
    }
    let health = health::health(d, map.get(HEALTH.name), service_key, destinations.as_ref());
    let on_unhealthy = ON_UNHEALTHY.choice_or_default(d, &map).map(|choice| match choice {
        "remove" => OnUnhealthy::Remove,
        _ => OnUnhealthy::Quiesce,
    });
    let drain = map.get(DRAIN.name).map_or(Some(Drain::default()), |field| health::drain(d, field));
    let circuit_breaker = match map.get(CIRCUIT_BREAKER.name) {
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
    if let Some(fwmark) = map.get(FWMARK.name) {
        let replaced = SERVICE.keys.iter().filter(|key| key.presence == Presence::Unless(FWMARK.name));
        for key in replaced.map(|key| key.name) {
            if let Some(field) = map.get(key) {
                let message =
                    format!("{key} does not apply to a fwmark service: the mark selects its traffic");
                d.error(field.key_position(), message);
            }
        }
        let family = match map.get(FAMILY.name) {
            Some(field) => FAMILY.choice(d, field).map(|choice| match choice {
                "ipv6" => Family::V6,
                _ => Family::V4,
            }),
            None => Some(first_backend_family(map).unwrap_or(Family::V4)),
        };
        let mark = FWMARK.integer(d, fwmark);
        return Some(Located {
            value: ServiceKey::Fwmark { mark: mark?, family: family? },
            at: fwmark.position(),
        });
    }
    if let Some(field) = map.get(FAMILY.name) {
        let message = "family applies only to fwmark services: a VIP's address gives its family";
        d.error(field.key_position(), message);
    }
    let protocol = d.required(map, PROTOCOL.name).and_then(|field| PROTOCOL.choice(d, field));
    let vip_field = d.required(map, VIP.name);
    let vip = vip_field.and_then(|field| {
        let addr = d.ip(field)?;
        if addr.is_unspecified() || addr.is_multicast() {
            d.error(field.position(), format!("{}: {addr} cannot be a VIP", field.label()));
            return None;
        }
        Some(addr)
    });
    let port = d.required(map, PORT.name).and_then(|field| PORT.integer(d, field));
    let protocol: Protocol = protocol?.parse().ok()?;
    Some(Located { value: ServiceKey::Addr { protocol, addr: vip?, port: port? }, at: vip_field?.position() })
}

/// A fwmark service without `family` takes the family of its first backend.
fn first_backend_family(map: &Map<'_>) -> Option<Family> {
    let Node::Sequence(items) = map.get(BACKENDS.name)?.value else { return None };
    let Node::Mapping(backend) = items.first()? else { return None };
    let address: IpAddr = backend.get_scalar(ADDRESS.name)?.as_str().parse().ok()?;
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

fn forwarding(d: &mut Diagnostics<'_>, map: &Map<'_>) -> Option<Forwarding> {
    FORWARDING.choice_or_default(d, map).map(|choice| match choice {
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

const BACKEND: Section = Section {
    context: "backend",
    doc: "One real server of the service.",
    keys: &[&ADDRESS, &BACKEND_PORT, &WEIGHT, &MAX_CONNECTIONS, &CANARY],
};

const CANARY: Key =
    Key::optional("canary", Shape::Mapping(&canary::CANARY), "Roll the backend in gradually.");

const ADDRESS: Key = Key::required(
    "address",
    Shape::Ip,
    "IPv4 or IPv6, of the service's family (not unspecified, not multicast).",
);
const BACKEND_PORT: Key = Key::optional(
    "port",
    Shape::Integer { min: 1, max: 65535 },
    "Default: the service port (a fwmark service's backend keeps the packet's port).",
);
const WEIGHT: Key = Key::defaults_to(
    "weight",
    Shape::Integer { min: 0, max: 65535 },
    Default::Integer(1),
    "0 takes no new connections.",
);
const MAX_CONNECTIONS: Key = Key::defaults_to(
    "max_connections",
    Shape::Integer { min: 0, max: u32::MAX as u64 },
    Default::Integer(0),
    "IPVS's upper connection threshold; 0: no limit.",
);

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
    let map = d.section(item, position(item.span()), &BACKEND)?;
    let address = ADDRESS.field(d, &map);
    let addr = address.and_then(|field| {
        let addr = d.ip(field)?;
        if addr.is_unspecified() || addr.is_multicast() {
            d.error(field.position(), format!("{}: {addr} cannot be a backend", field.label()));
            return None;
        }
        Some(addr)
    });
    let port_field = map.get(BACKEND_PORT.name);
    let port = match (port_field, service) {
        (Some(field), _) => BACKEND_PORT.integer(d, field),
        (None, Some(ServiceKey::Addr { port, .. })) => Some(port),
        // A fwmark service's backend without a port keeps the packet's destination port.
        (None, Some(ServiceKey::Fwmark { .. })) => Some(0),
        (None, None) => None,
    };
    let weight = WEIGHT.integer_or_default(d, &map);
    let max_connections = MAX_CONNECTIONS.integer_or_default(d, &map);
    let canary = match map.get(CANARY.name) {
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
