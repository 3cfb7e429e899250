//! Tests of the bundle format and files. Malicious archives are built byte by byte here (raw
//! ustar headers), so that they are exactly as hostile as written, whatever the tar crate's
//! writer would allow.

mod damage;
mod disk;
mod format;
mod refusals;

use std::io::Write as _;

use flate2::{Compression, GzBuilder};
use tar::{EntryType, Header};

use super::{BundleError, BundleFile};

pub(super) fn file(name: &str, text: &str) -> BundleFile {
    BundleFile { name: name.to_owned(), bytes: text.as_bytes().to_vec() }
}

/// A ustar header of `kind` named `name` (written into the name field as is, unchecked).
pub(super) fn raw_header(name: &[u8], kind: EntryType, size: u64) -> Header {
    let mut header = Header::new_ustar();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    header
}

/// A tar stream of `entries` (each header followed by its data, padded to a block), without the
/// end-of-archive blocks.
pub(super) fn entries(entries: &[(Header, &[u8])]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (header, data) in entries {
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().next_multiple_of(512), 0);
    }
    tar
}

/// `tar` with its two end-of-archive blocks, gzip'd.
pub(super) fn archive(tar: &[u8]) -> Vec<u8> {
    let mut ended = tar.to_vec();
    ended.extend_from_slice(&[0; 1024]);
    gzip(&ended)
}

pub(super) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzBuilder::new().write(Vec::new(), Compression::fast());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// An archive of one regular file per `(name, text)`, crafted raw.
pub(super) fn raw_archive(files: &[(&[u8], &[u8])]) -> Vec<u8> {
    let headers: Vec<(Header, &[u8])> = files
        .iter()
        .map(|(name, data)| (raw_header(name, EntryType::Regular, data.len() as u64), *data))
        .collect();
    archive(&entries(&headers))
}

/// The reason label and message of an error, for assertions that say what they got.
pub(super) fn described(result: Result<impl std::fmt::Debug, BundleError>) -> (&'static str, String) {
    match result {
        Ok(value) => panic!("expected a refusal, got {value:?}"),
        Err(error) => (error.reason(), error.to_string()),
    }
}

/// A fresh scratch directory for one test.
pub(super) fn scratch(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("libraflux-bundle-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}
