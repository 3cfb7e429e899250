//! The command line's contract on the host (no IPVS needed): exit codes for usage and config
//! errors, generated completions and man page that the shells and man accept, and config bundles.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

fn libraflux(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(libraflux_tests::libraflux_bin()).args(args).output().expect("run libraflux");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_usage_error_exits_2() {
    let (code, _, stderr) = libraflux(&["apply", "--no-such-flag"]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn an_invalid_config_exits_65_with_every_error_located() {
    let dir = std::env::temp_dir().join(format!("libraflux-cli-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    fs::write(&path, "services:\n  - name: web\n    protocol: tcp\n    vip: 10.0.0.300\n    port: 0\n    scheduler: nope\n").unwrap();
    let (code, _, stderr) = libraflux(&["validate", "-c", &path.to_string_lossy()]);
    assert_eq!(code, 65, "{stderr}");
    let located = stderr.lines().filter(|line| line.starts_with(&format!("{}:", path.display()))).count();
    assert!(located >= 3, "every error as file:line:col:\n{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    fs::remove_dir_all(&dir).unwrap();
}

/// `libraflux status --output json | head`: a reader that leaves ends a reporting command the
/// way it ends `cat`, by SIGPIPE, not with a panic on EPIPE and exit 101.
#[test]
fn a_report_into_a_closed_pipe_ends_by_sigpipe_without_a_panic() {
    use std::os::unix::process::ExitStatusExt as _;
    for args in [&["schema"][..], &["completions", "bash"], &["manpage"]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let output = Command::new(libraflux_tests::libraflux_bin())
            .args(args)
            .stdout(writer)
            .output()
            .expect("run libraflux");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.signal(), Some(libc::SIGPIPE), "{args:?}: {:?}\n{stderr}", output.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn the_man_page_is_roff_for_section_8_and_lists_the_commands() {
    let (code, page, stderr) = libraflux(&["manpage"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(page.contains(".TH libraflux 8"), "{page}");
    for command in ["apply", "drain", "daemon", "status"] {
        assert!(page.contains(command), "the man page lists {command}");
    }
}

#[test]
fn bash_completions_parse_and_know_the_commands() {
    let (code, script, stderr) = libraflux(&["completions", "bash"]);
    assert_eq!(code, 0, "{stderr}");
    for command in ["validate", "apply", "preflight", "drain", "undrain", "daemon"] {
        assert!(script.contains(command), "completions know {command}");
    }
    let path = std::env::temp_dir().join(format!("libraflux-completions-{}.bash", std::process::id()));
    fs::write(&path, &script).unwrap();
    let checked = Command::new("bash").arg("-n").arg(&path).output().expect("bash");
    assert!(checked.status.success(), "bash -n: {}", String::from_utf8_lossy(&checked.stderr));
    fs::remove_file(&path).unwrap();
}

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("libraflux-cli-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

const NODE: &str = "node:\n  name: lb-a\nservices:\n  - name: web\n    protocol: tcp\n    vip: 192.0.2.1\n    port: 80\n    scheduler: rr\n    health: { type: none }\n    backends:\n      - address: 198.51.100.1\n";
const DNS: &str = "services:\n  - name: dns\n    protocol: udp\n    vip: 192.0.2.53\n    port: 53\n    scheduler: rr\n    health: { type: none }\n    backends:\n      - address: 198.51.100.53\n";
const IGNORE: &str = "ignore:\n  - 192.0.2.99\n";

/// A configuration directory: config.yaml, then `drop_ins` written into config.d in that order.
fn config_dir(dir: &Path, drop_ins: &[(&str, &str)]) -> PathBuf {
    fs::create_dir_all(dir.join("config.d")).unwrap();
    fs::write(dir.join("config.yaml"), NODE).unwrap();
    for (name, text) in drop_ins {
        fs::write(dir.join("config.d").join(name), text).unwrap();
    }
    dir.to_owned()
}

/// `bundle create` with `--output json`: the exit code, the JSON and stderr.
fn bundle_create(config: &Path, state: &Path) -> (i32, serde_json::Value, String) {
    let (code, stdout, stderr) = libraflux(&[
        "bundle",
        "create",
        "-c",
        &config.to_string_lossy(),
        "--state-dir",
        &state.to_string_lossy(),
        "--output",
        "json",
    ]);
    (code, serde_json::from_str(&stdout).unwrap_or_default(), stderr)
}

fn bundle_verify(bundle: &Path, config: &Path) -> (i32, String, String) {
    libraflux(&["bundle", "verify", &bundle.to_string_lossy(), "-c", &config.to_string_lossy()])
}

#[test]
fn bundle_create_is_deterministic_and_verify_checks_the_hash() {
    let dir = scratch("bundle");
    let one = config_dir(&dir.join("one"), &[("10-ignore.yaml", IGNORE), ("20-dns.yaml", DNS)]);
    let two = config_dir(&dir.join("two"), &[("20-dns.yaml", DNS), ("10-ignore.yaml", IGNORE)]);
    let file = fs::File::options().write(true).open(two.join("config.d/20-dns.yaml")).unwrap();
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(86_400)).unwrap();
    fs::set_permissions(two.join("config.d/10-ignore.yaml"), fs::Permissions::from_mode(0o600)).unwrap();

    let (code, first, stderr) = bundle_create(&one, &dir.join("state-one"));
    assert_eq!(code, 0, "{stderr}");
    let (code, second, stderr) = bundle_create(&two, &dir.join("state-two"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(first["sha256"], second["sha256"]);
    assert_eq!(first["files"], serde_json::json!(["10-ignore.yaml", "20-dns.yaml"]));
    let (path_one, path_two) =
        (PathBuf::from(first["path"].as_str().unwrap()), PathBuf::from(second["path"].as_str().unwrap()));
    assert_eq!(path_one.file_name(), path_two.file_name());
    assert_eq!(path_one.parent().unwrap(), dir.join("state-one/bundles"));
    let bytes = fs::read(&path_one).unwrap();
    assert_eq!(bytes, fs::read(&path_two).unwrap());
    assert_eq!(first["bytes"], bytes.len());

    let (code, stdout, stderr) = bundle_verify(&path_one, &one);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("valid: 2 services, 2 backends"), "{stdout}");

    let flipped = dir.join("flipped");
    fs::create_dir(&flipped).unwrap();
    let copy = flipped.join(path_one.file_name().unwrap());
    let mut damaged = bytes.clone();
    damaged[bytes.len() / 2] ^= 1;
    fs::write(&copy, damaged).unwrap();
    let (code, _, stderr) = bundle_verify(&copy, &one);
    assert_eq!(code, 65, "{stderr}");
    assert!(stderr.contains("hash"), "{stderr}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bundle_create_refuses_a_node_local_section_at_its_place() {
    let dir = scratch("bundle-local");
    let config = config_dir(
        &dir.join("etc"),
        &[("20-metrics.yaml", "services: []\n\nmetrics:\n  listen: 127.0.0.1:9999\n")],
    );
    let (code, _, stderr) = bundle_create(&config, &dir.join("state"));
    assert_eq!(code, 65, "{stderr}");
    let place =
        format!("{}:3:1: \"metrics\" is node-local", config.join("config.d/20-metrics.yaml").display());
    assert!(stderr.contains(&place), "{stderr}");
    assert!(!dir.join("state/bundles").exists(), "nothing written");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bundle_create_of_an_invalid_config_or_a_single_file_writes_nothing() {
    let dir = scratch("bundle-invalid");
    let config = config_dir(&dir.join("etc"), &[("20-dns.yaml", "services:\n  - name: dns\n    port: 0\n")]);
    let (code, _, stderr) = bundle_create(&config, &dir.join("state"));
    assert_eq!(code, 65, "{stderr}");
    assert!(stderr.contains(&format!("{}:", config.join("config.d/20-dns.yaml").display())), "{stderr}");
    let (code, _, stderr) = bundle_create(&config.join("config.yaml"), &dir.join("state"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no config.d"), "{stderr}");
    assert!(!dir.join("state").exists(), "nothing written");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bundle_verify_validates_the_bundle_with_this_nodes_config() {
    let dir = scratch("bundle-with");
    // The primary's config.d has a service the secondary's config.yaml already defines.
    let primary =
        config_dir(&dir.join("primary"), &[("web.yaml", &NODE.replace("node:\n  name: lb-a\n", ""))]);
    fs::write(primary.join("config.yaml"), "node:\n  name: lb-a\n").unwrap();
    let (code, created, stderr) = bundle_create(&primary, &dir.join("state"));
    assert_eq!(code, 0, "{stderr}");
    let bundle = PathBuf::from(created["path"].as_str().unwrap());
    let secondary = config_dir(&dir.join("secondary"), &[]);
    let (code, _, stderr) = bundle_verify(&bundle, &secondary);
    assert_eq!(code, 65, "{stderr}");
    let inside = format!("{}:web.yaml:", bundle.display());
    let duplicate = "service name \"web\" is already used";
    assert!(stderr.lines().any(|line| line.starts_with(&inside) && line.contains(duplicate)), "{stderr}");
    fs::remove_dir_all(&dir).unwrap();
}
