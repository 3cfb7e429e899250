//! The configuration as a JSON Schema (draft 2020-12), generated from the tables the decoder
//! reads ([`super::keys`]): the same keys, choices, integer ranges, defaults and required keys.
//! `libraflux schema` prints it; `docs/libraflux.schema.json` is a copy that a test keeps current.
//!
//! One schema accepts any one file: `config.yaml` or a `config.d` drop-in. What only the validator
//! knows stays with it: rules across keys and files (a section set by two files, unique names and
//! keys, `timeout` at most `interval`, a backend of the service's family, a node-local section in
//! a replicated file) and what needs the node (does `control.group` exist). Most YAML editors
//! validate by draft 7: besides `$defs`, which they reach through `$ref`'s JSON pointers, and the
//! descriptions and defaults beside a `$ref`, which draft 7 ignores, every keyword used here means
//! the same there.

use serde_json::{Map, Value, json};

use super::{
    canary::STEP_PATTERN,
    health::{HEALTH, HEALTH_TYPES, TYPE, all_keys},
    keys::{Default, Key, Presence, Section, Shape, Text, all_sections},
    schema::TOP,
    service::{HEALTH as SERVICE_HEALTH, PROTOCOL, SERVICE},
};
use crate::model::Protocol;

const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// An IPv4 address as `Ipv4Addr` parses it: four decimal octets without leading zeros.
const IPV4: &str =
    r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}";
/// The characters of an IPv6 address, with at least one colon; `format: ipv6` says the rest.
const IPV6: &str = r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*";
/// 0 to 65535 as `SocketAddr` parses a port: decimal, leading zeros allowed, no sign.
const PORT: &str =
    r"0*(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)";

/// The JSON Schema of one configuration file.
pub fn json_schema() -> Value {
    let mut root = section(&TOP);
    let mut defs = Map::new();
    for section in all_sections().into_iter().filter(|section| !section.context.is_empty()) {
        defs.insert(section.context.to_owned(), self::section(section));
    }
    defs.insert(HEALTH.context.to_owned(), health());
    if let Some(service) = defs.get_mut(SERVICE.context) {
        health_fits_protocol(service);
    }
    defs.extend(scalar_defs());
    root["$schema"] = json!(DRAFT);
    root["title"] = json!("LibraFlux configuration");
    root["$defs"] = Value::Object(defs);
    root
}

fn section(section: &Section) -> Value {
    let mut schema = json!({
        "type": if nullable(section.keys) { json!(["object", "null"]) } else { json!("object") },
        "description": section.doc,
        "properties": properties(section.keys.iter().copied()),
        "additionalProperties": false,
    });
    let required: Vec<&str> =
        section.keys.iter().filter(|key| key.presence == Presence::Required).map(|key| key.name).collect();
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    let conditions = conditional_presence(section.keys);
    if !conditions.is_empty() {
        schema["allOf"] = json!(conditions);
    }
    schema
}

/// The decoder reads a null mapping as an empty one: fine when no key is needed.
fn nullable(keys: &[&Key]) -> bool {
    keys.iter().all(|key| matches!(key.presence, Presence::Optional | Presence::OnlyWith(_)))
}

fn properties<'k>(keys: impl Iterator<Item = &'k Key>) -> Map<String, Value> {
    keys.map(|key| (key.name.to_owned(), property(key))).collect()
}

fn property(key: &Key) -> Value {
    let mut schema = shape(&key.shape);
    schema["description"] = json!(key.doc);
    if let Some(default) = key.default {
        schema["default"] = default_value(default);
    }
    schema
}

