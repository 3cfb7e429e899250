//! `libraflux config push|diff` and the library's etcd client against a real etcd (Debian's
//! etcd-server, 3.4) started by each test on loopback, with TLS and client certificates made by
//! openssl: push and read back, diff, validation before anything is written, a client without
//! a valid certificate refused, a push that lost the race to another writer, and a watch.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use libraflux::{
    bundle::BundleFile,
    etcd::{
        Client, EventKind, Op,
        fleet::{self, PushError},
        prefix_end,
    },
};
use libraflux_tests::{Ran, etcd::Etcd, libraflux_bin, pki};

const PREFIX: &str = "/libraflux/fleet/";

const WEB: &str = "services:\n  - name: web\n    protocol: tcp\n    vip: 192.0.2.1\n    port: 80\n    scheduler: wrr\n    backends:\n      - address: 192.0.2.10\n";
const DNS: &str = "services:\n  - name: dns\n    protocol: udp\n    vip: 192.0.2.1\n    port: 53\n    scheduler: rr\n    backends: []\n";

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("libraflux-etcd-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("config/config.d")).unwrap();
    dir
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A configuration directory whose config.yaml points `source.etcd` at `etcd`.
fn configure(etcd: &Etcd) -> PathBuf {
    let dir = etcd.dir.join("config");
    let tls = etcd.tls(Some("client"));
    let yaml = format!(
        "node: {{ name: lb-a }}\nsource:\n  etcd:\n    endpoints: [{}]\n    tls: {{ ca: {}, cert: {}, key: {} }}\n",
        etcd.url,
        tls.ca.display(),
        tls.cert.unwrap().display(),
        tls.key.unwrap().display()
    );
    std::fs::write(dir.join("config.yaml"), yaml).unwrap();
    std::fs::write(dir.join("config.d/web.yaml"), WEB).unwrap();
    std::fs::write(dir.join("config.d/dns.yaml"), DNS).unwrap();
    dir
}

fn libraflux(config: &Path, args: &[&str]) -> Ran {
    let output = Command::new(libraflux_bin()).args(args).arg("-c").arg(config).output().unwrap();
    Ran::from(output)
}

/// The prefix as etcd holds it: revision, and file name -> content.
fn stored(client: &Client) -> (i64, Vec<(String, String)>) {
    let stored = runtime().block_on(fleet::read(client, PREFIX)).unwrap();
    let files =
        stored.files.into_iter().map(|(name, file)| (name, String::from_utf8(file.bytes).unwrap())).collect();
    (stored.revision, files)
}

fn files_of(config: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(config.join("config.d"))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.file_name().into_string().unwrap(), std::fs::read_to_string(entry.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn push_reads_back_and_diff_shows_local_edits() {
    let etcd = Etcd::start(&scratch("push"));
    let config = configure(&etcd);
    let client = etcd.client();

    let first = libraflux(&config, &["config", "diff"]);
    first.assert_code(1);
    assert!(
        first.stdout.contains("  added   dns.yaml (") && first.stdout.contains("  added   web.yaml ("),
        "{first:?}"
    );

    libraflux(&config, &["config", "push"]).assert_code(0);
    let (pushed_at, files) = stored(&client);
    assert_eq!(files, files_of(&config), "etcd holds each config.d file under its name, byte for byte");
    let same = libraflux(&config, &["config", "diff"]);
    same.assert_code(0);
    assert!(same.stdout.starts_with("No changes"), "{same:?}");
    libraflux(&config, &["config", "push"]).assert_code(0);
    assert_eq!(stored(&client).0, pushed_at, "a push of the same files writes nothing");

    std::fs::write(config.join("config.d/web.yaml"), WEB.replace("wrr", "rr")).unwrap();
    std::fs::remove_file(config.join("config.d/dns.yaml")).unwrap();
    std::fs::write(config.join("config.d/zz.yaml"), "ignore: [192.0.2.99]\n").unwrap();
    let diff = libraflux(&config, &["config", "diff"]);
    diff.assert_code(1);
    for expected in [
        "  removed dns.yaml (",
        "  changed web.yaml (",
        "    -    scheduler: wrr\n",
        "    +    scheduler: rr\n",
        "  added   zz.yaml (",
    ] {
        assert!(diff.stdout.contains(expected), "{expected:?} in\n{}", diff.stdout);
    }
    let json = libraflux(&config, &["config", "diff", "--output", "json"]);
    json.assert_code(1);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let changes: Vec<(&str, &str)> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| (change["file"].as_str().unwrap(), change["change"].as_str().unwrap()))
        .collect();
    assert_eq!(changes, [("dns.yaml", "removed"), ("web.yaml", "changed"), ("zz.yaml", "added")]);
    assert_eq!(report["read_revision"], pushed_at);

    // The command line's options instead of source.etcd.
    let tls = etcd.tls(Some("client"));
    let explicit = [
        "config",
        "push",
        "--etcd-endpoint",
        &etcd.url,
        "--ca",
        tls.ca.to_str().unwrap(),
        "--cert",
        tls.cert.as_ref().unwrap().to_str().unwrap(),
        "--key",
        tls.key.as_ref().unwrap().to_str().unwrap(),
        "--output",
        "json",
    ];
    let pushed = libraflux(&config, &explicit);
    pushed.assert_code(0);
    let report: serde_json::Value = serde_json::from_str(&pushed.stdout).unwrap();
    let (revision, files) = stored(&client);
    assert_eq!(files, files_of(&config), "the removed file's key is deleted, the others written");
    assert_eq!(report["revision"], revision);
    assert_eq!(revision, pushed_at + 1, "one transaction");
    libraflux(&config, &["config", "diff"]).assert_code(0);
}

#[test]
fn nothing_is_written_for_an_invalid_config_or_a_client_without_a_valid_certificate() {
    let dir = scratch("refused");
    let etcd = Etcd::start(&dir);
    let config = configure(&etcd);
    let client = etcd.client();
    libraflux(&config, &["config", "push"]).assert_code(0);
    let before = stored(&client);

    std::fs::write(config.join("config.d/bad.yaml"), "services:\n  - name: bad\n    protocol: tcp\n    vip: 192.0.2.2\n    port: 80\n    scheduler: fastest\n    backends: []\n").unwrap();
    let invalid = libraflux(&config, &["config", "push"]);
    invalid.assert_code(65);
    assert!(invalid.stderr.contains("config.d/bad.yaml:6:16: "), "{invalid:?}");
    assert_eq!(stored(&client), before, "etcd is unchanged");
    std::fs::write(config.join("config.d/bad.yaml"), "metrics:\n  listen: 127.0.0.1:1\n").unwrap();
    let node_local = libraflux(&config, &["config", "push"]);
    node_local.assert_code(65);
    assert!(node_local.stderr.contains("config.d/bad.yaml:1:1: \"metrics\" is node-local"), "{node_local:?}");
    assert_eq!(stored(&client), before, "etcd is unchanged");
    std::fs::remove_file(config.join("config.d/bad.yaml")).unwrap();

    // A change to push, by clients etcd must refuse.
    std::fs::write(config.join("config.d/web.yaml"), WEB.replace("wrr", "rr")).unwrap();
    pki::make_ca(&dir, "other");
    pki::issue(&dir, "other", "stranger", "clientAuth");
    let ca = etcd.tls(None).ca;
    let endpoint = ["--etcd-endpoint", etcd.url.as_str(), "--ca", ca.to_str().unwrap()];
    let stranger = [dir.join("stranger.pem"), dir.join("stranger.key")];
    let stranger = ["--cert", stranger[0].to_str().unwrap(), "--key", stranger[1].to_str().unwrap()];
    for (who, extra) in [("no certificate", &[][..]), ("another CA's certificate", &stranger[..])] {
        let args: Vec<&str> = ["config", "push"].iter().chain(&endpoint).chain(extra).copied().collect();
        let refused = libraflux(&config, &args);
        refused.assert_code(1);
        let expected = format!("error: range of \"{PREFIX}\" on {}: ", etcd.url);
        assert!(refused.stderr.contains(&expected), "{who}: {expected:?} in {refused:?}");
        assert_eq!(stored(&client), before, "{who}: etcd is unchanged");
    }
    // A server certificate of another CA is refused by the client.
    let wrong_ca = dir.join("other.pem");
    let args = ["config", "diff", "--etcd-endpoint", &etcd.url, "--ca", wrong_ca.to_str().unwrap()];
    let untrusted = libraflux(&config, &args);
    untrusted.assert_code(1);
    assert!(untrusted.stderr.contains("TLS handshake: "), "{untrusted:?}");
}

#[test]
fn a_push_that_raced_another_writer_loses_its_compare_and_swap() {
    let etcd = Etcd::start(&scratch("race"));
    let (ours, theirs) = (etcd.client(), etcd.client());
    let rt = runtime();
    let file = |name: &str, text: &str| BundleFile { name: name.to_owned(), bytes: text.as_bytes().to_vec() };
    let files = [file("dns.yaml", DNS), file("web.yaml", WEB)];
    let empty = rt.block_on(fleet::read(&ours, PREFIX)).unwrap();
    rt.block_on(fleet::push(&ours, PREFIX, &empty, &files)).unwrap();

    let edited = [file("dns.yaml", DNS), file("web.yaml", &WEB.replace("wrr", "rr"))];
    // Each way another writer can change the prefix between our read and our transaction.
    let writes: [(&str, Op); 3] = [
        (
            "changes a key",
            Op::Put { key: format!("{PREFIX}web.yaml").into_bytes(), value: b"services: []\n".to_vec() },
        ),
        (
            "adds a key",
            Op::Put { key: format!("{PREFIX}new.yaml").into_bytes(), value: b"services: []\n".to_vec() },
        ),
        ("deletes a key", Op::Delete { key: format!("{PREFIX}dns.yaml").into_bytes() }),
    ];
    for (what, write) in writes {
        let read = rt.block_on(fleet::read(&ours, PREFIX)).unwrap();
        rt.block_on(theirs.txn(&[], std::slice::from_ref(&write), "the test's write")).unwrap();
        let after_theirs = rt.block_on(fleet::read(&theirs, PREFIX)).unwrap();
        assert!(after_theirs.revision > read.revision, "{what}: their write happened");
        let lost = rt.block_on(fleet::push(&ours, PREFIX, &read, &edited)).unwrap_err();
        let PushError::Lost { read: at, current, .. } = &lost else { panic!("{what}: {lost}") };
        assert_eq!((*at, *current), (read.revision, after_theirs.revision), "{what}");
        assert!(lost.to_string().contains("another push won"), "{lost}");
        assert_eq!(
            rt.block_on(fleet::read(&ours, PREFIX)).unwrap(),
            after_theirs,
            "{what}: nothing of ours was written"
        );
        // Read again and push: it wins now.
        rt.block_on(fleet::push(&ours, PREFIX, &after_theirs, &files)).unwrap();
    }
}

#[test]
fn the_watch_sees_a_put_and_a_delete_by_another_client() {
    let etcd = Etcd::start(&scratch("watch"));
    let (watcher, writer) = (etcd.client(), etcd.client());
    let rt = runtime();
    rt.block_on(async {
        let start = fleet::read(&watcher, PREFIX).await.unwrap().revision + 1;
        let mut watch =
            watcher.watch(PREFIX.as_bytes(), &prefix_end(PREFIX.as_bytes()), start).await.unwrap();
        let key = format!("{PREFIX}web.yaml");
        let write = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            writer.put(b"/elsewhere/x.yaml", b"not watched").await.unwrap();
            writer.put(key.as_bytes(), WEB.as_bytes()).await.unwrap();
            writer.txn(&[], &[Op::Delete { key: key.into_bytes() }], "the test's delete").await.unwrap();
        });
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let response = tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream goes on");
            for event in response.events {
                seen.push((
                    event.kind,
                    String::from_utf8(event.kv.key).unwrap(),
                    String::from_utf8(event.kv.value).unwrap(),
                ));
            }
        }
        write.await.unwrap();
        let key = format!("{PREFIX}web.yaml");
        assert_eq!(
            seen,
            [(EventKind::Put, key.clone(), WEB.to_owned()), (EventKind::Delete, key, String::new())]
        );
    });
}
