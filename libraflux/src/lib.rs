//! LibraFlux: safe, planned, observable management of the Linux IPVS load balancer.
//!
//! Data flows one way: config -> desired state -> plan (with the observed kernel state) -> apply.
//! Kernel I/O lives only at the edges: [`ipvs`] (generic netlink) and [`observe`] (eBPF).

pub mod ipvs;
pub mod model;
pub mod observe;