/// `Unless(pivot)` keys are required without the pivot and refused beside it; `OnlyWith(pivot)`
/// keys are refused without it.
fn conditional_presence(keys: &[&Key]) -> Vec<Value> {
    let mut pivots: Vec<&str> = keys
        .iter()
        .filter_map(|key| match key.presence {
            Presence::Unless(pivot) | Presence::OnlyWith(pivot) => Some(pivot),
            _ => None,
        })
        .collect();
    pivots.dedup();
    pivots
        .into_iter()
        .map(|pivot| {
            let with = |presence: Presence| -> Vec<&str> {
                keys.iter().filter(|key| key.presence == presence).map(|key| key.name).collect()
            };
            let refused = |names: Vec<&str>| -> Map<String, Value> {
                names.into_iter().map(|name| (name.to_owned(), json!(false))).collect()
            };
            json!({
                "if": { "required": [pivot] },
                "then": { "properties": refused(with(Presence::Unless(pivot))) },
                "else": {
                    "required": with(Presence::Unless(pivot)),
                    "properties": refused(with(Presence::OnlyWith(pivot))),
                },
            })
        })
        .collect()
}

fn shape(shape: &Shape) -> Value {
    match shape {
        Shape::Integer { min, max } => json!({ "type": "integer", "minimum": min, "maximum": max }),
        Shape::Duration => reference("duration"),
        Shape::Choice(choices) => json!({ "type": "string", "enum": choices }),
        Shape::Text(text) => self::text(text),
        Shape::Ip => reference("ip_address"),
        Shape::MulticastIp => reference("multicast_address"),
        Shape::SocketAddr => reference("socket_address"),
        Shape::ServiceKeyOrIp => reference("service_key_or_address"),
        Shape::Percent => reference("percent"),
        Shape::Mapping(section) => reference(section.context),
        Shape::Health => reference(HEALTH.context),
        Shape::List { item, min, max } => {
            // A null list is an empty one to the decoder.
            let kind = if *min == 0 { json!(["array", "null"]) } else { json!("array") };
            let mut schema = json!({ "type": kind, "items": self::shape(item) });
            if *min > 0 {
                schema["minItems"] = json!(min);
            }
            if let Some(max) = max {
                schema["maxItems"] = json!(max);
            }
            schema
        }
        Shape::OneOrList(item) => json!({
            "anyOf": [
                self::shape(item),
                { "type": "array", "items": self::shape(item), "minItems": 1, "uniqueItems": true },
            ],
        }),
    }
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/$defs/{name}") })
}

fn text(text: &Text) -> Value {
    let mut schema = json!({ "type": "string" });
    if let Some(pattern) = text.pattern {
        schema["pattern"] = json!(pattern);
    }
    if text.min_len > 0 {
        schema["minLength"] = json!(text.min_len);
    }
    if let Some(max) = text.max_len {
        schema["maxLength"] = json!(max);
    }
    schema
}

fn default_value(default: Default) -> Value {
    match default {
        Default::Integer(value) => json!(value),
        Default::Duration(value) => json!(humantime::format_duration(value).to_string()),
        Default::Word(value) => json!(value),
        Default::Ip(value) => json!(value.to_string()),
        Default::SocketAddr(value) => json!(value.to_string()),
        Default::Percents(values) => json!(values),
        Default::Integers(values) => json!(values),
    }
}

/// `health:`: every type's keys are properties; each type allows the common keys and its own
/// (`none` only `type`) and requires its required ones.
fn health() -> Value {
    let mut schema = json!({
        "type": ["object", "null"],
        "description": HEALTH.doc,
        "properties": properties(all_keys().into_iter()),
        "additionalProperties": false,
        "required": HEALTH.keys.iter().filter(|key| key.presence == Presence::Required).map(|key| key.name).collect::<Vec<_>>(),
    });
    let type_key = TYPE.name;
    let by_type: Vec<Value> = HEALTH_TYPES
        .iter()
        .map(|kind| {
            let common = HEALTH.keys.iter().filter(|key| kind.probes || key.name == type_key);
            let allowed: Vec<&str> = common.chain(kind.keys.iter()).map(|key| key.name).collect();
            let required: Vec<&str> =
                kind.keys.iter().filter(|key| key.presence == Presence::Required).map(|key| key.name).collect();
            let mut then = json!({ "description": kind.doc, "propertyNames": { "enum": allowed } });
            if !required.is_empty() {
                then["required"] = json!(required);
            }
            json!({ "if": { "properties": { type_key: { "const": kind.name } }, "required": [type_key] }, "then": then })
        })
        .collect();
    schema["allOf"] = json!(by_type);
    schema
}

