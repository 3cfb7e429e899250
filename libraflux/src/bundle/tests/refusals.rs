//! What `decode` refuses, each with its own error and reason label.

use std::io::Write as _;

use flate2::{Compression, GzBuilder};
use tar::EntryType;

use super::{archive, described, entries, file, gzip, raw_archive, raw_header};
use crate::bundle::{Limits, decode, encode};

fn refused(bytes: &[u8]) -> (&'static str, String) {
    described(decode(bytes, &Limits::default()))
}

#[test]
fn entries_that_are_not_regular_files_are_unsafe() {
    let kinds = [
        (EntryType::Symlink, "a symbolic link"),
        (EntryType::Link, "a hard link"),
        (EntryType::Char, "a character device"),
        (EntryType::Block, "a block device"),
        (EntryType::Fifo, "a FIFO"),
        (EntryType::Directory, "a directory"),
        (EntryType::Continuous, "a contiguous file"),
        (EntryType::XHeader, "a pax extended header"),
        (EntryType::XGlobalHeader, "a pax global header"),
        (EntryType::GNULongName, "a GNU long-name header"),
        (EntryType::GNULongLink, "a GNU long-link header"),
        (EntryType::GNUSparse, "a GNU sparse file"),
        (EntryType::new(b'Z'), "an entry of an unknown type"),
    ];
    for (kind, words) in kinds {
        let mut link = raw_header(b"web.yaml", kind, 0);
        link.set_link_name("/etc/passwd").unwrap();
        link.set_cksum();
        let ok = raw_header(b"a.yaml", EntryType::Regular, 0);
        let bytes = archive(&entries(&[(ok, b""), (link, b"")]));
        let (reason, message) = refused(&bytes);
        assert_eq!(reason, "unsafe_entry", "{words}");
        assert_eq!(message, format!("entry 2 `web.yaml`: {words}, not a regular file"));
    }
}

#[test]
fn a_gnu_long_name_is_refused_not_applied() {
    let long = format!("{}.yaml", "x".repeat(200));
    let mut name = raw_header(b"././@LongLink", EntryType::GNULongName, long.len() as u64 + 1);
    name.set_cksum();
    let data = format!("{long}\0");
    let real = raw_header(b"short.yaml", EntryType::Regular, 0);
    let (reason, message) = refused(&archive(&entries(&[(name, data.as_bytes()), (real, b"")])));
    assert_eq!(reason, "unsafe_entry");
    assert!(message.starts_with("entry 1 `././@LongLink`: a GNU long-name header"), "{message}");
}

#[test]
fn names_outside_or_hidden_are_unsafe() {
    let cases: [(&[u8], &str); 6] = [
        (b"/etc/cron.d/x.yaml", "entry 1 `/etc/cron.d/x.yaml`: an absolute path"),
        (b"../x.yaml", "entry 1 `../x.yaml`: a path outside the bundle"),
        (b"a/../b.yaml", "entry 1 `a/../b.yaml`: a path outside the bundle"),
        (b"sub/x.yaml", "entry 1 `sub/x.yaml`: a path into a directory"),
        (b".hidden.yaml", "entry 1 `.hidden.yaml`: a hidden name (starting with `.`)"),
        (b"x.yaml\0../../etc/passwd", "entry 1 `x.yaml`: a NUL byte in the name"),
    ];
    for (name, expected) in cases {
        let (reason, message) = refused(&raw_archive(&[(name, b"")]));
        assert_eq!((reason, message.as_str()), ("unsafe_entry", expected));
    }
}

#[test]
fn a_ustar_prefix_is_a_directory() {
    let mut header = raw_header(b"x.yaml", EntryType::Regular, 0);
    header.as_ustar_mut().unwrap().prefix[..3].copy_from_slice(b"etc");
    header.set_cksum();
    let (reason, message) = refused(&archive(&entries(&[(header, b"")])));
    assert_eq!((reason, message.as_str()), ("unsafe_entry", "entry 1 `etc/x.yaml`: a path into a directory"));
}

#[test]
fn names_that_are_not_yaml_files_are_refused() {
    for name in [&b"x.txt"[..], b"x.yml", b"a b.yaml", b"-x.yaml", b"\xff.yaml"] {
        let (reason, _) = refused(&raw_archive(&[(name, b"")]));
        let expected = if name.is_ascii() { "not_yaml" } else { "unsafe_entry" };
        assert_eq!(reason, expected, "{}", String::from_utf8_lossy(name));
    }
}

#[test]
fn a_second_file_of_the_same_name_is_refused() {
    let (reason, message) = refused(&raw_archive(&[(b"a.yaml", b"x: 1\n"), (b"a.yaml", b"x: 2\n")]));
    assert_eq!((reason, message.as_str()), ("unsafe_entry", "entry 2 `a.yaml`: a second file of that name"));
}

#[test]
fn more_files_than_the_limit_are_refused() {
    let files: Vec<_> = (0..257).map(|index| file(&format!("{index:03}.yaml"), "")).collect();
    let (reason, message) = refused(&encode(&files));
    assert_eq!((reason, message.as_str()), ("too_many_files", "more than 256 files"));
    assert_eq!(decode(&encode(&files[..256]), &Limits::default()).expect("256 are fine").len(), 256);
}

