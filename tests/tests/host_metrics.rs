//! Host tier: the metrics endpoint on loopback, scraped over real TCP, and its text checked by
//! `promtool check metrics` (Debian package `prometheus`, installed by `cargo xtask setup`).

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::SocketAddr,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use libraflux::{
    config::Check,
    ipvs::{DestinationStatus, ServiceStatus, Stats64},
    metrics::{
        CheckOutcome, Format, Metrics, ReconcileResult,
        http::{Endpoint, EndpointError, Server},
    },
    model::{Destination, Forwarding, Service},
    observe::{ConnectOutcomes, DestKey, FlowSnapshot, IPPROTO_TCP},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::{oneshot, watch},
};

/// A response as read off the socket.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection, read until the server closes it.
async fn request(addr: SocketAddr, method: &str, path: &str, accept: Option<&str>) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
    let accept = accept.map(|accept| format!("Accept: {accept}\r\n")).unwrap_or_default();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("send request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers within 10 s")
        .expect("read response");
    let raw = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end in {raw:?}"));
    let mut lines = head.split("\r\n");
    let status =
        lines.next().unwrap().split(' ').nth(1).and_then(|code| code.parse().ok()).expect("status code");
    let headers = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    Reply { status, headers, body: body.to_owned() }
}

/// Runs `promtool check metrics` on `text`; returns what it printed, panics if it objects.
fn promtool_check(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run promtool ({err}): install the Debian package `prometheus` \
                 (`apt-get install --no-install-recommends prometheus`, or `cargo xtask setup`)"
            )
        });
    child.stdin.take().unwrap().write_all(text.as_bytes()).expect("feed promtool");
    let output = child.wait_with_output().expect("wait for promtool");
    let printed =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "promtool check metrics failed ({}):\n{printed}\non:\n{text}",
        output.status
    );
    printed
}

fn snapshot() -> Vec<ServiceStatus> {
    let mut status = ServiceStatus {
        service: Service {
            key: "tcp:192.168.94.250:443".parse().unwrap(),
            scheduler: "wrr".to_owned(),
            persistence: None,
            persistence_netmask: None,
            destinations: BTreeMap::new(),
        },
        flags: 0,
        persistence_engine: None,
        stats: Stats64::default(),
        destinations: BTreeMap::new(),
    };
    for (address, active) in [("192.168.94.22:443", 12), ("[2001:db8::22]:443", 3)] {
        status.insert_destination(DestinationStatus {
            destination: Destination {
                key: address.parse().unwrap(),
                weight: 100,
                forwarding: Forwarding::Nat,
                upper_threshold: 0,
                lower_threshold: 0,
            },
            active_connections: active,
            inactive_connections: 1,
            persistent_connections: 0,
            stats: Stats64 {
                connections: 40,
                packets_in: 400,
                packets_out: 380,
                bytes_in: 4096,
                bytes_out: 65536,
                ..Stats64::default()
            },
        });
    }
    vec![status]
}

/// Metrics with every family populated, so promtool sees each one.
fn populated_metrics() -> Arc<Metrics> {
    let metrics = Arc::new(Metrics::new("lb-a", 50_000));
    let services = snapshot();
    metrics.set_ipvs_snapshot(&services);
    let service = services[0].service.key;
    for backend in services[0].destinations.keys() {
        metrics.set_backend_healthy(service, *backend, true);
        metrics.record_health(
            service,
            *backend,
            &Check::Tcp,
            CheckOutcome::Success,
            Duration::from_millis(3),
        );
    }
    metrics.set_fail_open(service, false);
    metrics.record_reconcile(ReconcileResult::Ok, Duration::from_millis(12), &[]);
    metrics.record_drift_repair(1);
    metrics.record_reload(true);
    metrics.set_ebpf_attached(true);
    // A VIP and a NAT backend whose connection outcomes are tracked.
    let traffic = FlowSnapshot { packets: 3, bytes: 222, new_flows: 1, ..FlowSnapshot::default() };
    let outcomes = ConnectOutcomes { refused: 2, syn_timeout: 1, unreachable: 0, answered: 9 };
    metrics.set_ebpf_snapshot(&BTreeMap::from([
        (DestKey::new("192.168.94.250".parse().unwrap(), 443, IPPROTO_TCP), traffic),
        (
            DestKey::new("10.0.2.2".parse().unwrap(), 8443, IPPROTO_TCP),
            FlowSnapshot { connects: Some(outcomes), ..traffic },
        ),
    ]));
    metrics.set_sync_daemons(&[libraflux::ipvs::SyncState::Master]);
    let backend = *services[0].destinations.keys().next().unwrap();
    metrics.set_canaries(&[(service, backend, 1, 5)]);
    metrics.record_canary_abort(libraflux::canary::AbortReason::HealthCheck);
    metrics.set_circuits([(service, backend, true)].into_iter());
    metrics.record_circuit_ejection(service, backend);
    metrics.record_config_change(2);
    metrics.record_plan(3);
    metrics.record_change_refused("invalid_config");
    metrics.set_replication_generation(4);
    metrics.set_replication_last_success(std::time::SystemTime::now());
    metrics.record_replication_failure("bad_signature");
    metrics.set_drains(&[(service, backend, true)]);
    metrics
}

