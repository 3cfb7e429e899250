//! Arbitrary bytes as a bundle fetched from a primary: decoding must never panic, must refuse
//! with a reason the metrics know, and whatever it accepts must be what bundles carry (safe
//! `*.yaml` names, sorted, unique, UTF-8, within the limits) and must survive the round trip
//! through the encoder: encode, hash, decode gives the same files, and encoding is deterministic.
//!
//! The first byte chooses: bit 0 clear, the rest is the bundle file as is; set, the rest is the
//! tar archive inside it, gzip'd here (so that mutations reach the tar reader instead of dying at
//! gzip's checksum). Bit 1 picks small limits (4 files, 4 KiB) instead of the defaults.
//!
//! Run with `cargo xtask fuzz bundle_decode` (seeds: bundles made by `libraflux bundle create`
//! from the config corpus, in `fuzz/seeds/bundle_decode/`).

#![no_main]

use std::io::Write as _;

use libfuzzer_sys::fuzz_target;
use libraflux::{
    bundle::{self, Limits},
    replication,
};

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let bytes = if mode & 1 == 0 { rest.to_vec() } else { gzip(rest) };
    let limits = if mode & 2 == 0 { Limits::default() } else { Limits { max_files: 4, max_bytes: 4096 } };
    let files = match bundle::decode(&bytes, &limits) {
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

fn gzip(archive: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    encoder.write_all(archive).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}