#[test]
fn more_bytes_than_the_limit_are_refused_from_the_header() {
    let limits = Limits { max_files: 10, max_bytes: 10 };
    let files = [file("a.yaml", "12345"), file("b.yaml", "123456")];
    let (reason, message) = described(decode(&encode(&files), &limits));
    assert_eq!(reason, "too_large");
    assert!(
        message == "entry 2 `b.yaml` of 6 bytes brings the files to 11 bytes (the limit is 10 bytes)",
        "{message}"
    );
    assert_eq!(decode(&encode(&files[..1]), &limits).expect("within").len(), 1);
}

/// `before`, then `zeros` zero bytes, then `after`, gzip'd without holding the zeros in memory.
fn bomb(before: &[u8], zeros: usize, after: &[u8]) -> Vec<u8> {
    let mut encoder = GzBuilder::new().write(Vec::new(), Compression::best());
    encoder.write_all(before).unwrap();
    let chunk = vec![0; 1 << 20];
    for _ in 0..zeros / chunk.len() {
        encoder.write_all(&chunk).unwrap();
    }
    encoder.write_all(after).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn a_gzip_bomb_in_one_entry_is_refused_before_it_is_read() {
    const SIZE: usize = 100 << 20;
    let header = raw_header(b"bomb.yaml", EntryType::Regular, SIZE as u64);
    let bytes = bomb(header.as_bytes(), SIZE, &[0; 1024]);
    assert!(bytes.len() < 200 << 10, "{} bytes compressed", bytes.len());
    let (reason, message) = refused(&bytes);
    assert_eq!(reason, "too_large");
    assert!(message.contains("entry 1 `bomb.yaml` of 104857600 bytes"), "{message}");
}

#[test]
fn a_gzip_bomb_after_the_archive_is_cut_off_at_the_limit() {
    let tar = entries(&[(raw_header(b"a.yaml", EntryType::Regular, 0), b"")]);
    let bytes = bomb(&tar, 32 << 20, &[]);
    let (reason, message) = refused(&bytes);
    assert_eq!(reason, "too_large");
    assert!(message.starts_with("the archive decompresses to more than"), "{message}");
}

#[test]
fn a_truncated_archive_is_malformed() {
    let whole = encode(&[file("a.yaml", &"x: 1\n".repeat(1000)), file("b.yaml", "y: 2\n")]);
    for cut in [whole.len() - 1, whole.len() - 8, whole.len() / 2, 10, 1] {
        let (reason, _) = refused(&whole[..cut]);
        assert_eq!(reason, "malformed", "cut at {cut} of {}", whole.len());
    }
}

#[test]
fn a_tar_stream_cut_short_is_malformed() {
    let tar = entries(&[(raw_header(b"a.yaml", EntryType::Regular, 600), &[b'x'; 600])]);
    let cases = [
        ("inside the data", gzip(&tar[..700])),
        ("without end blocks", gzip(&tar)),
        ("with one end block", gzip(&[tar.as_slice(), &[0; 512]].concat())),
    ];
    for (what, bytes) in cases {
        let (reason, message) = refused(&bytes);
        assert_eq!(reason, "malformed", "{what}: {message}");
    }
}

#[test]
fn trailing_garbage_is_malformed() {
    let mut after_gzip = encode(&[file("a.yaml", "")]);
    after_gzip.extend_from_slice(b"garbage");
    let (reason, message) = refused(&after_gzip);
    assert_eq!(
        (reason, message.as_str()),
        ("malformed", "not a well-formed bundle: data after the end of the gzip stream")
    );

    let mut second_member = encode(&[file("a.yaml", "")]);
    second_member.extend_from_slice(&encode(&[file("b.yaml", "")]));
    assert_eq!(refused(&second_member).0, "malformed");

    let tar = entries(&[(raw_header(b"a.yaml", EntryType::Regular, 0), b"")]);
    let after_end = gzip(&[tar.as_slice(), &[0; 1024], b"more"].concat());
    let (reason, message) = refused(&after_end);
    assert_eq!(
        (reason, message.as_str()),
        ("malformed", "not a well-formed bundle: data after the end of the archive")
    );

    let padded = gzip(&[tar.as_slice(), &[0; 10240]].concat());
    assert_eq!(decode(&padded, &Limits::default()).expect("zeros to a whole record are fine").len(), 1);
}

#[test]
fn damaged_bytes_are_malformed() {
    let whole = encode(&[file("a.yaml", &"x: 1\n".repeat(100))]);
    let mut checksum = whole.clone();
    let at = checksum.len() - 6;
    checksum[at] ^= 1;
    assert_eq!(refused(&checksum).0, "malformed", "gzip CRC");
    assert_eq!(refused(b"not gzip at all").0, "malformed");
    let mut header = raw_header(b"a.yaml", EntryType::Regular, 0);
    header.as_old_mut().cksum[0] ^= 1;
    assert_eq!(refused(&archive(&entries(&[(header, b"")]))).0, "malformed", "header checksum");
}

#[test]
fn content_that_is_not_utf8_is_not_yaml() {
    let (reason, message) = refused(&raw_archive(&[(b"a.yaml", b"x: \xff\n")]));
    assert_eq!((reason, message.as_str()), ("not_yaml", "entry 1 `a.yaml`: the content is not UTF-8 text"));
}
