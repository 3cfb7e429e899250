//! systemd credentials (`LoadCredential=`): a configured file given as a bare name is read from
//! the unit's `$CREDENTIALS_DIRECTORY`, which only the service can read, so that a key the
//! service's dynamic user could not open in /etc reaches it anyway.

use std::path::{Path, PathBuf};

/// Where systemd puts a unit's credentials.
const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// This process's credentials directory, if systemd gave it one.
pub fn directory() -> Option<PathBuf> {
    std::env::var_os(CREDENTIALS_DIRECTORY).map(PathBuf::from)
}

/// `file` itself when it is absolute, a bare name inside `credentials`; `None` when `file` is a
/// bare name and there is no credentials directory.
pub fn resolve(file: &Path, credentials: Option<&Path>) -> Option<PathBuf> {
    if file.is_absolute() {
        return Some(file.to_owned());
    }
    credentials.map(|dir| dir.join(file))
}
