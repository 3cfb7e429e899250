//! The in-memory table's sync daemons: what `start_sync_thread` and `stop_sync_thread`
//! (ip_vs_sync.c) do with the parameters, and the errno values they refuse with.

use std::net::IpAddr;

use super::MemoryIpvs;
use crate::ipvs::{
    IfName, IpvsError, Operation, SyncDaemon, SyncState,
    sync::{DEFAULT_GROUP, DEFAULT_PORT, DEFAULT_TTL},
};

/// The MTU the in-memory table gives every interface.
const MTU: u16 = 1500;

impl MemoryIpvs {
    /// The interfaces that exist from now on: starting a daemon on another is refused with
    /// ENODEV, as the kernel does. Until this is called every name exists.
    pub fn set_interfaces<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.interfaces = Some(names.into_iter().map(str::to_owned).collect());
    }

    pub(super) fn list_sync_daemons(&self) -> Vec<SyncDaemon> {
        self.sync_daemons.values().cloned().collect()
    }

    pub(super) fn start_sync(&mut self, daemon: &SyncDaemon) -> Result<(), IpvsError> {
        let operation = Operation::StartSyncDaemon {
            state: daemon.state,
            interface: IfName::new(&daemon.interface),
            sync_id: daemon.sync_id,
        };
        let refuse = |errno| IpvsError::kernel(operation, errno);
        if daemon.group.is_some_and(|group| !group.is_multicast()) {
            return Err(refuse(libc::EINVAL));
        }
        if self.interfaces.as_ref().is_some_and(|known| !known.contains(&daemon.interface)) {
            return Err(refuse(libc::ENODEV));
        }
        if self.sync_daemons.contains_key(&daemon.state) {
            return Err(refuse(libc::EEXIST));
        }
        self.sync_daemons.insert(daemon.state, with_kernel_defaults(daemon));
        Ok(())
    }

    pub(super) fn stop_sync(&mut self, state: SyncState) -> Result<(), IpvsError> {
        match self.sync_daemons.remove(&state) {
            Some(_) => Ok(()),
            None => Err(IpvsError::kernel(Operation::StopSyncDaemon(state), libc::ESRCH)),
        }
    }
}

/// The daemon as the kernel then reports it: its defaults filled in, the maximum length
/// clamped (at least 1024 for a backup, which must take in what any master sends).
fn with_kernel_defaults(daemon: &SyncDaemon) -> SyncDaemon {
    let group = daemon.group.unwrap_or(IpAddr::V4(DEFAULT_GROUP));
    let headers: u16 = if group.is_ipv6() { 40 + 8 } else { 20 + 8 };
    let min = if daemon.state == SyncState::Backup { 1024 } else { 1 };
    let max_len = daemon.max_len.map_or(MTU - headers, |len| len.clamp(min, u16::MAX - headers));
    SyncDaemon {
        group: Some(group),
        port: Some(daemon.port.filter(|p| *p != 0).unwrap_or(DEFAULT_PORT)),
        ttl: Some(daemon.ttl.filter(|t| *t != 0).unwrap_or(DEFAULT_TTL)),
        max_len: Some(max_len),
        ..daemon.clone()
    }
}
