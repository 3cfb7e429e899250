//! VM tier: runs inside the VM (`cargo xtask test --tier vm`) on Debian's stock kernel with
//! the IPVS modules loaded. Built only with `--features vm`, so plain `cargo test` never runs it
//! on a host that has no IPVS.
#![cfg(feature = "vm")]

mod vm {
    mod apply;
    mod behavior;
    mod breaker;
    mod canary;
    mod control;
    mod convert;
    mod daemon;
    mod daemon_health;
    mod daemon_limits;
    mod daemon_reload;
    mod drain;
    mod etcd_fleet;
    mod failover;
    mod fleet;
    mod ipvs_capture;
    mod ipvs_client;
    mod ipvs_errors;
    mod ipvs_scale;
    mod ipvs_traffic;
    mod metrics_tls;
    mod observer;
    mod reliability;
    mod removal;
    mod replication;
    mod scheduler_swap;
    mod smoke;
    mod snapshot;
    mod support;
    mod sync;
    mod unit;
}
