//! The deterministic encoding: a gzip'd ustar archive whose bytes depend on the files' names and
//! contents alone.

use std::io::Write as _;

use flate2::{Compression, GzBuilder};
use tar::{EntryType, Header};

use super::{BundleFile, check_name};

/// Fixed, so that the same files always compress to the same bytes.
const LEVEL: u32 = 9;

/// Encodes `files` as a bundle: a ustar archive of regular files sorted by name (byte order),
/// each with mtime 0, uid and gid 0, empty user and group names and mode 0644, without directory
/// entries or extension headers; gzip'd with mtime 0, no file name and a fixed level.
///
/// # Panics
/// When a name fails [`check_name`] or two files share a name: the bundle could not be decoded.
/// [`super::create`] checks both before it encodes.
pub fn encode(files: &[BundleFile]) -> Vec<u8> {
    let mut sorted: Vec<&BundleFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    for pair in sorted.windows(2) {
        assert!(pair[0].name != pair[1].name, "two bundle files are named {:?}", pair[0].name);
    }
    let gzip = GzBuilder::new().mtime(0).write(Vec::new(), Compression::new(LEVEL));
    let mut archive = tar::Builder::new(gzip);
    for file in sorted {
        archive.append(&header(file), file.bytes.as_slice()).expect("writing to memory cannot fail");
    }
    let mut gzip = archive.into_inner().expect("writing to memory cannot fail");
    gzip.flush().expect("writing to memory cannot fail");
    gzip.finish().expect("writing to memory cannot fail")
}

fn header(file: &BundleFile) -> Header {
    if let Err(problem) = check_name(&file.name) {
        panic!("{:?} cannot be a bundle file's name: {problem:?}", file.name);
    }
    let mut header = Header::new_ustar();
    header.set_entry_type(EntryType::Regular);
    header.set_path(&file.name).expect("a checked name fits a ustar header");
    header.set_size(file.bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_username("").expect("an empty name fits");
    header.set_groupname("").expect("an empty name fits");
    header.set_cksum();
    header
}
