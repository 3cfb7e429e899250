//! Decoding one file: the top-level sections (`node`, `limits`, `metrics`, `ignore`), and the
//! services through [`service`]. Cross-file rules live in [`super::validate`].

use std::net::{IpAddr, SocketAddr};

use marked_yaml::Node;

use super::{
    Limits, Metrics, Snapshots,
    control::{Control, control},
    decode::{Diagnostics, Field},
    error::Position,
    replication::{Replication, replication},
    service::{ServiceDecl, service},
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
    pub sync: Option<Located<Option<SyncConfig>>>,
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

const TOP_KEYS: &[&str] =
    &["node", "limits", "metrics", "snapshots", "control", "replication", "sync", "ignore", "services"];

pub(super) fn file(root: &Node, d: &mut Diagnostics<'_>) -> FileDecl {
    let mut decl = FileDecl::default();
    let Some(root) = d.mapping(root, None, "", TOP_KEYS) else { return decl };
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
    if let Some(field) = root.get("sync") {
        decl.sync = located(field, sync(d, field));
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
    let map =
        d.mapping(field.value, field.position(), "node", &["name", "interface", "expected_connections"])?;
    clean(d, |d| {
        let name = map.get("name").and_then(|field| {
            let name = d.string(field)?;
            if name.trim().is_empty() || name.chars().any(char::is_whitespace) {
                d.error(field.position(), format!("node.name: {name:?} must be one word"));
            }
            Some(name.to_owned())
        });
        let interfaces = map.get("interface").map(|field| interfaces(d, field)).unwrap_or_default();
        let expected_connections =
            map.get("expected_connections").and_then(|field| d.integer(field, 1, u64::from(u32::MAX)));
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
    let keys = [
        "max_services_created",
        "max_backends_per_service",
        "max_services_deleted",
        "max_backends_removed_percent",
    ];
    let map = d.mapping(field.value, field.position(), "limits", &keys)?;
    clean(d, |d| {
        let defaults = Limits::default();
        let mut limit = |key: &str, default: u32| {
            map.get(key).map_or(Some(default), |field| d.integer(field, 0, u64::from(u32::MAX)))
        };
        Limits {
            max_services_created: limit(keys[0], defaults.max_services_created).unwrap_or_default(),
            max_backends_per_service: limit(keys[1], defaults.max_backends_per_service).unwrap_or_default(),
            max_services_deleted: limit(keys[2], defaults.max_services_deleted).unwrap_or_default(),
            max_backends_removed_percent: map
                .get(keys[3])
                .map_or(Some(defaults.max_backends_removed_percent), |field| d.integer(field, 0, 100))
                .unwrap_or_default(),
        }
    })
}

fn metrics(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<Metrics> {
    let keys = ["listen", "collect_interval", "max_series"];
    let map = d.mapping(field.value, field.position(), "metrics", &keys)?;
    clean(d, |d| {
        let defaults = Metrics::default();
        let listen = map.get("listen").map_or(Some(defaults.listen), |field| {
            d.parsed::<SocketAddr>(field, "an address:port like 127.0.0.1:9469 ([::1]:9469 for IPv6)")
        });
        let collect_interval = map.get("collect_interval").map_or(Some(defaults.collect_interval), |field| {
            let interval = d.duration(field)?;
            if interval.is_zero() {
                d.error(field.position(), "metrics.collect_interval: must be longer than 0s");
            }
            Some(interval)
        });
        let max_series =
            map.get("max_series").map_or(Some(defaults.max_series), |field| d.integer(field, 1, u64::MAX));
        Metrics {
            listen: listen.unwrap_or(defaults.listen),
            collect_interval: collect_interval.unwrap_or_default(),
            max_series: max_series.unwrap_or_default(),
        }
    })
}

fn snapshots(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<Snapshots> {
    let map = d.mapping(field.value, field.position(), "snapshots", &["dir", "keep"])?;
    clean(d, |d| {
        let defaults = Snapshots::default();
        let dir = map.get("dir").map_or(Some(defaults.dir.clone()), |field| {
            let dir = d.string(field)?;
            if !dir.starts_with('/') {
                d.error(field.position(), format!("snapshots.dir: {dir:?} must be an absolute path"));
            }
            Some(dir.into())
        });
        let keep = map.get("keep").map_or(Some(defaults.keep), |field| d.integer(field, 1, 100_000));
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
