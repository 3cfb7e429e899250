//! Decoding one file: the top-level sections (`node`, `limits`, `metrics`, `ignore`), and the
//! services through [`service`]. Cross-file rules live in [`super::validate`].

use std::net::{IpAddr, SocketAddr};

use marked_yaml::Node;

use super::{
    Limits, Metrics, Snapshots,
    announce::{AnnounceDecl, announce},
    control::{Control, control},
    decode::{Diagnostics, Field},
    error::Position,
    keys::{CREDENTIAL_PATH, Default, Key, Section, Shape, Text},
    replication::{Replication, replication},
    service::{ServiceDecl, service},
    source::{EtcdSource, source},
    sync::{SyncConfig, sync},
};
use crate::model::ServiceKey;

/// A decoded value and where it was written.
#[derive(Clone, Debug)]
pub(super) struct Located<T> {
    pub value: T,
    pub at: Option<Position>,
}

/// Everything one file declares. A section that is present but invalid is `Some` with a `None`
/// value, so that the one-file-per-section rule still sees it.
#[derive(Debug, Default)]
pub(super) struct FileDecl {
    pub node: Option<Located<Option<NodeDecl>>>,
    pub limits: Option<Located<Option<Limits>>>,
    pub metrics: Option<Located<Option<Metrics>>>,
    pub snapshots: Option<Located<Option<Snapshots>>>,
    pub control: Option<Located<Option<Control>>>,
    pub replication: Option<Located<Option<Replication>>>,
    pub source: Option<Located<Option<EtcdSource>>>,
    pub sync: Option<Located<Option<SyncConfig>>>,
    pub announce: Option<Located<Option<AnnounceDecl>>>,
    pub ignore: Vec<Located<IgnoreEntry>>,
    pub services: Vec<ServiceDecl>,
}

