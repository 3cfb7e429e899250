//! Observing the data plane: eBPF programs at TC count traffic per watched destination.
//! What is counted where, per kernel, is described in docs/observer.md.

mod ebpf;
mod netns;
mod source;

pub use ebpf::{AttachMode, Direction, FlowCounter, Limits, ObserveError, RunStats, enable_run_time_stats};
pub use libraflux_common::{
    COUNT_PROGRAM, DestKey, FlowCounters, IPPROTO_TCP, IPPROTO_UDP, recent_flow_slot,
};
pub use source::{FakeFlowSource, FlowSnapshot, FlowSource, SyncReport};
