//! IPVS behind one seam (STYLE rule 1): the [`Ipvs`] trait, implemented by the netlink client
//! ([`IpvsClient`]) and by an in-memory table ([`MemoryIpvs`]) for unit tests of pure logic.
//! [`packet`] defines the generic-netlink family; it could become a crate of its own.

use std::future::Future;

mod client;
mod error;
mod memory;
mod op;
pub mod packet;
mod socket;
mod status;
pub mod sync;
pub mod totals;

pub use client::{BatchLimits, IpvsClient};
pub use error::IpvsError;
pub use memory::{MemoryIpvs, Reads};
pub use op::{ApplyReport, OnFailure, Op, OpOutcome, Operation};
pub use status::{DestinationStatus, Info, ServiceStatus, Stats64, Timeouts};
pub use sync::{IfName, RoleChange, SyncChange, SyncDaemon, SyncState};
pub use totals::Totals;

/// What LibraFlux needs from IPVS: read the table, change it in batches, the global settings
/// and the connection sync daemons. Both implementations report errors with the kernel's errno
/// values.
pub trait Ipvs {
    /// Every service with its destinations, ordered by service key.
    fn services(&mut self) -> impl Future<Output = Result<Vec<ServiceStatus>, IpvsError>> + Send;

    /// Every service with its counters but without its destinations (one GET_SERVICE dump),
    /// ordered by service key.
    fn services_alone(&mut self) -> impl Future<Output = Result<Vec<ServiceStatus>, IpvsError>> + Send;

    /// The destinations of each of `services` (one GET_DEST dump each); an unknown service
    /// lists as empty.
    fn destinations_of(
        &mut self,
        services: &[crate::model::ServiceKey],
    ) -> impl Future<Output = Result<Vec<(crate::model::ServiceKey, Vec<DestinationStatus>)>, IpvsError>> + Send;

    /// The namespace's running totals ([`totals`]), which move whenever any service's counters
    /// move; `None` when they cannot be read.
    fn totals(&mut self) -> impl Future<Output = Option<Totals>> + Send;

    /// Applies `ops` in order and reports the outcome of each; see [`OnFailure`].
    fn apply(&mut self, ops: &[Op], on_failure: OnFailure) -> impl Future<Output = ApplyReport> + Send;

    fn info(&mut self) -> impl Future<Output = Result<Info, IpvsError>> + Send;

    fn timeouts(&mut self) -> impl Future<Output = Result<Timeouts, IpvsError>> + Send;

    fn set_timeouts(&mut self, timeouts: Timeouts) -> impl Future<Output = Result<(), IpvsError>> + Send;

    /// The connection sync daemons the kernel runs, master first.
    fn sync_daemons(&mut self) -> impl Future<Output = Result<Vec<SyncDaemon>, IpvsError>> + Send;

    fn start_sync_daemon(
        &mut self,
        daemon: &SyncDaemon,
    ) -> impl Future<Output = Result<(), IpvsError>> + Send;

    fn stop_sync_daemon(&mut self, state: SyncState) -> impl Future<Output = Result<(), IpvsError>> + Send;
}

/// Both implementations stay in step with the trait (and stay `Send`, for the daemon's tasks).
const _: () = {
    const fn implements<T: Ipvs + Send>() {}
    implements::<IpvsClient>();
    implements::<MemoryIpvs>();
};

/// The table as the planner sees it: every service with its destinations, by key.
pub async fn observed<I: Ipvs>(
    ipvs: &mut I,
) -> Result<std::collections::BTreeMap<crate::model::ServiceKey, crate::model::Service>, IpvsError> {
    let services = ipvs.services().await?;
    Ok(services.into_iter().map(|status| (status.service.key, status.service)).collect())
}
