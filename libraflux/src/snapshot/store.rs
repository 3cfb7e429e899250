//! The snapshot directory: `NAME.json` per snapshot, mode 0600, written atomically (a temp file
//! in the same directory, written, fsynced, moved into place, then the directory fsynced), never
//! overwritten unless asked. Names are `[A-Za-z0-9._-]`, not starting with `.`, so a name is
//! always one file inside the directory; temp files start with `.` and so never collide.

use std::{
    fmt,
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    str::FromStr,
    time::SystemTime,
};

use super::format::{Snapshot, SnapshotError};

/// Automatic snapshots taken by `apply` are named `pre-apply-<UTC time>`.
pub const AUTO_PREFIX: &str = "pre-apply-";

const MAX_NAME: usize = 128;

/// A valid snapshot name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotName(String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid snapshot name {name:?}: {why}")]
pub struct NameError {
    name: String,
    why: &'static str,
}

impl FromStr for SnapshotName {
    type Err = NameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let refuse = |why| Err(NameError { name: name.to_owned(), why });
        if name.is_empty() {
            return refuse("it is empty");
        }
        if name.len() > MAX_NAME {
            return refuse("it is longer than 128 characters");
        }
        if name.starts_with('.') {
            return refuse("it must not start with '.'");
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return refuse("only letters, digits, '.', '_' and '-' are allowed");
        }
        Ok(Self(name.to_owned()))
    }
}

impl SnapshotName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `2026-11-25T22:15:00Z` → `20261125T221500Z`.
pub fn compact_utc(rfc3339: &str) -> String {
    rfc3339.chars().filter(|c| !matches!(c, '-' | ':')).collect()
}

/// The name of an automatic snapshot taken at `time`.
pub fn auto_name(time: SystemTime) -> SnapshotName {
    let stamp = compact_utc(&humantime::format_rfc3339_seconds(time).to_string());
    format!("{AUTO_PREFIX}{stamp}").parse().expect("an automatic name is valid")
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("snapshot {0} already exists (use --force to overwrite it)")]
    Exists(SnapshotName),
    #[error("snapshot {name} not found in {dir}")]
    NotFound { name: SnapshotName, dir: PathBuf },
    #[error("snapshot {name} is corrupt: {source}")]
    Corrupt { name: SnapshotName, source: SnapshotError },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: io::Error },
}

impl StoreError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_owned();
        move |source| Self::Io { what, path, source }
    }
}

/// One file of a listing: the snapshot, or why it could not be read.
#[derive(Debug)]
pub struct Entry {
    pub name: SnapshotName,
    pub snapshot: Result<Snapshot, StoreError>,
}

