//! Converters from other load balancers' configurations to LibraFlux services.
//!
//! A converter reads its input completely and returns a [`Conversion`]: the services, grouped by
//! the source block they came from, and a warning for everything it could not carry over, each
//! naming the source `file:line` and what to do instead. [`output`] renders each group as one YAML
//! file, checks all of them with the same validator as `libraflux validate`, and only then writes
//! them (verify, then persist).
//!
//! The operator's guide is `docs/convert-nginx.md`.

pub mod nginx;
pub mod output;

use std::{fmt, net::IpAddr, path::Path, sync::Arc, time::Duration};

use crate::model::Protocol;

/// A line of a source file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Place {
    pub file: Arc<Path>,
    pub line: usize,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Something that was not converted, or not exactly: `file:line: what, and what to do instead`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Warning {
    pub place: Place,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.message)
    }
}

/// An input that cannot be read or parsed: `file:line:col: message` (`file: message` when the file
/// itself cannot be read). Nothing is converted then.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConvertError {
    pub file: Arc<Path>,
    /// Line and column, 1-based.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// What a converter made of its input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conversion {
    /// One group per converted source block (an nginx `server`), in source order.
    pub groups: Vec<Group>,
    /// Ordered by file (in the order they were read), then line.
    pub warnings: Vec<Warning>,
}

/// The services converted from one source block: one output file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Where the block starts.
    pub source: Place,
    /// Comment lines for the file's header, after the line naming `source`.
    pub notes: Vec<String>,
    pub services: Vec<ServiceSpec>,
}

/// One converted service, as the YAML will say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    /// What it was converted from (an nginx `listen`).
    pub source: Place,
    pub protocol: Protocol,
    pub vip: IpAddr,
    pub port: u16,
    pub scheduler: &'static str,
    /// `on_unhealthy: remove` instead of the default `quiesce`.
    pub remove_unhealthy: bool,
    pub health: HealthSpec,
    pub backends: Vec<BackendSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSpec {
    pub check: CheckSpec,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckSpec {
    None,
    Tcp,
    Dns { query: String },
    Sip,
    Ntp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub address: IpAddr,
    pub port: u16,
    pub weight: u32,
    /// 0: no limit.
    pub max_connections: u32,
}
