//! Files the daemon keeps in its state directory, written so that a crash leaves the old or
//! the new content, never a mix: temp file, fsync, rename, fsync the directory.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
};

/// What failed, on which path: `("renaming", path, error)`.
pub type WriteError = (&'static str, std::path::PathBuf, io::Error);

/// Replaces `dir/name` with `bytes` atomically, mode 0600; creates `dir` if needed. The error
/// says which step failed on which path.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic_with_mode(dir, name, bytes, 0o600)
}

/// [`write_atomic`] with the new file's `mode` (before the umask), for a file another program
/// reads.
pub fn write_atomic_with_mode(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    fs::create_dir_all(dir).map_err(|err| ("creating", dir.to_owned(), err))?;
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp"));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&temp)
        .map_err(|err| ("creating", temp.clone(), err))?;
    file.write_all(bytes).map_err(|err| ("writing", temp.clone(), err))?;
    file.sync_all().map_err(|err| ("syncing", temp.clone(), err))?;
    fs::rename(&temp, &path).map_err(|err| ("renaming", path.clone(), err))?;
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(|err| ("syncing", dir.to_owned(), err))
}
