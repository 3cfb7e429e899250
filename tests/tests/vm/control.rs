//! The daemon's control socket on real IPVS: `drain`, `undrain` and `status` go through it and
//! answer with what IPVS shows (cross-checked with `ipvsadm-save`); no daemon is exit 69; peers
//! are checked by their credentials; `apply` hands a configuration to the daemon and reports what
//! it did. The daemon run as its own user, as the systemd unit runs it, is in unit.rs.

use std::{
    os::unix::fs::MetadataExt as _,
    time::{Duration, Instant},
};

use libraflux_tests::{creds::Credentials, sorted_lines};

use super::{
    daemon::{CONFIG, Daemon, SAVED},
    support::Node,
};

/// [`SAVED`] with 10.220.1.2 at weight 0.
fn drained() -> String {
    sorted_lines(&SAVED.replace("10.220.1.2:80 -m -w 5", "10.220.1.2:80 -m -w 0"))
}

pub(super) fn stop(mut daemon: Daemon) {
    daemon.signal(libc::SIGTERM);
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "{status}:\n{}", daemon.log());
}

#[test]
fn drain_undrain_and_status_go_through_the_daemon_and_report_what_ipvs_shows() {
    let node = Node::new();
    let config = node.config("config.yaml", CONFIG);
    let none = node.libraflux(&["drain", "10.220.1.2:80"]);
    none.assert_code(69);
    let expected = format!("no LibraFlux daemon answers on {}", node.socket.display());
    assert!(none.stderr.contains(&expected), "{}", none.stderr);
    node.libraflux(&["undrain", "10.220.1.2:80"]).assert_code(69);
    // A socket file left by a daemon that died: nothing accepts on it.
    drop(std::os::unix::net::UnixListener::bind(&node.socket).unwrap());
    let stale = node.libraflux(&["drain", "10.220.1.2:80"]);
    stale.assert_code(69);
    assert!(stale.stderr.contains("Connection refused"), "{}", stale.stderr);

    let daemon = Daemon::start(&node, &config);
    // One daemon per node: a second one on the same socket stops before it touches anything.
    let (dir, socket) = (node.dir.to_string_lossy(), node.socket.to_string_lossy());
    let daemon_args =
        ["20", &node.bin, "daemon", "-c", &config, "--state-dir", &dir, "--control-socket", &socket];
    let second = node.netns.run("timeout", &daemon_args);
    second.assert_code(1);
    assert!(second.stderr.contains("another LibraFlux daemon answers on"), "{}", second.stderr);
    let drain = node.libraflux(&["drain", "10.220.1.2:80"]);
    drain.assert_code(0);
    assert!(
        drain
            .stdout
            .starts_with("draining 10.220.1.2:80 in tcp:10.220.0.10:80: IPVS shows weight 0; done when"),
        "{}",
        drain.stdout
    );
    // The answer came after the reconcile: IPVS shows it already, no waiting.
    assert_eq!(node.saved(), drained(), "{}", daemon.log());

    let status = node.libraflux(&["status", "--output", "json"]);
    status.assert_code(0);
    let value: serde_json::Value = serde_json::from_str(&status.stdout).expect("status --output json");
    assert_eq!(value["daemon"]["drains"][0]["backend"], "10.220.1.2:80", "{value:#}");
    let backends = value["services"][0]["backends"].as_array().expect("backends");
    let shown: Vec<String> = backends
        .iter()
        .map(|b| format!("-a -t 10.220.0.10:80 -r {} -m -w {}", b["backend"].as_str().unwrap(), b["weight"]))
        .collect();
    let saved = node.saved();
    let from_ipvsadm: Vec<&str> = saved.lines().filter(|line| line.starts_with("-a")).collect();
    assert_eq!(shown, from_ipvsadm, "status and ipvsadm-save disagree");
    let text = node.libraflux(&["status"]);
    text.assert_code(0);
    let line = text.stdout.lines().find(|line| line.contains("10.220.1.2:80")).unwrap_or_default();
    // No connection holds it: the drain may have ended already, and stays at weight 0.
    let state = line.ends_with(", DRAINING") || line.ends_with(", drained (connections_closed)");
    assert!(line.contains("weight 0") && state, "{}", text.stdout);

    let unknown = node.libraflux(&["drain", "10.220.1.9:80"]);
    unknown.assert_code(1);
    assert!(
        unknown.stderr.contains("10.220.1.9:80 is not a backend of any configured service"),
        "{}",
        unknown.stderr
    );
    let last = node.libraflux(&["drain", "10.220.1.1:80"]);
    last.assert_code(3);
    assert!(last.stderr.contains("is the last backend serving"), "{}", last.stderr);
    assert_eq!(node.saved(), drained(), "a refused drain changed IPVS");

    let undrain = node.libraflux(&["undrain", "10.220.1.2:80"]);
    undrain.assert_code(0);
    assert_eq!(undrain.stdout, "undrained 10.220.1.2:80 in tcp:10.220.0.10:80: IPVS shows weight 5\n");
    assert_eq!(node.saved(), sorted_lines(SAVED));
    let again = node.libraflux(&["undrain", "10.220.1.2:80"]);
    again.assert_code(1);
    assert!(again.stderr.contains("10.220.1.2:80 is not being drained"), "{}", again.stderr);

    // A stopped daemon takes its socket with it: no daemon again.
    stop(daemon);
    assert!(!node.socket.exists(), "the daemon left its socket behind");
    node.libraflux(&["drain", "10.220.1.2:80"]).assert_code(69);
    let status = node.libraflux(&["status"]);
    status.assert_code(0);
    assert!(status.stdout.starts_with("daemon: no LibraFlux daemon answers on"), "{}", status.stdout);
}

