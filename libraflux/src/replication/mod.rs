//! Config replication in a pair (PRODUCT feature 8; operators: docs/ha.md). The primary bundles
//! its `config.d` after each reload that put a configuration in force ([`crate::bundle`]) and
//! announces `{generation, sha256}`, signed ([`keys`], [`wire`]); the secondary checks the
//! signature and that the generation is newer, fetches the bundle from the primary if it has
//! not got it, checks its hash, extracts it into a new directory, validates its own
//! `config.yaml` with those files, swaps them in ([`store`]) and reloads; it answers with what
//! it did, which the primary records. Refusals leave the running configuration as it is.
//!
//! The tasks here do the network and file work; putting a configuration in force is the
//! daemon's, through the same path as a reload (`daemon/replication.rs`).

mod keys;
mod primary;
mod server;
pub mod store;
#[cfg(test)]
mod tests;
pub mod wire;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

pub use keys::{KeyError, Keys};
pub use store::State;

use crate::{
    config::{self, Config, ConfigError, ConfigErrors, Replication, Role},
    metrics::Metrics,
};

/// Every reason a replication can fail, as counted in `libraflux_replication_failures_total`.
pub const REASONS: &[&str] = &[
    "bad_request",
    "bad_hmac",
    "replay",
    "role",
    "unreachable",
    "bad_answer",
    "fetch_failed",
    "hash_mismatch",
    "unsafe_entry",
    "not_yaml",
    "too_large",
    "too_many_files",
    "malformed",
    "node_local_section",
    "invalid_config",
    "limits",
    "failed",
    "io",
    "listen",
    "other",
];

/// The label for `reason`: itself when it is one of [`REASONS`] (a peer's answer may say
/// anything), `other` otherwise.
pub fn reason_label(reason: &str) -> &'static str {
    REASONS.iter().find(|known| **known == reason).copied().unwrap_or("other")
}

/// What `libraflux replication status` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub role: Option<Role>,
    pub listen: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// Announced last (primary) or in force (secondary).
    pub generation: u64,
    pub sha256: Option<String>,
    /// The generation the secondary said it runs, as of the last answer (primary only).
    pub peer_generation: Option<u64>,
    pub last_success_unix: Option<u64>,
    pub last_error: Option<LastError>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    pub reason: String,
    pub detail: String,
    pub at_unix: u64,
}

/// Why a secondary did not put a replicated configuration in force, or a fleet node one from
/// etcd ([`crate::etcd::node`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub detail: String,
}

impl Refusal {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

/// A verified, extracted configuration for the daemon to validate and put in force.
#[derive(Debug)]
pub struct Incoming {
    pub generation: u64,
    pub sha256: String,
    /// The new generation directory, not yet `current`.
    pub dir: PathBuf,
    pub reply: oneshot::Sender<Result<(), Refusal>>,
}

/// Where replication keeps its files.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The daemon's state directory (`replication.json`, `replicated/`).
    pub state_dir: PathBuf,
    /// Bundles made (primary) or fetched (secondary).
    pub bundles_dir: PathBuf,
}

impl Paths {
    pub fn replicated(&self) -> PathBuf {
        self.state_dir.join(store::REPLICATED_DIR)
    }
}

/// What the tasks share.
#[derive(Debug)]
struct Context {
    node: String,
    settings: Replication,
    keys: Keys,
    paths: Paths,
    limits: crate::bundle::Limits,
    status: Arc<Mutex<Status>>,
    metrics: Arc<Metrics>,
    /// The generation announced (primary) or in force (secondary).
    state: Mutex<State>,
    /// One announcement handled at a time.
    turn: tokio::sync::Mutex<()>,
    apply: mpsc::Sender<Incoming>,
}

