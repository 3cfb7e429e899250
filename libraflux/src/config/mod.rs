//! The configuration: loaded from YAML files, validated completely (every error of every file at
//! once, each `file:line:col: message`), and turned into the desired IPVS state before anything
//! touches the kernel.
//!
//! Files: see [`files`]. Merge rules: `node`, `limits`, `metrics`, `snapshots`, `control`, `replication`, `sync` and `announce` may each be set by one file
//! only (a second is an error naming both places); `services` and `ignore` of all files are
//! concatenated, and service names and keys must be unique across all of them. The operator
//! reference is `docs/configuration.md`.

mod announce;
mod breaker;
mod canary;
mod control;
mod decode;
mod error;
mod files;
mod health;
mod json_schema;
mod keys;
mod node_local;
mod replication;
mod schema;
mod service;
mod source;
pub(crate) mod sync;
mod validate;
mod web;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

pub use announce::{Announce, Require, VipPolicy};
pub use control::Control;
pub use error::{ConfigError, ConfigErrors, Position, sort_by_file};
pub use files::{
    DEFAULT_DIR, DROP_IN_DIR, Layout, MAIN_FILE, Source, layout, node_local_sources, read_sources,
    source_paths, yaml_files_in,
};
pub use json_schema::json_schema;
pub use node_local::{NODE_LOCAL_SECTIONS, node_local_sections};
pub use replication::{Replication, Role};
pub use source::{DEFAULT_PREFIX, EtcdSource};
pub use sync::SyncConfig;
pub use validate::{etcd_source, validate};
pub use web::{CURVES, ClientAuth, TLS12_SUITES, TlsSettings, TlsVersion, WebConfig, parse_web_config};

use crate::model::{DestKey, Service, ServiceKey};

/// What IPVS should hold: the configured services with their backends, by key.
pub type DesiredState = BTreeMap<ServiceKey, Service>;

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub node: NodeConfig,
    pub limits: Limits,
    pub metrics: Metrics,
    pub snapshots: Snapshots,
    /// Who may use the daemon's control socket besides root and the daemon's user.
    pub control: Control,
    /// This node's part in a replicating pair, if any (docs/ha.md).
    pub replication: Option<Replication>,
    /// `source.etcd`: where this node's daemon reads its `config.d` from, and where
    /// `config push|diff` find the fleet's configuration (docs/fleet.md).
    pub source: Option<EtcdSource>,
    /// The kernel's connection sync daemon LibraFlux runs (one file only may set it); `None`:
    /// LibraFlux leaves sync daemons alone.
    pub sync: Option<SyncConfig>,
    /// The VIPs this node announces over BGP through BIRD (docs/fleet.md); `None`: none.
    pub announce: Option<Announce>,
    /// The services as IPVS should hold them (forwarding copied to each backend).
    pub desired: std::sync::Arc<DesiredState>,
    /// What the daemon needs beyond the kernel's view: name, health check, drain, by service key.
    pub settings: BTreeMap<ServiceKey, ServiceSettings>,
    /// Services the planner must never touch.
    pub ignore: Ignore,
    /// Accepted, but worth the operator's attention (`udp_echo` checks, services without backends).
    pub warnings: Vec<ConfigError>,
}

/// Loads and validates the configuration named by `path` (see [`files`] for what a file or
/// directory path loads; `None` loads `/etc/libraflux/config.yaml` and `config.d/*.yaml`).
pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
    let sources = read_sources(path)?;
    validate(&sources, &system_hostname())
}

/// The kernel's host name, the default node name.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Defaults to the host name.
    pub name: String,
    /// Where the VIPs live and the eBPF programs attach; empty when not configured.
    pub interfaces: Vec<String>,
    /// Peak connections the node is expected to carry; the pre-flight check compares it with
    /// the IPVS connection table.
    pub expected_connections: Option<u64>,
}

/// Change limits per apply; `--force` overrides them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_services_created: u32,
    /// Backends one apply may add to one service.
    pub max_backends_per_service: u32,
    pub max_services_deleted: u32,
    /// The share (percent) of a service's backends one apply may remove or set to weight 0.
    pub max_backends_removed_percent: u32,
}

