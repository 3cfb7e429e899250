//! Health checks of backends, for the daemon.
//!
//! - [`Checker`]: one probe of one backend, bounded by [`probe_bounded`]; [`tcp`] connects,
//!   [`http`] sends a GET and reads the status. The UDP protocols are not supported yet:
//!   [`checker_for`] returns [`Unsupported`] and the daemon treats such a service as unchecked.
//! - [`BackendState`]: the pure rise/fall state machine of one backend.
//! - [`Scheduler`]: probes every checked backend on its interval, with jitter and bounded
//!   concurrency, and publishes a [`HealthTable`] and a [`HealthEvent`] per probe.
//! - [`effective`]: the configured state with unhealthy backends quiesced or removed, failing open
//!   when a service would have no healthy backend left.
//!
//! Operator documentation: `docs/health-checks.md`.

mod checker;
mod effective;
pub mod http;
mod scheduler;
mod state;
mod table;
pub mod tcp;

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
    match check {
        Check::None => "none",
        Check::Tcp => "tcp",
        Check::Http { .. } => "http",
        Check::Dns { .. } => "udp_dns",
        Check::Sip { .. } => "udp_sip",
        Check::Ntp { .. } => "udp_ntp",
        Check::Echo { .. } => "udp_echo",
    }
}
