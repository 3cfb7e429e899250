//! Writing a received bundle's files into a new directory: hash first, then the safe decoder,
//! then files that can only be new (never through or as a link); nothing is left on failure.

use std::{
    fs::{self, DirBuilder, File},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use super::{BundleError, BundleFile, Limits, decode, sha256_hex, store::write_new};

/// Checks that `bytes` hash to `expected_sha256` (before parsing anything), decodes them, then
/// creates the directory `into` (mode 0755; it must not exist) holding each file, mode 0644,
/// fsynced with the directory and its parent. Returns the names written, sorted. On failure,
/// whatever it created is removed again.
pub fn extract(
    bytes: &[u8],
    expected_sha256: &str,
    into: &Path,
    limits: &Limits,
) -> Result<Vec<String>, BundleError> {
    let actual = sha256_hex(bytes);
    if actual != expected_sha256 {
        return Err(BundleError::HashMismatch { expected: expected_sha256.to_owned(), actual });
    }
    let files = decode(bytes, limits)?;
    write_into(into, &files)?;
    Ok(files.into_iter().map(|file| file.name).collect())
}

/// Creates `into` holding `files`; on failure removes what it created.
pub(super) fn write_into(into: &Path, files: &[BundleFile]) -> Result<(), BundleError> {
    DirBuilder::new().mode(0o755).create(into).map_err(BundleError::io("creating", into))?;
    let mut written = Vec::with_capacity(files.len());
    let result = write_files(into, files, &mut written);
    if result.is_err() {
        for path in &written {
            let _ = fs::remove_file(path);
        }
        let _ = fs::remove_dir(into);
    }
    result
}

/// Writes the files (each name was checked by [`decode`]: one plain component), recording each
/// path created in `written` so that a failure can remove it.
fn write_files(into: &Path, files: &[BundleFile], written: &mut Vec<PathBuf>) -> Result<(), BundleError> {
    // Opened without following a link: if `into` was swapped for one since it was created, this
    // fails instead of writing where the link points.
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(into)
        .map_err(BundleError::io("opening", into))?;
    dir.set_permissions(fs::Permissions::from_mode(0o755))
        .map_err(BundleError::io("setting the mode of", into))?;
    for file in files {
        let path = into.join(&file.name);
        // Recorded once written: `write_new` removes a file it created and could not finish, and
        // a failure to create (the name exists) must not remove what was there before.
        write_new(&path, &file.bytes)?;
        written.push(path);
    }
    dir.sync_all().map_err(BundleError::io("syncing the directory", into))?;
    let parent = match into.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|parent| parent.sync_all())
        .map_err(BundleError::io("syncing the directory", parent))
}
