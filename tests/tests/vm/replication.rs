//! Config replication between two real daemons, each in its own network namespace with its own
//! IPVS table, joined by a veth link: a change on the primary reaches the secondary's IPVS, and
//! every bad announcement or bundle is refused with its reason and changes nothing
//! (issue 17, docs/ha.md).

use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use libraflux::{
    bundle::{self, BundleFile},
    replication::{
        Keys,
        wire::{Answer, Outcome, Request},
    },
};

use super::{
    daemon::Daemon,
    daemon_reload::metric,
    support::{Node, eventually},
};

const PRIMARY: &str = "10.230.0.1";
const SECONDARY: &str = "10.230.0.2";
const PORT: u16 = 9470;
const KEY: [u8; 32] = [0x5a; 32];

/// config.yaml of a node of the pair.
fn node_config(name: &str, role: &str, listen: &str, peer: &str, key: &Path) -> String {
    format!(
        "node:\n  name: {name}\n  interface: lfvip0\nreplication:\n  role: {role}\n  listen: {listen}:{PORT}\n  peer: {peer}:{PORT}\n  key_files: [{}]\n",
        key.display()
    )
}

/// The replicated services: web with `backends` (ports of 10.220.1.1), unchecked, so that
/// nothing but replication changes its weights.
fn web(ports: &[u16]) -> String {
    let mut text = "services:\n  - name: web\n    protocol: tcp\n    vip: 10.220.0.10\n    port: 80\n    scheduler: wrr\n    health:\n      type: none\n    backends:\n".to_owned();
    for port in ports {
        text += &format!("      - address: 10.220.1.1\n        port: {port}\n        weight: 10\n");
    }
    text
}

struct PairNode {
    node: Node,
    /// `-c` of its daemon: config.yaml and config.d/.
    etc: PathBuf,
}

impl PairNode {
    fn new(name: &str, role: &str, listen: &str, peer: &str) -> Self {
        let node = Node::new();
        let etc = node.dir.join("etc");
        std::fs::create_dir_all(etc.join("config.d")).unwrap();
        let key = node.dir.join("replication.key");
        std::fs::write(&key, KEY).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut config = node_config(name, role, listen, peer, &key);
        config += &format!("snapshots:\n  dir: {}\n", node.snapshots_dir().display());
        std::fs::write(etc.join("config.yaml"), config).unwrap();
        Self { node, etc }
    }

    fn start(&self) -> Daemon {
        Daemon::start(&self.node, &self.etc.to_string_lossy())
    }

    fn status(&self) -> serde_json::Value {
        let ran = self.node.libraflux(&["replication", "status", "--output", "json"]);
        ran.assert_code(0);
        serde_json::from_str(&ran.stdout).unwrap()
    }

    fn metrics(&self) -> String {
        self.node.http_get("127.0.0.1:9469", "/metrics")
    }

    fn bundles(&self) -> PathBuf {
        self.node.dir.join("bundles")
    }
}

/// Joins the two namespaces with a veth pair: PRIMARY on one end, SECONDARY on the other.
fn link(primary: &Node, secondary: &Node) {
    primary.netns.ip(&[
        "link",
        "add",
        "lfpair",
        "type",
        "veth",
        "peer",
        "name",
        "lfpair",
        "netns",
        secondary.netns.name(),
    ]);
    for (node, address) in [(primary, PRIMARY), (secondary, SECONDARY)] {
        node.netns.ip(&["addr", "add", &format!("{address}/30"), "dev", "lfpair"]);
        node.netns.ip(&["link", "set", "lfpair", "up"]);
    }
}

/// Sends `request` to the secondary as a primary would (from the secondary's own namespace) and
/// reads its answer.
fn ask(secondary: &Node, request: Request) -> Answer {
    secondary.netns.enter(move || {
        let to: SocketAddr = format!("{SECONDARY}:{PORT}").parse().unwrap();
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut line = serde_json::to_vec(&request).unwrap();
        line.push(b'\n');
        stream.write_all(&line).unwrap();
        let mut reader = std::io::BufReader::new(stream);
        let mut answer = String::new();
        std::io::BufRead::read_line(&mut reader, &mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|err| panic!("answer {answer:?}: {err}"))
    })
}