/// The names of the samples a scrape of `metrics` holds (`_total`, `_bucket` and the like as
/// exported).
fn exported_names(metrics: &Metrics) -> std::collections::BTreeSet<String> {
    metrics
        .encode(Format::PrometheusText)
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next().map(str::to_owned))
        .collect()
}

/// Every `libraflux_*` name in the alert rules (docs/prometheus/libraflux-rules.yaml, checked by
/// host_alerts) is a sample the daemon exports.
#[test]
fn the_alert_rules_name_only_exported_metrics() {
    let exported = exported_names(&populated_metrics());
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/prometheus/libraflux-rules.yaml"
    ))
    .unwrap();
    let named: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("libraflux_"))
        .collect();
    assert!(named.len() >= 10, "{named:?}");
    let missing: Vec<&&str> = named.iter().filter(|name| !exported.contains(**name)).collect();
    assert!(
        missing.is_empty(),
        "the rules name metrics no scrape holds: {missing:?}\nexported: {exported:?}"
    );
}

async fn start(
    metrics: Arc<Metrics>,
    staleness: Duration,
) -> (SocketAddr, watch::Sender<serde_json::Value>, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (status_tx, status) = watch::channel(serde_json::json!({"node": "lb-a", "services": []}));
    let endpoint = Endpoint::new(metrics, status, staleness);
    let server =
        Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)), endpoint).await.expect("bind on loopback");
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    (addr, status_tx, stop, serving)
}

#[tokio::test]
async fn serves_metrics_that_promtool_accepts() {
    let (addr, _status, stop, serving) = start(populated_metrics(), Duration::from_secs(60)).await;

    let reply = request(addr, "GET", "/metrics", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    for name in [
        "libraflux_ipvs_connections_total",
        "libraflux_ipvs_connections_active",
        "libraflux_ipvs_connections_inactive",
        "libraflux_ipvs_packets_in_total",
        "libraflux_ipvs_packets_out_total",
        "libraflux_ipvs_bytes_in_total",
        "libraflux_ipvs_bytes_out_total",
        "libraflux_backend_healthy",
        "libraflux_health_checks_total",
        "libraflux_health_check_latency_seconds",
        "libraflux_service_fail_open",
        "libraflux_reconcile_runs_total",
        "libraflux_reconcile_duration_seconds",
        "libraflux_reconcile_operations_total",
        "libraflux_drift_repairs_total",
        "libraflux_config_reloads_total",
        "libraflux_last_successful_reconcile_timestamp_seconds",
        "libraflux_build_info",
        "libraflux_ebpf_attached",
        "libraflux_ebpf_packets_total",
        "libraflux_ebpf_connect_failures_total",
        "libraflux_ebpf_connect_answers_total",
        "libraflux_ipvs_sync_daemon",
        "libraflux_metrics_series_dropped",
    ] {
        assert!(reply.body.contains(&format!("# TYPE {name} ")), "no family {name} in:\n{}", reply.body);
    }
    assert!(reply.body.contains(
        r#"libraflux_ipvs_connections_active{node="lb-a",service="tcp:192.168.94.250:443",backend="[2001:db8::22]:443"} 3"#
    ));
    assert!(reply.body.contains("libraflux_ipvs_sync_daemon{state=\"master\"} 1\n"), "{}", reply.body);
    assert!(reply.body.contains(
        r#"libraflux_ebpf_connect_failures_total{node="lb-a",destination="tcp:10.0.2.2:8443",backend="10.0.2.2:8443",kind="syn_timeout"} 1"#
    ));
    let printed = promtool_check(&reply.body);
    eprintln!("promtool check metrics: exit 0, printed {:?}", printed.trim());

    let open =
        request(addr, "GET", "/metrics", Some("application/openmetrics-text;version=1.0.0,*/*;q=0.1")).await;
    assert_eq!(open.status, 200);
    assert_eq!(
        open.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(open.body.ends_with("# EOF\n"), "{}", open.body);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), serving).await.expect("shuts down promptly").unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still listening on {addr} after shutdown");
}

