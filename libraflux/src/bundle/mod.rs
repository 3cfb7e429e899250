//! Config bundles: the replicated part of the configuration (the `config.d/*.yaml` drop-ins,
//! never the node-local `config.yaml`), carried from a primary to its secondary as one
//! content-addressed file, `bundle-<sha256>.tar.gz`.
//!
//! - [`encode`] is deterministic: the same file names and bytes give the same archive, whatever
//!   the files' on-disk times, owners, modes or creation order; so the hash names the content.
//! - [`decode`] is the reader for bytes from the network: it refuses anything but plain
//!   `*.yaml` files with safe names, and bounds what it decompresses ([`Limits`]).
//! - [`create`] makes a bundle of a drop-in directory; [`verify`] checks a bundle file;
//!   [`extract`] writes a verified bundle into a new directory; [`validate_with`] validates the
//!   configuration a secondary would run with it.
//!
//! The operator's view is the "Bundles" section of `docs/configuration.md`.

mod decode;
mod encode;
mod error;
mod extract;
mod name;
mod store;
#[cfg(test)]
mod tests;
mod validate;

pub use decode::decode;
pub use encode::encode;
pub use error::{BundleError, Entry};
pub use extract::extract;
pub(crate) use name::hex;
pub use name::{MAX_NAME_BYTES, NameProblem, check_name, file_name, parse_file_name, sha256_hex};
pub use store::{create, read_drop_ins, verify, write_bundle};
pub use validate::{validate_replicated, validate_with};

use std::path::PathBuf;

/// One file of a bundle: its name (a plain `*.yaml` name, see [`check_name`]) and content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// What [`decode`] accepts at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_files: usize,
    /// The files' sizes added up, uncompressed.
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_files: 256, max_bytes: 16 * 1024 * 1024 }
    }
}

impl Limits {
    /// The most a bundle within these limits can decompress to: the files, a header and at most
    /// a block of padding each, the end-of-archive blocks and a tar record's worth of zeros
    /// after them (GNU tar pads archives to 10 KiB records).
    pub fn max_archive_bytes(&self) -> u64 {
        const BLOCK: u64 = 512;
        let files = u64::try_from(self.max_files).unwrap_or(u64::MAX);
        self.max_bytes.saturating_add(files.saturating_mul(2 * BLOCK)).saturating_add(2 * BLOCK + 10_240)
    }

    /// The largest bundle file (compressed) these limits can accept, to bound a read or a
    /// download before [`decode`] sees it: deflate's stored blocks add 5 bytes per 64 KiB at
    /// worst, gzip 18 bytes; this allows a byte per KiB and a KiB more.
    pub fn max_bundle_bytes(&self) -> u64 {
        let archive = self.max_archive_bytes();
        archive.saturating_add(archive / 1024).saturating_add(1024)
    }
}

/// A bundle written by [`create`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// Lowercase hex of the bundle file's SHA-256, as in its name.
    pub sha256: String,
    /// `<bundles dir>/bundle-<sha256>.tar.gz`.
    pub path: PathBuf,
    /// The names of the files it carries, sorted.
    pub files: Vec<String>,
    /// The size of the bundle file.
    pub bytes: u64,
}

/// A bundle file that [`verify`] accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub sha256: String,
    /// Sorted by name.
    pub files: Vec<BundleFile>,
}
