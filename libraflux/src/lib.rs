//! LibraFlux: safe, planned, observable management of the Linux IPVS load balancer.
//!
//! Data flows one way: config -> desired state -> plan (with the observed kernel state) -> apply.
//! Kernel I/O lives only at the edges: [`ipvs`] (generic netlink), [`observe`] (eBPF) and
//! [`preflight`]'s fact gathering.

pub mod announce;
pub mod apply;
pub mod breaker;
pub mod bundle;
pub mod canary;
pub mod config;
pub mod control;
pub mod convert;
pub mod credentials;
pub mod daemon;
pub mod drain;
pub mod etcd;
pub mod health;
pub mod ipvs;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod plan;
pub mod preflight;
pub mod replication;
pub mod snapshot;
pub mod state_file;
