//! What replication keeps on disk. Both roles: `replication.json` in the daemon's state
//! directory (the generation and bundle last announced, or last applied), so that generations
//! only grow across restarts. A secondary also keeps the configurations it received, extracted,
//! under `replicated/`: one directory per generation and a `current` link to the one in force,
//! replaced by a rename so that it always names a whole, validated configuration; the previous
//! one is kept for rollback.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::state_file;

pub const STATE_FILE: &str = "replication.json";
pub const REPLICATED_DIR: &str = "replicated";
const CURRENT: &str = "current";

/// The generation this node announced (primary) or runs (secondary), and its bundle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub generation: u64,
    pub sha256: Option<String>,
}

impl State {
    pub fn load(state_dir: &Path) -> io::Result<Self> {
        match fs::read(state_dir.join(STATE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(err),
        }
    }

    pub fn save(&self, state_dir: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("state serialises");
        state_file::write_atomic(state_dir, STATE_FILE, &bytes).map_err(|(step, path, err)| {
            io::Error::new(err.kind(), format!("{step} {}: {err}", path.display()))
        })
    }
}

/// The directory a generation is extracted into.
pub fn generation_dir(replicated: &Path, generation: u64, sha256: &str) -> PathBuf {
    replicated.join(format!("gen-{generation}-{}", &sha256[..sha256.len().min(12)]))
}

/// The directory `current` names, if any.
pub fn current(replicated: &Path) -> io::Result<Option<PathBuf>> {
    match fs::read_link(replicated.join(CURRENT)) {
        Ok(target) => Ok(Some(replicated.join(target))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Points `current` at `dir` (a directory of `replicated`) in one rename; returns the directory
/// it named before.
pub fn swap(replicated: &Path, dir: &Path) -> io::Result<Option<PathBuf>> {
    let name = dir.file_name().ok_or_else(|| io::Error::other("not a generation directory"))?;
    let previous = current(replicated)?;
    let temp = replicated.join(".current.tmp");
    match fs::remove_file(&temp) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    std::os::unix::fs::symlink(name, &temp)?;
    fs::rename(&temp, replicated.join(CURRENT))?;
    fs::File::open(replicated)?.sync_all()?;
    Ok(previous)
}

/// Puts `current` back to `previous` (or removes it when there was none).
pub fn restore(replicated: &Path, previous: Option<&Path>) -> io::Result<()> {
    match previous {
        Some(previous) => swap(replicated, previous).map(drop),
        None => fs::remove_file(replicated.join(CURRENT)),
    }
}

/// Removes the generation directories other than `keep`.
pub fn prune(replicated: &Path, keep: &[&Path]) -> io::Result<()> {
    for entry in fs::read_dir(replicated)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
        if name.starts_with("gen-") && !keep.iter().any(|kept| *kept == path) {
            fs::remove_dir_all(&path)?;
        }
    }
    Ok(())
}

/// The `*.yaml` files of a generation directory, as config sources in name order.
pub fn sources(dir: &Path) -> io::Result<Vec<crate::config::Source>> {
    crate::config::yaml_files_in(dir)?
        .into_iter()
        .map(|path| fs::read_to_string(&path).map(|text| crate::config::Source::new(path, text)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_swaps_and_restores_and_old_generations_go() {
        let dir = std::env::temp_dir().join(format!("libraflux-replicated-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (one, two) = (generation_dir(&dir, 1, "aaaaaaaaaaaaaaaa"), generation_dir(&dir, 2, "bbbb"));
        for gen_dir in [&one, &two] {
            fs::create_dir_all(gen_dir).unwrap();
        }
        assert_eq!(one.file_name().unwrap(), "gen-1-aaaaaaaaaaaa");
        assert_eq!(current(&dir).unwrap(), None);
        assert_eq!(swap(&dir, &one).unwrap(), None);
        assert_eq!(swap(&dir, &two).unwrap(), Some(one.clone()));
        assert_eq!(current(&dir).unwrap(), Some(two.clone()));
        restore(&dir, Some(&one)).unwrap();
        assert_eq!(current(&dir).unwrap(), Some(one.clone()));
        prune(&dir, &[&one]).unwrap();
        assert!(one.exists() && !two.exists());
        State { generation: 4, sha256: Some("ab".into()) }.save(&dir).unwrap();
        assert_eq!(State::load(&dir).unwrap().generation, 4);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(State::load(&dir).unwrap(), State::default());
    }
}