/// Waits until `done`, at most `within`.
fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

#[test]
fn only_root_the_daemons_user_and_members_of_control_group_may_use_the_socket() {
    let node = Node::new();
    let config = node.config("config.yaml", CONFIG);
    let daemon = Daemon::start(&node, &config);

    // The socket's mode (0660, root:root) keeps nobody out before it can connect.
    let nobody = Credentials::user(65_534, 65_534);
    let refused = node.libraflux_as(&nobody, &["drain", "10.220.1.2:80"]);
    refused.assert_code(77);
    assert!(refused.stderr.contains("permission denied on the control socket"), "{}", refused.stderr);
    // Group root passes the mode; the daemon's check of the peer's credentials does not.
    let root_group = Credentials::user(65_534, 0);
    for args in [&["drain", "10.220.1.2:80"][..], &["status"]] {
        let refused = node.libraflux_as(&root_group, args);
        refused.assert_code(77);
        assert!(
            refused.stderr.contains("uid 65534 (gid 0) may not use the control socket"),
            "{}",
            refused.stderr
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || daemon.log().contains("control socket: refused")),
        "{}",
        daemon.log()
    );
    assert_eq!(node.saved(), sorted_lines(SAVED), "a refused peer changed IPVS");

    // control.group: nogroup (65534), handed to the daemon by apply.
    let with_group = CONFIG.replace("services:", "control:\n  group: nogroup\nservices:");
    std::fs::write(&config, with_group).unwrap();
    node.libraflux(&["apply", "-c", &config]).assert_code(0);
    assert_eq!(std::fs::metadata(&node.socket).unwrap().gid(), 65_534, "the socket's group");
    let member = Credentials::user(1000, 1000).with_groups(&[65_534]);
    let drain = node.libraflux_as(&member, &["drain", "10.220.1.2:80"]);
    drain.assert_code(0);
    assert!(drain.stdout.contains("IPVS shows weight 0"), "{}", drain.stdout);
    assert_eq!(node.saved(), drained());
    let status = node.libraflux_as(&nobody, &["status", "--output", "json"]);
    status.assert_code(0);
    let value: serde_json::Value = serde_json::from_str(&status.stdout).expect("status --output json");
    assert_eq!(value["daemon"]["drains"][0]["backend"], "10.220.1.2:80", "primary group nogroup: {value:#}");
    let outsider = Credentials::user(1000, 1000);
    node.libraflux_as(&outsider, &["undrain", "10.220.1.2:80"]).assert_code(77);
    assert_eq!(node.saved(), drained(), "a refused peer changed IPVS");
    node.libraflux_as(&member, &["undrain", "10.220.1.2:80"]).assert_code(0);
    assert_eq!(node.saved(), sorted_lines(SAVED));
}