#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &SnapshotName) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Writes `snapshot` as `name`; refuses an existing name unless `overwrite`.
    pub fn write(
        &self,
        name: &SnapshotName,
        snapshot: &Snapshot,
        overwrite: bool,
    ) -> Result<PathBuf, StoreError> {
        // 0711: others may not list the snapshots (each file is 0600 anyway) but may reach a file
        // they know the name of: the daemon, run as its own user, reads the rollback log here.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.dir)
            .map_err(StoreError::io("creating", &self.dir))?;
        let target = self.path(name);
        if !overwrite && target.exists() {
            return Err(StoreError::Exists(name.clone()));
        }
        let temp = self.dir.join(format!(".{name}.json.tmp-{}", std::process::id()));
        let result = self.write_temp(&temp, &snapshot.to_bytes()).and_then(|()| {
            if overwrite {
                fs::rename(&temp, &target).map_err(StoreError::io("renaming into", &target))
            } else {
                // A hard link does not replace an existing file: no overwrite even when racing.
                match fs::hard_link(&temp, &target) {
                    Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                        Err(StoreError::Exists(name.clone()))
                    }
                    other => other.map_err(StoreError::io("linking", &target)),
                }
            }
        });
        // After a rename the temp name is gone already; after a link or a failure it is removed.
        let _ = fs::remove_file(&temp);
        result?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(StoreError::io("syncing the directory", &self.dir))?;
        Ok(target)
    }

    fn write_temp(&self, temp: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(temp)
            .map_err(StoreError::io("creating", temp))?;
        file.write_all(bytes).map_err(StoreError::io("writing", temp))?;
        file.sync_all().map_err(StoreError::io("syncing", temp))
    }

    /// Reads and verifies a snapshot.
    pub fn read(&self, name: &SnapshotName) -> Result<Snapshot, StoreError> {
        let path = self.path(name);
        let bytes = match fs::read(&path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound { name: name.clone(), dir: self.dir.clone() });
            }
            other => other.map_err(StoreError::io("reading", &path))?,
        };
        Snapshot::from_bytes(&bytes).map_err(|source| StoreError::Corrupt { name: name.clone(), source })
    }

    pub fn delete(&self, name: &SnapshotName) -> Result<(), StoreError> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NotFound { name: name.clone(), dir: self.dir.clone() })
            }
            other => other.map_err(StoreError::io("deleting", &path)),
        }
    }

    /// The names of the snapshots, sorted; a missing directory holds none.
    pub fn names(&self) -> Result<Vec<SnapshotName>, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other.map_err(StoreError::io("listing", &self.dir))?,
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(StoreError::io("listing", &self.dir))?;
            let file_name = entry.file_name();
            let Some(stem) = file_name.to_str().and_then(|name| name.strip_suffix(".json")) else { continue };
            if let Ok(name) = stem.parse::<SnapshotName>() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every snapshot, read and verified, by name.
    pub fn list(&self) -> Result<Vec<Entry>, StoreError> {
        Ok(self.names()?.into_iter().map(|name| Entry { snapshot: self.read(&name), name }).collect())
    }

    /// Deletes the oldest automatic snapshots so that `keep` remain; returns the deleted names.
    /// Their names sort by time, so the oldest sort first. Other snapshots are never pruned.
    pub fn prune_auto(&self, keep: usize) -> Result<Vec<SnapshotName>, StoreError> {
        let auto: Vec<SnapshotName> =
            self.names()?.into_iter().filter(|name| name.as_str().starts_with(AUTO_PREFIX)).collect();
        let excess = auto.len().saturating_sub(keep);
        let doomed = auto[..excess].to_vec();
        for name in &doomed {
            self.delete(name)?;
        }
        Ok(doomed)
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, os::unix::fs::PermissionsExt as _, time::Duration};

    use super::*;
    use crate::ipvs::Timeouts;

    fn temp_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("libraflux-store-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn name(text: &str) -> SnapshotName {
        text.parse().unwrap()
    }

    fn empty(node: &str) -> Snapshot {
        Snapshot::new(node, "2026-11-25T22:15:00Z".into(), Timeouts::default(), &BTreeMap::new())
    }

    #[test]
    fn names_are_one_plain_file_name() {
        for good in ["before-change", "a", "v1.2_x-Y", "pre-apply-20261125T221500Z"] {
            assert_eq!(name(good).as_str(), good);
        }
        for bad in ["", ".hidden", "..", "../etc/passwd", "a/b", "a b", "tab\t", "ü", &"x".repeat(129)] {
            assert!(bad.parse::<SnapshotName>().is_err(), "{bad:?} should be refused");
        }
        let err = "../x".parse::<SnapshotName>().unwrap_err();
        assert_eq!(err.to_string(), "invalid snapshot name \"../x\": it must not start with '.'");
    }

    #[test]
    fn writes_are_0600_refuse_to_overwrite_and_read_back() {
        let dir = temp_dir("write");
        let store = Store::new(&dir);
        let path = store.write(&name("one"), &empty("lb-a"), false).unwrap();
        assert_eq!(path, dir.join("one.json"));
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(store.read(&name("one")).unwrap(), empty("lb-a"));

        let err = store.write(&name("one"), &empty("lb-b"), false).unwrap_err();
        assert_eq!(err.to_string(), "snapshot one already exists (use --force to overwrite it)");
        assert_eq!(store.read(&name("one")).unwrap().node, "lb-a", "untouched");

        store.write(&name("one"), &empty("lb-b"), true).unwrap();
        assert_eq!(store.read(&name("one")).unwrap().node, "lb-b");
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, ["one.json"], "no temp files left behind");

        fs::write(&path, b"{ not json").unwrap();
        let err = store.read(&name("one")).unwrap_err();
        assert!(err.to_string().starts_with("snapshot one is corrupt: parse error: "), "{err}");
        assert!(err.to_string().contains("line 1 column"), "{err}");

        let err = store.read(&name("two")).unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        store.delete(&name("one")).unwrap();
        assert!(store.names().unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pruning_keeps_the_newest_automatic_snapshots_only() {
        let dir = temp_dir("prune");
        let store = Store::new(&dir);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        for minute in 0..5 {
            let auto = auto_name(start + Duration::from_secs(60 * minute));
            store.write(&auto, &empty("lb-a"), false).unwrap();
        }
        store.write(&name("manual"), &empty("lb-a"), false).unwrap();
        fs::write(dir.join("notes.txt"), "not a snapshot").unwrap();

        let deleted = store.prune_auto(2).unwrap();
        let deleted: Vec<&str> = deleted.iter().map(SnapshotName::as_str).collect();
        assert_eq!(
            deleted,
            ["pre-apply-20261118T110640Z", "pre-apply-20261118T110740Z", "pre-apply-20261118T110840Z"]
        );
        let left: Vec<String> = store.names().unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(left, ["manual", "pre-apply-20261118T110940Z", "pre-apply-20261118T111040Z"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
