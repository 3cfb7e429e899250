//! Observing the data plane: eBPF programs at TC count traffic per watched destination.
//! What is counted where, per kernel, is described in docs/observer.md.

mod ebpf;
mod netns;
mod shield;
mod source;

pub use ebpf::{AttachMode, Direction, FlowCounter, Limits, ObserveError, RunStats, enable_run_time_stats};
pub use libraflux_common::{
    COUNT_PROGRAM, DestKey, FlowCounters, IPPROTO_TCP, IPPROTO_UDP, SHIELD_CAPACITY, recent_flow_slot,
};
pub use shield::{RefusalShield, ShieldHold};
pub use source::{FakeFlowSource, FlowSnapshot, FlowSource, SyncReport};
