//! The schema against the decoder, each as a black box: at every place of the configuration, the
//! keys the decoder accepts (read from its unknown-key message) are the schema's properties, the
//! decoder reads every one of them, and the patterns accept what the decoder accepts.

use std::collections::BTreeSet;

use serde_json::Value;

use super::json_schema;
use crate::config::{ConfigError, Source, validate};

/// A place in the configuration where a mapping is written, with a minimal valid context.
#[derive(Clone, Copy, Debug)]
struct Place {
    name: &'static str,
    /// The mapping's path in the schema: property names, `items` for a list's items.
    path: &'static [&'static str],
    /// The YAML before the mapping's keys.
    before: &'static str,
    /// The mapping's keys that make it valid, one per line.
    base: &'static [&'static str],
    indent: usize,
    /// The mapping is a list item: its first line starts with `- `.
    item: bool,
    /// `health:`'s type.
    kind: Option<&'static str>,
}

const SERVICE: &str = "services:\n  - name: web\n    protocol: tcp\n    vip: 192.0.2.1\n    port: 80\n    \
                       scheduler: wrr\n";
const UDP_SERVICE: &str = "services:\n  - name: dns\n    protocol: udp\n    vip: 192.0.2.1\n    port: 53\n    \
                           scheduler: wrr\n";

const fn section(name: &'static str, path: &'static [&'static str], before: &'static str) -> Place {
    Place { name, path, before, base: &[], indent: 2, item: false, kind: None }
}

const PLACES: &[Place] = &[
    Place { name: "top", path: &[], before: "", base: &[], indent: 0, item: false, kind: None },
    section("node", &["node"], "node:\n"),
    section("limits", &["limits"], "limits:\n"),
    section("metrics", &["metrics"], "metrics:\n"),
    section("snapshots", &["snapshots"], "snapshots:\n"),
    section("control", &["control"], "control:\n"),
    Place {
        base: &[
            "role: primary",
            "listen: 192.0.2.1:9470",
            "peer: 192.0.2.2:9470",
            "key_files: [/etc/libraflux/k]",
        ],
        ..section("replication", &["replication"], "replication:\n")
    },
    Place { base: &["interface: eth1"], ..section("sync", &["sync"], "sync:\n") },
    Place {
        base: &["vips: [{ address: 192.0.2.1 }]"],
        ..section(
            "announce",
            &["announce"],
            concat!(
                "services:\n  - name: web\n    protocol: tcp\n    vip: 192.0.2.1\n    port: 80\n    scheduler: wrr\n",
                "    backends: []\nannounce:\n"
            ),
        )
    },
    Place {
        name: "announced vip",
        path: &["announce", "vips", "items"],
        before: concat!(
            "services:\n  - name: web\n    protocol: tcp\n    vip: 192.0.2.1\n    port: 80\n    scheduler: wrr\n",
            "    backends: []\nannounce:\n  vips:\n"
        ),
        base: &["address: 192.0.2.1"],
        indent: 4,
        item: true,
        kind: None,
    },
    Place {
        name: "service",
        path: &["services", "items"],
        before: "services:\n",
        base: &["name: web", "protocol: tcp", "vip: 192.0.2.1", "port: 80", "scheduler: wrr", "backends: []"],
        indent: 4,
        item: true,
        kind: None,
    },
    Place {
        name: "backend",
        path: &["services", "items", "backends", "items"],
        before: concat!(
            "services:\n  - name: web\n    protocol: tcp\n    vip: 192.0.2.1\n    port: 80\n    scheduler: wrr\n",
            "    backends:\n"
        ),
        base: &["address: 192.0.2.10"],
        indent: 8,
        item: true,
        kind: None,
    },
    Place {
        indent: 6,
        ..section(
            "drain",
            &["services", "items", "drain"],
            concat!(
                "services:\n  - name: web\n    protocol: tcp\n    vip: 192.0.2.1\n    port: 80\n    scheduler: wrr\n",
                "    backends: []\n    drain:\n"
            ),
        )
    },
    Place {
        indent: 6,
        ..section(
            "circuit_breaker",
            &["services", "items", "circuit_breaker"],
            concat!(
                "services:\n  - name: web\n    protocol: tcp\n    vip: 192.0.2.1\n    port: 80\n    scheduler: wrr\n",
                "    backends: []\n    circuit_breaker:\n"
            ),
        )
    },
    Place {
        indent: 10,
        ..section(
            "canary",
            &["services", "items", "backends", "items", "canary"],
            concat!(
                "services:\n  - name: web\n    protocol: tcp\n    vip: 192.0.2.1\n    port: 80\n    scheduler: wrr\n",
                "    backends:\n      - address: 192.0.2.10\n        canary:\n"
            ),
        )
    },
];

/// `health:` with `type: kind`, in a service of the protocol it checks.
fn health_place(kind: &'static str) -> Place {
    let before = if kind == "tcp" || kind == "http" || kind == "none" { SERVICE } else { UDP_SERVICE };
    let before: &'static str = format!("{before}    backends: []\n    health:\n").leak();
    let mut base: Vec<&'static str> = vec![format!("type: {kind}").leak()];
    // The keys each type requires.
    base.extend(match kind {
        "udp_dns" => &["dns_query: example.com"][..],
        "udp_echo" => &["payload: ping"],
        _ => &[],
    });
    let base: &'static [&'static str] = base.leak();
    let path = &["services", "items", "health"];
    Place { name: "health", path, before, base, indent: 6, item: false, kind: Some(kind) }
}

