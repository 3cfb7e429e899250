//! Two nodes' replication tasks on loopback, with real bundles on disk. Putting a configuration
//! in force is the daemon's (tested on the VM's IPVS); here the test answers for it.

use std::{
    fs,
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{io::BufReader, net::TcpStream, sync::mpsc};

use super::{
    Incoming, Keys, Paths, Refusal, Running, Start, Status,
    wire::{self, Answer, Outcome, Request},
};
use crate::{
    bundle,
    config::{Replication, Role},
    metrics::Metrics,
};

const KEY: [u8; 32] = [42; 32];

/// What the secondary's daemon was given: generation and file names.
type Seen = Arc<Mutex<Vec<(u64, Vec<String>)>>>;

struct Node {
    running: Arc<Running>,
    status: Arc<Mutex<Status>>,
    paths: Paths,
    listen: SocketAddr,
    dir: PathBuf,
}

impl Node {
    fn status(&self) -> Status {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn free_port() -> SocketAddr {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("libraflux-replication-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("config.d")).unwrap();
    dir
}

async fn node(
    dir: &Path,
    role: Role,
    listen: SocketAddr,
    peer: SocketAddr,
    key: [u8; 32],
) -> (Node, mpsc::Receiver<Incoming>) {
    let (apply, incoming) = mpsc::channel(1);
    let paths = Paths { state_dir: dir.join("state"), bundles_dir: dir.join("bundles") };
    let status = Arc::new(Mutex::new(Status::default()));
    let start = Start {
        node: role.name().to_owned(),
        settings: Replication { role, listen, peer, key_files: Vec::new() },
        keys: Keys::from_bytes(vec![key.to_vec()]),
        paths: paths.clone(),
        status: Arc::clone(&status),
        metrics: Arc::new(Metrics::new("test", 100)),
        apply,
    };
    let running = super::start(start).await.unwrap();
    (Node { running: Arc::new(running), status, paths, listen, dir: dir.to_owned() }, incoming)
}

/// Answers for the secondary's daemon: accepts every configuration, recording what it got.
fn accept_all(mut incoming: mpsc::Receiver<Incoming>, secondary: Arc<Running>) -> Seen {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Some(Incoming { generation, sha256, dir, reply }) = incoming.recv().await {
            let mut names: Vec<String> = fs::read_dir(&dir)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            record.lock().unwrap().push((generation, names));
            secondary.set_state(super::State { generation, sha256: Some(sha256) });
            let _ = reply.send(Ok::<(), Refusal>(()));
        }
    });
    seen
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 10 s: {what}");
}

/// Sends `request` to `to` as a peer would, and reads the answer.
async fn ask(to: SocketAddr, request: &Request) -> Answer {
    let stream = TcpStream::connect(to).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    wire::write_line(&mut writer, request).await.unwrap();
    wire::read_line(&mut BufReader::new(reader)).await.unwrap()
}

fn make_bundle(primary: &Node, files: &[(&str, &str)]) -> String {
    for (name, text) in files {
        fs::write(primary.dir.join("config.d").join(name), text).unwrap();
    }
    bundle::create(&primary.dir.join("config.d"), &primary.paths.bundles_dir).unwrap().sha256
}

/// Puts `bytes` in the primary's bundle directory under the name of `sha256`.
fn plant(primary: &Node, sha256: &str, bytes: &[u8]) {
    fs::create_dir_all(&primary.paths.bundles_dir).unwrap();
    fs::write(primary.paths.bundles_dir.join(bundle::file_name(sha256)), bytes).unwrap();
}

fn refused(answer: &Answer) -> &str {
    assert_eq!(answer.outcome, Outcome::Refused, "{answer:?}");
    answer.reason.as_deref().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_goes_over_and_every_bad_one_is_refused_with_its_reason() {
    let (primary_dir, secondary_dir) = (scratch("primary"), scratch("secondary"));
    let (primary_addr, secondary_addr) = (free_port(), free_port());
    let (primary, _) = node(&primary_dir, Role::Primary, primary_addr, secondary_addr, KEY).await;
    let (secondary, incoming) =
        node(&secondary_dir, Role::Secondary, secondary_addr, primary_addr, KEY).await;
    let seen = accept_all(incoming, Arc::clone(&secondary.running));

    // A bundle goes over: fetched, its files extracted, generation 1 on both sides.
    let first = make_bundle(&primary, &[("web.yaml", "services: []\n"), ("dns.yaml", "services: []\n")]);
    primary.running.announce(first.clone());
    eventually("the secondary answers generation 1", || primary.status().peer_generation == Some(1)).await;
    assert_eq!(*seen.lock().unwrap(), [(1, vec!["dns.yaml".to_owned(), "web.yaml".to_owned()])]);
    assert_eq!(secondary.status().generation, 1);
    assert!(
        secondary.paths.bundles_dir.join(bundle::file_name(&first)).exists(),
        "the fetched bundle is kept"
    );
    assert_eq!(super::State::load(&primary.paths.state_dir).unwrap().generation, 1, "written down");
    let before = secondary.status().last_error.clone();
    assert_eq!(before, None);

    // The same bundle again is the same generation, and current.
    let again = ask(
        secondary.listen,
        &Request::announce(&Keys::from_bytes(vec![KEY.to_vec()]), "primary", 1, &first),
    )
    .await;
    assert_eq!(again.outcome, Outcome::Current);

    let keys = Keys::from_bytes(vec![KEY.to_vec()]);
    // Replayed: an older generation, or this generation with another bundle.
    assert_eq!(
        refused(&ask(secondary.listen, &Request::announce(&keys, "primary", 0, &first)).await),
        "replay"
    );
    assert_eq!(
        refused(&ask(secondary.listen, &Request::announce(&keys, "primary", 1, &"0".repeat(64))).await),
        "replay"
    );
    // Signed with another key.
    let wrong = Keys::from_bytes(vec![vec![7; 32]]);
    let answer = ask(secondary.listen, &Request::announce(&wrong, "primary", 9, &first)).await;
    assert_eq!(refused(&answer), "bad_hmac");
    assert!(!answer.authentic(&wrong, &Request::announce(&wrong, "primary", 9, &first)));
    // A bundle whose bytes do not hash to its name.
    let tampered = "ab".repeat(32);
    plant(&primary, &tampered, &fs::read(primary.paths.bundles_dir.join(bundle::file_name(&first))).unwrap());
    assert_eq!(
        refused(&ask(secondary.listen, &Request::announce(&keys, "primary", 2, &tampered)).await),
        "hash_mismatch"
    );
    // A path outside the bundle, and a bundle over the size limit, each under its true hash.
    for (bytes, reason) in [(traversal(), "unsafe_entry"), (oversized(), "too_large")] {
        let sha = bundle::sha256_hex(&bytes);
        plant(&primary, &sha, &bytes);
        assert_eq!(
            refused(&ask(secondary.listen, &Request::announce(&keys, "primary", 3, &sha)).await),
            reason
        );
    }
    // A bundle the primary does not have.
    assert_eq!(
        refused(&ask(secondary.listen, &Request::announce(&keys, "primary", 4, &"cd".repeat(32))).await),
        "fetch_failed"
    );
    // A primary takes no announcements, and a secondary serves no fetches.
    assert_eq!(refused(&ask(primary.listen, &Request::announce(&keys, "primary", 5, &first)).await), "role");

    // Nothing refused reached the daemon, and the secondary still runs generation 1.
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(secondary.status().generation, 1);
    let extracted: Vec<String> = fs::read_dir(secondary.paths.replicated())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "current")
        .collect();
    assert_eq!(extracted, ["gen-1-".to_owned() + &first[..12]], "refused generations leave no directory");
    assert_eq!(secondary.status().last_error.map(|error| error.reason).as_deref(), Some("fetch_failed"));

    // A new bundle is a new generation.
    let second = make_bundle(&primary, &[("web.yaml", "services: [] # changed\n")]);
    primary.running.announce(second);
    eventually("the secondary answers generation 2", || primary.status().peer_generation == Some(2)).await;
    assert_eq!(seen.lock().unwrap().last().unwrap().0, 2);
    for dir in [primary_dir, secondary_dir] {
        fs::remove_dir_all(dir).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_that_was_down_catches_up_and_a_primary_that_lost_its_state_goes_above_it() {
    let (primary_dir, secondary_dir) = (scratch("late-primary"), scratch("late-secondary"));
    let (primary_addr, secondary_addr) = (free_port(), free_port());
    let (primary, _) = node(&primary_dir, Role::Primary, primary_addr, secondary_addr, KEY).await;
    let sha = make_bundle(&primary, &[("web.yaml", "services: []\n")]);
    primary.running.announce(sha);
    eventually("the primary sees the secondary down", || {
        primary.status().last_error.is_some_and(|error| error.reason == "unreachable")
    })
    .await;
    // The secondary comes up already at generation 5 (the primary's state was lost).
    fs::create_dir_all(secondary_dir.join("state")).unwrap();
    super::State { generation: 5, sha256: Some("ef".repeat(32)) }.save(&secondary_dir.join("state")).unwrap();
    let (secondary, incoming) =
        node(&secondary_dir, Role::Secondary, secondary_addr, primary_addr, KEY).await;
    let seen = accept_all(incoming, Arc::clone(&secondary.running));
    eventually("the secondary takes the bundle above its generation", || !seen.lock().unwrap().is_empty())
        .await;
    assert_eq!(seen.lock().unwrap()[0].0, 6);
    eventually("the primary records it", || primary.status().peer_generation == Some(6)).await;
    assert_eq!(super::State::load(&primary.paths.state_dir).unwrap().generation, 6);
    for dir in [primary_dir, secondary_dir] {
        fs::remove_dir_all(dir).unwrap();
    }
}

/// A gzip'd tar whose one entry is `../escape.yaml`.
fn traversal() -> Vec<u8> {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..14].copy_from_slice(b"../escape.yaml");
    header.set_size(3);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    gzip(&archive(&header, b"a: "))
}

/// One entry of 17 MiB of spaces: a few KiB compressed, over the 16 MiB limit uncompressed.
fn oversized() -> Vec<u8> {
    let mut header = tar::Header::new_ustar();
    header.set_path("big.yaml").unwrap();
    let body = vec![b' '; 17 << 20];
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    gzip(&archive(&header, &body))
}

fn archive(header: &tar::Header, body: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(header, body).unwrap();
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}