#[test]
fn apply_hands_the_configuration_to_the_daemon_and_reports_what_it_did() {
    let node = Node::new();
    let limited = CONFIG.replace("services:", "limits:\n  max_services_created: 1\nservices:");
    let config = node.config("config.yaml", &limited);
    let daemon = Daemon::start(&node, &config);

    // Not the daemon's configuration file: refused, naming it.
    let other = node.config("other.yaml", &limited);
    let refused = node.libraflux(&["apply", "-c", &other]);
    refused.assert_code(3);
    let expected = format!("the daemon runs the configuration in {}", config);
    assert!(refused.stderr.contains(&expected), "{}", refused.stderr);

    // Over a change limit: the daemon refuses the reload whole and says why.
    let two_more = (81..83).fold(limited.clone(), |text, port| {
        format!(
            "{text}  - name: s{port}\n    protocol: tcp\n    vip: 10.220.0.10\n    port: {port}\n    scheduler: rr\n    \
             health:\n      type: none\n    backends:\n      - address: 10.220.1.1\n"
        )
    });
    std::fs::write(&config, &two_more).unwrap();
    let refused = node.libraflux(&["apply", "-c", &config]);
    refused.assert_code(3);
    assert!(refused.stderr.contains("exceeds a change limit"), "{}", refused.stderr);
    assert!(refused.stderr.contains("max_services_created"), "{}", refused.stderr);
    assert_eq!(node.saved(), sorted_lines(SAVED), "a refused handoff changed IPVS");
    node.libraflux(&["apply", "-c", &config, "--immediate"]).assert_code(2);

    // --force: accepted, and in IPVS by the time apply returns.
    let forced = node.libraflux(&["apply", "-c", &config, "--force"]);
    forced.assert_code(0);
    assert!(forced.stdout.contains("create service tcp:10.220.0.10:81 (rr)"), "{}", forced.stdout);
    assert!(forced.stdout.contains("Applied 4 operations."), "{}", forced.stdout);
    let services = node.saved().lines().filter(|line| line.starts_with("-A")).count();
    assert_eq!(services, 3, "{}\n{}", node.saved(), daemon.log());
    let json = node.libraflux(&["apply", "-c", &config, "--output", "json"]);
    json.assert_code(0);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("apply --output json");
    assert_eq!(value["reloaded"]["reconcile"], "no_changes", "{value:#}");
    assert_eq!(value["reloaded"]["services"], 3, "{value:#}");

    // An invalid configuration never reaches the daemon: 65, every error located.
    std::fs::write(&config, two_more.replace("weight: 5", "weight: -5")).unwrap();
    let invalid = node.libraflux(&["apply", "-c", &config]);
    invalid.assert_code(65);
    assert!(invalid.stderr.contains(&format!("{config}:")), "{}", invalid.stderr);

    // SIGHUP still reloads.
    std::fs::write(&config, &limited).unwrap();
    node.libraflux(&["apply", "-c", &config, "--dry-run"]).assert_code(0);
    daemon.signal(libc::SIGHUP);
    assert!(eventually(Duration::from_secs(15), || node.saved() == sorted_lines(SAVED)), "{}", daemon.log());
}

