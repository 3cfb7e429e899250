//! Decoding `health:` (common keys, then the keys of the chosen type) and `drain:`.

use std::{collections::BTreeMap, time::Duration};

use humantime::format_duration;

use super::{
    Check, Drain, Health,
    decode::{Diagnostics, Field, Map, is_null},
};
use crate::model::{DestKey, Destination, Protocol, ServiceKey};

const COMMON_KEYS: &[&str] = &["type", "interval", "timeout", "rise", "fall", "port"];

/// The keys that belong to one health type, by type.
const TYPE_KEYS: &[(&str, &[&str])] = &[
    ("http", &["path", "expect_status"]),
    ("udp_dns", &["dns_query", "dns_type", "expect_rcode", "expect_answer"]),
    ("udp_sip", &["sip_uri", "expect_codes"]),
    ("udp_ntp", &["max_offset"]),
    ("udp_echo", &["payload", "expect"]),
];

const TYPES: &[&str] = &["tcp", "http", "udp_dns", "udp_sip", "udp_ntp", "udp_echo", "none"];

const DNS_TYPES: &[&str] = &["A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT"];
const DNS_RCODES: &[&str] = &["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"];

/// Decodes `health:`; without it (or with it empty) a TCP service gets a TCP connect check and any other service
/// none (UDP needs a protocol-specific probe that only the operator can choose).
pub(super) fn health(
    d: &mut Diagnostics<'_>,
    field: Option<Field<'_>>,
    service: Option<ServiceKey>,
    backends: Option<&BTreeMap<DestKey, Destination>>,
) -> Option<Health> {
    let Some(field) = field.filter(|field| !is_null(field.value)) else {
        let check = match service {
            Some(ServiceKey::Addr { protocol: Protocol::Tcp, .. }) => Check::Tcp,
            _ => Check::None,
        };
        return Some(Health::with_check(check));
    };
    let all_keys: Vec<&str> =
        COMMON_KEYS.iter().chain(TYPE_KEYS.iter().flat_map(|(_, keys)| keys.iter())).copied().collect();
    let map = d.mapping(field.value, field.position(), "health", &all_keys)?;
    let before = d.errors.len();
    let type_field = d.required(&map, "type");
    let kind = type_field.and_then(|field| d.choice(field, TYPES));
    let check = kind.and_then(|kind| {
        reject_foreign_keys(d, &map, kind);
        check_protocol(d, type_field?, kind, service);
        check(d, &map, kind)
    });
    let mut health = common(d, &map)?;
    let (Some(kind), Some(type_field)) = (kind, type_field) else { return None };
    if kind != "none" && health.port.is_none() && backends.is_some_and(|b| b.keys().any(|key| key.port == 0))
    {
        let message = format!(
            "health type {kind} needs a port: the backends of a fwmark service have none; set health.port"
        );
        d.error(type_field.position(), message);
    }
    if kind == "udp_echo" {
        let message = "health type udp_echo only proves that something echoes, not that the service works; \
                       prefer udp_dns, udp_sip or udp_ntp";
        d.warning(type_field.position(), message);
    }
    health.check = check?;
    (d.errors.len() == before).then_some(health)
}

/// Keys of another type than the chosen one; with `none`, any key but `type`.
fn reject_foreign_keys(d: &mut Diagnostics<'_>, map: &Map<'_>, kind: &str) {
    for key in map.keys() {
        let key_name = key.as_str();
        let owner = TYPE_KEYS.iter().find(|(_, keys)| keys.contains(&key_name)).map(|(owner, _)| *owner);
        let message = match owner {
            Some(owner) if owner != kind => format!("health.{key_name} applies only to health type {owner}"),
            None if kind == "none" && key_name != "type" => {
                format!("health.{key_name} does not apply to health type none")
            }
            _ => continue,
        };
        d.error(super::decode::position(key.span()), message);
    }
}

/// TCP and HTTP probes need a TCP service, the UDP probes a UDP one; fwmark services may use any.
fn check_protocol(d: &mut Diagnostics<'_>, field: Field<'_>, kind: &str, service: Option<ServiceKey>) {
    let Some(ServiceKey::Addr { protocol, .. }) = service else { return };
    let needs = match kind {
        "tcp" | "http" => Protocol::Tcp,
        "none" => return,
        _ => Protocol::Udp,
    };
    if protocol != needs {
        d.error(field.position(), format!("health type {kind} cannot check a {protocol} service"));
    }
}

fn common(d: &mut Diagnostics<'_>, map: &Map<'_>) -> Option<Health> {
    let mut duration = |key: &str, default: Duration| {
        map.get(key).map_or(Some(default), |field| {
            let duration = d.duration(field)?;
            if duration.is_zero() {
                d.error(field.position(), format!("health.{key}: must be longer than 0s"));
                return None;
            }
            Some(duration)
        })
    };
    let interval = duration("interval", Health::DEFAULT_INTERVAL);
    let timeout = duration("timeout", Health::DEFAULT_TIMEOUT);
    let mut count =
        |key: &str, default: u32| map.get(key).map_or(Some(default), |field| d.integer(field, 1, 1000));
    let rise = count("rise", Health::DEFAULT_RISE);
    let fall = count("fall", Health::DEFAULT_FALL);
    let port = map.get("port").map_or(Some(None), |field| d.integer(field, 1, 65535).map(Some));
    let (interval, timeout) = (interval?, timeout?);
    if timeout > interval {
        let at = map.get("timeout").and_then(|field| field.position());
        let message = format!(
            "health.timeout {} is longer than health.interval {}",
            format_duration(timeout),
            format_duration(interval)
        );
        d.error(at, message);
        return None;
    }
    Some(Health { check: Check::None, interval, timeout, rise: rise?, fall: fall?, port: port? })
}