fn health_types() -> Vec<&'static str> {
    super::HEALTH_TYPES.iter().map(|kind| kind.name).collect()
}

impl Place {
    /// The YAML with `lines` among the base keys (a line replaces the base line of its key), and
    /// the line number of each of `lines`.
    fn yaml(&self, lines: &[String]) -> (String, Vec<usize>) {
        let key = |line: &str| line.split(':').next().unwrap_or_default().to_owned();
        let replaced: BTreeSet<String> = lines.iter().map(|line| key(line)).collect();
        let mut body: Vec<String> = self
            .base
            .iter()
            .filter(|line| !replaced.contains(&key(line)))
            .map(|line| (*line).to_owned())
            .collect();
        let first_new = body.len();
        body.extend(lines.iter().cloned());
        let mut text = self.before.to_owned();
        for (index, line) in body.iter().enumerate() {
            let indent = if self.item && index == 0 {
                format!("{}- ", " ".repeat(self.indent - 2))
            } else {
                " ".repeat(self.indent)
            };
            text.push_str(&format!("{indent}{line}\n"));
        }
        let start = self.before.lines().count() + first_new + 1;
        (text, (start..start + lines.len()).collect())
    }

    /// The keys the schema allows here: at `health:`, those of its type.
    fn keys(&self, root: &Value) -> BTreeSet<String> {
        let schema = self.schema(root);
        let Some(kind) = self.kind else { return properties(schema) };
        let branch = schema["allOf"]
            .as_array()
            .expect("a branch per type")
            .iter()
            .find(|branch| branch["if"]["properties"]["type"]["const"] == kind)
            .expect("this type's branch");
        let allowed = branch["then"]["propertyNames"]["enum"].as_array().expect("the type's keys");
        allowed.iter().map(|key| key.as_str().expect("a key").to_owned()).collect()
    }

    /// The schema of the mapping written here.
    fn schema<'s>(&self, root: &'s Value) -> &'s Value {
        let mut node = resolve(root, root);
        for step in self.path {
            node = if *step == "items" { &node["items"] } else { &node["properties"][*step] };
            node = resolve(root, node);
        }
        node
    }
}

/// Follows `$ref` to its definition.
fn resolve<'s>(root: &'s Value, node: &'s Value) -> &'s Value {
    match node["$ref"].as_str() {
        Some(reference) => {
            let name = reference.strip_prefix("#/$defs/").expect("a local definition");
            resolve(root, &root["$defs"][name])
        }
        None => node,
    }
}

fn properties(schema: &Value) -> BTreeSet<String> {
    schema["properties"].as_object().expect("properties").keys().cloned().collect()
}

fn errors(text: &str) -> Vec<ConfigError> {
    match validate(&[Source::new("/etc/libraflux/config.yaml", text)], "lb-a") {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0,
    }
}

fn errors_on(errors: &[ConfigError], line: usize) -> Vec<&ConfigError> {
    errors.iter().filter(|error| error.position.is_some_and(|at| at.line == line)).collect()
}

#[test]
fn every_place_is_valid_as_written() {
    let mut places: Vec<Place> = PLACES.to_vec();
    places.extend(health_types().into_iter().map(health_place));
    for place in &places {
        let (text, _) = place.yaml(&[]);
        let errors = errors(&text);
        assert!(errors.is_empty(), "{}:\n{text}\n{errors:?}", place.name);
    }
}

#[test]
fn the_keys_the_decoder_accepts_are_the_schemas_properties() {
    let root = json_schema();
    let mut places: Vec<Place> = PLACES.to_vec();
    places.push(health_place("tcp"));
    for place in &places {
        let (text, _) = place.yaml(&["zz_unknown: 1".to_owned()]);
        let errors = errors(&text);
        let unknown = errors
            .iter()
            .find(|error| error.message.starts_with("unknown key \"zz_unknown\""))
            .unwrap_or_else(|| panic!("{}: no unknown-key error:\n{text}\n{errors:?}", place.name));
        let (_, listed) = unknown.message.split_once("expected one of: ").expect("the accepted keys");
        let accepted: BTreeSet<String> = listed.split(", ").map(str::to_owned).collect();
        assert_eq!(accepted, properties(place.schema(&root)), "{}", place.name);
    }
}

