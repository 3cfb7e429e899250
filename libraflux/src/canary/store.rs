//! Rollouts persisted in the state directory (`state/canaries.json`), so that a restarted daemon
//! continues them where they stood. Only the daemon writes it, atomically, after each change.

use std::{fs, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::CanaryEntry;

const FILE: &str = "canaries.json";
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct CanaryFile {
    version: u32,
    canaries: Vec<CanaryEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{operation} {path}")]
    Io { operation: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path} is not a canary state file")]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

/// The rollouts of one node, in `dir` (default `/var/lib/libraflux/state`).
#[derive(Clone, Debug)]
pub struct CanaryStore {
    dir: PathBuf,
}

impl CanaryStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Every rollout, ordered by service then backend; none when the file does not exist.
    pub fn load(&self) -> Result<Vec<CanaryEntry>, StoreError> {
        let path = self.dir.join(FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StoreError::Io { operation: "reading", path, source }),
        };
        let file: CanaryFile =
            serde_json::from_str(&text).map_err(|source| StoreError::Corrupt { path, source })?;
        Ok(file.canaries)
    }

    /// Writes `canaries`, sorted, in place of what the file held.
    pub fn save(&self, canaries: &[CanaryEntry]) -> Result<(), StoreError> {
        let mut canaries = canaries.to_vec();
        canaries.sort_by_key(|canary| (canary.service, canary.backend));
        let text = serde_json::to_string_pretty(&CanaryFile { version: VERSION, canaries })
            .expect("canary entries serialise");
        crate::state_file::write_atomic(&self.dir, FILE, text.as_bytes())
            .map_err(|(operation, path, source)| StoreError::Io { operation, path, source })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::canary::{AbortReason, Rollout};

    #[test]
    fn rollouts_round_trip_sorted() {
        let dir = std::env::temp_dir().join(format!("libraflux-canaries-{}", std::process::id()));
        let store = CanaryStore::new(&dir);
        assert_eq!(store.load().unwrap(), []);
        let rollout = Rollout { steps: vec![5, 100], interval: Duration::from_secs(90) };
        let service = "udp:10.0.0.1:53".parse().unwrap();
        let mut aborted =
            CanaryEntry::start(service, "10.0.1.2:53".parse().unwrap(), rollout.clone(), false, 7);
        aborted.abort(AbortReason::CircuitBreaker, "5 connection failures in a row", 9);
        let running = CanaryEntry::start(service, "10.0.1.1:53".parse().unwrap(), rollout, true, 7);
        store.save(&[aborted.clone(), running.clone()]).unwrap();
        assert_eq!(store.load().unwrap(), [running, aborted]);
        let text = fs::read_to_string(dir.join(FILE)).unwrap();
        assert!(text.contains(r#""state": "aborted""#) && text.contains(r#""interval": "1m 30s""#), "{text}");
        fs::write(dir.join(FILE), "[").unwrap();
        assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}
