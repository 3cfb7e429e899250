//! The daemon's reading side of `source.etcd` against a real etcd (Debian's etcd-server, 3.4,
//! TLS with client certificates) started by each test on loopback: what the daemon starts on
//! (etcd's configuration, the last good one when etcd is down, nothing without either), the
//! follower that reads and watches the prefix (a change, a lost etcd, its return), and a watch
//! from a compacted revision. The daemon itself needs IPVS: tests/tests/vm/etcd_fleet.rs.

use std::{path::PathBuf, time::Duration};

use libraflux::etcd::{
    EtcdError,
    follow::{self, FailReason, Report},
    last_good,
    node::{self, StartError},
    prefix_end,
};
use libraflux_tests::etcd::Etcd;
use tokio::sync::mpsc;

const PREFIX: &str = "/libraflux/fleet/";
const WEB: &str = "services:\n  - name: web\n    protocol: tcp\n    vip: 192.0.2.1\n    port: 80\n    scheduler: wrr\n    backends:\n      - address: 192.0.2.10\n";
/// The most one report of the follower may take: a read, or a backoff (at most 30 s) and a read.
const REPORT_WITHIN: Duration = Duration::from_secs(60);

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("libraflux-etcd-follow-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("config/config.d")).unwrap();
    std::fs::create_dir_all(dir.join("state")).unwrap();
    dir
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// config.yaml with `source.etcd` pointing at `etcd`, and a config.d of the node's own that a
/// fleet node does not run.
fn configure(etcd: &Etcd, dir: &std::path::Path) -> PathBuf {
    let config = dir.join("config");
    let tls = etcd.tls(Some("client"));
    let yaml = format!(
        "node: {{ name: lb-a }}\nsource:\n  etcd:\n    endpoints: [{}]\n    prefix: {PREFIX}\n    tls: {{ ca: {}, cert: {}, key: {} }}\n",
        etcd.url,
        tls.ca.display(),
        tls.cert.unwrap().display(),
        tls.key.unwrap().display()
    );
    std::fs::write(config.join("config.yaml"), yaml).unwrap();
    std::fs::write(
        config.join("config.d/own.yaml"),
        WEB.replace("name: web", "name: own").replace("80", "81"),
    )
    .unwrap();
    config
}

#[test]
fn the_daemon_starts_on_etcd_then_on_the_last_good_configuration_and_never_on_nothing() {
    let dir = scratch("start");
    let mut etcd = Etcd::start(&dir);
    let config = configure(&etcd, &dir);
    let state = dir.join("state");
    let runtime = runtime();
    runtime.block_on(etcd.client().put(format!("{PREFIX}web.yaml").as_bytes(), WEB.as_bytes())).unwrap();

    let (loaded, started) =
        runtime.block_on(node::at_start(Some(&config), &state)).unwrap().expect("a fleet node");
    let services: Vec<String> = loaded.desired.keys().map(ToString::to_string).collect();
    assert_eq!(services, ["tcp:192.0.2.1:80"], "etcd's web, not the node's own config.d");
    assert_eq!(started.from_last_good, None);
    assert_eq!(started.in_force.files.len(), 1);
    // What the daemon writes once it is in force.
    last_good::save(&state, PREFIX, &started.in_force).unwrap();

    etcd.stop();
    let (loaded, from_disk) = runtime.block_on(node::at_start(Some(&config), &state)).unwrap().unwrap();
    let why = from_disk.from_last_good.expect("started on the last good configuration");
    assert!(
        why.starts_with("etcd cannot be read: range of \"/libraflux/fleet/\" on https://127.0.0.1:"),
        "{why}"
    );
    assert_eq!(from_disk.in_force, started.in_force);
    assert_eq!(loaded.desired.len(), 1);
    // A reload (SIGHUP) reads the same.
    let reloaded = libraflux::replication::load_config(Some(&config), &state, None).unwrap();
    assert_eq!(reloaded.desired, loaded.desired);

    std::fs::remove_file(state.join(last_good::FILE)).unwrap();
    let err = runtime.block_on(node::at_start(Some(&config), &state)).unwrap_err();
    assert!(matches!(err, StartError::NothingToRun { .. }), "{err}");
    assert!(err.to_string().contains("no last good configuration from etcd"), "{err}");
    let err = libraflux::replication::load_config(Some(&config), &state, None).unwrap_err();
    assert!(err.to_string().contains("no configuration from etcd has been put in force yet"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_follower_reports_what_the_prefix_holds_loses_etcd_and_reads_again_when_it_returns() {
    let dir = scratch("follower");
    let mut etcd = Etcd::start(&dir);
    let runtime = runtime();
    let (reports, mut from) = mpsc::channel(16);
    let _follower = runtime.block_on(async { follow::spawn(etcd.client(), PREFIX.to_owned(), 7, reports) });
    let mut next = || {
        runtime.block_on(async {
            let (tag, report) = tokio::time::timeout(REPORT_WITHIN, from.recv())
                .await
                .expect("a report in time")
                .expect("open");
            assert_eq!(tag, 7);
            report
        })
    };
    let Report::Holds(empty) = next() else { panic!("the first report is a read") };
    assert!(empty.files.is_empty());

    let client = etcd.client();
    runtime.block_on(client.put(format!("{PREFIX}web.yaml").as_bytes(), WEB.as_bytes())).unwrap();
    runtime.block_on(client.put(b"/elsewhere/x.yaml", b"not ours")).unwrap();
    let Report::Holds(changed) = next() else { panic!("a change is reported") };
    let names: Vec<&str> = changed.files.iter().map(|file| file.name.as_str()).collect();
    assert_eq!(names, ["web.yaml"]);
    assert!(changed.revision > empty.revision, "{} after {}", changed.revision, empty.revision);

    etcd.stop();
    let Report::Failed { reason, .. } = next() else { panic!("a lost etcd is reported") };
    assert_eq!(reason, FailReason::Lost);
    etcd.restart();
    // Reads that fail until etcd answers (bounded: the backoff doubles), then the prefix whole.
    let again = (0..10)
        .find_map(|_| match next() {
            Report::Holds(read) => Some(read),
            Report::Failed { reason, .. } => {
                assert_eq!(reason, FailReason::Unreachable);
                None
            }
        })
        .expect("etcd read again");
    assert_eq!(again.sha256, changed.sha256, "the same files after etcd's return");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_watch_from_a_compacted_revision_says_where_the_history_ends() {
    let dir = scratch("compacted");
    let etcd = Etcd::start(&dir);
    let client = etcd.client();
    let runtime = runtime();
    let key = format!("{PREFIX}web.yaml");
    for round in 0..3 {
        runtime.block_on(client.put(key.as_bytes(), format!("# {round}\n").as_bytes())).unwrap();
    }
    let latest = runtime.block_on(client.range(key.as_bytes(), b"")).unwrap().header.revision;
    runtime.block_on(client.compact(latest)).unwrap();
    let err = runtime.block_on(async {
        let mut watch = client.watch(PREFIX.as_bytes(), &prefix_end(PREFIX.as_bytes()), 2).await.unwrap();
        tokio::time::timeout(REPORT_WITHIN, watch.next()).await.expect("an answer in time").unwrap_err()
    });
    assert!(matches!(err, EtcdError::Compacted { revision, .. } if revision == latest), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
