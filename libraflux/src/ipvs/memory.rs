//! An in-memory IPVS table for unit tests of pure logic (the planner, drains). It refuses what
//! the kernel refuses, with the kernel's errno (ip_vs_ctl.c, `ip_vs_genl_set_cmd` and the
//! functions it calls): a missing service is ESRCH, a missing destination ENOENT, a duplicate
//! EEXIST, an unknown scheduler ENOENT, a weight above i32::MAX or a lower threshold above the
//! upper one ERANGE. Its sync daemons get the kernel's defaults and refusals
//! (`memory/sync_daemons.rs`). It proves nothing about the kernel itself.
//!
//! Batches behave as the netlink client's do: ops are pipelined in datagrams of up to
//! [`MemoryIpvs::set_batch_size`] ops, and the kernel carries out every request of a datagram it
//! was sent, so with [`OnFailure::Stop`] the ops after a refused one in the same datagram still
//! run; only later datagrams are not sent. Tests can make chosen ops fail
//! ([`MemoryIpvs::refuse_ops`]) and read every state the table passed through
//! ([`MemoryIpvs::record_history`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
};

use crate::model::{DestKey, Destination, Service, ServiceKey};

use super::{
    ApplyReport, DestinationStatus, Info, Ipvs, IpvsError, OnFailure, Op, OpOutcome, ServiceStatus, Stats64,
    SyncDaemon, SyncState, Timeouts, packet,
};

mod sync_daemons;

/// Schedulers a stock kernel ships as modules (`ip_vs_*`).
const SCHEDULERS: &[&str] =
    &["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"];

/// Ops per datagram by default: what the client sends when its socket buffers were raised.
const DEFAULT_BATCH: usize = 4096;

/// The table as the planner sees it.
type Table = BTreeMap<ServiceKey, Service>;

#[derive(Clone, Debug)]
pub struct MemoryIpvs {
    services: BTreeMap<ServiceKey, ServiceStatus>,
    timeouts: Timeouts,
    info: Info,
    batch_size: usize,
    /// Every op received so far, counted across `apply` calls; the ones in `refuse` fail.
    received: usize,
    refuse: BTreeSet<usize>,
    /// The table after each applied op, when recording.
    history: Option<Vec<Table>>,
    sync_daemons: BTreeMap<SyncState, SyncDaemon>,
    /// The interfaces a sync daemon may use; `None`: any.
    interfaces: Option<BTreeSet<String>>,
    reads: Reads,
    /// Every packet [`Self::count_packets`] counted, as the kernel's totals count it.
    totals: super::Totals,
}

/// What was read from the table so far, for tests of who reads what.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    /// Whole reads ([`Ipvs::services`]).
    pub services: usize,
    /// Reads of the services alone ([`Ipvs::services_alone`]).
    pub services_alone: usize,
    /// Services whose destinations were read alone ([`Ipvs::destinations_of`]), in order.
    pub destinations_of: Vec<ServiceKey>,
}

impl Default for MemoryIpvs {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryIpvs {
    /// An empty table with the kernel's default timeouts (900 s, 120 s, 300 s).
    pub fn new() -> Self {
        Self {
            services: BTreeMap::new(),
            timeouts: Timeouts { tcp: 900, tcp_fin: 120, udp: 300 },
            info: Info { version: 0x0001_0201, connection_table_size: 4096 },
            batch_size: DEFAULT_BATCH,
            received: 0,
            refuse: BTreeSet::new(),
            history: None,
            sync_daemons: BTreeMap::new(),
            interfaces: None,
            reads: Reads::default(),
            totals: super::Totals::default(),
        }
    }

    /// What was read so far.
    pub fn reads(&self) -> &Reads {
        &self.reads
    }

    /// Counts `packets` of one byte each to `dest`, in its stats, its service's and the totals, as
    /// traffic would; false if it does not exist.
    pub fn count_packets(&mut self, service: &ServiceKey, key: &DestKey, packets: u64) -> bool {
        let Some(status) = self.services.get_mut(service) else { return false };
        let Some(dest) = status.destinations.get_mut(key) else { return false };
        for stats in [&mut dest.stats, &mut status.stats] {
            stats.packets_in += packets;
            stats.bytes_in += packets;
        }
        self.totals.packets_in += packets;
        self.totals.bytes_in += packets;
        true
    }

    /// Ops per netlink datagram (at least 1): after a refusal with [`OnFailure::Stop`], the rest
    /// of the datagram still runs.
    pub fn set_batch_size(&mut self, ops: usize) {
        self.batch_size = ops.max(1);
    }

    /// Makes the ops received `nth` (0 for the first op this table is given, counted across
    /// `apply` calls) fail with ENOMEM, as a kernel short of memory would refuse them.
    pub fn refuse_ops(&mut self, nth: impl IntoIterator<Item = usize>) {
        self.refuse.extend(nth);
    }

    /// Starts keeping the table as it is after every applied op.
    pub fn record_history(&mut self) {
        self.history = Some(Vec::new());
    }

