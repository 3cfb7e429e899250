//! The encoding: deterministic, canonical in every header field, and read back exactly.

use std::io::Read as _;

use super::{described, file, raw_archive};
use crate::bundle::{Limits, decode, encode, sha256_hex};

#[test]
fn the_same_files_in_any_order_give_the_same_bytes() {
    let a = file("10-web.yaml", "services: []\n");
    let b = file("20-dns.yaml", "ignore: []\n");
    let c = file("Z.yaml", "{}\n");
    let one = encode(&[a.clone(), b.clone(), c.clone()]);
    let other = encode(&[c, a.clone(), b.clone()]);
    assert_eq!(one, other);
    let changed = encode(&[a, b, file("Z.yaml", "{ }\n")]);
    assert_ne!(sha256_hex(&one), sha256_hex(&changed));
}

#[test]
fn files_come_back_sorted_by_name_byte_order() {
    let files = [file("b.yaml", "b: 1\n"), file("B.yaml", ""), file("a.yaml", "a\u{e9}\n")];
    let decoded = decode(&encode(&files), &Limits::default()).expect("decodes");
    let names: Vec<&str> = decoded.iter().map(|file| file.name.as_str()).collect();
    assert_eq!(names, ["B.yaml", "a.yaml", "b.yaml"]);
    assert_eq!(decoded[1], files[2]);
    assert_eq!(decoded[0].bytes, b"");
}

#[test]
fn an_empty_bundle_round_trips() {
    assert_eq!(decode(&encode(&[]), &Limits::default()).expect("decodes"), []);
}

#[test]
fn headers_carry_nothing_but_name_size_and_fixed_values() {
    let bytes = encode(&[file("web.yaml", "services: []\n")]);
    // gzip: no flags (no file name), mtime 0, XFL 2 (best compression).
    assert_eq!(bytes[3], 0, "FLG");
    assert_eq!(&bytes[4..8], [0; 4], "MTIME");
    assert_eq!(bytes[8], 2, "XFL");
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(bytes.as_slice()).read_to_end(&mut tar).expect("gunzip");
    assert_eq!(tar.len(), 512 + 512 + 1024, "one header, one block of data, the end blocks");
    let mut archive = tar::Archive::new(tar.as_slice());
    let entry = archive.entries().unwrap().raw(true).next().unwrap().unwrap();
    let header = entry.header();
    assert!(header.as_ustar().is_some(), "ustar magic");
    assert_eq!(header.entry_type(), tar::EntryType::Regular);
    assert_eq!(header.path_bytes().as_ref(), b"web.yaml");
    assert_eq!(header.size().unwrap(), 13);
    assert_eq!(header.mode().unwrap(), 0o644);
    assert_eq!(header.mtime().unwrap(), 0);
    assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
    assert_eq!(header.username_bytes(), Some(&b""[..]));
    assert_eq!(header.groupname_bytes(), Some(&b""[..]));
}

#[test]
fn archives_written_by_other_means_are_read_too() {
    let bytes = raw_archive(&[(b"b.yaml", b"x: 1\n"), (b"a.yaml", b"")]);
    let names: Vec<String> =
        decode(&bytes, &Limits::default()).expect("decodes").into_iter().map(|file| file.name).collect();
    assert_eq!(names, ["a.yaml", "b.yaml"]);
}

#[test]
#[should_panic(expected = "cannot be a bundle file's name")]
fn encoding_an_unsafe_name_panics() {
    encode(&[file("../x.yaml", "")]);
}

#[test]
fn limits_bound_the_bundle_file_too() {
    let limits = Limits::default();
    assert!(limits.max_bundle_bytes() > limits.max_archive_bytes());
    assert!(limits.max_archive_bytes() > limits.max_bytes);
    let (reason, _) = described(decode(&[], &limits));
    assert_eq!(reason, "malformed");
}
