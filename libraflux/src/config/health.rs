//! Decoding `health:` (common keys, then the keys of the chosen type) and `drain:`.

use std::collections::BTreeMap;

use humantime::format_duration;

use super::{
    Check, Drain, Health,
    decode::{Diagnostics, Field, Map, is_null},
    keys::{Default, Key, Section, Shape, Text},
};
use crate::model::{DestKey, Destination, Protocol, ServiceKey};

/// `health:`'s keys common to every type (with `none`, only `type`).
pub(super) const HEALTH: Section = Section {
    context: "health",
    doc: "The health check; without it a TCP service gets a TCP connect check and any other none.",
    keys: &[&TYPE, &CHECK_INTERVAL, &CHECK_TIMEOUT, &RISE, &FALL, &CHECK_PORT],
};

pub(super) const TYPE: Key = Key::required("type", Shape::Choice(&TYPE_NAMES), "The check's protocol.");
const CHECK_INTERVAL: Key = Key::defaults_to(
    "interval",
    Shape::Duration,
    Default::Duration(Health::DEFAULT_INTERVAL),
    "Time between checks of a backend; longer than 0s.",
);
const CHECK_TIMEOUT: Key = Key::defaults_to(
    "timeout",
    Shape::Duration,
    Default::Duration(Health::DEFAULT_TIMEOUT),
    "Per check; longer than 0s and at most interval.",
);
const RISE: Key = Key::defaults_to(
    "rise",
    Shape::Integer { min: 1, max: 1000 },
    Default::Integer(Health::DEFAULT_RISE as u64),
    "Consecutive successes to become healthy.",
);
const FALL: Key = Key::defaults_to(
    "fall",
    Shape::Integer { min: 1, max: 1000 },
    Default::Integer(Health::DEFAULT_FALL as u64),
    "Consecutive failures to become unhealthy.",
);
const CHECK_PORT: Key = Key::optional(
    "port",
    Shape::Integer { min: 1, max: 65535 },
    "Probe this port instead of the backend's own (needed by fwmark backends, which have none).",
);

/// One value of `health.type`.
#[derive(Debug)]
pub(super) struct HealthType {
    pub name: &'static str,
    /// The protocol of the services it can check; `None`: any. A fwmark service may use any type.
    pub checks: Option<Protocol>,
    /// `none` probes nothing, and takes no key but `type`.
    pub probes: bool,
    /// Its own keys, besides the common ones.
    pub keys: &'static [&'static Key],
    /// Accepted, but said to the operator.
    warning: Option<&'static str>,
    decode: fn(&mut Diagnostics<'_>, &Map<'_>) -> Option<Check>,
    pub doc: &'static str,
}

pub(super) const HEALTH_TYPES: [HealthType; 7] = [
    HealthType {
        name: "tcp",
        checks: Some(Protocol::Tcp),
        probes: true,
        keys: &[],
        warning: None,
        decode: |_, _| Some(Check::Tcp),
        doc: "A TCP connect.",
    },
    HealthType {
        name: "http",
        checks: Some(Protocol::Tcp),
        probes: true,
        keys: &[&PATH, &EXPECT_STATUS],
        warning: None,
        decode: http,
        doc: "An HTTP GET of path, expecting expect_status.",
    },
    HealthType {
        name: "udp_dns",
        checks: Some(Protocol::Udp),
        probes: true,
        keys: &[&DNS_QUERY, &DNS_TYPE, &EXPECT_RCODE, &EXPECT_ANSWER],
        warning: None,
        decode: dns,
        doc: "A DNS query.",
    },
    HealthType {
        name: "udp_sip",
        checks: Some(Protocol::Udp),
        probes: true,
        keys: &[&SIP_URI, &EXPECT_CODES],
        warning: None,
        decode: sip,
        doc: "A SIP OPTIONS request.",
    },
    HealthType {
        name: "udp_ntp",
        checks: Some(Protocol::Udp),
        probes: true,
        keys: &[&MAX_OFFSET],
        warning: None,
        decode: |d, map| {
            let max_offset = map.get(MAX_OFFSET.name).map_or(Some(None), |field| d.duration(field).map(Some));
            Some(Check::Ntp { max_offset: max_offset? })
        },
        doc: "An NTP client request.",
    },
    HealthType {
        name: "udp_echo",
        checks: Some(Protocol::Udp),
        probes: true,
        keys: &[&PAYLOAD, &EXPECT],
        warning: Some(
            "health type udp_echo only proves that something echoes, not that the service works; \
             prefer udp_dns, udp_sip or udp_ntp",
        ),
        decode: echo,
        doc: "Sends payload, expects expect back: proves only that something echoes (a warning).",
    },
    HealthType {
        name: "none",
        checks: None,
        probes: false,
        keys: &[],
        warning: None,
        decode: |_, _| Some(Check::None),
        doc: "No check: the backends are always healthy.",
    },
];