/// TCP and HTTP checks need a TCP service, the UDP checks a UDP one; fwmark services take any.
fn health_fits_protocol(service: &mut Value) {
    let Shape::Choice(protocols) = PROTOCOL.shape else { unreachable!("protocol is a choice") };
    let rules: Vec<Value> = protocols
        .iter()
        .map(|name| {
            let protocol: Protocol = name.parse().expect("a protocol");
            let fits: Vec<&str> = HEALTH_TYPES
                .iter()
                .filter(|kind| kind.checks.is_none_or(|checks| checks == protocol))
                .map(|kind| kind.name)
                .collect();
            json!({
                "if": { "properties": { PROTOCOL.name: { "const": name } }, "required": [PROTOCOL.name] },
                "then": { "properties": { SERVICE_HEALTH.name: { "properties": { TYPE.name: { "enum": fits } } } } },
            })
        })
        .collect();
    let all_of = service.as_object_mut().expect("an object").entry("allOf").or_insert_with(|| json!([]));
    all_of.as_array_mut().expect("a list").extend(rules);
}

/// The definitions of the values that are written as text.
fn scalar_defs() -> Map<String, Value> {
    let protocols: Vec<&str> = Protocol::ALL.iter().map(|protocol| protocol.as_str()).collect();
    let mut defs = Map::new();
    defs.insert(
        "duration".to_owned(),
        json!({
            "type": "string",
            "description": "A duration: a number and a unit, repeated (500ms, 30s, 5m, 1h 30m).",
            "pattern": super::decode::duration_pattern(),
        }),
    );
    defs.insert(
        "ip_address".to_owned(),
        json!({
            "type": "string",
            "description": "An IPv4 or IPv6 address.",
            "anyOf": [
                { "format": "ipv4", "pattern": format!("^{IPV4}$") },
                { "format": "ipv6", "pattern": format!("^{IPV6}$") },
            ],
        }),
    );
    defs.insert(
        "multicast_address".to_owned(),
        json!({
            "type": "string",
            "description": "A multicast address: IPv4 224.0.0.0/4 or IPv6 ff00::/8.",
            "anyOf": [
                { "format": "ipv4", "pattern": format!("^{IPV4}$"), "allOf": [{ "pattern": "^(22[4-9]|23[0-9])\\." }] },
                { "format": "ipv6", "pattern": format!("^{IPV6}$"), "allOf": [{ "pattern": "^[fF]{2}" }] },
            ],
        }),
    );
    defs.insert(
        "socket_address".to_owned(),
        json!({
            "type": "string",
            "description": "address:port; IPv6 as [address]:port.",
            "anyOf": [
                { "pattern": format!("^{IPV4}:{PORT}$") },
                { "pattern": format!(r"^\[{IPV6}\]:{PORT}$") },
            ],
        }),
    );
    defs.insert(
        "service_key_or_address".to_owned(),
        json!({
            "type": "string",
            "description": "A service key (tcp:192.0.2.1:80, tcp:[2001:db8::1]:443, fwmark:17, fwmark:17:v6) or a VIP.",
            "anyOf": [
                reference("ip_address"),
                { "pattern": format!(r"^({}):({IPV4}|\[{IPV6}\]):{PORT}$", protocols.join("|")) },
                { "pattern": "^fwmark:[0-9]+(:v6)?$" },
            ],
        }),
    );
    defs.insert(
        "percent".to_owned(),
        json!({
            "description": "A share from 1% to 100%: 5% or 5.",
            "anyOf": [
                { "type": "integer", "minimum": 1, "maximum": 100 },
                { "type": "string", "pattern": STEP_PATTERN },
            ],
        }),
    );
    defs
}

#[cfg(test)]
mod tests;