impl Limits {
    pub const DEFAULT: Self = Self {
        max_services_created: 100,
        max_backends_per_service: 50,
        max_services_deleted: 10,
        max_backends_removed_percent: 50,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metrics {
    pub listen: SocketAddr,
    pub collect_interval: Duration,
    pub max_series: u64,
    /// A Prometheus exporter-toolkit web configuration (TLS, basic auth): an absolute path, or
    /// the bare name of a systemd credential. Loaded by [`crate::metrics::web`].
    pub web_config: Option<std::path::PathBuf>,
}

impl Metrics {
    pub const DEFAULT: Self = Self {
        listen: SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9469)),
        collect_interval: Duration::from_secs(30),
        max_series: 50_000,
        web_config: None,
    };
}

impl Default for Metrics {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Where snapshots are kept, and how many automatic `pre-apply-*` snapshots `apply` keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshots {
    pub dir: std::path::PathBuf,
    pub keep: u32,
}

impl Default for Snapshots {
    fn default() -> Self {
        Self { dir: crate::snapshot::DEFAULT_DIR.into(), keep: crate::snapshot::DEFAULT_KEEP }
    }
}

/// Services the planner leaves alone: by exact key, or every service on a VIP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ignore {
    pub services: BTreeSet<ServiceKey>,
    pub vips: BTreeSet<IpAddr>,
}

impl Ignore {
    pub fn covers(&self, key: &ServiceKey) -> bool {
        self.services.contains(key)
            || matches!(key, ServiceKey::Addr { addr, .. } if self.vips.contains(addr))
    }
}

/// The per-service settings the daemon needs beside the kernel state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSettings {
    pub name: String,
    pub health: Health,
    pub on_unhealthy: OnUnhealthy,
    pub drain: Drain,
    /// The backends with `canary:`, and their rollouts.
    pub canaries: BTreeMap<DestKey, crate::canary::Rollout>,
    /// `circuit_breaker:`; none: no breakers.
    pub circuit_breaker: Option<crate::breaker::Settings>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub check: Check,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes to become healthy.
    pub rise: u32,
    /// Consecutive failures to become unhealthy.
    pub fall: u32,
    /// Probe this port instead of each backend's own (needed by fwmark backends, which have none).
    pub port: Option<u16>,
}

impl Health {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_RISE: u32 = 2;
    pub const DEFAULT_FALL: u32 = 3;

    pub fn with_check(check: Check) -> Self {
        Self {
            check,
            interval: Self::DEFAULT_INTERVAL,
            timeout: Self::DEFAULT_TIMEOUT,
            rise: Self::DEFAULT_RISE,
            fall: Self::DEFAULT_FALL,
            port: None,
        }
    }
}

/// The health check protocol and its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// No check: backends are always healthy.
    None,
    /// A TCP connect.
    Tcp,
    Http {
        path: String,
        expect_status: u16,
    },
    /// A DNS query; `record_type` and `expect_rcode` are upper-case mnemonics (`A`, `NOERROR`).
    Dns {
        query: String,
        record_type: String,
        expect_rcode: String,
        expect_answer: Option<String>,
    },
    /// A SIP OPTIONS request; without `uri` the checker addresses the backend itself.
    Sip {
        uri: Option<String>,
        expect_codes: Vec<u16>,
    },
    Ntp {
        max_offset: Option<Duration>,
    },
    /// Sends `payload` and expects `expect` back: proves only that something echoes.
    Echo {
        payload: String,
        expect: String,
    },
}

impl Check {
    /// The name the configuration gives the check (`health.type`): also its metrics label.
    pub const fn type_name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Tcp => "tcp",
            Self::Http { .. } => "http",
            Self::Dns { .. } => "udp_dns",
            Self::Sip { .. } => "udp_sip",
            Self::Ntp { .. } => "udp_ntp",
            Self::Echo { .. } => "udp_echo",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnUnhealthy {
    /// Weight 0: no new connections, established ones live on.
    #[default]
    Quiesce,
    /// Delete the destination.
    Remove,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drain {
    /// At least this long at weight 0 before a backend may be removed.
    pub grace: Duration,
    /// At most this long: then the backend is removed whatever its traffic.
    pub timeout: Duration,
    /// For UDP: how long eBPF must see no traffic for the backend to count as drained.
    pub quiet: Duration,
}

impl Drain {
    pub const DEFAULT: Self = Self {
        grace: Duration::from_secs(30),
        timeout: Duration::from_secs(300),
        quiet: Duration::from_secs(10),
    };
}

impl Default for Drain {
    fn default() -> Self {
        Self::DEFAULT
    }
}
