//! Why a bundle was refused: each error names the entry or file and what is wrong with it, and
//! [`BundleError::reason`] gives a short stable label for metrics.

use std::{fmt, io, path::PathBuf};

use crate::config::ConfigErrors;

/// What an error is about: an entry of an archive being read (1-based, as `tar tv` lists them)
/// or a file being put into a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Archive { index: usize, name: String },
    File(PathBuf),
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Archive { index, name } => write!(f, "entry {index} `{}`", name.escape_debug()),
            Self::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(
        "the bundle's sha256 is {actual}, not {expected}: it is not the bundle asked for, or it is corrupt"
    )]
    HashMismatch { expected: String, actual: String },
    #[error("{name:?} is not a bundle file name (bundle-<64 lowercase hex digits>.tar.gz)")]
    NotABundleName { name: String },
    #[error("{entry}: {kind}, not a regular file")]
    NotRegularFile { entry: Entry, kind: &'static str },
    #[error("{entry}: {why}")]
    UnsafeName { entry: Entry, why: &'static str },
    #[error("{entry}: a second file of that name")]
    DuplicateName { entry: Entry },
    #[error("{entry}: not a YAML file name (letters, digits, `.`, `_`, `-`, ending in `.yaml`)")]
    NotYamlName { entry: Entry },
    #[error("{entry}: the content is not UTF-8 text")]
    NotUtf8 { entry: Entry },
    /// A file to bundle that does not parse as YAML.
    #[error("{0}")]
    InvalidYaml(ConfigErrors),
    #[error("more than {max} files")]
    TooManyFiles { max: usize },
    #[error("{what} (the limit is {max} bytes)")]
    TooLarge { what: String, max: u64 },
    #[error("not a well-formed bundle: {why}")]
    Malformed { why: String },
    /// Files to bundle that set node-local sections; each error names the file, line and column.
    #[error("{0}")]
    NodeLocalSection(ConfigErrors),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: io::Error },
}

impl BundleError {
    /// A short, stable snake_case label of the kind of refusal (a metrics label).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::HashMismatch { .. } => "hash_mismatch",
            Self::NotRegularFile { .. } | Self::UnsafeName { .. } | Self::DuplicateName { .. } => {
                "unsafe_entry"
            }
            Self::NotYamlName { .. } | Self::NotUtf8 { .. } | Self::InvalidYaml(_) => "not_yaml",
            Self::TooLarge { .. } => "too_large",
            Self::TooManyFiles { .. } => "too_many_files",
            Self::Malformed { .. } | Self::NotABundleName { .. } => "malformed",
            Self::NodeLocalSection(_) => "node_local_section",
            Self::Io { .. } => "io",
        }
    }

    pub(super) fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { what, path, source }
    }

    pub(super) fn malformed(why: impl fmt::Display) -> Self {
        Self::Malformed { why: why.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_entry_and_the_problem() {
        let entry = Entry::Archive { index: 3, name: "../etc/passwd".into() };
        let error = BundleError::UnsafeName { entry, why: "a path outside the bundle" };
        assert_eq!(error.to_string(), "entry 3 `../etc/passwd`: a path outside the bundle");
        assert_eq!(error.reason(), "unsafe_entry");
        let hidden = Entry::Archive { index: 1, name: "a\0b".into() };
        assert_eq!(hidden.to_string(), "entry 1 `a\\0b`");
    }
}
