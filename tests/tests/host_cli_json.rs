//! `--output json` of the commands that need no IPVS and no daemon, as docs/configuration.md and
//! docs/snapshots.md describe the documents; and the commands that need a daemon, when there is
//! none: nothing on stdout, exit 69. (`preflight` reaches IPVS, `status` and `drain` a daemon:
//! their documents are tested in the VM, tests/tests/vm/apply.rs and control.rs.)

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use libraflux::{
    ipvs::Timeouts,
    model::{Destination, Forwarding, Service, ServiceKey},
    snapshot::{Snapshot, Store},
};
use serde_json::{Value, json};

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("not JSON ({err}):\n{}\n{}", self.stdout, self.stderr))
    }
}

fn libraflux(args: &[&str]) -> Ran {
    let output = Command::new(libraflux_tests::libraflux_bin())
        .args(args)
        .args(["--control-socket", "/nonexistent/libraflux-test.sock"])
        .output()
        .expect("run libraflux");
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("libraflux-json-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

const VALID: &str = "node:\n  name: lb-a\nservices:\n  - name: echo\n    protocol: udp\n    vip: 192.0.2.1\n    \
                     port: 7\n    scheduler: rr\n    health: { type: udp_echo, payload: ping }\n    backends:\n      \
                     - address: 198.51.100.1\n      - address: 198.51.100.2\n";

#[test]
fn validate_json_of_a_valid_configuration_counts_and_carries_the_warnings() {
    let dir = scratch("valid");
    let path = dir.join("config.yaml");
    fs::write(&path, VALID).unwrap();
    let ran = libraflux(&["validate", "-c", &text(&path), "--output", "json"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.stderr, "", "warnings are in the document, not on stderr");
    let document = ran.json();
    let warning = document["warnings"][0].clone();
    assert_eq!(
        document,
        json!({
            "valid": true,
            "files": [text(&path)],
            "services": 1,
            "backends": 2,
            "errors": [],
            "warnings": [warning],
        })
    );
    assert_eq!(
        (&warning["file"], &warning["line"], &warning["column"]),
        (&json!(text(&path)), &json!(9), &json!(21))
    );
    assert!(warning["message"].as_str().unwrap().contains("udp_echo only proves"), "{warning}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn validate_json_of_an_invalid_configuration_lists_every_error_and_exits_65() {
    let dir = scratch("invalid");
    fs::create_dir(dir.join("config.d")).unwrap();
    fs::write(dir.join("config.yaml"), "node:\n  name: lb-a\n  zone: x\n").unwrap();
    fs::write(dir.join("config.d/10-web.yaml"), "services:\n  - name: web\n    port: 0\n").unwrap();
    let ran = libraflux(&["validate", "-c", &text(&dir), "--output", "json"]);
    assert_eq!(ran.code, 65, "{}", ran.stderr);
    assert!(ran.stderr.starts_with("error: 6 errors in the configuration"), "{}", ran.stderr);
    let document = ran.json();
    let files = [text(&dir.join("config.yaml")), text(&dir.join("config.d/10-web.yaml"))];
    assert_eq!(document["valid"], false);
    assert_eq!(document["files"], json!(files));
    assert_eq!(
        (&document["services"], &document["backends"], &document["warnings"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    let errors = document["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 6, "{document:#}");
    assert_eq!(
        errors[0],
        json!({
            "file": files[0],
            "line": 3,
            "column": 3,
            "message": "unknown key \"zone\" in node; expected one of: name, interface, expected_connections",
        })
    );
    assert!(
        errors[1..].iter().all(|error| error["file"] == files[1] && error["line"].is_u64()),
        "{document:#}"
    );

    // A file that cannot be read: an error without a position.
    let missing = dir.join("missing.yaml");
    let ran = libraflux(&["validate", "-c", &text(&missing), "--output", "json"]);
    assert_eq!(ran.code, 65, "{}", ran.stderr);
    let error = &ran.json()["errors"][0];
    assert_eq!(
        (&error["file"], &error["line"], &error["column"]),
        (&json!(text(&missing)), &Value::Null, &Value::Null)
    );
    fs::remove_dir_all(&dir).unwrap();
}

fn snapshot(node: &str, backends: &[&str]) -> Snapshot {
    let key: ServiceKey = "tcp:192.0.2.1:80".parse().unwrap();
    let destinations = backends.iter().map(|b| Destination::new(b.parse().unwrap(), 1, Forwarding::Nat));
    let services = BTreeMap::from([(key, Service::new(key, "rr").with_destinations(destinations))]);
    let timeouts = Timeouts { tcp: 900, tcp_fin: 120, udp: 300 };
    Snapshot::new(node, "2026-11-25T22:15:00Z".to_owned(), timeouts, &services)
}

#[test]
fn snapshot_list_and_show_json_describe_the_files() {
    let dir = scratch("snapshots");
    let config = dir.join("config.yaml");
    fs::write(&config, "node:\n  name: lb-a\n").unwrap();
    let store_dir = dir.join("snapshots");
    let store = Store::new(&store_dir);
    let one = snapshot("lb-a", &["198.51.100.1:80", "198.51.100.2:80"]);
    store.write(&"before-upgrade".parse().unwrap(), &one, false).unwrap();
    store.write(&"empty".parse().unwrap(), &snapshot("lb-b", &[]), false).unwrap();
    fs::write(store_dir.join("broken.json"), "{}").unwrap();
    let common = ["--dir", &text(&store_dir), "-c", &text(&config), "--output", "json"];

    let ran = libraflux(&[&["snapshot", "list"][..], &common].concat());
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let document = ran.json();
    assert_eq!(document["dir"], text(&store_dir));
    let listed = document["snapshots"].as_array().unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["before-upgrade", "broken", "empty"]);
    assert_eq!(
        listed[0],
        json!({
            "name": "before-upgrade",
            "path": text(&store_dir.join("before-upgrade.json")),
            "node": "lb-a",
            "created_at": "2026-11-25T22:15:00Z",
            "services": 1,
            "destinations": 2,
            "checksum": one.checksum,
        })
    );
    assert_eq!(listed[1].as_object().unwrap().len(), 2, "name and error: {}", listed[1]);
    assert!(listed[1]["error"].as_str().unwrap().contains("corrupt"), "{}", listed[1]);

    // show: the file's own document, by NAME or --name NAME.
    let file: Value =
        serde_json::from_slice(&fs::read(store_dir.join("before-upgrade.json")).unwrap()).unwrap();
    for name in [&["before-upgrade"][..], &["--name", "before-upgrade"]] {
        let ran = libraflux(&[&["snapshot", "show"][..], name, &common].concat());
        assert_eq!(ran.code, 0, "{}", ran.stderr);
        assert_eq!(ran.json(), file);
    }
    assert_eq!(file["services"][0]["destinations"].as_array().unwrap().len(), 2);
    let ran = libraflux(&[&["snapshot", "show", "--name", "broken"][..], &common].concat());
    assert_eq!((ran.code, ran.stdout.as_str()), (65, ""), "{}", ran.stderr);
    fs::remove_dir_all(&dir).unwrap();
}

/// The roadmap's `snapshot restore --name N` reaches the store (here: no such snapshot, exit 1)
/// like `snapshot restore N`; both together are a usage error.
#[test]
fn snapshot_restore_takes_the_name_either_way() {
    let dir = scratch("restore");
    let config = dir.join("config.yaml");
    fs::write(&config, "node:\n  name: lb-a\n").unwrap();
    let common = ["--dir", &text(&dir), "-c", &text(&config), "--dry-run"];
    for name in [&["--name", "before-upgrade"][..], &["before-upgrade"]] {
        let ran = libraflux(&[&["snapshot", "restore"][..], name, &common].concat());
        assert_eq!(ran.code, 1, "{}", ran.stderr);
        assert!(ran.stderr.contains("snapshot before-upgrade not found"), "{}", ran.stderr);
    }
    let ran = libraflux(&[&["snapshot", "restore", "a", "--name", "b"][..], &common].concat());
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn daemon_commands_print_no_json_without_a_daemon() {
    for args in [
        &["drain", "192.0.2.10:80", "--output", "json"][..],
        &["drain", "192.0.2.10:80", "--wait", "--output", "json"],
        &["undrain", "192.0.2.10:80", "--output", "json"],
    ] {
        let ran = libraflux(args);
        assert_eq!((ran.code, ran.stdout.as_str()), (69, ""), "{args:?}: {}", ran.stderr);
        assert!(ran.stderr.contains("no LibraFlux daemon answers"), "{}", ran.stderr);
    }
}
