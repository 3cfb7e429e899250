//! Config errors: each names a file and, when it is about a place in the file, a line and
//! column; a load reports all of them at once.

use std::{
    fmt,
    path::{Path, PathBuf},
};

/// A 1-based line and column in a config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: usize,
    pub col: usize,
}

/// One problem in the configuration, rendered `file:line:col: message` (or `file: message` when
/// it concerns the whole file, such as a file that cannot be read).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub position: Option<Position>,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: impl Into<PathBuf>, position: Option<Position>, message: impl Into<String>) -> Self {
        Self { file: file.into(), position, message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(Position { line, col }) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every error found in the configuration, ordered by file (in load order), then position.
/// Displayed one per line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Orders `errors` by file, in the load order `order` gives, then by position.
pub fn sort_by_file(errors: &mut [ConfigError], order: &[&Path]) {
    let file_index = |file: &PathBuf| order.iter().position(|known| known == file).unwrap_or(usize::MAX);
    errors.sort_by_key(|error| (file_index(&error.file), error.position));
}