impl Context {
    fn state(&self) -> State {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_state(&self, state: State) {
        self.status(|status| {
            status.generation = state.generation;
            status.sha256.clone_from(&state.sha256);
        });
        self.metrics.set_replication_generation(state.generation);
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }

    fn status(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn succeeded(&self, peer_generation: Option<u64>) {
        let now = SystemTime::now();
        self.metrics.set_replication_last_success(now);
        self.status(|status| {
            status.last_success_unix = Some(unix(now));
            if peer_generation.is_some() {
                status.peer_generation = peer_generation;
            }
        });
    }

    fn failed(&self, reason: &str, detail: &str) {
        let label = reason_label(reason);
        tracing::error!(reason = label, "replication failed: {detail}");
        self.metrics.record_replication_failure(label);
        self.status(|status| {
            status.last_error = Some(LastError {
                reason: label.to_owned(),
                detail: detail.to_owned(),
                at_unix: unix(SystemTime::now()),
            });
        });
    }
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|since| since.as_secs()).unwrap_or(0)
}

/// The replication tasks of a node; stopped when dropped.
#[derive(Debug)]
pub struct Running {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Primary: the bundle to announce.
    target: Option<watch::Sender<Option<String>>>,
    context: Arc<Context>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Running {
    pub fn settings(&self) -> &Replication {
        &self.context.settings
    }

    /// Secondary: the generation now in force.
    pub fn set_state(&self, state: State) {
        self.context.set_state(state);
    }

    /// Primary: announce this bundle (a new generation when it differs from the last one).
    pub fn announce(&self, sha256: String) {
        if let Some(target) = &self.target {
            target.send_replace(Some(sha256));
        }
    }
}

/// Everything a node needs to run replication.
#[derive(Debug)]
pub struct Start {
    pub node: String,
    pub settings: Replication,
    pub keys: Keys,
    pub paths: Paths,
    pub status: Arc<Mutex<Status>>,
    pub metrics: Arc<Metrics>,
    /// Secondary: where verified configurations go to be put in force.
    pub apply: mpsc::Sender<Incoming>,
}

/// Binds the listen address and starts the tasks of `start.settings.role`.
pub async fn start(start: Start) -> std::io::Result<Running> {
    let state = State::load(&start.paths.state_dir)?;
    let listener = tokio::net::TcpListener::bind(start.settings.listen).await.map_err(|err| {
        std::io::Error::new(err.kind(), format!("replication.listen {}: {err}", start.settings.listen))
    })?;
    let settings = start.settings.clone();
    let context = Arc::new(Context {
        node: start.node,
        keys: start.keys,
        paths: start.paths,
        limits: crate::bundle::Limits::default(),
        status: start.status,
        metrics: start.metrics,
        state: Mutex::new(State::default()),
        turn: tokio::sync::Mutex::new(()),
        apply: start.apply,
        settings: start.settings,
    });
    context.status(|status| {
        status.role = Some(settings.role);
        status.listen = Some(settings.listen);
        status.peer = Some(settings.peer);
    });
    context.set_state(state);
    tracing::info!(role = %settings.role, listen = %settings.listen, peer = %settings.peer, "replication started");
    let mut tasks = vec![tokio::spawn(server::serve(listener, Arc::clone(&context)))];
    let target = (settings.role == Role::Primary).then(|| {
        let (target, receiver) = watch::channel(None);
        tasks.push(tokio::spawn(primary::announce(Arc::clone(&context), receiver)));
        target
    });
    Ok(Running { tasks, target, context })
}

/// The directory whose `*.yaml` files a bundle carries: `config.d` of the configuration
/// directory; none when the configuration is one file.
pub fn drop_in_dir(config_path: Option<&Path>) -> Option<PathBuf> {
    config::layout(config_path).ok().and_then(|layout| layout.drop_in_dir)
}

/// Loads the configuration a node runs, with `state_dir` the daemon's state directory. A
/// secondary runs its own node-local files (its `config.yaml`, not its `config.d`) with the files
/// of the replicated generation in force, or of `generation` when given (to validate one before
/// it is swapped in); a node with `source.etcd` runs them with the last good configuration from
/// etcd ([`crate::etcd::last_good`]); every other node runs what [`config::load`] loads. A
/// replicated file that sets a node-local section is an error.
pub fn load_config(
    config_path: Option<&Path>,
    state_dir: &Path,
    generation: Option<&Path>,
) -> Result<Config, ConfigErrors> {
    let hostname = config::system_hostname();
    let secondary = |config: &Config| {
        config.replication.as_ref().is_some_and(|settings| settings.role == Role::Secondary)
    };
    // Most nodes take their config.d from their own disk: read and validated once.
    let whole = config::read_sources(config_path).and_then(|sources| config::validate(&sources, &hostname));
    if let Ok(config) = &whole
        && !secondary(config)
        && config.source.is_none()
    {
        return whole;
    }
    // A secondary, a fleet node, or a configuration that did not load: such a node does not read
    // its own config.d, so its node-local files alone say which.
    let node_local = config::node_local_sources(config_path)?;
    if config::etcd_source(&node_local).is_some() {
        return last_good_from_etcd(node_local, state_dir);
    }
    if !config::validate(&node_local, &hostname).is_ok_and(|config| secondary(&config)) {
        return whole;
    }
    let replicated = state_dir.join(store::REPLICATED_DIR);
    let dir = match generation {
        Some(dir) => Some(dir.to_owned()),
        None => store::current(&replicated).map_err(|err| io_errors(&replicated, &err))?,
    };
    let replicated_files = match dir {
        Some(dir) => store::sources(&dir).map_err(|err| io_errors(&dir, &err))?,
        None => Vec::new(),
    };
    crate::bundle::validate_replicated(node_local, replicated_files, Vec::new())
}

/// A fleet node's node-local files with the last good configuration from etcd; an error when
/// there is none (a node never runs its node-local files alone: that would empty IPVS).
fn last_good_from_etcd(node_local: Vec<config::Source>, state_dir: &Path) -> Result<Config, ConfigErrors> {
    let path = state_dir.join(crate::etcd::last_good::FILE);
    let error = |message: String| ConfigErrors(vec![ConfigError::new(&path, None, message)]);
    match crate::etcd::last_good::load(state_dir) {
        Ok(Some(last_good)) => crate::etcd::node::validate(node_local, &last_good.in_force),
        Ok(None) => Err(error(
            "source.etcd is set and no configuration from etcd has been put in force yet".to_owned(),
        )),
        Err(err) => Err(error(err.to_string())),
    }
}

fn io_errors(path: &Path, err: &std::io::Error) -> ConfigErrors {
    ConfigErrors(vec![ConfigError::new(
        path,
        None,
        format!("cannot read the replicated configuration: {err}"),
    )])
}