    /// The table after each applied op since [`MemoryIpvs::record_history`], in order.
    pub fn history(&self) -> &[Table] {
        self.history.as_deref().unwrap_or_default()
    }

    /// A table already holding `services` and their destinations, as if applied one by one.
    pub fn with_services(services: impl IntoIterator<Item = Service>) -> Self {
        let mut table = Self::new();
        for service in services {
            let mut status = new_status(&service);
            for destination in service.destinations.values() {
                status.insert_destination(new_dest_status(*destination));
            }
            table.services.insert(service.key, status);
        }
        table
    }

    /// Sets a destination's connection counts, as traffic would; false if it does not exist.
    pub fn set_connections(
        &mut self,
        service: &ServiceKey,
        dest: &DestKey,
        active: u32,
        inactive: u32,
    ) -> bool {
        let Some(status) = self.services.get_mut(service).and_then(|s| s.destinations.get_mut(dest)) else {
            return false;
        };
        status.active_connections = active;
        status.inactive_connections = inactive;
        true
    }

    /// Mirrors `IpvsClient::apply_ops`: up to `batch_size` ops a datagram; an op that cannot be
    /// encoded ends the datagram before it and is refused alone, unsent.
    fn apply_sync(&mut self, ops: &[Op], on_failure: OnFailure) -> ApplyReport {
        let mut report = ApplyReport::default();
        let stop = on_failure == OnFailure::Stop;
        let (mut in_batch, mut refused_in_batch, mut stopped) = (0, false, false);
        for op in ops {
            let encodable = packet::request_for(op);
            if encodable.is_err() || in_batch == self.batch_size {
                stopped |= stop && refused_in_batch;
                (in_batch, refused_in_batch) = (0, false);
            }
            if stopped {
                report.outcomes.push(OpOutcome::NotSent);
                continue;
            }
            if let Err(reason) = encodable {
                report
                    .outcomes
                    .push(OpOutcome::Refused(IpvsError::Invalid { operation: op.operation(), reason }));
                stopped = stop;
                continue;
            }
            in_batch += 1;
            match self.apply_one(op) {
                Ok(()) => {
                    if let Some(history) = self.history.as_mut() {
                        history.push(table_of(&self.services));
                    }
                    report.outcomes.push(OpOutcome::Applied);
                }
                Err(err) => {
                    refused_in_batch = true;
                    report.outcomes.push(OpOutcome::Refused(err));
                }
            }
        }
        report
    }

    /// Carries out one encodable op, or refuses it with the kernel's errno.
    fn apply_one(&mut self, op: &Op) -> Result<(), IpvsError> {
        let refuse = |errno| IpvsError::kernel(op.operation(), errno);
        let nth = self.received;
        self.received += 1;
        if self.refuse.contains(&nth) {
            return Err(refuse(libc::ENOMEM));
        }
        match op {
            Op::AddService(service) => self.add_service(service).map_err(refuse),
            Op::UpdateService(service) => self.update_service(service).map_err(refuse),
            Op::DeleteService(key) => self.services.remove(key).map(drop).ok_or(libc::ESRCH).map_err(refuse),
            Op::AddDest(key, dest) => self.add_dest(key, dest).map_err(refuse),
            Op::UpdateDest(key, dest) => self.update_dest(key, dest).map_err(refuse),
            Op::DeleteDest(key, dest) => self.delete_dest(key, dest).map_err(refuse),
        }
    }

    fn add_service(&mut self, service: &Service) -> Result<(), i32> {
        if self.services.contains_key(&service.key) {
            return Err(libc::EEXIST);
        }
        check_scheduler(&service.scheduler)?;
        self.services.insert(service.key, new_status(service));
        Ok(())
    }

    fn update_service(&mut self, service: &Service) -> Result<(), i32> {
        let status = self.services.get_mut(&service.key).ok_or(libc::ESRCH)?;
        check_scheduler(&service.scheduler)?;
        status.service.scheduler.clone_from(&service.scheduler);
        status.service.persistence = service.persistence;
        status.service.persistence_netmask = service.persistence_netmask;
        status.flags = persistence_flag(service);
        Ok(())
    }

    fn add_dest(&mut self, key: &ServiceKey, dest: &Destination) -> Result<(), i32> {
        let status = self.services.get_mut(key).ok_or(libc::ESRCH)?;
        check_dest(key, dest)?;
        if status.destinations.contains_key(&dest.key) {
            return Err(libc::EEXIST);
        }
        status.insert_destination(new_dest_status(*dest));
        Ok(())
    }

    fn update_dest(&mut self, key: &ServiceKey, dest: &Destination) -> Result<(), i32> {
        let status = self.services.get_mut(key).ok_or(libc::ESRCH)?;
        check_dest(key, dest)?;
        let current = status.destinations.get_mut(&dest.key).ok_or(libc::ENOENT)?;
        current.destination = *dest;
        status.service.destinations.insert(dest.key, *dest);
        Ok(())
    }

