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
///
/// `snapshot restore` writes it (a restore is refused while a daemon runs, so the daemon cannot
/// record it itself) and the daemon only reads it. It holds times and snapshot names, nothing
/// secret, so it is mode 0644, in a directory the daemon's user may traverse (0711, see
/// [`Store::write`]): a daemon run as its own user (systemd's DynamicUser) can read it.
pub const ROLLBACK_LOG: &str = "rollbacks.log";

/// Mode of the rollback log: readable by the daemon's user.
const ROLLBACK_LOG_MODE: u32 = 0o644;

/// Appends a completed restore of `name` to the rollback log in `dir`. A log left 0600 by an
/// older version is opened up to 0644.
pub fn record_rollback(dir: &std::path::Path, name: &SnapshotName, at_unix_ms: u64) -> std::io::Result<()> {
    use std::{
        io::Write as _,
        os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(ROLLBACK_LOG_MODE)
        .open(dir.join(ROLLBACK_LOG))?;
    log.set_permissions(std::fs::Permissions::from_mode(ROLLBACK_LOG_MODE))?;
    writeln!(log, "{at_unix_ms} {name}")
}

/// How many restores the rollback log in `dir` records (0 when there is none).
pub fn rollbacks(dir: &std::path::Path) -> std::io::Result<u64> {
    match std::fs::read_to_string(dir.join(ROLLBACK_LOG)) {
        Ok(text) => Ok(text.lines().count() as u64),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_rollback_log_counts_restores_and_is_readable_by_the_daemons_user() {
        let dir = std::env::temp_dir().join(format!("libraflux-rollbacks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(rollbacks(&dir).unwrap(), 0);
        let log = dir.join(ROLLBACK_LOG);
        std::fs::write(&log, "1 old\n").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o600)).unwrap();
        record_rollback(&dir, &"known-good".parse().unwrap(), 2).unwrap();
        assert_eq!(rollbacks(&dir).unwrap(), 2);
        assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o644);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