#[tokio::test]
async fn serves_health_status_and_refuses_the_rest() {
    let (addr, status, stop, serving) = start(populated_metrics(), Duration::from_secs(60)).await;

    let health = request(addr, "GET", "/healthz", None).await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    let first = request(addr, "GET", "/status", None).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-type"), Some("application/json"));
    let document: serde_json::Value = serde_json::from_str(&first.body).expect("JSON status");
    assert_eq!(document, serde_json::json!({"node": "lb-a", "services": []}));
    status.send(serde_json::json!({"node": "lb-a", "services": ["tcp:192.168.94.250:443"]})).unwrap();
    let second: serde_json::Value =
        serde_json::from_str(&request(addr, "GET", "/status", None).await.body).unwrap();
    assert_eq!(second["services"][0], "tcp:192.168.94.250:443", "the latest document is served");

    assert_eq!(request(addr, "GET", "/", None).await.status, 404);
    assert_eq!(request(addr, "GET", "/metricsx", None).await.status, 404);
    let refused = request(addr, "POST", "/metrics", None).await;
    assert_eq!(refused.status, 405);
    assert_eq!(refused.header("allow"), Some("GET"));
    assert_eq!(request(addr, "DELETE", "/status", None).await.status, 405);

    stop.send(()).unwrap();
    serving.await.unwrap();
}

#[tokio::test]
async fn healthz_is_503_once_reconcile_is_stale() {
    let (addr, _status, stop, serving) =
        start(Arc::new(Metrics::new("lb-a", 10)), Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stale = request(addr, "GET", "/healthz", None).await;
    assert_eq!(stale.status, 503, "{stale:?}");
    stop.send(()).unwrap();
    serving.await.unwrap();
}

#[tokio::test]
async fn a_taken_address_is_named_in_the_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (_, status) = watch::channel(serde_json::Value::Null);
    let endpoint = Endpoint::new(Arc::new(Metrics::new("lb-a", 10)), status, Duration::from_secs(1));
    let err = Server::bind(addr, endpoint).await.expect_err("the port is taken");
    assert!(matches!(err, EndpointError::Bind { addr: named, .. } if named == addr), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

/// Every query of the Grafana dashboard (docs/grafana/libraflux.json) names only metrics a scrape
/// holds, and every label it selects on or groups by is one those metrics carry: the eBPF series
/// say `service` (VIPs) or `backend` (NAT backends) as the IPVS ones do.
#[test]
fn the_dashboard_queries_only_exported_metrics_and_labels() {
    let text = populated_metrics().encode(Format::PrometheusText);
    // Each sample's name and its label names.
    let mut labels: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let (name, rest) = line.split_once(['{', ' ']).unwrap_or((line, ""));
        let entry = labels.entry(name.to_owned()).or_default();
        entry.extend(["instance".to_owned(), "le".to_owned()]);
        if let Some((inside, _)) = rest.split_once('}') {
            entry.extend(
                inside.split(',').filter_map(|pair| pair.split_once('=')).map(|(key, _)| key.to_owned()),
            );
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/libraflux.json"))
            .unwrap(),
    )
    .unwrap();
    let mut queries: Vec<String> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|variable| variable["definition"].as_str().map(str::to_owned))
        .collect();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(queries.len() > 20, "{queries:?}");
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for query in &queries {
        let metrics: Vec<&str> =
            query.split(|c: char| !word(c)).filter(|w| w.starts_with("libraflux_")).collect();
        assert!(!metrics.is_empty(), "{query}");
        for metric in &metrics {
            let carried = labels.get(*metric).unwrap_or_else(|| panic!("{query}: {metric} is not exported"));
            // Labels selected on right after the metric's name.
            if let Some(selector) = query.split(metric).nth(1).and_then(|after| after.strip_prefix('{')) {
                let selector = selector.split('}').next().unwrap();
                for label in selector.split(',').filter_map(|m| m.split(['=', '!']).next()) {
                    assert!(carried.contains(label.trim()), "{query}: {metric} has no label {label}");
                }
            }
        }
        // Labels grouped by: carried by one of the query's metrics at least.
        for (_, after) in query.match_indices("by (").map(|(i, _)| query.split_at(i + 4)) {
            for label in after.split(')').next().unwrap().split(',') {
                let label = label.trim();
                assert!(
                    metrics.iter().any(|metric| labels[*metric].contains(label)),
                    "{query}: no metric in it has the label {label}"
                );
            }
        }
    }
}
