//! The last good configuration from etcd, kept on disk (`state/etcd.json`): the `config.d`
//! files the daemon last put in force from etcd, with the revision it read them at. A daemon
//! that starts while etcd cannot be read comes up on it, and a reload (SIGHUP) reads it as the
//! node's `config.d`. One file, replaced atomically ([`crate::state_file`]), so that a crash
//! leaves the old configuration or the new one, never a mix.

use std::{
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::node::InForce;
use crate::bundle::BundleFile;

pub const FILE: &str = "etcd.json";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct LastGoodFile {
    version: u32,
    prefix: String,
    revision: i64,
    sha256: String,
    saved_unix: u64,
    files: Vec<TextFile>,
}

#[derive(Serialize, Deserialize)]
struct TextFile {
    name: String,
    text: String,
}

/// What [`load`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastGood {
    /// The prefix it was read under.
    pub prefix: String,
    pub in_force: InForce,
    /// When it was written, unix seconds.
    pub saved_unix: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LastGoodError {
    #[error("{operation} {path}: {source}")]
    Io { operation: &'static str, path: PathBuf, source: io::Error },
    #[error("{path} is not a last good configuration from etcd: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

/// The last good configuration in `state_dir`; `None` when none was kept.
pub fn load(state_dir: &Path) -> Result<Option<LastGood>, LastGoodError> {
    let path = state_dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LastGoodError::Io { operation: "reading", path, source }),
    };
    let file: LastGoodFile =
        serde_json::from_slice(&bytes).map_err(|source| LastGoodError::Corrupt { path, source })?;
    let files = file
        .files
        .into_iter()
        .map(|file| BundleFile { name: file.name, bytes: file.text.into_bytes() })
        .collect();
    Ok(Some(LastGood {
        prefix: file.prefix,
        in_force: InForce { revision: file.revision, sha256: file.sha256, files },
        saved_unix: file.saved_unix,
    }))
}

/// Replaces the last good configuration in `state_dir` with `in_force`, read under `prefix`.
/// Its files are text: they validated, which they only do as UTF-8.
pub fn save(state_dir: &Path, prefix: &str, in_force: &InForce) -> Result<(), LastGoodError> {
    let saved_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0);
    let file = LastGoodFile {
        version: VERSION,
        prefix: prefix.to_owned(),
        revision: in_force.revision,
        sha256: in_force.sha256.clone(),
        saved_unix,
        files: in_force
            .files
            .iter()
            .map(|file| TextFile {
                name: file.name.clone(),
                text: String::from_utf8_lossy(&file.bytes).into_owned(),
            })
            .collect(),
    };
    let bytes = serde_json::to_vec_pretty(&file).expect("the last good configuration serialises");
    crate::state_file::write_atomic(state_dir, FILE, &bytes)
        .map_err(|(operation, path, source)| LastGoodError::Io { operation, path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_absent_until_saved() {
        let dir = std::env::temp_dir().join(format!("libraflux-etcd-last-good-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(load(&dir).unwrap(), None);
        let files = vec![BundleFile { name: "web.yaml".into(), bytes: b"services: []\n".to_vec() }];
        let in_force = InForce { revision: 42, sha256: "ab".into(), files };
        save(&dir, "/fleet/", &in_force).unwrap();
        let loaded = load(&dir).unwrap().unwrap();
        assert_eq!((loaded.prefix.as_str(), &loaded.in_force), ("/fleet/", &in_force));
        std::fs::write(dir.join(FILE), "{").unwrap();
        assert!(matches!(load(&dir), Err(LastGoodError::Corrupt { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
