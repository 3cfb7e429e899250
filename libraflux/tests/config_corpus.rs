//! The config corpus. Each `fixtures/config/bad/NAME.yaml` (or directory `bad/NAME/`, loaded like
//! `-c DIR`) must fail with exactly the lines of `bad/NAME.expected`, so every message and
//! position is pinned; every `good/` entry and the documented example must validate.
//! `UPDATE_GOLDEN=1 cargo test --test config_corpus` rewrites the `.expected` files.

use std::{
    fs,
    path::{Path, PathBuf},
};

use libraflux::{
    config::{self, Check, Config},
    model::{Forwarding, ServiceKey},
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

/// The corpus entries of `dir`: its `*.yaml` files and subdirectories, by name.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_dir() || path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    entries.sort();
    entries
}

fn load(path: &Path) -> Result<Config, String> {
    let root = format!("{}/", fixtures().display());
    config::load(Some(path)).map_err(|errors| format!("{errors}\n").replace(&root, ""))
}

#[test]
fn every_bad_config_reports_exactly_its_expected_errors() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    let cases = entries(&fixtures().join("bad"));
    assert!(cases.len() >= 20, "the bad corpus shrank to {} cases", cases.len());
    for case in cases {
        let expected_path = case.with_extension("expected");
        let actual = match load(&case) {
            Ok(_) => format!("{} validated, but it is in the bad corpus\n", case.display()),
            Err(errors) => errors,
        };
        if update {
            fs::write(&expected_path, &actual).expect("write .expected");
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            mismatches.push(format!("{}:\n--- expected\n{expected}--- actual\n{actual}", case.display()));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn every_good_config_validates() {
    for case in entries(&fixtures().join("good")) {
        if let Err(errors) = load(&case) {
            panic!("{} should validate:\n{errors}", case.display());
        }
    }
}

#[test]
fn the_documented_example_validates_into_the_described_services() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/config.yaml");
    let config = load(&example).unwrap_or_else(|errors| panic!("docs/examples/config.yaml:\n{errors}"));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(config.node.name, "lb-a");
    assert_eq!(config.node.interfaces, ["eth0"]);
    assert_eq!(config.snapshots.dir, Path::new("/var/lib/libraflux/snapshots"));
    assert_eq!(config.snapshots.keep, 20);
    let keys: Vec<String> = config.desired.keys().map(ToString::to_string).collect();
    assert_eq!(
        keys,
        [
            "tcp:10.96.0.10:53",
            "tcp:10.96.0.10:443",
            "udp:10.96.0.10:53",
            "udp:10.96.0.11:5060",
            "udp:[2001:db8::123]:123",
            "fwmark:17"
        ]
    );
    let web: ServiceKey = "tcp:10.96.0.10:443".parse().expect("key");
    let web_service = &config.desired[&web];
    assert_eq!(web_service.persistence, Some(300));
    let ports: Vec<u16> = web_service.destinations.keys().map(|key| key.port).collect();
    assert_eq!(ports, [443, 443, 8443], "backend ports default to the service port");
    let sip: ServiceKey = "udp:10.96.0.11:5060".parse().expect("key");
    assert!(config.desired[&sip].destinations.values().all(|dest| dest.forwarding == Forwarding::Dr));
    assert!(
        matches!(config.settings[&web].health.check, Check::Http { ref path, expect_status: 200 } if path == "/healthz")
    );
    assert!(config.ignore.covers(&"udp:198.51.100.99:53".parse().expect("key")));
}

#[test]
fn drop_ins_are_merged_and_defaults_filled() {
    let config = load(&fixtures().join("good/split")).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(config.node.interfaces, ["eth0", "eth1"]);
    assert_eq!(config.limits.max_services_created, 3);
    assert_eq!(config.limits.max_services_deleted, 10, "unset limits keep their defaults");
    assert_eq!(config.metrics, config::Metrics::default());
    assert_eq!(config.desired.len(), 2);
    assert_eq!(config.settings.values().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["web", "dns"]);
}

#[test]
fn udp_echo_checks_and_services_without_backends_are_warned_about() {
    let config = load(&fixtures().join("good/fwmark_v6.yaml")).unwrap_or_else(|errors| panic!("{errors}"));
    let warnings: Vec<String> = config.warnings.iter().map(|w| w.message.clone()).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("has no backends"), "{warnings:?}");
    assert!(warnings[1].contains("udp_echo only proves that something echoes"), "{warnings:?}");
    let derived: ServiceKey = "fwmark:43:v6".parse().expect("key");
    assert!(config.desired.contains_key(&derived), "family derived from the first backend");
}

#[test]
fn max_connections_becomes_the_upper_threshold() {
    let config =
        load(&fixtures().join("good/max_connections.yaml")).unwrap_or_else(|errors| panic!("{errors}"));
    let smtp: ServiceKey = "tcp:192.0.2.25:25".parse().expect("key");
    let thresholds: Vec<(u32, u32)> = config.desired[&smtp]
        .destinations
        .values()
        .map(|dest| (dest.upper_threshold, dest.lower_threshold))
        .collect();
    assert_eq!(thresholds, [(500, 0), (0, 0)], "unset means no limit");
}