#[derive(Clone, Debug)]
pub(super) struct NodeDecl {
    pub name: Option<String>,
    pub interfaces: Vec<String>,
    pub expected_connections: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum IgnoreEntry {
    Service(ServiceKey),
    Vip(IpAddr),
}

/// A config file: any file may set any section; `validate` allows each section but `services`
/// and `ignore` in one file only, and a replicated file none of the node-local ones.
pub(super) const TOP: Section = Section {
    context: "",
    doc: "A LibraFlux configuration file: /etc/libraflux/config.yaml or a file of config.d. Sections \
          other than services and ignore may be set by one file only; node, metrics, control, snapshots, \
          replication, source, sync and announce are node-local and may not be in a replicated (config.d) file.",
    keys: &[
        &Key::optional("node", Shape::Mapping(&NODE), "This node."),
        &Key::optional(
            "limits",
            Shape::Mapping(&LIMITS),
            "Change limits per apply; apply --force overrides them.",
        ),
        &Key::optional("metrics", Shape::Mapping(&METRICS), "The Prometheus endpoint."),
        &Key::optional("snapshots", Shape::Mapping(&SNAPSHOTS), "Where snapshots are kept."),
        &Key::optional(
            "control",
            Shape::Mapping(&super::control::CONTROL),
            "Who may use the control socket.",
        ),
        &Key::optional(
            "replication",
            Shape::Mapping(&super::replication::REPLICATION),
            "Config replication in a pair.",
        ),
        &Key::optional(
            "source",
            Shape::Mapping(&super::source::SOURCE),
            "Where a fleet's replicated configuration comes from (etcd); used by config push|diff, not yet by the daemon.",
        ),
        &Key::optional(
            "sync",
            Shape::Mapping(&super::sync::SYNC),
            "The kernel's IPVS connection sync daemon.",
        ),
        &Key::optional(
            "announce",
            Shape::Mapping(&super::announce::ANNOUNCE),
            "VIPs announced over BGP through BIRD while their services serve.",
        ),
        &Key::optional("ignore", Shape::List { item: &Shape::ServiceKeyOrIp, min: 0, max: None }, IGNORE_DOC),
        &Key::optional(
            "services",
            Shape::List { item: &Shape::Mapping(&super::service::SERVICE), min: 0, max: None },
            "The IPVS virtual services.",
        ),
    ],
};

const IGNORE_DOC: &str = "Services LibraFlux never touches: a service key (tcp:192.0.2.1:80, fwmark:17) or a VIP (every service on it).";

const NODE: Section =
    Section { context: "node", doc: "This node.", keys: &[&NODE_NAME, &INTERFACE, &EXPECTED_CONNECTIONS] };

const NODE_NAME: Key =
    Key::optional("name", Shape::Text(Text::matching(r"^\S+$")), "One word; default: the host name.");
const INTERFACE: Key = Key::optional(
    "interface",
    Shape::OneOrList(&Shape::Text(INTERFACE_NAME)),
    "Where the VIPs live and the eBPF counters attach; a list for two-armed nodes: [eth0, eth1].",
);
const EXPECTED_CONNECTIONS: Key = Key::optional(
    "expected_connections",
    Shape::Integer { min: 1, max: u32::MAX as u64 },
    "Peak connections the node should carry (the conn_table_size pre-flight check).",
);

/// What the kernel accepts as an interface name ([`is_interface_name`]): no `/`, no white space,
/// not `.` or `..`, at most 15 bytes.
pub(super) const INTERFACE_NAME: Text = Text::matching(r"^([^/\s]*[^/\s.][^/\s]*|\.{3,})$").at_most(15);

const LIMITS: Section = Section {
    context: "limits",
    doc: "Change limits per apply; apply --force overrides them.",
    keys: &[
        &MAX_SERVICES_CREATED,
        &MAX_BACKENDS_PER_SERVICE,
        &MAX_SERVICES_DELETED,
        &MAX_BACKENDS_REMOVED_PERCENT,
    ],
};

const COUNT: Shape = Shape::Integer { min: 0, max: u32::MAX as u64 };
const MAX_SERVICES_CREATED: Key = Key::defaults_to(
    "max_services_created",
    COUNT,
    Default::Integer(Limits::DEFAULT.max_services_created as u64),
    "Services one apply may create.",
);
const MAX_BACKENDS_PER_SERVICE: Key = Key::defaults_to(
    "max_backends_per_service",
    COUNT,
    Default::Integer(Limits::DEFAULT.max_backends_per_service as u64),
    "Backends one apply may add to one service.",
);
const MAX_SERVICES_DELETED: Key = Key::defaults_to(
    "max_services_deleted",
    COUNT,
    Default::Integer(Limits::DEFAULT.max_services_deleted as u64),
    "Services one apply may delete.",
);
const MAX_BACKENDS_REMOVED_PERCENT: Key = Key::defaults_to(
    "max_backends_removed_percent",
    Shape::Integer { min: 0, max: 100 },
    Default::Integer(Limits::DEFAULT.max_backends_removed_percent as u64),
    "The share of a service's backends one apply may remove or set to weight 0.",
);

const METRICS: Section = Section {
    context: "metrics",
    doc: "The Prometheus endpoint.",
    keys: &[&LISTEN, &COLLECT_INTERVAL, &MAX_SERIES, &WEB_CONFIG],
};

const LISTEN: Key = Key::defaults_to(
    "listen",
    Shape::SocketAddr,
    Default::SocketAddr(Metrics::DEFAULT.listen),
    "address:port of /metrics ([::1]:9469 for IPv6).",
);
const COLLECT_INTERVAL: Key = Key::defaults_to(
    "collect_interval",
    Shape::Duration,
    Default::Duration(Metrics::DEFAULT.collect_interval),
    "How often IPVS and eBPF counters are collected; longer than 0s.",
);
const WEB_CONFIG: Key = Key::optional(
    "web_config",
    Shape::Text(CREDENTIAL_PATH),
    "A Prometheus exporter-toolkit web configuration file (TLS, basic auth): an absolute path, or the bare name of a systemd credential (docs/metrics.md).",
);
const MAX_SERIES: Key = Key::defaults_to(
    "max_series",
    Shape::Integer { min: 1, max: u64::MAX },
    Default::Integer(Metrics::DEFAULT.max_series),
    "Cardinality limit.",
);

const SNAPSHOTS: Section = Section {
    context: "snapshots",
    doc: "Where libraflux snapshot keeps its files, and how many automatic ones apply keeps.",
    keys: &[&SNAPSHOT_DIR, &KEEP],
};

const SNAPSHOT_DIR: Key = Key::defaults_to(
    "dir",
    Shape::Text(Text::matching("^/")),
    Default::Word(crate::snapshot::DEFAULT_DIR),
    "Absolute path of the snapshot directory.",
);
const KEEP: Key = Key::defaults_to(
    "keep",
    Shape::Integer { min: 1, max: 100_000 },
    Default::Integer(crate::snapshot::DEFAULT_KEEP as u64),
    "Automatic pre-apply-* snapshots kept.",
);

pub(super) fn file(root: &Node, d: &mut Diagnostics<'_>) -> FileDecl {
    let mut decl = FileDecl::default();
    let Some(root) = d.section(root, None, &TOP) else { return decl };
    if let Some(field) = root.get("node") {
        decl.node = located(field, node(d, field));
    }
    if let Some(field) = root.get("limits") {
        decl.limits = located(field, limits(d, field));
    }
    if let Some(field) = root.get("metrics") {
        decl.metrics = located(field, metrics(d, field));
    }
    if let Some(field) = root.get("snapshots") {
        decl.snapshots = located(field, snapshots(d, field));
    }
    if let Some(field) = root.get("control") {
        decl.control = located(field, control(d, field));
    }
    if let Some(field) = root.get("replication") {
        decl.replication = located(field, replication(d, field));
    }
    if let Some(field) = root.get("source") {
        decl.source = located(field, source(d, field));
    }
    if let Some(field) = root.get("sync") {
        decl.sync = located(field, sync(d, field));
    }
    if let Some(field) = root.get("announce") {
        decl.announce = located(field, announce(d, field));
    }
    if let Some(field) = root.get("ignore") {
        decl.ignore = ignore(d, field);
    }
    if let Some(field) = root.get("services") {
        decl.services = d.sequence(field).unwrap_or_default().iter().map(|item| service(d, item)).collect();
    }
    decl
}

fn located<T>(field: Field<'_>, value: T) -> Option<Located<T>> {
    Some(Located { value, at: field.key_position() })
}

/// Runs `decode` and keeps its value only if it reported no error.
pub(super) fn clean<T>(d: &mut Diagnostics<'_>, decode: impl FnOnce(&mut Diagnostics<'_>) -> T) -> Option<T> {
    let before = d.errors.len();
    let value = decode(d);
    (d.errors.len() == before).then_some(value)
}

