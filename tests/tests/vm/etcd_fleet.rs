//! The replicated configuration from etcd (issue 25, docs/fleet.md): a real etcd in a namespace
//! of its own, requiring client certificates; two daemons, each in its own namespace with its
//! own IPVS table, reading and watching the same prefix over TLS. One push reaches both tables;
//! a push over the nodes' change limit, one that fails validation on them, and a prefix emptied
//! are refused and the tables stay; with etcd stopped the nodes keep their tables, a node restarted then comes up on its
//! last good configuration, and both take the next push once etcd is back. Every table is read
//! with ipvsadm.

use std::{path::PathBuf, time::Duration};

use libraflux::etcd::{Op, fleet};
use libraflux_tests::{NetNs, etcd::Etcd};

use super::{
    daemon::Daemon,
    daemon_reload::metric,
    support::{Node, eventually},
};

const ETCD_ADDRESS: &str = "10.240.0.1";
const ETCD_PORT: u16 = 2379;
const PREFIX: &str = "/lf-test/";
/// How long a node may take to follow a change; generous, for an emulated CPU and the follower's
/// backoff (at most 30 s) after etcd was down.
const FOLLOW_WITHIN: Duration = Duration::from_secs(90);

fn url() -> String {
    format!("https://{ETCD_ADDRESS}:{ETCD_PORT}")
}

/// The replicated `web` service with `backends` (ports of 10.220.1.1, weight `weight`).
fn web(ports: &[u16], weight: u32) -> String {
    let mut text = "services:\n  - name: web\n    protocol: tcp\n    vip: 10.220.0.10\n    port: 80\n    scheduler: wrr\n    health:\n      type: none\n    backends:\n".to_owned();
    for port in ports {
        text += &format!("      - address: 10.220.1.1\n        port: {port}\n        weight: {weight}\n");
    }
    text
}

/// A service of the node's own config.yaml; a replicated file with a service of the same name
/// does not validate on the node (it does where it is pushed from, which has no such service).
const LOCAL_SERVICE: &str = "services:\n  - name: local-api\n    protocol: tcp\n    vip: 10.220.0.10\n    port: 9000\n    scheduler: rr\n    health:\n      type: none\n    backends:\n      - address: 10.220.1.1\n        port: 9000\n";

struct FleetNode {
    node: Node,
    /// `-c` of its daemon: config.yaml (with `source.etcd`) and a config.d it must not read.
    etc: PathBuf,
}

impl FleetNode {
    fn new(index: u8, etcd_ns: &NetNs, etcd: &Etcd) -> Self {
        let node = Node::new();
        // A link to etcd's namespace, where etcd listens on ETCD_ADDRESS (on its loopback).
        let (outer, inner) = (format!("10.240.{}.1", index + 1), format!("10.240.{}.2", index + 1));
        let link = format!("lfetcd{index}");
        etcd_ns.ip(&[
            "link",
            "add",
            &link,
            "type",
            "veth",
            "peer",
            "name",
            "lfetcd",
            "netns",
            node.netns.name(),
        ]);
        etcd_ns.ip(&["addr", "add", &format!("{outer}/30"), "dev", &link]);
        etcd_ns.ip(&["link", "set", &link, "up"]);
        node.netns.ip(&["addr", "add", &format!("{inner}/30"), "dev", "lfetcd"]);
        node.netns.ip(&["link", "set", "lfetcd", "up"]);
        node.netns.ip(&["route", "add", &format!("{ETCD_ADDRESS}/32"), "via", &outer]);
        let etc = node.dir.join("etc");
        std::fs::create_dir_all(etc.join("config.d")).unwrap();
        let tls = etcd.tls(Some("client"));
        let config = format!(
            "node:\n  name: lb-{index}\n  interface: lfvip0\nlimits:\n  max_backends_per_service: 2\nsource:\n  etcd:\n    endpoints: [{}]\n    prefix: {PREFIX}\n    tls: {{ca: {}, cert: {}, key: {}}}\nsnapshots:\n  dir: {}\n{LOCAL_SERVICE}",
            url(),
            tls.ca.display(),
            tls.cert.unwrap().display(),
            tls.key.unwrap().display(),
            node.snapshots_dir().display(),
        );
        std::fs::write(etc.join("config.yaml"), config).unwrap();
        // What the node's own config.d says is not run: its config.d is etcd's.
        std::fs::write(etc.join("config.d/local.yaml"), web(&[7777], 1).replace("name: web", "name: own"))
            .unwrap();
        Self { node, etc }
    }