/// Puts `bytes` in the primary's bundle directory under `sha256`'s name, where its daemon serves
/// them from.
fn plant(primary: &PairNode, sha256: &str, bytes: &[u8]) {
    std::fs::write(primary.bundles().join(bundle::file_name(sha256)), bytes).unwrap();
}

/// A gzip'd tar with one entry, written with raw header bytes so that no check of the
/// archive writer stands between the test and the name.
fn raw_bundle(name: &str, body: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..107].copy_from_slice(b"0000644");
    header[108..115].copy_from_slice(b"0000000");
    header[116..123].copy_from_slice(b"0000000");
    header[124..135].copy_from_slice(format!("{:011o}", body.len()).as_bytes());
    header[136..147].copy_from_slice(b"00000000000");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|byte| u32::from(*byte)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(body);
    tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
    gzip(&tar)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut child = std::process::Command::new("gzip")
        .args(["-c", "-n"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success());
    output.stdout
}

#[test]
fn a_change_on_the_primary_reaches_the_secondary_and_every_bad_bundle_is_refused_with_its_reason() {
    let primary = PairNode::new("lb-a", "primary", PRIMARY, SECONDARY);
    let secondary = PairNode::new("lb-b", "secondary", SECONDARY, PRIMARY);
    link(&primary.node, &secondary.node);
    std::fs::write(primary.etc.join("config.d/web.yaml"), web(&[8080])).unwrap();
    // The secondary's own config.d is not what it runs.
    std::fs::write(
        secondary.etc.join("config.d/local.yaml"),
        web(&[9999]).replace("web", "local").replace("port: 80", "port: 81"),
    )
    .unwrap();

    let secondary_daemon = secondary.start();
    let mut primary_daemon = primary.start();
    let want = primary.node.saved();
    assert!(want.contains("-a -t 10.220.0.10:80 -r 10.220.1.1:8080"), "{want}");
    eventually("the secondary's IPVS equals the primary's", Duration::from_secs(30), || {
        secondary.node.saved() == want
    });
    eventually("the primary hears generation 1 back", Duration::from_secs(10), || {
        primary.status()["peer_generation"] == 1
    });
    let status = secondary.status();
    assert_eq!(status["role"], "secondary");
    assert_eq!(status["generation"], 1, "{status}");
    let first = status["sha256"].as_str().unwrap().to_owned();
    assert_eq!(primary.status()["sha256"], first.as_str());

    // A change on the primary: a second backend, applied through its daemon.
    std::fs::write(primary.etc.join("config.d/web.yaml"), web(&[8080, 8081])).unwrap();
    primary.node.libraflux(&["apply", "-c", &primary.etc.to_string_lossy()]).assert_code(0);
    let want = primary.node.saved();
    assert!(want.contains("-r 10.220.1.1:8081"), "{want}");
    eventually("the change reaches the secondary", Duration::from_secs(30), || {
        secondary.node.saved() == want
    });
    eventually("generation 2 on both", Duration::from_secs(10), || {
        primary.status()["peer_generation"] == 2 && secondary.status()["generation"] == 2
    });

    // Each bad announcement or bundle, sent to the secondary as the primary would send it.
    let keys = Keys::from_bytes(vec![KEY.to_vec()]);
    let good = std::fs::read(primary.bundles().join(bundle::file_name(&first))).unwrap();
    let mut tampered = good.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x55;
    let tampered_sha = bundle::sha256_hex(&good).replace(&bundle::sha256_hex(&good)[..4], "0000");
    plant(&primary, &tampered_sha, &tampered);
    let invalid = bundle::encode(&[BundleFile {
        name: "web.yaml".into(),
        bytes: web(&[8080]).replace("weight: 10", "weight: 70000").into_bytes(),
    }]);
    let node_local = bundle::encode(&[BundleFile {
        name: "web.yaml".into(),
        bytes: format!("{}metrics:\n  listen: 127.0.0.1:1\n", web(&[8080])).into_bytes(),
    }]);
    let traversal = raw_bundle("../escape.yaml", b"services: []\n");
    let oversized = raw_bundle("big.yaml", &vec![b'#'; 17 << 20]);
    let mut cases: Vec<(&str, Request, &str)> = vec![
        (
            "another key",
            Request::announce(&Keys::from_bytes(vec![vec![1; 32]]), "lb-a", 3, &first),
            "bad_hmac",
        ),
        ("a replayed generation", Request::announce(&keys, "lb-a", 1, &first), "replay"),
        ("a tampered bundle", Request::announce(&keys, "lb-a", 3, &tampered_sha), "hash_mismatch"),
    ];
    for (what, bytes, reason) in [
        ("a path-traversal tar", traversal, "unsafe_entry"),
        ("an oversized bundle", oversized, "too_large"),
        ("a bundle that fails validation", invalid, "invalid_config"),
        ("a bundle that sets a node-local section", node_local, "invalid_config"),
    ] {
        let sha = bundle::sha256_hex(&bytes);
        plant(&primary, &sha, &bytes);
        cases.push((what, Request::announce(&keys, "lb-a", 3, &sha), reason));
    }
    let before = secondary.node.saved();
    let replicated = secondary.node.dir.join("state/replicated");
    let dirs = || {
        let mut names: Vec<String> = std::fs::read_dir(&replicated)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let dirs_before = dirs();
    for (what, request, reason) in cases {
        let answer = ask(&secondary.node, request);
        assert_eq!(answer.outcome, Outcome::Refused, "{what}: {answer:?}");
        assert_eq!(answer.reason.as_deref(), Some(reason), "{what}: {answer:?}");
        assert_eq!(answer.generation, 2, "{what}: the secondary still runs generation 2");
        assert_eq!(secondary.node.saved(), before, "{what}: IPVS unchanged");
        assert_eq!(dirs(), dirs_before, "{what}: no directory left behind");
        let status = secondary.status();
        assert_eq!(status["last_error"]["reason"], reason, "{what}: {status}");
    }
    let metrics = secondary.metrics();
    for (reason, count) in [
        ("bad_hmac", 1.0),
        ("replay", 1.0),
        ("hash_mismatch", 1.0),
        ("unsafe_entry", 1.0),
        ("too_large", 1.0),
        ("invalid_config", 2.0),
    ] {
        let label = format!("reason=\"{reason}\"");
        assert_eq!(
            metric(&metrics, "libraflux_replication_failures_total", &[&label]),
            Some(count),
            "{reason}"
        );
    }
    assert_eq!(metric(&metrics, "libraflux_replication_generation", &[]), Some(2.0));
    let log = std::fs::read_to_string(secondary.node.dir.join("daemon.log")).unwrap();
    assert!(log.contains("replication failed"), "refusals are logged:\n{log}");
    assert!(!secondary.node.saved().contains(":81 "), "the secondary's own config.d is not run");

    // A secondary that was down catches up when it comes back.
    drop(secondary_daemon);
    std::fs::write(primary.etc.join("config.d/web.yaml"), web(&[8080, 8081, 8082])).unwrap();
    primary_daemon.signal(libc::SIGHUP);
    eventually("the primary finds the secondary down", Duration::from_secs(20), || {
        primary.status()["last_error"]["reason"] == "unreachable"
    });
    let secondary_daemon = secondary.start();
    let want = primary.node.saved();
    assert!(want.contains("-r 10.220.1.1:8082"), "{want}");
    eventually("the secondary catches up", Duration::from_secs(45), || secondary.node.saved() == want);
    assert_eq!(secondary.status()["generation"], 3);

    // A primary that is down leaves the secondary on its last good configuration.
    primary_daemon.signal(libc::SIGTERM);
    let _ = primary_daemon.child.wait();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(secondary.node.saved(), want);
    drop(secondary_daemon);
}
