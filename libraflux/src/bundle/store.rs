//! Bundle files on disk: [`create`] makes one from a drop-in directory, [`verify`] checks one.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read as _, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use super::{
    Bundle, BundleError, BundleFile, Entry, Limits, Verified, decode, encode, file_name,
    name::{NameProblem, check_name},
    parse_file_name, sha256_hex,
};
use crate::config::{self, ConfigErrors, Source};

/// Bundles the `*.yaml` drop-ins of `drop_in_dir` (chosen as the configuration loader chooses
/// them; a missing or empty directory gives an empty bundle) into
/// `bundles_dir/bundle-<sha256>.tar.gz`. Refuses a file that sets a node-local section (each
/// place as `file:line:col`), a file that is not YAML, a name a bundle cannot carry, and more
/// files or bytes than [`Limits::default`] lets a secondary accept. The file is written
/// atomically, mode 0644; one of that name already there with the same content is left as it is.
pub fn create(drop_in_dir: &Path, bundles_dir: &Path) -> Result<Bundle, BundleError> {
    write_bundle(read_drop_ins(drop_in_dir)?, bundles_dir)
}

/// Writes `files` (as [`read_drop_ins`] gives them) as `bundles_dir/bundle-<sha256>.tar.gz`,
/// as [`create`] does.
pub fn write_bundle(files: Vec<BundleFile>, bundles_dir: &Path) -> Result<Bundle, BundleError> {
    let bytes = encode(&files);
    let sha256 = sha256_hex(&bytes);
    let path = store(bundles_dir, &file_name(&sha256), &bytes)?;
    let files = files.into_iter().map(|file| file.name).collect();
    Ok(Bundle { sha256, path, files, bytes: bytes.len() as u64 })
}

/// Checks the bundle file at `path`: its name carries a sha256, the file's sha256 is that one,
/// and [`decode`] accepts it.
pub fn verify(path: &Path, limits: &Limits) -> Result<Verified, BundleError> {
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let expected = parse_file_name(&name).ok_or(BundleError::NotABundleName { name })?;
    let bytes = read_bounded(path, limits.max_bundle_bytes())?;
    let actual = sha256_hex(&bytes);
    if actual != expected {
        return Err(BundleError::HashMismatch { expected, actual });
    }
    Ok(Verified { files: decode(&bytes, limits)?, sha256: actual })
}

/// Reads at most `max` bytes of `path`; a larger file is refused without reading it.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, BundleError> {
    let file = File::open(path).map_err(BundleError::io("reading", path))?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes).map_err(BundleError::io("reading", path))?;
    if bytes.len() as u64 > max {
        let what = format!("{} is larger than a bundle within the limits can be", path.display());
        return Err(BundleError::TooLarge { what, max });
    }
    Ok(bytes)
}

/// The `*.yaml` drop-ins of `dir` as bundle files, sorted by name, with the checks of
/// [`create`] (what a bundle, or a push to etcd, may carry); every node-local section of every
/// file is reported at once.
pub fn read_drop_ins(dir: &Path) -> Result<Vec<BundleFile>, BundleError> {
    let paths = config::yaml_files_in(dir).map_err(BundleError::io("listing", dir))?;
    let limits = Limits::default();
    if paths.len() > limits.max_files {
        return Err(BundleError::TooManyFiles { max: limits.max_files });
    }
    let (mut files, mut node_local, mut total) = (Vec::new(), Vec::new(), 0);
    for path in paths {
        let file = read_drop_in(&path)?;
        let text = std::str::from_utf8(&file.bytes).expect("read_drop_in checked it");
        match config::node_local_sections(&Source::new(&path, text)) {
            Ok(mut found) => node_local.append(&mut found),
            Err(errors) => return Err(BundleError::InvalidYaml(errors)),
        }
        total += file.bytes.len() as u64;
        if total > limits.max_bytes {
            let what = format!("the files of {} add up to more than a bundle may hold", dir.display());
            return Err(BundleError::TooLarge { what, max: limits.max_bytes });
        }
        files.push(file);
    }
    if !node_local.is_empty() {
        return Err(BundleError::NodeLocalSection(ConfigErrors(node_local)));
    }
    Ok(files)
}

fn read_drop_in(path: &Path) -> Result<BundleFile, BundleError> {
    let entry = || Entry::File(path.to_owned());
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    match check_name(&name) {
        Ok(()) => {}
        Err(NameProblem::Unsafe(why)) => return Err(BundleError::UnsafeName { entry: entry(), why }),
        Err(NameProblem::NotYaml) => return Err(BundleError::NotYamlName { entry: entry() }),
    }
    let bytes = fs::read(path).map_err(BundleError::io("reading", path))?;
    if std::str::from_utf8(&bytes).is_err() {
        return Err(BundleError::NotUtf8 { entry: entry() });
    }
    Ok(BundleFile { name, bytes })
}

/// Writes `dir/name` atomically (a temp file in `dir`, fsynced, renamed, then `dir` fsynced),
/// mode 0644, creating `dir` 0755. A file of that name with these bytes is left as it is; one
/// with other bytes (a damaged copy: the name is their hash) is replaced.
fn store(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, BundleError> {
    create_dir(dir)?;
    let path = dir.join(name);
    if fs::read(&path).is_ok_and(|existing| existing == bytes) {
        return Ok(path);
    }
    let temp = dir.join(format!(".{name}.tmp-{}-{:016x}", std::process::id(), fastrand::u64(..)));
    write_new(&temp, bytes)?;
    if let Err(err) = fs::rename(&temp, &path) {
        let _ = fs::remove_file(&temp);
        return Err(BundleError::io("renaming into", &path)(err));
    }
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(BundleError::io("syncing the directory", dir))?;
    Ok(path)
}

fn create_dir(dir: &Path) -> Result<(), BundleError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(BundleError::io("creating", dir))?;
    // Explicitly, so that a restrictive umask does not hide bundles from the peer's fetcher.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(BundleError::io("setting the mode of", dir))
}

/// Creates `path` (it must not exist: O_EXCL, which never follows a link), mode 0644 whatever
/// the umask, writes and fsyncs it; removes it again when a step after creating it fails.
pub(super) fn write_new(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(BundleError::io("creating", path))?;
    let written = file
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(BundleError::io("setting the mode of", path))
        .and_then(|()| file.write_all(bytes).map_err(BundleError::io("writing", path)))
        .and_then(|()| file.sync_all().map_err(BundleError::io("syncing", path)));
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}