    fn start(&self) -> Daemon {
        Daemon::start_within(&self.node, &self.etc.to_string_lossy(), Duration::from_secs(60))
    }

    fn etcd_status(&self) -> serde_json::Value {
        let ran = self.node.libraflux(&["status", "--output", "json"]);
        ran.assert_code(0);
        let status: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
        status["daemon"]["etcd"].clone()
    }

    /// `libraflux status` as text.
    fn status_text(&self) -> String {
        let ran = self.node.libraflux(&["status"]);
        ran.assert_code(0);
        ran.stdout
    }

    fn metric(&self, name: &str, labels: &[&str]) -> Option<f64> {
        metric(&self.node.http_get("127.0.0.1:9469", "/metrics"), name, labels)
    }
}

/// Where `config push` runs from: an operator's configuration directory.
struct Admin {
    dir: PathBuf,
}

impl Admin {
    fn new(under: &std::path::Path) -> Self {
        let dir = under.join("admin");
        std::fs::create_dir_all(dir.join("config.d")).unwrap();
        std::fs::write(dir.join("config.yaml"), "node:\n  name: admin\n  interface: lfvip0\n").unwrap();
        Self { dir }
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join("config.d").join(name), text).unwrap();
    }

    fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.join("config.d").join(name)).unwrap();
    }

    /// `libraflux config push` from `node`'s namespace; the revision it wrote.
    fn push(&self, node: &Node, etcd: &Etcd) -> i64 {
        let tls = etcd.tls(Some("client"));
        let (ca, cert, key) = (tls.ca.display().to_string(), tls.cert.unwrap(), tls.key.unwrap());
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let dir = self.dir.display().to_string();
        #[rustfmt::skip]
        let ran = node.libraflux(&[
            "config", "push", "-c", &dir, "--etcd-endpoint", &url(), "--prefix", PREFIX,
            "--ca", &ca, "--cert", &cert, "--key", &key, "--output", "json",
        ]);
        ran.assert_code(0);
        let report: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
        report["revision"].as_i64().unwrap_or_else(|| panic!("a revision: {report:#}"))
    }
}

/// Every key under the prefix deleted, in one transaction, from `node`'s namespace.
fn empty_the_prefix(node: &Node, etcd: &Etcd) {
    let client = etcd.client();
    node.netns.enter(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let stored = fleet::read(&client, PREFIX).await.unwrap();
            let deletes: Vec<Op> = stored
                .files
                .keys()
                .map(|name| Op::Delete { key: format!("{PREFIX}{name}").into_bytes() })
                .collect();
            assert!(client.txn(&[], &deletes, "the test's prefix").await.unwrap().succeeded);
        });
    });
}

/// `ipvsadm-save -n` of the web service with `ports` at `weight` and the node's own service.
fn table(ports: &[u16], weight: u32) -> String {
    let mut lines = vec![
        "-A -t 10.220.0.10:80 -s wrr".to_owned(),
        "-A -t 10.220.0.10:9000 -s rr".to_owned(),
        "-a -t 10.220.0.10:9000 -r 10.220.1.1:9000 -m -w 1".to_owned(),
    ];
    lines
        .extend(ports.iter().map(|port| format!("-a -t 10.220.0.10:80 -r 10.220.1.1:{port} -m -w {weight}")));
    libraflux_tests::sorted_lines(&lines.join("\n"))
}

