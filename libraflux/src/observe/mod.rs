//! Observing the data plane: eBPF programs at TC count traffic per watched destination.

mod ebpf;

pub use ebpf::{Direction, FlowCounter, ObserveError};
pub use libraflux_common::{DestKey, FlowCounters, IPPROTO_TCP, IPPROTO_UDP};
