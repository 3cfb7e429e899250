//! The pair's shared keys: raw bytes in files only their owner may read. The first key signs;
//! every key verifies, so that a new key can be put first on one node and then on the other
//! without a gap.

use std::{
    fs::File,
    io::Read as _,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// Shorter keys are guessable; longer ones are hashed down by HMAC-SHA256 anyway.
pub const MIN_KEY_BYTES: u64 = 32;
pub const MAX_KEY_BYTES: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("replication key {path}: cannot read: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("replication key {path}: not a regular file")]
    NotAFile { path: PathBuf },
    #[error("replication key {path}: mode {mode:04o} lets others read it; chmod 0600 (or 0400)")]
    Mode { path: PathBuf, mode: u32 },
    #[error(
        "replication key {path}: {bytes} bytes; a key is {MIN_KEY_BYTES} to {MAX_KEY_BYTES} random bytes (head -c 32 /dev/urandom)"
    )]
    Length { path: PathBuf, bytes: u64 },
    #[error(
        "replication key {name:?} is a systemd credential, but $CREDENTIALS_DIRECTORY is not set: \
         add LoadCredential={name}:/etc/libraflux/{name} to the unit, or give an absolute path"
    )]
    NoCredentials { name: String },
}

pub struct Keys {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} keys)", self.keys.len())
    }
}

impl Keys {
    /// Reads `files` (config order; at least one). Refuses a key that group or others may read,
    /// or of the wrong length, naming the file.
    pub fn load(files: &[PathBuf]) -> Result<Self, KeyError> {
        let credentials = crate::credentials::directory();
        let keys = files
            .iter()
            .map(|file| read_key(&resolve(file, credentials.as_deref())?))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { keys })
    }

    /// For tests: keys given directly.
    pub fn from_bytes(keys: Vec<Vec<u8>>) -> Self {
        Self { keys }
    }

    /// HMAC-SHA256 of `message` with the first key, lower-case hex.
    pub fn sign(&self, message: &[u8]) -> String {
        crate::bundle::hex(&mac(&self.keys[0], message).finalize().into_bytes())
    }

    /// Whether `tag` (hex) is the HMAC of `message` under any of the keys; compared in
    /// constant time.
    pub fn verify(&self, message: &[u8], tag: &str) -> bool {
        let Some(tag) = unhex(tag) else { return false };
        self.keys.iter().any(|key| mac(key, message).verify_slice(&tag).is_ok())
    }
}

fn mac(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac
}

fn resolve(file: &Path, credentials: Option<&Path>) -> Result<PathBuf, KeyError> {
    crate::credentials::resolve(file, credentials)
        .ok_or_else(|| KeyError::NoCredentials { name: file.display().to_string() })
}

fn read_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    let read_error = |error| KeyError::Read { path: path.to_owned(), error };
    let mut file =
        File::options().read(true).custom_flags(libc::O_NOFOLLOW).open(path).map_err(read_error)?;
    let metadata = file.metadata().map_err(read_error)?;
    if !metadata.is_file() {
        return Err(KeyError::NotAFile { path: path.to_owned() });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Mode { path: path.to_owned(), mode });
    }
    if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&metadata.len()) {
        return Err(KeyError::Length { path: path.to_owned(), bytes: metadata.len() });
    }
    let mut key = Vec::with_capacity(metadata.len() as usize);
    file.by_ref().take(MAX_KEY_BYTES + 1).read_to_end(&mut key).map_err(read_error)?;
    if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&(key.len() as u64)) {
        return Err(KeyError::Length { path: path.to_owned(), bytes: key.len() as u64 });
    }
    Ok(key)
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt as _};

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("libraflux-keys-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, bytes: &[u8], mode: u32) {
        fs::write(path, bytes).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_key_signs_and_either_key_verifies() {
        let dir = scratch("rotate");
        let (new, old) = (dir.join("new"), dir.join("old"));
        write(&new, &[7; 32], 0o600);
        write(&old, &[9; 64], 0o400);
        let both = Keys::load(&[new.clone(), old.clone()]).unwrap();
        let only_old = Keys::load(std::slice::from_ref(&old)).unwrap();
        let tag = only_old.sign(b"announce");
        assert!(both.verify(b"announce", &tag), "the second key verifies");
        assert!(both.verify(b"announce", &both.sign(b"announce")));
        assert!(!only_old.verify(b"announce", &both.sign(b"announce")), "signed with the first key");
        assert!(!both.verify(b"announce!", &tag));
        assert!(!both.verify(b"announce", &tag[..62]));
        assert!(!both.verify(b"announce", "zz"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_keys_are_refused_naming_the_file() {
        let dir = scratch("bad");
        let path = dir.join("key");
        write(&path, &[1; 32], 0o640);
        let error = Keys::load(std::slice::from_ref(&path)).unwrap_err().to_string();
        assert!(error.ends_with("key: mode 0640 lets others read it; chmod 0600 (or 0400)"), "{error}");
        write(&path, &[1; 31], 0o600);
        assert!(Keys::load(std::slice::from_ref(&path)).unwrap_err().to_string().contains("key: 31 bytes;"));
        write(&path, &[1; 65], 0o600);
        assert!(Keys::load(std::slice::from_ref(&path)).unwrap_err().to_string().contains("key: 65 bytes;"));
        let link = dir.join("link");
        write(&path, &[1; 32], 0o600);
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(Keys::load(&[link]), Err(KeyError::Read { .. })), "links are not followed");
        assert!(matches!(
            Keys::load(std::slice::from_ref(&dir)),
            Err(KeyError::Read { .. } | KeyError::NotAFile { .. })
        ));
        assert_eq!(
            resolve(Path::new("pair.key"), Some(Path::new("/run/credentials/libraflux.service"))).unwrap(),
            Path::new("/run/credentials/libraflux.service/pair.key")
        );
        assert!(matches!(resolve(Path::new("pair.key"), None), Err(KeyError::NoCredentials { .. })));
        fs::remove_dir_all(dir).unwrap();
    }
}
