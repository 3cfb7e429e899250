//! Every section of the config reloads (issue #16): a SIGHUP that changes `node.interface`
//! re-attaches the eBPF observer (new interfaces counted, dropped ones detached), one that moves
//! `metrics.listen` moves the endpoint, `collect_interval` and `max_series` take effect, and the
//! health series of a backend that left the config disappear. An observer that could not start
//! is retried, and `libraflux_ebpf_attached` follows it.

use std::{
    net::{TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use libraflux_tests::{NetNs, attached_programs};

use super::{daemon::Daemon, drain::Topology};

const BEFORE_LISTEN: &str = "127.0.0.1:19475";
const AFTER_LISTEN: &str = "127.0.0.1:19476";
const DATAGRAMS: u64 = 20;

/// `interfaces`, the metrics section, and web's backend ports.
fn config(interfaces: &str, metrics: &str, web_ports: &[u16]) -> String {
    let web: String =
        web_ports.iter().map(|port| format!("      - address: 10.200.0.2\n        port: {port}\n")).collect();
    format!(
        "node:\n  interface: [{interfaces}]\nmetrics:\n{metrics}services:
  - name: dns
    protocol: udp
    vip: 10.220.0.10
    port: 53
    scheduler: rr
    health:
      type: none
    backends:
      - address: 10.200.0.2
        port: 53
  - name: web
    protocol: tcp
    vip: 10.220.0.10
    port: 80
    scheduler: rr
    health:
      type: tcp
      interval: 1s
      timeout: 500ms
    drain: {{ grace: 1s, timeout: 60s }}
    backends:
{web}"
    )
}

/// Polls `probe` every 200 ms until it returns `Some`, for at most `within`.
pub(super) fn wait_for<T>(
    within: Duration,
    what: &str,
    daemon: &Daemon,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value of the one line of `metrics` that starts with `name` and contains every `labels`.
pub(super) fn metric(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && labels.iter().all(|label| line.contains(label)))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

fn send_datagrams(client: &NetNs) {
    client.enter(|| {
        let socket = UdpSocket::bind("10.201.0.2:0").unwrap();
        for _ in 0..DATAGRAMS {
            socket.send_to(b"count me", "10.220.0.10:53").unwrap();
        }
    });
}

/// eBPF packets of `key` in the daemon's /status on `listen` (0 while none was seen).
fn traffic(topology: &Topology, listen: &str, key: &str) -> u64 {
    let status: serde_json::Value =
        serde_json::from_str(&topology.node.http_get(listen, "/status")).expect("/status is JSON");
    status["traffic"][key]["packets"].as_u64().unwrap_or(0)
}

#[test]
fn a_reload_applies_every_section_and_a_failed_observer_is_retried() {
    let topology = Topology::new();
    // web's backends accept connections (the kernel completes them from the backlog).
    let _listeners: Vec<TcpListener> = [8080, 8081]
        .map(|port| topology.backends.enter(move || TcpListener::bind(("10.200.0.2", port)).unwrap()))
        .into();
    let before_metrics = format!("  listen: {BEFORE_LISTEN}\n");
    // lfx0 does not exist yet: the observer cannot attach, and the daemon starts without it.
    let path = topology.node.config("config.yaml", &config("lf-c, lfx0", &before_metrics, &[8080, 8081]));
    let daemon = Daemon::start(&topology.node, &path);
    let scrape = |listen: &str| topology.node.http_get(listen, "/metrics");
    assert_eq!(metric(&scrape(BEFORE_LISTEN), "libraflux_ebpf_attached", &[]), Some(0.0), "{}", daemon.log());

    // The interface appears: the observer's next try (1 s backoff, on a reconcile) attaches.
    topology.node.netns.ip(&["link", "add", "lfx0", "type", "dummy"]);
    topology.node.netns.ip(&["link", "set", "lfx0", "up"]);
    wait_for(Duration::from_secs(15), "the observer attached after a retry", &daemon, || {
        (metric(&scrape(BEFORE_LISTEN), "libraflux_ebpf_attached", &[]) == Some(1.0)).then_some(())
    });
    let healthy_8081 = ["libraflux_backend_healthy", "backend=\"10.200.0.2:8081\""];
    wait_for(Duration::from_secs(15), "a health series for 10.200.0.2:8081", &daemon, || {
        metric(&scrape(BEFORE_LISTEN), healthy_8081[0], &healthy_8081[1..]).filter(|v| *v == 1.0)
    });

    // Only lf-c (ingress: the VIP) is counted: the NAT backend's packets leave by lf-d.
    send_datagrams(&topology.client);
    wait_for(Duration::from_secs(15), "the VIP's datagrams counted", &daemon, || {
        (traffic(&topology, BEFORE_LISTEN, "udp:10.220.0.10:53") >= DATAGRAMS).then_some(())
    });
    assert_eq!(traffic(&topology, BEFORE_LISTEN, "udp:10.200.0.2:53"), 0, "no counter sits at lf-d yet");

    // The reload: lf-d in and lfx0 out, the endpoint moves, collection every second, room for
    // the series of one backend only, and web's 8081 leaves.
    let after_metrics = format!("  listen: {AFTER_LISTEN}\n  collect_interval: 1s\n  max_series: 7\n");
    topology.node.config("config.yaml", &config("lf-c, lf-d", &after_metrics, &[8080]));
    daemon.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(10), "the reload", &daemon, || {
        daemon.log().contains("config reloaded").then_some(())
    });
    wait_for(Duration::from_secs(10), "the endpoint on its new address", &daemon, || {
        topology.node.netns.enter(|| TcpStream::connect(AFTER_LISTEN).ok()).map(drop)
    });
    let old = topology.node.netns.enter(|| TcpStream::connect(BEFORE_LISTEN).map(drop));
    assert!(old.is_err(), "the old metrics address still answers:\n{}", daemon.log());

    let attached =
        |interface: &str, direction: &str| attached_programs(&topology.node.netns, interface, direction);
    assert_eq!(attached("lfx0", "ingress"), [], "lfx0 keeps its ingress program");
    assert_eq!(attached("lfx0", "egress"), [], "lfx0 keeps its egress program");
    assert_eq!(attached("lf-d", "egress").len(), 1, "lf-d has no egress program");

    send_datagrams(&topology.client);
    wait_for(Duration::from_secs(15), "the NAT backend's datagrams counted at lf-d", &daemon, || {
        (traffic(&topology, AFTER_LISTEN, "udp:10.200.0.2:53") == DATAGRAMS).then_some(())
    });

    let metrics = scrape(AFTER_LISTEN);
    let health_of_8081: Vec<&str> = metrics
        .lines()
        .filter(|line| {
            line.starts_with("libraflux_backend_healthy") || line.starts_with("libraflux_health_checks")
        })
        .filter(|line| line.contains("backend=\"10.200.0.2:8081\""))
        .collect();
    assert!(
        health_of_8081.is_empty(),
        "health series of the removed backend live on:\n{}",
        health_of_8081.join("\n")
    );
    // Two or three backends in IPVS (8081 drains at weight 0, then goes), room for one: the
    // others' series are dropped, 7 per backend, once the collector has run on its 1 s interval.
    wait_for(Duration::from_secs(10), "max_series applied", &daemon, || {
        metric(&scrape(AFTER_LISTEN), "libraflux_metrics_series_dropped", &[])
            .filter(|dropped| *dropped >= 7.0)
    });
}
