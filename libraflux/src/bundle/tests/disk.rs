//! Bundle files on disk: create, verify, extract; and the configuration a bundle gives.

use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
    time::{Duration, SystemTime},
};

use super::{described, file, scratch};
use crate::{
    bundle::{
        Limits, create, encode, extract, extract::write_into, file_name, sha256_hex, validate_with, verify,
    },
    config::Source,
};

const WEB: &str = "services:\n  - name: web\n    protocol: tcp\n    vip: 192.0.2.1\n    port: 80\n    scheduler: rr\n    health: { type: none }\n    backends:\n      - address: 198.51.100.1\n";
const DNS: &str = "ignore:\n  - 192.0.2.53\n";

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

#[test]
fn the_same_drop_ins_written_differently_give_the_same_bundle() {
    let dir = scratch("create");
    let (one, two) = (dir.join("one"), dir.join("two"));
    fs::create_dir_all(&one).unwrap();
    fs::create_dir_all(&two).unwrap();
    fs::write(one.join("10-web.yaml"), WEB).unwrap();
    fs::write(one.join("20-dns.yaml"), DNS).unwrap();
    fs::write(two.join("20-dns.yaml"), DNS).unwrap();
    fs::write(two.join("10-web.yaml"), WEB).unwrap();
    let old = fs::File::options().write(true).open(two.join("10-web.yaml")).unwrap();
    old.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)).unwrap();
    fs::set_permissions(two.join("20-dns.yaml"), fs::Permissions::from_mode(0o600)).unwrap();
    // Skipped as the config loader skips them.
    fs::write(two.join(".hidden.yaml"), "node: {}\n").unwrap();
    fs::write(two.join("notes.txt"), "node: {}\n").unwrap();
    fs::create_dir(two.join("sub.yaml")).unwrap();

    let bundles = dir.join("state/bundles");
    let first = create(&one, &bundles).expect("create one");
    let second = create(&two, &bundles).expect("create two");
    assert_eq!(first, second);
    assert_eq!(first.files, ["10-web.yaml", "20-dns.yaml"]);
    assert_eq!(first.path, bundles.join(file_name(&first.sha256)));
    let bytes = fs::read(&first.path).unwrap();
    assert_eq!(sha256_hex(&bytes), first.sha256);
    assert_eq!(bytes.len() as u64, first.bytes);
    assert_eq!(mode(&first.path), 0o644);
    assert_eq!(mode(&bundles), 0o755);
    let leftovers: Vec<_> = fs::read_dir(&bundles).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "no temp files: {leftovers:?}");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_existing_bundle_is_left_as_it_is_and_a_damaged_one_replaced() {
    let dir = scratch("existing");
    fs::write(dir.join("web.yaml"), WEB).unwrap();
    let bundles = dir.join("bundles");
    let first = create(&dir, &bundles).expect("create");
    let inode = fs::metadata(&first.path).unwrap().ino();
    create(&dir, &bundles).expect("again");
    assert_eq!(fs::metadata(&first.path).unwrap().ino(), inode, "left as it is");
    fs::write(&first.path, b"damaged").unwrap();
    create(&dir, &bundles).expect("again");
    assert_eq!(sha256_hex(&fs::read(&first.path).unwrap()), first.sha256);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn no_drop_ins_give_an_empty_bundle() {
    let dir = scratch("empty");
    let missing = create(&dir.join("config.d"), &dir.join("bundles")).expect("missing dir");
    let empty = create(&dir, &dir.join("bundles")).expect("empty dir");
    assert_eq!(missing, empty);
    assert!(missing.files.is_empty());
    assert_eq!(verify(&missing.path, &Limits::default()).expect("verifies").files, []);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_node_local_section_is_refused_with_its_place() {
    let dir = scratch("node-local");
    fs::write(dir.join("a.yaml"), WEB).unwrap();
    fs::write(dir.join("b.yaml"), "services: []\nmetrics:\n  listen: 127.0.0.1:9469\n").unwrap();
    fs::write(dir.join("c.yaml"), "  # indented\nnode:\n  name: lb-a\n").unwrap();
    let (reason, message) = described(create(&dir, &dir.join("bundles")));
    assert_eq!(reason, "node_local_section");
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 2, "{message}");
    assert!(
        lines[0].starts_with(&format!("{}:2:1: \"metrics\" is node-local", dir.join("b.yaml").display())),
        "{message}"
    );
    assert!(
        lines[1].starts_with(&format!("{}:2:1: \"node\" is node-local", dir.join("c.yaml").display())),
        "{message}"
    );
    assert!(!dir.join("bundles").exists(), "nothing written");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn drop_ins_a_bundle_cannot_carry_are_refused() {
    let dir = scratch("uncarried");
    fs::write(dir.join("a b.yaml"), "{}\n").unwrap();
    let (reason, message) = described(create(&dir, &dir.join("bundles")));
    assert_eq!(reason, "not_yaml");
    assert!(message.contains("a b.yaml"), "{message}");
    fs::remove_file(dir.join("a b.yaml")).unwrap();
    fs::write(dir.join("a.yaml"), "services: [\n").unwrap();
    assert_eq!(described(create(&dir, &dir.join("bundles"))).0, "not_yaml");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn verify_checks_the_name_the_hash_and_the_content() {
    let dir = scratch("verify");
    fs::write(dir.join("web.yaml"), WEB).unwrap();
    let bundle = create(&dir, &dir.join("bundles")).expect("create");
    let verified = verify(&bundle.path, &Limits::default()).expect("verifies");
    assert_eq!(
        (verified.sha256.as_str(), verified.files),
        (bundle.sha256.as_str(), vec![file("web.yaml", WEB)])
    );

    let mut bytes = fs::read(&bundle.path).unwrap();
    let flipped = bytes.len() / 2;
    bytes[flipped] ^= 0x20;
    fs::write(&bundle.path, &bytes).unwrap();
    let (reason, message) = described(verify(&bundle.path, &Limits::default()));
    assert_eq!(reason, "hash_mismatch");
    assert!(message.contains(&bundle.sha256), "{message}");

    let renamed = dir.join("web.tar.gz");
    fs::write(&renamed, encode(&[])).unwrap();
    assert_eq!(described(verify(&renamed, &Limits::default())).0, "malformed");
    let missing = dir.join(file_name(&"0".repeat(64)));
    assert_eq!(described(verify(&missing, &Limits::default())).0, "io");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn extract_writes_the_files_into_a_new_directory() {
    let dir = scratch("extract");
    let bytes = encode(&[file("b.yaml", DNS), file("a.yaml", WEB)]);
    let into = dir.join("incoming");
    let names = extract(&bytes, &sha256_hex(&bytes), &into, &Limits::default()).expect("extracts");
    assert_eq!(names, ["a.yaml", "b.yaml"]);
    assert_eq!(fs::read_to_string(into.join("a.yaml")).unwrap(), WEB);
    assert_eq!((mode(&into), mode(&into.join("b.yaml"))), (0o755, 0o644));
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn extract_refuses_a_wrong_hash_before_anything_else() {
    let dir = scratch("extract-hash");
    let into = dir.join("incoming");
    let garbage = b"not even gzip";
    let (reason, _) = described(extract(garbage, &"0".repeat(64), &into, &Limits::default()));
    assert_eq!(reason, "hash_mismatch", "the hash is checked before parsing");
    let bytes = encode(&[file("a.yaml", WEB)]);
    let (reason, _) = described(extract(&bytes, &sha256_hex(b"other"), &into, &Limits::default()));
    assert_eq!(reason, "hash_mismatch");
    assert!(!into.exists());
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn extract_refuses_an_existing_directory_and_leaves_it_alone() {
    let dir = scratch("extract-exists");
    let into = dir.join("incoming");
    fs::create_dir(&into).unwrap();
    fs::write(into.join("a.yaml"), "mine\n").unwrap();
    let bytes = encode(&[file("a.yaml", WEB)]);
    let (reason, message) = described(extract(&bytes, &sha256_hex(&bytes), &into, &Limits::default()));
    assert_eq!(reason, "io");
    assert!(message.starts_with(&format!("creating {}", into.display())), "{message}");
    assert_eq!(fs::read_to_string(into.join("a.yaml")).unwrap(), "mine\n");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_failure_while_writing_leaves_nothing_behind() {
    let dir = scratch("extract-fail");
    let into = dir.join("incoming");
    // Two files of one name: decode refuses that, so only a write failure can stop the second.
    let error = write_into(&into, &[file("a.yaml", WEB), file("a.yaml", DNS)]).unwrap_err();
    assert_eq!(error.reason(), "io");
    assert!(!into.exists(), "the directory and the first file are removed");
    let bad = encode(&[]);
    let (reason, _) = described(extract(
        &bad[..bad.len() - 1],
        &sha256_hex(&bad[..bad.len() - 1]),
        &into,
        &Limits::default(),
    ));
    assert_eq!(reason, "malformed");
    assert!(!into.exists(), "a bundle that does not decode creates nothing");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn validate_with_names_bundle_files_inside_the_bundle() {
    let local = vec![Source::new("/etc/libraflux/config.yaml", format!("node:\n  name: lb-b\n{WEB}"))];
    let origin = Path::new("/var/lib/libraflux/bundles/bundle-x.tar.gz");
    let config = validate_with(local.clone(), &[file("dns.yaml", DNS)], origin).expect("valid");
    assert_eq!((config.node.name.as_str(), config.desired.len()), ("lb-b", 1));

    let errors = validate_with(local.clone(), &[file("web.yaml", WEB)], origin).unwrap_err();
    let text = errors.to_string();
    assert!(
        text.starts_with(&format!(
            "{}:web.yaml:2:11: service name \"web\" is already used",
            origin.display()
        )),
        "{text}"
    );

    let errors =
        validate_with(local, &[file("z.yaml", "node:\n  name: lb-a\n"), file("a.yaml", "x: 1\n")], origin)
            .unwrap_err();
    let places: Vec<String> = errors.iter().map(|error| error.to_string()).collect();
    assert_eq!(places.len(), 3, "{places:#?}");
    assert!(places[0].starts_with(&format!("{}:a.yaml:1:1: unknown key", origin.display())), "{places:#?}");
    assert!(places[1].starts_with(&format!("{}:z.yaml:1:1:", origin.display())), "{places:#?}");
    assert!(places.iter().any(|place| place.contains("\"node\" is node-local")), "{places:#?}");
}