/// `--output json` of the commands that ask the daemon, in the shapes docs/operations.md gives.
#[test]
fn drain_undrain_and_status_answer_in_json() {
    use serde_json::{Value, json};

    let node = Node::new();
    let config = node.config("config.yaml", CONFIG);
    let daemon = Daemon::start(&node, &config);

    let drain = node.libraflux(&["drain", "10.220.1.2:80", "--output", "json"]);
    drain.assert_code(0);
    let value: Value = serde_json::from_str(&drain.stdout).expect("drain --output json");
    let drained_one = &value["drains"][0];
    assert_eq!(value["drains"].as_array().map(Vec::len), Some(1), "{value:#}");
    assert_eq!(drained_one["service"], "tcp:10.220.0.10:80", "{value:#}");
    assert_eq!(drained_one["backend"], "10.220.1.2:80", "{value:#}");
    assert_eq!(drained_one["weight"], 0, "{value:#}");
    assert_eq!(drained_one["remove"], false, "{value:#}");
    assert_eq!(drained_one["rules"]["timeout"], "5m", "the service's default drain.timeout: {value:#}");
    assert!(drained_one["started_unix_ms"].is_u64(), "{value:#}");
    assert!(value.get("ended").is_none(), "{value:#}");
    assert_eq!(node.saved(), drained(), "{}", daemon.log());

    // --wait: no progress lines, one document once the daemon says the drain (which replaces the
    // first one) ended; no connection holds it.
    let waited = node.libraflux(&["drain", "10.220.1.2:80", "--wait", "--output", "json"]);
    waited.assert_code(0);
    let value: Value =
        serde_json::from_str(&waited.stdout).expect("drain --wait --output json: one document");
    assert_eq!(value["drains"][0]["backend"], "10.220.1.2:80", "{value:#}");
    let ended = &value["ended"][0];
    assert_eq!(
        (&ended["service"], &ended["backend"]),
        (&json!("tcp:10.220.0.10:80"), &json!("10.220.1.2:80"))
    );
    assert_eq!(ended["ending"], "connections_closed", "{value:#}");
    assert_eq!(ended["description"], "drained: no connections left", "{value:#}");
    assert!(ended["at_unix_ms"].is_u64(), "{value:#}");

    let status = node.libraflux(&["status", "--output", "json"]);
    status.assert_code(0);
    let value: Value = serde_json::from_str(&status.stdout).expect("status --output json");
    let keys: Vec<&str> = value.as_object().expect("an object").keys().map(String::as_str).collect();
    assert_eq!(keys, ["daemon", "services", "sync"], "no daemon_error when the daemon answers: {value:#}");
    assert_eq!(value["sync"], json!([]), "no sync daemon runs: {value:#}");
    assert_eq!(value["daemon"]["drains"][0]["ended"]["ending"], "connections_closed", "{value:#}");
    let service = &value["services"][0];
    assert_eq!((&service["service"], &service["scheduler"]), (&json!("tcp:10.220.0.10:80"), &json!("wrr")));
    let weights: Vec<(&str, u64)> = service["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| (b["backend"].as_str().unwrap(), b["weight"].as_u64().unwrap()))
        .collect();
    assert_eq!(weights, [("10.220.1.1:80", 5), ("10.220.1.2:80", 0)], "{value:#}");

    let undrain = node.libraflux(&["undrain", "10.220.1.2:80", "--output", "json"]);
    undrain.assert_code(0);
    let value: Value = serde_json::from_str(&undrain.stdout).expect("undrain --output json");
    assert_eq!(
        value,
        json!({ "undrained": [{ "service": "tcp:10.220.0.10:80", "backend": "10.220.1.2:80", "weight": 5 }] })
    );
    assert_eq!(node.saved(), sorted_lines(SAVED));

    // A refusal prints no document: the error on stderr, the exit code.
    let last = node.libraflux(&["drain", "10.220.1.1:80", "--output", "json"]);
    last.assert_code(0);
    let refused = node.libraflux(&["drain", "10.220.1.2:80", "--output", "json"]);
    refused.assert_code(3);
    assert_eq!(refused.stdout, "", "{}", refused.stderr);
    stop(daemon);
}