    fn delete_dest(&mut self, key: &ServiceKey, dest: &DestKey) -> Result<(), i32> {
        let status = self.services.get_mut(key).ok_or(libc::ESRCH)?;
        status.destinations.remove(dest).ok_or(libc::ENOENT)?;
        status.service.destinations.remove(dest);
        Ok(())
    }
}

fn table_of(services: &BTreeMap<ServiceKey, ServiceStatus>) -> Table {
    services.values().map(|status| (status.service.key, status.service.clone())).collect()
}

fn check_scheduler(name: &str) -> Result<(), i32> {
    if SCHEDULERS.contains(&name) { Ok(()) } else { Err(libc::ENOENT) }
}

/// The checks of `ip_vs_genl_set_cmd` and `ip_vs_add_dest` / `ip_vs_edit_dest`, in their order.
fn check_dest(service: &ServiceKey, dest: &Destination) -> Result<(), i32> {
    let mixed_family = packet::service_family(service) != family_of(dest);
    if mixed_family && dest.forwarding != crate::model::Forwarding::Tunnel {
        return Err(libc::EINVAL);
    }
    if i32::try_from(dest.weight).is_err() || dest.lower_threshold > dest.upper_threshold {
        return Err(libc::ERANGE);
    }
    Ok(())
}

fn family_of(dest: &Destination) -> crate::model::Family {
    match dest.key.addr {
        std::net::IpAddr::V4(_) => crate::model::Family::V4,
        std::net::IpAddr::V6(_) => crate::model::Family::V6,
    }
}

fn persistence_flag(service: &Service) -> u32 {
    u32::from(service.persistence.is_some())
}

fn new_status(service: &Service) -> ServiceStatus {
    ServiceStatus {
        service: Service { destinations: BTreeMap::new(), ..service.clone() },
        flags: persistence_flag(service),
        persistence_engine: None,
        stats: Stats64::default(),
        destinations: BTreeMap::new(),
    }
}

fn new_dest_status(destination: Destination) -> DestinationStatus {
    DestinationStatus {
        destination,
        active_connections: 0,
        inactive_connections: 0,
        persistent_connections: 0,
        stats: Stats64::default(),
    }
}

impl Ipvs for MemoryIpvs {
    fn services(&mut self) -> impl Future<Output = Result<Vec<ServiceStatus>, IpvsError>> + Send {
        self.reads.services += 1;
        std::future::ready(Ok(self.services.values().cloned().collect()))
    }

    fn services_alone(&mut self) -> impl Future<Output = Result<Vec<ServiceStatus>, IpvsError>> + Send {
        self.reads.services_alone += 1;
        let alone = self.services.values().map(|status| {
            let mut service = status.service.clone();
            service.destinations.clear();
            ServiceStatus { service, destinations: Default::default(), ..status.clone() }
        });
        std::future::ready(Ok(alone.collect()))
    }

    fn destinations_of(
        &mut self,
        services: &[ServiceKey],
    ) -> impl Future<Output = Result<Vec<(ServiceKey, Vec<DestinationStatus>)>, IpvsError>> + Send {
        self.reads.destinations_of.extend_from_slice(services);
        let answers = services.iter().map(|key| {
            let dests = self.services.get(key).map(|status| status.destinations.values().cloned().collect());
            (*key, dests.unwrap_or_default())
        });
        std::future::ready(Ok(answers.collect()))
    }

    fn totals(&mut self) -> impl Future<Output = Option<super::Totals>> + Send {
        std::future::ready(Some(self.totals))
    }

    fn apply(&mut self, ops: &[Op], on_failure: OnFailure) -> impl Future<Output = ApplyReport> + Send {
        std::future::ready(self.apply_sync(ops, on_failure))
    }

    fn info(&mut self) -> impl Future<Output = Result<Info, IpvsError>> + Send {
        std::future::ready(Ok(self.info))
    }

    fn timeouts(&mut self) -> impl Future<Output = Result<Timeouts, IpvsError>> + Send {
        std::future::ready(Ok(self.timeouts))
    }

    /// As the kernel: 0 leaves a timeout unchanged.
    fn set_timeouts(&mut self, timeouts: Timeouts) -> impl Future<Output = Result<(), IpvsError>> + Send {
        let keep = |new: u32, old: u32| if new == 0 { old } else { new };
        self.timeouts = Timeouts {
            tcp: keep(timeouts.tcp, self.timeouts.tcp),
            tcp_fin: keep(timeouts.tcp_fin, self.timeouts.tcp_fin),
            udp: keep(timeouts.udp, self.timeouts.udp),
        };
        std::future::ready(Ok(()))
    }

    fn sync_daemons(&mut self) -> impl Future<Output = Result<Vec<SyncDaemon>, IpvsError>> + Send {
        std::future::ready(Ok(self.list_sync_daemons()))
    }

    fn start_sync_daemon(
        &mut self,
        daemon: &SyncDaemon,
    ) -> impl Future<Output = Result<(), IpvsError>> + Send {
        std::future::ready(self.start_sync(daemon))
    }

    fn stop_sync_daemon(&mut self, state: SyncState) -> impl Future<Output = Result<(), IpvsError>> + Send {
        std::future::ready(self.stop_sync(state))
    }
}

#[cfg(test)]
mod tests;
