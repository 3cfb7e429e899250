//! Snapshots of the IPVS state: a deterministic, checksummed JSON document ([`format`]) kept as
//! one file per snapshot in a directory ([`store`]). Restore feeds a snapshot's services to
//! `plan()` as the desired state, so a rollback is planned, limited and shown like any apply.
//! The operator view is `docs/snapshots.md`.

mod format;
mod store;

pub use format::{SCHEMA_VERSION, Snapshot, SnapshotError, SnapshotService, SnapshotTimeouts};
pub use store::{AUTO_PREFIX, Entry, NameError, SnapshotName, Store, StoreError, auto_name, compact_utc};

/// The default snapshot directory.
pub const DEFAULT_DIR: &str = "/var/lib/libraflux/snapshots";
/// How many automatic `pre-apply-*` snapshots are kept by default.
pub const DEFAULT_KEEP: u32 = 20;
