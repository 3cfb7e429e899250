//! Shared by the golden-file tests: each case is a directory of its fixtures.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// The subdirectories of `root`, sorted.
pub fn case_dirs(root: &Path) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(root)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", root.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    cases
}