#[test]
fn two_nodes_follow_one_push_through_etcd_refuse_bad_ones_and_outlive_etcd() {
    let etcd_ns = NetNs::new("etcd");
    etcd_ns.ip(&["addr", "add", &format!("{ETCD_ADDRESS}/32"), "dev", "lo"]);
    let etcd_dir = std::env::temp_dir().join(etcd_ns.name());
    std::fs::create_dir_all(&etcd_dir).unwrap();
    let mut etcd = Etcd::start_on(&etcd_dir, Some(&etcd_ns), ETCD_ADDRESS, ETCD_PORT, ETCD_PORT + 1);
    let nodes: Vec<FleetNode> = (0..2).map(|index| FleetNode::new(index, &etcd_ns, &etcd)).collect();
    let admin = Admin::new(&etcd_dir);
    let pusher = &nodes[0].node;

    // One push; both daemons start on it, over TLS with client certificates.
    admin.write("web.yaml", &web(&[8001, 8002], 10));
    let first = admin.push(pusher, &etcd);
    let mut daemons: Vec<Daemon> = nodes.iter().map(FleetNode::start).collect();
    for (node, daemon) in nodes.iter().zip(&daemons) {
        assert_eq!(node.node.saved(), table(&[8001, 8002], 10), "{}", daemon.log());
        let status = node.etcd_status();
        assert_eq!(status["revision"].as_i64(), Some(first), "{status:#}");
        assert_eq!(status["from_last_good"].as_bool(), Some(false), "{status:#}");
        assert_eq!(node.metric("libraflux_etcd_revision", &[]), Some(first as f64));
        let text = node.status_text();
        assert!(text.contains(&format!("config: etcd revision {first} (sha256 ")), "{text}");
        assert!(text.contains(&format!("), watching {PREFIX}\n")), "{text}");
    }

    // The next push reaches both tables through the watch.
    admin.write("web.yaml", &web(&[8001, 8002, 8003], 10));
    let second = admin.push(pusher, &etcd);
    for (node, daemon) in nodes.iter().zip(&daemons) {
        eventually(
            &format!("the push reaches {}:\n{}", node.node.netns.name(), daemon.log()),
            FOLLOW_WITHIN,
            || node.node.saved() == table(&[8001, 8002, 8003], 10),
        );
        eventually("the status shows the push's revision", FOLLOW_WITHIN, || {
            node.etcd_status()["revision"].as_i64() == Some(second)
        });
        assert_eq!(node.etcd_status()["connected"].as_bool(), Some(true));
    }
    let kept = table(&[8001, 8002, 8003], 10);

    // A push over the nodes' change limit (three backends added at once, two allowed) is
    // refused the same way.
    admin.write("web.yaml", &web(&[8001, 8002, 8003, 8004, 8005, 8006], 10));
    let over = admin.push(pusher, &etcd);
    for (node, daemon) in nodes.iter().zip(&daemons) {
        eventually(&format!("the push over a limit is refused:\n{}", daemon.log()), FOLLOW_WITHIN, || {
            node.etcd_status()["last_refused"]["revision"].as_i64() == Some(over)
        });
        let status = node.etcd_status();
        assert_eq!(status["last_refused"]["reason"].as_str(), Some("limits"), "{status:#}");
        let detail = status["last_refused"]["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("max_backends_per_service"), "{detail}");
        assert_eq!(node.metric("libraflux_etcd_refused", &["reason=\"limits\""]), Some(1.0));
        assert_eq!(node.node.saved(), kept, "a refused push changes nothing:\n{}", daemon.log());
    }
    admin.write("web.yaml", &web(&[8001, 8002, 8003], 10));

    // A push that validates where it is made but not on the nodes (a service name their own
    // config.yaml uses) is refused on each node, and counted; the tables stay.
    admin.write("clash.yaml", &LOCAL_SERVICE.replace("port: 9000", "port: 9100"));
    let bad = admin.push(pusher, &etcd);
    for (node, daemon) in nodes.iter().zip(&daemons) {
        eventually(&format!("the bad push is refused:\n{}", daemon.log()), FOLLOW_WITHIN, || {
            node.etcd_status()["last_refused"]["revision"].as_i64() == Some(bad)
        });
        let status = node.etcd_status();
        assert_eq!(status["last_refused"]["reason"].as_str(), Some("invalid_config"), "{status:#}");
        let detail = status["last_refused"]["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&format!("etcd revision {bad}:clash.yaml")) && detail.contains("local-api"),
            "{detail}"
        );
        assert_eq!(status["revision"].as_i64(), Some(second), "the running configuration stays: {status:#}");
        assert_eq!(node.metric("libraflux_etcd_refused", &["reason=\"invalid_config\""]), Some(1.0));
        let text = node.status_text();
        assert!(text.contains(&format!("config: etcd revision {bad} REFUSED (invalid_config)")), "{text}");
        assert_eq!(node.node.saved(), kept, "a refused push changes nothing:\n{}", daemon.log());
    }

    // A prefix emptied (by mistake) is refused too: it would empty IPVS.
    empty_the_prefix(pusher, &etcd);
    for (node, daemon) in nodes.iter().zip(&daemons) {
        eventually(&format!("the empty prefix is refused:\n{}", daemon.log()), FOLLOW_WITHIN, || {
            node.etcd_status()["last_refused"]["reason"].as_str() == Some("empty")
        });
        assert_eq!(node.metric("libraflux_etcd_refused", &["reason=\"empty\""]), Some(1.0));
        assert_eq!(node.node.saved(), kept, "an empty prefix changes nothing:\n{}", daemon.log());
    }

    // etcd stops: the nodes say so and keep their tables.
    etcd.stop();
    for (node, daemon) in nodes.iter().zip(&daemons) {
        eventually(&format!("the node sees etcd gone:\n{}", daemon.log()), FOLLOW_WITHIN, || {
            node.etcd_status()["connected"].as_bool() == Some(false)
        });
        assert_eq!(node.metric("libraflux_etcd_connected", &[]), Some(0.0));
        let text = node.status_text();
        assert!(text.contains(&format!("NOT CONNECTED to etcd for {PREFIX}")), "{text}");
        assert_eq!(node.node.saved(), kept, "etcd gone changes nothing:\n{}", daemon.log());
    }

    // A node restarted while etcd is down comes up on its last good configuration, and says so.
    drop(daemons.pop());
    let restarted = nodes[1].start();
    assert!(
        restarted.log().contains("started on the last good configuration from etcd"),
        "{}",
        restarted.log()
    );
    let status = nodes[1].etcd_status();
    assert_eq!(status["from_last_good"].as_bool(), Some(true), "{status:#}");
    assert_eq!(status["revision"].as_i64(), Some(second), "{status:#}");
    assert_eq!(nodes[1].metric("libraflux_etcd_from_last_good", &[]), Some(1.0));
    let text = nodes[1].status_text();
    assert!(
        text.contains("config: running the LAST GOOD configuration kept on disk: etcd cannot be read: "),
        "{text}"
    );
    assert_eq!(nodes[1].node.saved(), kept, "{}", restarted.log());
    daemons.push(restarted);

    // etcd is back: the next push reaches both nodes.
    etcd.restart();
    admin.remove("clash.yaml");
    admin.write("web.yaml", &web(&[8001, 8003], 20));
    let fixed = admin.push(pusher, &etcd);
    for (node, daemon) in nodes.iter().zip(&daemons) {
        eventually(
            &format!("the push after etcd's return reaches the node:\n{}", daemon.log()),
            FOLLOW_WITHIN,
            || node.node.saved() == table(&[8001, 8003], 20),
        );
        eventually("the status follows", FOLLOW_WITHIN, || {
            node.etcd_status()["revision"].as_i64() == Some(fixed)
        });
        let status = node.etcd_status();
        assert_eq!(
            (status["connected"].as_bool(), status["from_last_good"].as_bool()),
            (Some(true), Some(false)),
            "{status:#}"
        );
        assert!(
            node.node.saved().lines().all(|line| !line.contains(":7777")),
            "the node's own config.d is not run"
        );
    }
    assert_eq!(
        nodes[0].metric("libraflux_etcd_watch_failures", &["reason=\"lost\""]).map(|n| n >= 1.0),
        Some(true)
    );
}
