//! Arbitrary bytes as a bundle fetched from a primary: decoding must never panic, must refuse
//! with a reason the metrics know, and whatever it accepts must be what bundles carry (safe
//! `*.yaml` names, sorted, unique, UTF-8, within the limits) and must survive the round trip
//! through the encoder: encode, hash, decode gives the same files, and encoding is deterministic.
//! Extraction writes exactly that: `bundle::extract` of the same bytes into a new directory
//! accepts and refuses as the decoder does, and what it accepts is a directory holding only the
//! accepted files, as regular files with their bytes, mode 0644; what it refuses, or bytes under a
//! wrong hash, leave nothing behind.
//!
//! The first byte chooses: bit 0 clear, the rest is the bundle file as is; set, the rest is the
//! tar archive inside it, gzip'd here (so that mutations reach the tar reader instead of dying at
//! gzip's checksum). Bit 1 picks small limits (4 files, 4 KiB) instead of the defaults. Bit 2 gives
//! extraction a wrong hash, which it must refuse before it decodes or writes anything.
//!
//! Run with `cargo xtask fuzz bundle_decode` (seeds: bundles made by `libraflux bundle create`
//! from the config corpus, in `fuzz/seeds/bundle_decode/`).

#![no_main]

use std::{
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use libfuzzer_sys::fuzz_target;
use libraflux::{
    bundle::{self, Limits},
    replication,
};

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let bytes = if mode & 1 == 0 { rest.to_vec() } else { gzip(rest) };
    let limits = if mode & 2 == 0 { Limits::default() } else { Limits { max_files: 4, max_bytes: 4096 } };
    let decoded = bundle::decode(&bytes, &limits);
    check_extraction(&bytes, &limits, mode & 4 != 0, &decoded);
    let files = match decoded {
        Ok(files) => files,
        Err(err) => {
            assert_ne!(replication::reason_label(err.reason()), "other", "{err}: reason {}", err.reason());
            return;
        }
    };
    assert!(files.len() <= limits.max_files, "{} files over a limit of {}", files.len(), limits.max_files);
    let total: usize = files.iter().map(|file| file.bytes.len()).sum();
    assert!(total as u64 <= limits.max_bytes, "{total} bytes over a limit of {}", limits.max_bytes);
    for pair in files.windows(2) {
        assert!(pair[0].name < pair[1].name, "not sorted and unique: {:?}, {:?}", pair[0].name, pair[1].name);
    }
    for file in &files {
        assert_eq!(bundle::check_name(&file.name), Ok(()), "{:?}", file.name);
        assert!(std::str::from_utf8(&file.bytes).is_ok(), "{:?} is not UTF-8", file.name);
    }
    let encoded = bundle::encode(&files);
    assert_eq!(encoded, bundle::encode(&files), "encoding is not deterministic");
    assert!(encoded.len() as u64 <= limits.max_bundle_bytes(), "a bundle of accepted files is too large");
    let again = bundle::decode(&encoded, &limits).expect("an encoded bundle of accepted files decodes");
    assert_eq!(again, files, "encode then decode changed the files");
});

/// Extracts `bytes` into a new directory and holds the result to the decoder's `decoded`.
fn check_extraction(
    bytes: &[u8],
    limits: &Limits,
    wrong_hash: bool,
    decoded: &Result<Vec<bundle::BundleFile>, bundle::BundleError>,
) {
    let into = scratch().join("bundle");
    let mut sha256 = bundle::sha256_hex(bytes);
    if wrong_hash {
        sha256.replace_range(0..1, if sha256.starts_with('0') { "1" } else { "0" });
    }
    let extracted = bundle::extract(bytes, &sha256, &into, limits);
    match (&extracted, decoded) {
        (Ok(names), Ok(files)) if !wrong_hash => {
            let wanted: Vec<&str> = files.iter().map(|file| file.name.as_str()).collect();
            assert_eq!(names.iter().map(String::as_str).collect::<Vec<_>>(), wanted, "names written");
            let mode = fs::symlink_metadata(&into).expect("the directory exists").permissions().mode();
            assert_eq!(mode & 0o7777, 0o755, "the directory's mode");
            let mut found: Vec<String> = fs::read_dir(&into)
                .expect("reading the directory")
                .map(|entry| entry.expect("an entry").file_name().into_string().expect("a UTF-8 name"))
                .collect();
            found.sort();
            assert_eq!(found, wanted, "the directory holds exactly the files");
            for file in files {
                let path = into.join(&file.name);
                let meta = fs::symlink_metadata(&path).expect("a written file");
                assert!(meta.file_type().is_file(), "{:?} is not a regular file", file.name);
                assert_eq!(meta.permissions().mode() & 0o7777, 0o644, "{:?}'s mode", file.name);
                assert_eq!(
                    fs::read(&path).expect("reading a written file"),
                    file.bytes,
                    "{:?}'s bytes",
                    file.name
                );
            }
            fs::remove_dir_all(&into).expect("removing the extraction");
        }
        (Err(err), _) if wrong_hash => {
            assert_eq!(err.reason(), "hash_mismatch", "{err}");
            assert!(!into.exists(), "a refused extraction left {into:?}");
        }
        (Err(err), Err(expected)) => {
            assert_eq!(err.reason(), expected.reason(), "extraction refused otherwise than decoding: {err}");
            assert!(!into.exists(), "a refused extraction left {into:?}");
        }
        (extracted, decoded) => panic!("extraction {extracted:?} against decoding {decoded:?}"),
    }
    assert_eq!(fs::read_dir(scratch()).expect("reading the scratch directory").count(), 0, "left behind");
}

/// This process's directory to extract into: on tmpfs where there is one, so that the fsyncs
/// cost nothing.
fn scratch() -> &'static Path {
    static SCRATCH: OnceLock<PathBuf> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() { base.to_path_buf() } else { std::env::temp_dir() };
        let dir = base.join(format!("libraflux-fuzz-bundle-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).expect("creating the scratch directory");
        dir
    })
}

fn gzip(archive: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    encoder.write_all(archive).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}