fn node(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<NodeDecl> {
    let map = d.section(field.value, field.position(), &NODE)?;
    clean(d, |d| {
        let name = map.get(NODE_NAME.name).and_then(|field| {
            let name = d.string(field)?;
            if name.trim().is_empty() || name.chars().any(char::is_whitespace) {
                d.error(field.position(), format!("node.name: {name:?} must be one word"));
            }
            Some(name.to_owned())
        });
        let interfaces = map.get(INTERFACE.name).map(|field| interfaces(d, field)).unwrap_or_default();
        let expected_connections = EXPECTED_CONNECTIONS.optional_integer(d, &map).flatten();
        NodeDecl { name, interfaces, expected_connections }
    })
}

/// `interface: eth0` or `interface: [eth0, eth1]`.
fn interfaces(d: &mut Diagnostics<'_>, field: Field<'_>) -> Vec<String> {
    let items = match field.value {
        Node::Sequence(items) => items.iter().map(|item| field.item(item)).collect(),
        _ => vec![field],
    };
    let mut names: Vec<String> = Vec::new();
    for item in items {
        let Some(name) = d.string(item) else { continue };
        if !is_interface_name(name) {
            d.error(item.position(), format!("node.interface: {name:?} is not an interface name"));
        } else if names.iter().any(|known| known == name) {
            d.error(item.position(), format!("node.interface: {name:?} is listed twice"));
        } else {
            names.push(name.to_owned());
        }
    }
    if names.is_empty() && matches!(field.value, Node::Sequence(_)) {
        d.error(field.position(), "node.interface: the list is empty");
    }
    names
}

/// What the kernel accepts as a network interface name.
pub(super) fn is_interface_name(name: &str) -> bool {
    // IFNAMSIZ is 16 with the terminating NUL.
    !name.is_empty()
        && name.len() <= 15
        && !name.contains('/')
        && !name.chars().any(char::is_whitespace)
        && name != "."
        && name != ".."
}

fn limits(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<Limits> {
    let map = d.section(field.value, field.position(), &LIMITS)?;
    clean(d, |d| {
        let mut limit = |key: &Key| key.integer_or_default(d, &map).unwrap_or_default();
        Limits {
            max_services_created: limit(&MAX_SERVICES_CREATED),
            max_backends_per_service: limit(&MAX_BACKENDS_PER_SERVICE),
            max_services_deleted: limit(&MAX_SERVICES_DELETED),
            max_backends_removed_percent: limit(&MAX_BACKENDS_REMOVED_PERCENT),
        }
    })
}

fn metrics(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<Metrics> {
    let map = d.section(field.value, field.position(), &METRICS)?;
    clean(d, |d| {
        let defaults = Metrics::DEFAULT;
        let listen = map.get(LISTEN.name).map_or(Some(defaults.listen), |field| {
            d.parsed::<SocketAddr>(field, "an address:port like 127.0.0.1:9469 ([::1]:9469 for IPv6)")
        });
        let collect_interval = COLLECT_INTERVAL.duration_or_default(d, &map);
        if collect_interval.is_some_and(|interval| interval.is_zero()) {
            let at = map.get(COLLECT_INTERVAL.name).and_then(|field| field.position());
            d.error(at, "metrics.collect_interval: must be longer than 0s");
        }
        let max_series = MAX_SERIES.integer_or_default(d, &map);
        let web_config = map.get(WEB_CONFIG.name).and_then(|field| d.credential_path(field)).map(Into::into);
        if let Some(addr) = listen
            && !addr.ip().is_loopback()
            && map.get(WEB_CONFIG.name).is_none()
        {
            let at = map.get(LISTEN.name).and_then(|field| field.position());
            let message = format!(
                "metrics.listen: {addr} is not a loopback address and metrics.web_config is not set: \
                 /metrics and /status are served without TLS or authentication to anyone who can reach it"
            );
            d.warning(at, message);
        }
        Metrics {
            listen: listen.unwrap_or(defaults.listen),
            collect_interval: collect_interval.unwrap_or_default(),
            max_series: max_series.unwrap_or_default(),
            web_config,
        }
    })
}

fn snapshots(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<Snapshots> {
    let map = d.section(field.value, field.position(), &SNAPSHOTS)?;
    clean(d, |d| {
        let defaults = Snapshots::default();
        let dir = map.get(SNAPSHOT_DIR.name).map_or(Some(defaults.dir.clone()), |field| {
            let dir = d.string(field)?;
            if !dir.starts_with('/') {
                d.error(field.position(), format!("snapshots.dir: {dir:?} must be an absolute path"));
            }
            Some(dir.into())
        });
        let keep = KEEP.integer_or_default(d, &map);
        Snapshots { dir: dir.unwrap_or(defaults.dir), keep: keep.unwrap_or(defaults.keep) }
    })
}

/// `ignore:` entries: service keys (`tcp:10.0.0.1:80`, `fwmark:17`) or VIP addresses.
fn ignore(d: &mut Diagnostics<'_>, field: Field<'_>) -> Vec<Located<IgnoreEntry>> {
    let mut entries = Vec::new();
    for item in d.sequence(field).unwrap_or_default() {
        let item = field.item(item);
        let Some(text) = d.string(item) else { continue };
        let value = if let Ok(addr) = text.parse::<IpAddr>() {
            IgnoreEntry::Vip(addr)
        } else if let Ok(key) = text.parse::<ServiceKey>() {
            IgnoreEntry::Service(key)
        } else {
            let message = format!(
                "ignore: {text:?} is neither a service key (like tcp:192.0.2.1:80 or fwmark:17) nor a VIP address"
            );
            d.error(item.position(), message);
            continue;
        };
        entries.push(Located { value, at: item.position() });
    }
    entries
}