fn check(d: &mut Diagnostics<'_>, map: &Map<'_>, kind: &str) -> Option<Check> {
    match kind {
        "tcp" => Some(Check::Tcp),
        "http" => http(d, map),
        "udp_dns" => dns(d, map),
        "udp_sip" => sip(d, map),
        "udp_ntp" => {
            let max_offset = map.get("max_offset").map_or(Some(None), |field| d.duration(field).map(Some));
            Some(Check::Ntp { max_offset: max_offset? })
        }
        "udp_echo" => echo(d, map),
        _ => Some(Check::None),
    }
}

fn http(d: &mut Diagnostics<'_>, map: &Map<'_>) -> Option<Check> {
    let path = map.get("path").map_or(Some("/"), |field| {
        let path = d.string(field)?;
        if !path.starts_with('/') || path.chars().any(char::is_whitespace) {
            d.error(field.position(), format!("health.path: {path:?} must start with / and hold no spaces"));
            return None;
        }
        Some(path)
    });
    let expect_status = map.get("expect_status").map_or(Some(200), |field| d.integer(field, 100, 599));
    Some(Check::Http { path: path?.to_owned(), expect_status: expect_status? })
}

fn dns(d: &mut Diagnostics<'_>, map: &Map<'_>) -> Option<Check> {
    let query = d.required(map, "dns_query").and_then(|field| {
        let name = d.string(field)?;
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').filter(|label| !label.is_empty()).count() > 0
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !valid {
            d.error(field.position(), format!("health.dns_query: {name:?} is not a domain name"));
            return None;
        }
        Some(name.to_owned())
    });
    let record_type = map.get("dns_type").map_or(Some("A"), |field| d.choice(field, DNS_TYPES));
    let expect_rcode = map.get("expect_rcode").map_or(Some("NOERROR"), |field| d.choice(field, DNS_RCODES));
    let expect_answer = map
        .get("expect_answer")
        .map_or(Some(None), |field| d.string(field).map(|answer| Some(answer.to_owned())));
    Some(Check::Dns {
        query: query?,
        record_type: record_type?.to_owned(),
        expect_rcode: expect_rcode?.to_owned(),
        expect_answer: expect_answer?,
    })
}

fn sip(d: &mut Diagnostics<'_>, map: &Map<'_>) -> Option<Check> {
    let uri = map.get("sip_uri").map_or(Some(None), |field| {
        let uri = d.string(field)?;
        if !(uri.starts_with("sip:") || uri.starts_with("sips:")) || uri.chars().any(char::is_whitespace) {
            d.error(field.position(), format!("health.sip_uri: {uri:?} is not a sip: or sips: URI"));
            return None;
        }
        Some(Some(uri.to_owned()))
    });
    let expect_codes = map.get("expect_codes").map_or(Some(vec![200]), |field| {
        let items = d.sequence(field)?;
        if items.is_empty() {
            d.error(field.position(), "health.expect_codes: the list is empty");
            return None;
        }
        let codes: Vec<Option<u16>> =
            items.iter().map(|item| d.integer(field.item(item), 100, 699)).collect();
        codes.into_iter().collect()
    });
    Some(Check::Sip { uri: uri?, expect_codes: expect_codes? })
}

fn echo(d: &mut Diagnostics<'_>, map: &Map<'_>) -> Option<Check> {
    let payload = d.required(map, "payload").and_then(|field| {
        let payload = d.string(field)?;
        if payload.is_empty() {
            d.error(field.position(), "health.payload: must not be empty");
            return None;
        }
        Some(payload.to_owned())
    });
    let expect =
        map.get("expect").map_or(Some(None), |field| d.string(field).map(|text| Some(text.to_owned())));
    let payload = payload?;
    let expect = expect?.unwrap_or_else(|| payload.clone());
    Some(Check::Echo { payload, expect })
}

pub(super) fn drain(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<Drain> {
    let map = d.mapping(field.value, field.position(), "drain", &["grace", "timeout", "quiet"])?;
    let defaults = Drain::default();
    let mut duration =
        |key: &str, default: Duration| map.get(key).map_or(Some(default), |field| d.duration(field));
    let grace = duration("grace", defaults.grace);
    let timeout = duration("timeout", defaults.timeout);
    let quiet = duration("quiet", defaults.quiet);
    let drain = Drain { grace: grace?, timeout: timeout?, quiet: quiet? };
    if drain.grace > drain.timeout {
        let at = map.get("grace").or_else(|| map.get("timeout")).and_then(|field| field.position());
        let message = format!(
            "drain.grace {} is longer than drain.timeout {}",
            format_duration(drain.grace),
            format_duration(drain.timeout)
        );
        d.error(at, message);
        return None;
    }
    Some(drain)
}
