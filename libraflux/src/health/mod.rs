//! Health checks of backends, for the daemon.
//!
//! - [`Checker`]: one probe of one backend, bounded by [`probe_bounded`]; [`tcp`] connects,
//!   [`http`] sends a GET and reads the status; over UDP ([`udp`]: a connected socket, so an ICMP
//!   port unreachable fails at once) [`dns`] asks a question, [`sip`] sends an OPTIONS, [`ntp`]
//!   asks the time and [`echo`] expects fixed bytes back.
//! - [`BackendState`]: the pure rise/fall state machine of one backend.
//! - [`Scheduler`]: probes every checked backend on its interval, with jitter and bounded
//!   concurrency, and publishes a [`HealthTable`] and a [`HealthEvent`] per probe.
//! - [`effective`]: the configured state with unhealthy backends quiesced or removed, failing open
//!   when a service would have no healthy backend left.
//!
//! Operator documentation: `docs/health-checks.md`.

mod checker;
pub mod dns;
pub mod echo;
mod effective;
pub mod http;
pub mod ntp;
mod scheduler;
pub mod sip;
mod state;
mod table;
pub mod tcp;
pub mod udp;

pub use checker::{
    CheckFailure, Checker, ProbeOutcome, SUCCESS, Step, Unsupported, checker_for, probe_bounded,
};
pub use effective::{FailOpen, effective};
pub use scheduler::{CheckerFactory, HealthEvent, Scheduler, SchedulerOptions, UpdateSummary};
pub use state::{BackendState, InitialState, Transition};
pub use table::{BackendStatus, HealthTable, LastProbe};

use crate::config::Check;

/// The check type as the configuration names it: the `check_type` metrics label.
pub const fn type_name(check: &Check) -> &'static str {
    check.type_name()
}
