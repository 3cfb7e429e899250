//! What reading the kernel gives: the model's service and destination plus the counters the
//! kernel keeps (connections, packets, bytes, rates).

use std::collections::BTreeMap;

use crate::model::{DestKey, Destination, Service};

/// Counters of a service or destination (`IPVS_*_ATTR_STATS64`; 32-bit STATS when a kernel
/// sends no STATS64). Totals since creation or the last zeroing; rates per second, as the
/// kernel's estimator computes them (they lag up to 2 s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats64 {
    pub connections: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connections_per_second: u64,
    pub packets_in_per_second: u64,
    pub packets_out_per_second: u64,
    pub bytes_in_per_second: u64,
    pub bytes_out_per_second: u64,
}

/// A destination as read back, with its connection counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationStatus {
    pub destination: Destination,
    pub active_connections: u32,
    pub inactive_connections: u32,
    pub persistent_connections: u32,
    pub stats: Stats64,
}

/// A service as read back. `service.destinations` holds the model view of its destinations;
/// `destinations` the same destinations with their counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceStatus {
    pub service: Service,
    /// All `IP_VS_SVC_F_*` flags the kernel reports (the model keeps only persistence).
    pub flags: u32,
    /// Persistence engine (`sip`), if any.
    pub persistence_engine: Option<String>,
    pub stats: Stats64,
    pub destinations: BTreeMap<DestKey, DestinationStatus>,
}

impl ServiceStatus {
    /// Adds a destination to both views.
    pub fn insert_destination(&mut self, status: DestinationStatus) {
        self.service.destinations.insert(status.destination.key, status.destination);
        self.destinations.insert(status.destination.key, status);
    }
}

/// `IPVS_CMD_GET_INFO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// `IP_VS_VERSION_CODE`: 0x010201 is 1.2.1.
    pub version: u32,
    /// Size of the connection hash table (buckets, not a limit on connections).
    pub connection_table_size: u32,
}

impl Info {
    pub fn version_string(&self) -> String {
        let [_, major, minor, patch] = self.version.to_be_bytes();
        format!("{major}.{minor}.{patch}")
    }
}

/// Connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp`). When setting, 0 leaves
/// that timeout unchanged, as the kernel does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}