#[test]
fn the_decoder_reads_every_key_of_the_schema() {
    let root = json_schema();
    let mut places: Vec<Place> = PLACES.to_vec();
    places.extend(health_types().into_iter().map(health_place));
    let cases: Vec<(Place, BTreeSet<String>)> =
        places.into_iter().map(|place| (place, place.keys(&root))).collect();
    for (place, keys) in &cases {
        let schema = place.schema(&root);
        for key in keys {
            let value = resolve(&root, &schema["properties"][key]);
            let is_mapping = value["type"] == "object"
                || value["type"].as_array().is_some_and(|t| t.contains(&"object".into()));
            let wrong = if is_mapping { "[1]" } else { "{zz: 1}" };
            let (text, lines) = place.yaml(&[format!("{key}: {wrong}")]);
            let errors = errors(&text);
            let about_it =
                errors_on(&errors, lines[0]).into_iter().any(|error| error.message.contains(key.as_str()));
            assert!(about_it, "{}.{key}: the decoder does not read it:\n{text}\n{errors:#?}", place.name);
        }
    }
}

/// Text that the patterns have to judge as the decoder does.
const SAMPLES: &[&str] = &[
    "",
    "a",
    "web",
    "web-1_a",
    "Web",
    "1",
    "eth0",
    "eth0.100",
    ".",
    "..",
    "...",
    ".x",
    "a/b",
    "/",
    "/x",
    "/x/y",
    "/x y",
    "a b",
    " a",
    "a\t",
    "x$",
    "$",
    "_x",
    "-x",
    "1x",
    "sip:",
    "sip:a@b",
    "sips:x",
    "sip:a b",
    "SIP:a",
    "http://x",
    "example.com",
    "example.com.",
    "a..b",
    "-._",
    "a_b.c",
    "a*b",
    "\u{b5}",
    "fifteen-chars-x",
    "sixteen-chars-xx",
    "k.key",
    "/etc/libraflux/k",
];

/// The strings each text key takes at its place, by the schema and by the decoder, agree on
/// every sample (what a key's own text rules are; rules across keys are not at stake here).
#[test]
fn the_text_patterns_agree_with_the_decoder() {
    let root = json_schema();
    let mut places: Vec<Place> = PLACES.to_vec();
    places.extend(health_types().into_iter().map(health_place));
    let long: Vec<String> = [63, 64, 253, 254, 32, 33].iter().map(|n| "a".repeat(*n)).collect();
    let samples: Vec<&str> = SAMPLES.iter().copied().chain(long.iter().map(String::as_str)).collect();
    let mut checked = BTreeSet::new();
    for place in &places {
        let schema = place.schema(&root);
        for key in place.keys(&root) {
            let value = &schema["properties"][&key];
            let (text_schema, in_list) = match (&value["type"], &value["items"]) {
                (kind, _) if kind == "string" && value["enum"].is_null() => (value, false),
                // One or a list (node.interface): judged as one.
                _ if value["anyOf"][0]["type"] == "string" => (value, false),
                (_, items) if items["type"] == "string" => (items, true),
                _ => continue,
            };
            checked.insert(format!("{}.{key}", place.name));
            for sample in &samples {
                let quoted = format!("'{}'", sample.replace('\'', "''"));
                let written = if in_list { format!("[{quoted}]") } else { quoted };
                let (text, lines) = place.yaml(&[format!("{key}: {written}")]);
                let errors = errors(&text);
                let decoder = errors_on(&errors, lines[0])
                    .iter()
                    .all(|error| error.message.contains("there is no group"));
                let schema = accepts(&root, text_schema, sample);
                assert_eq!(
                    schema, decoder,
                    "{}.{key} = {sample:?}: schema {schema}, decoder {decoder}\n{errors:?}",
                    place.name
                );
            }
        }
    }
    for key in [
        "node.name",
        "node.interface",
        "service.name",
        "snapshots.dir",
        "replication.key_files",
        "control.group",
        "sync.interface",
        "health.path",
        "health.dns_query",
        "health.sip_uri",
        "health.payload",
    ] {
        assert!(checked.contains(key), "{key} was not checked: {checked:?}");
    }
}

