//! Observing the data plane: eBPF programs at TC count traffic per watched destination.
//! What is counted where, per kernel and per link type, is described in docs/observer.md.

mod attach;
mod connect;
mod counters;
mod ebpf;
mod error;
mod link;
mod netns;
mod shield;
mod slots;
mod source;
mod test_run;
mod writes;

pub use attach::{AttachMode, Direction};
pub use counters::SlotChanges;
pub use ebpf::{FlowCounter, Limits, RunStats, enable_run_time_stats};
pub use error::ObserveError;
pub use libraflux_common::{
    COUNT_L3_PROGRAM, COUNT_PROGRAM, DestKey, FlowCounters, IPPROTO_TCP, IPPROTO_UDP, SHIELD_CAPACITY,
    recent_flow_slot,
};
pub use link::{Framing, LinkType};
pub use shield::{RefusalShield, ShieldHold};
pub use source::{ConnectOutcomes, ConnectSide, FakeFlowSource, FlowSnapshot, FlowSource, SyncReport};
pub use writes::{WRITE_FUNCTIONS, WriteWatch, Writes};
