//! Validation across files: decode each file, then merge them. `node`, `limits`, `metrics` and
//! `snapshots` may be set by one file only; `ignore` and `services` are concatenated; service
//! names and keys are unique across all files, and no configured service may also be ignored.

use std::{collections::BTreeMap, net::IpAddr, path::Path};

use super::{
    Config, ConfigError, ConfigErrors, Ignore, Limits, Metrics, NodeConfig, Source,
    decode::{self, Diagnostics},
    error::{Position, sort_by_file},
    schema::{self, FileDecl, IgnoreEntry, Located},
};
use crate::model::ServiceKey;

/// Validates the configuration made of `sources` (in load order). `hostname` is the default
/// node name. Returns every error of every file, ordered by file, then position.
pub fn validate(sources: &[Source], hostname: &str) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut files = Vec::with_capacity(sources.len());
    for source in sources {
        let mut diagnostics = Diagnostics::new(&source.path);
        let decl = decode::parse_file(&source.text, &mut diagnostics)
            .map(|root| schema::file(&root, &mut diagnostics))
            .unwrap_or_default();
        errors.append(&mut diagnostics.errors);
        warnings.append(&mut diagnostics.warnings);
        files.push((source.path.as_path(), decl));
    }
    let config = merge(&files, hostname, &mut errors);
    decode::within_files(&mut errors, sources);
    decode::within_files(&mut warnings, sources);
    let order: Vec<&Path> = sources.iter().map(|source| source.path.as_path()).collect();
    sort_by_file(&mut errors, &order);
    sort_by_file(&mut warnings, &order);
    if errors.is_empty() { Ok(Config { warnings, ..config }) } else { Err(ConfigErrors(errors)) }
}

/// `source.etcd` as the node-local files set it, decoded alone (their other errors are
/// [`validate`]'s to report): whether this node takes its `config.d` from etcd, and from where.
pub fn etcd_source(node_local: &[Source]) -> Option<super::EtcdSource> {
    node_local.iter().find_map(|source| {
        let mut diagnostics = Diagnostics::new(&source.path);
        let root = decode::parse_file(&source.text, &mut diagnostics)?;
        schema::file(&root, &mut diagnostics).source.and_then(|located| located.value)
    })
}

/// Where something was declared, for messages that name both places.
#[derive(Clone, Copy, Debug)]
struct Place<'a> {
    file: &'a Path,
    at: Option<Position>,
}