#[test]
fn durations_match_what_humantime_parses() {
    let root = json_schema();
    let samples = [
        "500ms",
        "30s",
        "5m",
        "1h 30m",
        "1h30m",
        "1.5s",
        "2 min",
        " 5s ",
        "5",
        "s",
        "5x",
        "-5s",
        "5 s",
        "1d",
        "2w",
        "3M",
        "1y",
        "10\u{b5}s",
        "1e3s",
        "5s,",
        "",
        "5ms 3us",
        "0s",
        ".5s",
        "5.s",
        "1 hour",
        "2days",
        "3 weeks",
        "1sec",
        "4hrs",
        "1millis",
        "1nanos",
        "1 m 1 s",
        "5S",
        "5 mm",
    ];
    for sample in samples {
        let schema = accepts(&root, &root["$defs"]["duration"], sample);
        let decoder = humantime::parse_duration(sample).is_ok();
        assert_eq!(schema, decoder, "{sample:?}");
    }
}

#[test]
fn steps_match_what_a_canary_takes() {
    let root = json_schema();
    for sample in [
        "5%", "5", "100%", "100", "0%", "0", "101%", "+5%", "05%", "5 %", " 5%", "5%%", "%", "a%", "1000",
        "255", "1",
    ] {
        let schema = accepts(&root, &root["$defs"]["percent"], sample);
        assert_eq!(schema, super::super::canary::parse_step(sample).is_some(), "{sample:?}");
    }
}

#[test]
fn addresses_match_what_the_decoder_parses() {
    use std::net::{IpAddr, SocketAddr};

    use crate::model::ServiceKey;

    let root = json_schema();
    let samples = [
        "192.0.2.1",
        "10.0.0.300",
        "01.2.3.4",
        "1.2.3",
        "::1",
        "2001:db8::1",
        "::ffff:192.0.2.1",
        "fe80::1%eth0",
        "gg::1",
        "224.0.0.81",
        "239.255.255.255",
        "240.0.0.1",
        "ff02::81",
        "FF05::1",
        "fe80::1",
        "1.2.3.4:80",
        "[::1]:80",
        "::1:80",
        "1.2.3.4:",
        "1.2.3.4:0",
        "1.2.3.4:65535",
        "1.2.3.4:080",
        "1.2.3.4:+80",
        "1.2.3.4:65536",
        "1.2.3.4:99999",
        "[1.2.3.4]:80",
        "[::1]",
        "tcp:192.0.2.1:80",
        "udp:[2001:db8::1]:53",
        "sctp:1.2.3.4:9",
        "icmp:1.2.3.4:1",
        "tcp:192.0.2.1",
        "fwmark:17",
        "fwmark:17:v6",
        "fwmark:x",
        "fwmark:",
        "web",
    ];
    let defs = &root["$defs"];
    for sample in samples {
        let ip = sample.parse::<IpAddr>();
        let judged = [
            ("ip_address", ip.is_ok()),
            ("multicast_address", ip.as_ref().is_ok_and(IpAddr::is_multicast)),
            ("socket_address", sample.parse::<SocketAddr>().is_ok()),
            ("service_key_or_address", ip.is_ok() || sample.parse::<ServiceKey>().is_ok()),
        ];
        for (name, decoder) in judged {
            assert_eq!(accepts(&root, &defs[name], sample), decoder, "{name} {sample:?}");
        }
    }
}

/// Whether `schema` accepts the string `value`: the keywords the generated schema uses for text.
fn accepts(root: &Value, schema: &Value, value: &str) -> bool {
    let schema = resolve(root, schema);
    let kinds: Vec<&str> = match &schema["type"] {
        Value::String(kind) => vec![kind.as_str()],
        Value::Array(kinds) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => vec!["string"],
    };
    let chars = value.chars().count() as u64;
    let pattern = schema["pattern"]
        .as_str()
        .is_none_or(|pattern| regex::Regex::new(pattern).expect("a regex").is_match(value));
    let format = match schema["format"].as_str() {
        Some("ipv4") => value.parse::<std::net::Ipv4Addr>().is_ok(),
        Some("ipv6") => value.parse::<std::net::Ipv6Addr>().is_ok(),
        Some(other) => panic!("format {other}"),
        None => true,
    };
    let each = |keyword: &str| {
        schema[keyword]
            .as_array()
            .map(|list| list.iter().map(|sub| accepts(root, sub, value)).collect::<Vec<_>>())
    };
    kinds.contains(&"string")
        && pattern
        && format
        && schema["minLength"].as_u64().is_none_or(|min| chars >= min)
        && schema["maxLength"].as_u64().is_none_or(|max| chars <= max)
        && schema["enum"].as_array().is_none_or(|choices| choices.iter().any(|choice| choice == value))
        && each("anyOf").is_none_or(|results| results.contains(&true))
        && each("allOf").is_none_or(|results| !results.contains(&false))
}
