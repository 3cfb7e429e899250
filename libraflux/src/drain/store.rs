//! Drains persisted in the state directory (`state/drains.json`), so a drain outlives the daemon
//! restarting. Only the daemon writes it (the CLI asks over the control socket): it keeps the
//! drains in memory and writes the whole file, atomically, after each change.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::machine::{Ending, Progress, Rules};
use crate::model::{DestKey, ServiceKey};

const FILE: &str = "drains.json";
const VERSION: u32 = 1;

/// One drain of one backend in one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainEntry {
    pub service: ServiceKey,
    pub backend: DestKey,
    pub rules: Rules,
    /// Delete the destination when the drain ends; otherwise it stays at weight 0.
    pub remove: bool,
    /// The daemon started it because the backend (or its service) left the configuration; it is
    /// cancelled when the backend is configured again.
    #[serde(default)]
    pub removed_from_config: bool,
    pub started_unix_ms: u64,
    /// When the daemon first saw the backend at weight 0 in IPVS (or gone from it): the grace
    /// period counts from here.
    #[serde(default)]
    pub at_zero_unix_ms: Option<u64>,
    pub ended: Option<Ended>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub ending: Ending,
    pub at_unix_ms: u64,
}

impl DrainEntry {
    /// How long the drain has run at `now` (wall clock, so it survives restarts).
    pub fn elapsed(&self, now: SystemTime) -> Duration {
        Duration::from_millis(unix_ms(now).saturating_sub(self.started_unix_ms))
    }

    /// Where the drain stands at `now`.
    pub fn progress(&self, now: SystemTime) -> Progress {
        let since = |ms: u64| Duration::from_millis(unix_ms(now).saturating_sub(ms));
        Progress { elapsed: since(self.started_unix_ms), at_zero: self.at_zero_unix_ms.map(since) }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct DrainFile {
    version: u32,
    drains: Vec<DrainEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{operation} {path}")]
    Io { operation: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path} is not a drain state file")]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

/// The drain state of one node, in `dir` (default `/var/lib/libraflux/state`).
#[derive(Clone, Debug)]
pub struct DrainStore {
    dir: PathBuf,
}

impl DrainStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Every drain, ordered by service then backend; none when the file does not exist.
    pub fn load(&self) -> Result<Vec<DrainEntry>, StoreError> {
        let path = self.dir.join(FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StoreError::Io { operation: "reading", path, source }),
        };
        let file: DrainFile =
            serde_json::from_str(&text).map_err(|source| StoreError::Corrupt { path, source })?;
        Ok(file.drains)
    }

    /// Writes `drains`, sorted by service then backend, in place of what the file held.
    pub fn save(&self, drains: &[DrainEntry]) -> Result<(), StoreError> {
        fs::create_dir_all(&self.dir).map_err(|source| self.io("creating", &self.dir, source))?;
        let mut drains = drains.to_vec();
        drains.sort_by_key(|drain| (drain.service, drain.backend));
        self.write(&drains)
    }

    /// Temp file, fsync, rename, fsync the directory: a crash leaves the old or the new file.
    fn write(&self, drains: &[DrainEntry]) -> Result<(), StoreError> {
        let text = serde_json::to_string_pretty(&DrainFile { version: VERSION, drains: drains.to_vec() })
            .expect("drain entries serialise");
        crate::state_file::write_atomic(&self.dir, FILE, text.as_bytes())
            .map_err(|(operation, path, source)| StoreError::Io { operation, path, source })
    }

    fn io(&self, operation: &'static str, path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io { operation, path: path.to_owned(), source }
    }
}

pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(backend: &str) -> DrainEntry {
        DrainEntry {
            service: "tcp:10.0.0.1:80".parse().unwrap(),
            backend: backend.parse().unwrap(),
            rules: Rules {
                grace: Duration::from_secs(1),
                timeout: Duration::from_secs(2),
                quiet: Duration::from_secs(3),
                include_inactive: false,
            },
            remove: false,
            removed_from_config: false,
            started_unix_ms: 1_000,
            at_zero_unix_ms: None,
            ended: None,
        }
    }

    #[test]
    fn entries_round_trip_sorted_with_private_permissions() {
        let dir = std::env::temp_dir().join(format!("libraflux-drains-{}", std::process::id()));
        let store = DrainStore::new(&dir);
        assert_eq!(store.load().unwrap(), []);
        store.save(&[entry("10.0.1.2:80"), entry("10.0.1.1:80")]).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded, [entry("10.0.1.1:80"), entry("10.0.1.2:80")]);
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(dir.join(FILE)).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        fs::write(dir.join(FILE), "{ not json").unwrap();
        assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn elapsed_is_wall_clock_since_the_start() {
        let at = UNIX_EPOCH + Duration::from_millis(4_500);
        assert_eq!(entry("10.0.1.1:80").elapsed(at), Duration::from_millis(3_500));
    }
}
