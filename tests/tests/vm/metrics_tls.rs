//! The daemon serves its metrics endpoint as `metrics.web_config` says (docs/metrics.md): over
//! TLS behind basic auth, read with `openssl s_client` (the host test `host_metrics_tls` covers
//! the settings with curl and a real Prometheus); a reload naming a web configuration that does
//! not load is rejected whole and the endpoint keeps its settings; a reload that drops
//! `web_config` serves plain HTTP again.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Command, Stdio},
    time::Duration,
};

use libraflux_tests::pki::{bcrypt_hash, issue, make_ca};

use super::{
    daemon::{CONFIG, Daemon},
    daemon_reload::wait_for,
    support::Node,
};

const LISTEN: &str = "127.0.0.1:19480";
/// `prometheus:scrape-secret`, base64.
const AUTHORIZATION: &str = "Basic cHJvbWV0aGV1czpzY3JhcGUtc2VjcmV0";

/// One request over TLS, verified against the test CA; what came back (empty when the handshake
/// failed).
fn over_tls(node: &Node, path: &str, authorization: Option<&str>) -> String {
    let mut child = Command::new("ip")
        .args(["netns", "exec", node.netns.name(), "openssl", "s_client", "-connect", LISTEN])
        .args(["-CAfile", "ca.pem", "-verify_return_error", "-quiet"])
        .current_dir(&node.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl runs in the VM");
    let authorization = authorization.map(|value| format!("Authorization: {value}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: lb\r\n{authorization}Connection: close\r\n\r\n");
    child.stdin.take().unwrap().write_all(request.as_bytes()).unwrap();
    let output = child.wait_with_output().expect("openssl exits when the server closes");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What a plain-HTTP request gets back (empty or garbage from a TLS listener).
fn plain(node: &Node) -> String {
    node.netns.enter(|| {
        let mut stream = TcpStream::connect(LISTEN).expect("the endpoint accepts");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
}

fn config(node: &Node, web_config: Option<&str>) -> String {
    let web = web_config
        .map(|file| format!("  web_config: {}\n", node.dir.join(file).display()))
        .unwrap_or_default();
    node.config("config.yaml", &format!("{CONFIG}metrics:\n  listen: {LISTEN}\n{web}"))
}

#[test]
fn the_daemon_serves_metrics_over_tls_with_basic_auth_and_reloads_it_safely() {
    let node = Node::new();
    make_ca(&node.dir, "ca");
    issue(&node.dir, "ca", "server", "serverAuth");
    let hash = bcrypt_hash(&node.dir, "prometheus", "scrape-secret");
    let web = format!(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {hash}\n"
    );
    std::fs::write(node.dir.join("web.yml"), web).unwrap();
    let path = config(&node, Some("web.yml"));
    let daemon = Daemon::start(&node, &path);

    let scraped = over_tls(&node, "/metrics", Some(AUTHORIZATION));
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}\n{}", daemon.log());
    assert!(scraped.contains("libraflux_reconcile_runs_total{result=\"ok\"}"), "{scraped}");
    let anonymous = over_tls(&node, "/metrics", None);
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    assert!(!plain(&node).contains("HTTP/1.1 200"), "plain HTTP is not served");

    // A web configuration that does not parse: the reload is rejected, TLS and auth stay.
    std::fs::write(node.dir.join("broken.yml"), "tls_server_config:\n  cert_file: [\n").unwrap();
    config(&node, Some("broken.yml"));
    daemon.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(10), "the reload rejected", &daemon, || {
        daemon.log().contains("config reload rejected").then_some(())
    });
    assert!(daemon.log().contains("broken.yml"), "the rejection names the file:\n{}", daemon.log());
    assert!(over_tls(&node, "/metrics", Some(AUTHORIZATION)).starts_with("HTTP/1.1 200"));
    assert!(over_tls(&node, "/metrics", None).starts_with("HTTP/1.1 401"));

    // Without web_config: plain HTTP on the same address.
    config(&node, None);
    daemon.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(10), "plain HTTP after the reload", &daemon, || {
        plain(&node).starts_with("HTTP/1.1 200").then_some(())
    });
}
