//! Draining backends without cutting live traffic: explicit, persisted state (`store`), a pure
//! state machine with separate TCP and UDP rules (`machine`), and how drains shape the desired
//! state the daemon plans against (`apply_to`).

mod machine;
mod signal;
mod store;

use std::time::SystemTime;

pub use machine::{Ending, IPVS_COUNTER_LAG, Progress, Rules, Signal, TrafficSource, evaluate};
pub use signal::{Backend, PacketWatch, Seen, services_of};
pub use store::{DrainEntry, DrainStore, Ended, StoreError, unix_ms};

use crate::config::DesiredState;

/// Draining backends get weight 0; a drain that ended with `remove` deletes the backend. An
/// ended drain without `remove` keeps weight 0 until `libraflux undrain`.
pub fn apply_to(desired: &mut DesiredState, drains: &[DrainEntry]) {
    for drain in drains {
        let Some(service) = desired.get_mut(&drain.service) else { continue };
        if drain.remove && drain.ended.is_some() {
            service.destinations.remove(&drain.backend);
        } else if let Some(dest) = service.destinations.get_mut(&drain.backend) {
            dest.weight = 0;
        }
    }
}

/// Drains still running at `now`'s evaluation.
pub fn running(drains: &[DrainEntry]) -> impl Iterator<Item = &DrainEntry> {
    drains.iter().filter(|drain| drain.ended.is_none())
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}