const TYPE_NAMES: [&str; HEALTH_TYPES.len()] = {
    let mut names = [""; HEALTH_TYPES.len()];
    let mut index = 0;
    while index < names.len() {
        names[index] = HEALTH_TYPES[index].name;
        index += 1;
    }
    names
};

const PATH: Key = Key::defaults_to(
    "path",
    Shape::Text(Text::matching(r"^/\S*$")),
    Default::Word("/"),
    "The request path: starts with / and holds no spaces.",
);
const EXPECT_STATUS: Key = Key::defaults_to(
    "expect_status",
    Shape::Integer { min: 100, max: 599 },
    Default::Integer(200),
    "The HTTP status a healthy backend answers.",
);
/// What [`dns`] takes for a domain name: 1 to 253 of `A-Z a-z 0-9 - . _`, not only dots.
const DNS_QUERY: Key = Key::required(
    "dns_query",
    Shape::Text(Text::matching(r"^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$").at_most(253)),
    "The name to ask for.",
);
const DNS_TYPE: Key = Key::defaults_to(
    "dns_type",
    Shape::Choice(&["A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT"]),
    Default::Word("A"),
    "The record type to ask for.",
);
const EXPECT_RCODE: Key = Key::defaults_to(
    "expect_rcode",
    Shape::Choice(&["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"]),
    Default::Word("NOERROR"),
    "The response code a healthy backend answers.",
);
const EXPECT_ANSWER: Key = Key::optional(
    "expect_answer",
    Shape::Text(Text::ANY),
    "An answer the response must contain; default: any.",
);
const SIP_URI: Key = Key::optional(
    "sip_uri",
    Shape::Text(Text::matching(r"^sips?:\S*$")),
    "The request URI of the OPTIONS request (sip: or sips:); default: the backend.",
);
const EXPECT_CODES: Key = Key::defaults_to(
    "expect_codes",
    Shape::List { item: &Shape::Integer { min: 100, max: 699 }, min: 1, max: None },
    Default::Integers(&[200]),
    "The response codes a healthy backend may answer.",
);
const MAX_OFFSET: Key = Key::optional(
    "max_offset",
    Shape::Duration,
    "Fail when the server's clock is further off than this; default: no limit.",
);
const PAYLOAD: Key = Key::required(
    "payload",
    Shape::Text(Text { pattern: None, min_len: 1, max_len: None }),
    "The bytes to send.",
);
const EXPECT: Key =
    Key::optional("expect", Shape::Text(Text::ANY), "The bytes to expect back; default: the payload.");

/// Every key `health:` may hold: the common ones, then each type's.
pub(super) fn all_keys() -> Vec<&'static Key> {
    HEALTH
        .keys
        .iter()
        .copied()
        .chain(HEALTH_TYPES.iter().flat_map(|kind| kind.keys.iter().copied()))
        .collect()
}

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
    let allowed: Vec<&str> = all_keys().iter().map(|key| key.name).collect();
    let map = d.mapping(field.value, field.position(), HEALTH.context, &allowed)?;
    let before = d.errors.len();
    let type_field = TYPE.field(d, &map);
    let kind = type_field
        .and_then(|field| TYPE.choice(d, field))
        .and_then(|name| HEALTH_TYPES.iter().find(|kind| kind.name == name));
    let check = kind.and_then(|kind| {
        reject_foreign_keys(d, &map, kind);
        check_protocol(d, type_field?, kind, service);
        (kind.decode)(d, &map)
    });
    let mut health = common(d, &map)?;
    let (Some(kind), Some(type_field)) = (kind, type_field) else { return None };
    if kind.probes && health.port.is_none() && backends.is_some_and(|b| b.keys().any(|key| key.port == 0)) {
        let message = format!(
            "health type {} needs a port: the backends of a fwmark service have none; set health.port",
            kind.name
        );
        d.error(type_field.position(), message);
    }
    if let Some(warning) = kind.warning {
        d.warning(type_field.position(), warning);
    }
    health.check = check?;
    (d.errors.len() == before).then_some(health)
}

