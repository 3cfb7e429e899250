//! The kernel operations that carry out a plan, in the order apply must run them.
//!
//! Order, and why:
//! 1. **Creates**, each service immediately followed by its backends. IPVS cannot hold a backend
//!    before its service, and a service without backends refuses new connections (ICMP port
//!    unreachable, or a reset) until its first backend exists; keeping the two together shrinks
//!    that window to one netlink round trip per backend. It costs nothing: before the service
//!    existed the VIP:port was not served either.
//! 2. **Updates**, per service: its own attributes first, then backends **added, then updated,
//!    then removed**. Make before break: capacity arrives before any is taken away, so a service
//!    whose backends are all replaced, or moved to weight 0, never passes through an empty or
//!    all-zero state.
//! 3. **Deletes** last, again make before break: traffic that a new service takes over (say an
//!    address service replacing a fwmark service for the same VIP) is covered by the new one
//!    before the old one goes. Deleting a service drops its backends with it, so no backend is
//!    deleted one by one first.
//!
//! Creates and updates touch different services, so their relative order does not matter; within
//! each group services go by key, and backends by key.

use super::Plan;
use crate::{ipvs::Op, model::Service};

/// The service without its destinations.
fn bare(service: &Service) -> Service {
    Service { destinations: Default::default(), ..service.clone() }
}

impl Plan {
    /// The exact, ordered list of kernel operations for this plan (see the module docs).
    pub fn ops(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        for service in &self.create {
            ops.push(Op::AddService(bare(service)));
            ops.extend(service.destinations.values().map(|dest| Op::AddDest(service.key, *dest)));
        }
        for update in &self.update {
            let service = update.key();
            if update.changes_service() {
                ops.push(Op::UpdateService(bare(&update.target)));
            }
            ops.extend(update.add.iter().map(|dest| Op::AddDest(service, *dest)));
            ops.extend(update.update.iter().map(|change| Op::UpdateDest(service, change.target)));
            ops.extend(update.remove.iter().map(|dest| Op::DeleteDest(service, dest.key)));
        }
        ops.extend(self.delete.iter().map(|service| Op::DeleteService(service.key)));
        ops
    }
}
