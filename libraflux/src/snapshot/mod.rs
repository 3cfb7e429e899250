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

/// File in the snapshot directory with one line per completed restore; the daemon exports the
/// count as `libraflux_rollbacks_total`. Not `*.json`, so it is never taken for a snapshot.
pub const ROLLBACK_LOG: &str = "rollbacks.log";

/// Appends a completed restore of `name` to the rollback log in `dir`.
pub fn record_rollback(dir: &std::path::Path, name: &SnapshotName, at_unix_ms: u64) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let mut log =
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(dir.join(ROLLBACK_LOG))?;
    writeln!(log, "{at_unix_ms} {name}")
}

/// How many restores the rollback log in `dir` records (0 when there is none).
pub fn rollbacks(dir: &std::path::Path) -> u64 {
    std::fs::read_to_string(dir.join(ROLLBACK_LOG)).map_or(0, |text| text.lines().count() as u64)
}