impl std::fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.at {
            Some(Position { line, col }) => write!(f, "{}:{line}:{col}", self.file.display()),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

fn merge(files: &[(&Path, FileDecl)], hostname: &str, errors: &mut Vec<ConfigError>) -> Config {
    let node = single_section(files, "node", |decl| decl.node.as_ref(), errors).flatten();
    let limits = single_section(files, "limits", |decl| decl.limits.as_ref(), errors).flatten();
    let metrics = single_section(files, "metrics", |decl| decl.metrics.as_ref(), errors).flatten();
    let snapshots = single_section(files, "snapshots", |decl| decl.snapshots.as_ref(), errors).flatten();
    let control = single_section(files, "control", |decl| decl.control.as_ref(), errors).flatten();
    let replication =
        single_section(files, "replication", |decl| decl.replication.as_ref(), errors).flatten();
    let source = single_section(files, "source", |decl| decl.source.as_ref(), errors).flatten();
    let sync = single_section(files, "sync", |decl| decl.sync.as_ref(), errors).flatten();
    let announce = single_section(files, "announce", |decl| decl.announce.as_ref(), errors).flatten();
    let ignored = IgnoredPlaces::collect(files);
    let mut config = Config {
        node: NodeConfig {
            name: node.as_ref().and_then(|node| node.name.clone()).unwrap_or_else(|| hostname.to_owned()),
            expected_connections: node.as_ref().and_then(|node| node.expected_connections),
            interfaces: node.map(|node| node.interfaces).unwrap_or_default(),
        },
        limits: limits.unwrap_or_else(Limits::default),
        metrics: metrics.unwrap_or_else(Metrics::default),
        snapshots: snapshots.unwrap_or_default(),
        control: control.unwrap_or_default(),
        replication,
        source,
        sync,
        announce: announce.map(|decl| decl.announce),
        desired: Default::default(),
        settings: BTreeMap::new(),
        ignore: ignored.ignore(),
        warnings: Vec::new(),
    };
    services(files, &ignored, &mut config, errors);
    announced_vips_are_served(files, &config, errors);
    one_source_of_config_d(files, &config, errors);
    config
}

/// A node takes its `config.d` from one place: a replication secondary from its primary, a node
/// with `source.etcd` from etcd; a primary with `source.etcd` would bundle what etcd holds for a
/// secondary that could read etcd itself.
fn one_source_of_config_d(files: &[(&Path, FileDecl)], config: &Config, errors: &mut Vec<ConfigError>) {
    if config.source.is_none() || config.replication.is_none() {
        return;
    }
    if let Some((file, at)) =
        files.iter().find_map(|(file, decl)| decl.source.as_ref().map(|located| (*file, located.at)))
    {
        let message = "source.etcd and replication cannot both be set: a node takes its config.d \
                       from etcd or from a replication primary, not both";
        errors.push(ConfigError::new(file, at, message));
    }
}

/// Every VIP of `announce.vips` is the VIP of a configured service: anything else is announced
/// with nothing behind it, or never.
fn announced_vips_are_served(files: &[(&Path, FileDecl)], config: &Config, errors: &mut Vec<ConfigError>) {
    let served: std::collections::BTreeSet<IpAddr> =
        config.desired.keys().filter_map(ServiceKey::vip).collect();
    let Some((file, decl)) = files.iter().find_map(|(file, decl)| Some((*file, decl.announce.as_ref()?)))
    else {
        return;
    };
    for (address, at) in decl.value.iter().flat_map(|decl| &decl.vip_positions) {
        if !served.contains(address) {
            let message = format!(
                "announce.vips: {address} is the VIP of no configured service (fwmark services have no VIP)"
            );
            errors.push(ConfigError::new(file, *at, message));
        }
    }
}

/// The value of a section that only one file may set; a second setting is an error naming the first.
fn single_section<T: Clone>(
    files: &[(&Path, FileDecl)],
    section: &str,
    get: impl Fn(&FileDecl) -> Option<&Located<T>>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let mut first: Option<(Place<'_>, &T)> = None;
    for (file, decl) in files {
        let Some(located) = get(decl) else { continue };
        match first {
            None => first = Some((Place { file, at: located.at }, &located.value)),
            Some((place, _)) => errors.push(ConfigError::new(
                *file,
                located.at,
                format!("{section} is already set at {place}; only one file may set {section}"),
            )),
        }
    }
    first.map(|(_, value)| value.clone())
}

/// The `ignore:` entries of all files, with where each was written.
#[derive(Debug, Default)]
struct IgnoredPlaces<'a> {
    services: BTreeMap<ServiceKey, Place<'a>>,
    vips: BTreeMap<IpAddr, Place<'a>>,
}

impl<'a> IgnoredPlaces<'a> {
    fn collect(files: &[(&'a Path, FileDecl)]) -> Self {
        let mut ignored = Self::default();
        for (file, decl) in files {
            for entry in &decl.ignore {
                let place = Place { file, at: entry.at };
                match entry.value {
                    IgnoreEntry::Service(key) => ignored.services.entry(key).or_insert(place),
                    IgnoreEntry::Vip(addr) => ignored.vips.entry(addr).or_insert(place),
                };
            }
        }
        ignored
    }

    fn ignore(&self) -> Ignore {
        Ignore {
            services: self.services.keys().copied().collect(),
            vips: self.vips.keys().copied().collect(),
        }
    }

    fn place_covering(&self, key: &ServiceKey) -> Option<Place<'a>> {
        let by_vip = match key {
            ServiceKey::Addr { addr, .. } => self.vips.get(addr),
            ServiceKey::Fwmark { .. } => None,
        };
        self.services.get(key).or(by_vip).copied()
    }
}

/// Collects the services of all files into `config`, reporting duplicate names and keys and
/// services that are also ignored.
fn services(
    files: &[(&Path, FileDecl)],
    ignored: &IgnoredPlaces<'_>,
    config: &mut Config,
    errors: &mut Vec<ConfigError>,
) {
    let mut names: BTreeMap<&str, Place<'_>> = BTreeMap::new();
    let mut keys: BTreeMap<ServiceKey, (Option<&str>, Place<'_>)> = BTreeMap::new();
    for (file, decl) in files {
        for service in &decl.services {
            let name = service.name.as_ref().map(|name| name.value.as_str());
            let mut unique = true;
            if let Some(located) = &service.name {
                let place = Place { file, at: located.at };
                if let Some(first) = names.get(located.value.as_str()) {
                    let message = format!("service name {:?} is already used at {first}", located.value);
                    errors.push(ConfigError::new(*file, located.at, message));
                    unique = false;
                } else {
                    names.insert(&located.value, place);
                }
            }
            if let Some(located) = &service.key {
                let key = located.value;
                if let Some((first_name, first)) = keys.get(&key) {
                    let by = first_name.map(|name| format!(" by service {name:?}")).unwrap_or_default();
                    let message = format!("service {key} is already defined{by} at {first}");
                    errors.push(ConfigError::new(*file, located.at, message));
                    unique = false;
                } else {
                    keys.insert(key, (name, Place { file, at: located.at }));
                }
                if let Some(ignoring) = ignored.place_covering(&key) {
                    let message =
                        format!("service {key} is configured but also ignored at {ignoring}; remove one");
                    errors.push(ConfigError::new(*file, located.at, message));
                    unique = false;
                }
            }
            if let (true, Some((desired, settings))) = (unique, &service.built) {
                // Unshared while the configuration is built: no copy.
                std::sync::Arc::make_mut(&mut config.desired).insert(desired.key, desired.clone());
                config.settings.insert(desired.key, settings.clone());
            }
        }
    }
}