/// Keys of another type than the chosen one; with `none`, any key but `type`.
fn reject_foreign_keys(d: &mut Diagnostics<'_>, map: &Map<'_>, kind: &HealthType) {
    for key in map.keys() {
        let key_name = key.as_str();
        let owner = HEALTH_TYPES.iter().find(|owner| owner.keys.iter().any(|own| own.name == key_name));
        let message = match owner {
            Some(owner) if owner.name != kind.name => {
                format!("health.{key_name} applies only to health type {}", owner.name)
            }
            None if !kind.probes && key_name != TYPE.name => {
                format!("health.{key_name} does not apply to health type {}", kind.name)
            }
            _ => continue,
        };
        d.error(super::decode::position(key.span()), message);
    }
}

/// TCP and HTTP probes need a TCP service, the UDP probes a UDP one; fwmark services may use any.
fn check_protocol(d: &mut Diagnostics<'_>, field: Field<'_>, kind: &HealthType, service: Option<ServiceKey>) {
    let (Some(ServiceKey::Addr { protocol, .. }), Some(needs)) = (service, kind.checks) else { return };
    if protocol != needs {
        d.error(field.position(), format!("health type {} cannot check a {protocol} service", kind.name));
    }
}

fn common(d: &mut Diagnostics<'_>, map: &Map<'_>) -> Option<Health> {
    let mut duration = |key: &Key| {
        let duration = key.duration_or_default(d, map)?;
        if duration.is_zero() {
            let at = map.get(key.name).and_then(|field| field.position());
            d.error(at, format!("health.{}: must be longer than 0s", key.name));
            return None;
        }
        Some(duration)
    };
    let interval = duration(&CHECK_INTERVAL);
    let timeout = duration(&CHECK_TIMEOUT);
    let rise = RISE.integer_or_default(d, map);
    let fall = FALL.integer_or_default(d, map);
    let port = CHECK_PORT.optional_integer(d, map);
    let (interval, timeout) = (interval?, timeout?);
    if timeout > interval {
        let at = map.get(CHECK_TIMEOUT.name).and_then(|field| field.position());
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

fn http(d: &mut Diagnostics<'_>, map: &Map<'_>) -> Option<Check> {
    let path = map.get(PATH.name).map_or(Some(PATH.default_word()), |field| {
        let path = d.string(field)?;
        if !path.starts_with('/') || path.chars().any(char::is_whitespace) {
            d.error(field.position(), format!("health.path: {path:?} must start with / and hold no spaces"));
            return None;
        }
        Some(path)
    });
    let expect_status = EXPECT_STATUS.integer_or_default(d, map);
    Some(Check::Http { path: path?.to_owned(), expect_status: expect_status? })
}

fn dns(d: &mut Diagnostics<'_>, map: &Map<'_>) -> Option<Check> {
    let query = DNS_QUERY.field(d, map).and_then(|field| {
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
    let record_type = DNS_TYPE.choice_or_default(d, map);
    let expect_rcode = EXPECT_RCODE.choice_or_default(d, map);
    let expect_answer = map
        .get(EXPECT_ANSWER.name)
        .map_or(Some(None), |field| d.string(field).map(|answer| Some(answer.to_owned())));
    Some(Check::Dns {
        query: query?,
        record_type: record_type?.to_owned(),
        expect_rcode: expect_rcode?.to_owned(),
        expect_answer: expect_answer?,
    })
}

fn sip(d: &mut Diagnostics<'_>, map: &Map<'_>) -> Option<Check> {
    let uri = map.get(SIP_URI.name).map_or(Some(None), |field| {
        let uri = d.string(field)?;
        if !(uri.starts_with("sip:") || uri.starts_with("sips:")) || uri.chars().any(char::is_whitespace) {
            d.error(field.position(), format!("health.sip_uri: {uri:?} is not a sip: or sips: URI"));
            return None;
        }
        Some(Some(uri.to_owned()))
    });
    let Shape::List { item: Shape::Integer { min, max }, .. } = EXPECT_CODES.shape else {
        unreachable!("expect_codes is a list of integers")
    };
    let Some(Default::Integers(default_codes)) = EXPECT_CODES.default else {
        unreachable!("expect_codes defaults to a list")
    };
    let expect_codes = map.get(EXPECT_CODES.name).map_or(Some(default_codes.to_vec()), |field| {
        let items = d.sequence(field)?;
        if items.is_empty() {
            d.error(field.position(), "health.expect_codes: the list is empty");
            return None;
        }
        let codes: Vec<Option<u16>> =
            items.iter().map(|item| d.integer(field.item(item), *min, *max)).collect();
        codes.into_iter().collect()
    });
    Some(Check::Sip { uri: uri?, expect_codes: expect_codes? })
}

fn echo(d: &mut Diagnostics<'_>, map: &Map<'_>) -> Option<Check> {
    let payload = PAYLOAD.field(d, map).and_then(|field| {
        let payload = d.string(field)?;
        if payload.is_empty() {
            d.error(field.position(), "health.payload: must not be empty");
            return None;
        }
        Some(payload.to_owned())
    });
    let expect =
        map.get(EXPECT.name).map_or(Some(None), |field| d.string(field).map(|text| Some(text.to_owned())));
    let payload = payload?;
    let expect = expect?.unwrap_or_else(|| payload.clone());
    Some(Check::Echo { payload, expect })
}

pub(super) const DRAIN: Section = Section {
    context: "drain",
    doc: "How a backend is drained: weight 0, then removed once its traffic ends or at the timeout.",
    keys: &[&GRACE, &DRAIN_TIMEOUT, &QUIET],
};

const GRACE: Key = Key::defaults_to(
    "grace",
    Shape::Duration,
    Default::Duration(Drain::DEFAULT.grace),
    "At least this long at weight 0.",
);
const DRAIN_TIMEOUT: Key = Key::defaults_to(
    "timeout",
    Shape::Duration,
    Default::Duration(Drain::DEFAULT.timeout),
    "At most this long: then the backend is removed whatever its traffic; at least grace.",
);
const QUIET: Key = Key::defaults_to(
    "quiet",
    Shape::Duration,
    Default::Duration(Drain::DEFAULT.quiet),
    "UDP: how long no packet may reach the backend for it to count as drained.",
);

pub(super) fn drain(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<Drain> {
    let map = d.section(field.value, field.position(), &DRAIN)?;
    let grace = GRACE.duration_or_default(d, &map);
    let timeout = DRAIN_TIMEOUT.duration_or_default(d, &map);
    let quiet = QUIET.duration_or_default(d, &map);
    let drain = Drain { grace: grace?, timeout: timeout?, quiet: quiet? };
    if drain.grace > drain.timeout {
        let at =
            map.get(GRACE.name).or_else(|| map.get(DRAIN_TIMEOUT.name)).and_then(|field| field.position());
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

#[cfg(test)]
mod tests {
    use super::HEALTH_TYPES;
    use crate::config::control::tests::load;

    /// Each type decodes to the check that carries its name (its metrics label).
    #[test]
    fn each_type_decodes_to_the_check_of_its_name() {
        for kind in HEALTH_TYPES {
            let (protocol, keys) = match kind.name {
                "udp_dns" => ("udp", ", dns_query: example.com"),
                "udp_echo" => ("udp", ", payload: ping"),
                name if name.starts_with("udp_") => ("udp", ""),
                _ => ("tcp", ""),
            };
            let text = format!(
                "services:\n  - name: a\n    protocol: {protocol}\n    vip: 192.0.2.1\n    port: 7\n    scheduler: rr\n    \
                 health: {{ type: {}{keys} }}\n    backends: []\n",
                kind.name
            );
            let config = load(&text).unwrap_or_else(|errors| panic!("{}: {errors}", kind.name));
            let settings = config.settings.values().next().expect("the service");
            assert_eq!(settings.health.check.type_name(), kind.name);
        }
    }
}
