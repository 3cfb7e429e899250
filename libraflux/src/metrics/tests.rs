//! The registry as a scrape sees it: exact lines, the cardinality cap, counter resets.

use std::{collections::BTreeMap, time::Duration};

use super::{CheckOutcome, Format, Metrics, ReconcileResult};
use crate::{
    config::Check,
    ipvs::{DestinationStatus, Op, ServiceStatus, Stats64},
    model::{DestKey, Destination, Forwarding, Service, ServiceKey},
};

fn service_key(text: &str) -> ServiceKey {
    text.parse().unwrap()
}

fn dest_key(text: &str) -> DestKey {
    text.parse().unwrap()
}

/// One destination with `connections` and packets/bytes derived from it.
fn dest(key: &str, active: u32, inactive: u32, connections: u64) -> DestinationStatus {
    DestinationStatus {
        destination: Destination {
            key: dest_key(key),
            weight: 1,
            forwarding: Forwarding::Nat,
            upper_threshold: 0,
            lower_threshold: 0,
        },
        active_connections: active,
        inactive_connections: inactive,
        persistent_connections: 0,
        stats: Stats64 {
            connections,
            packets_in: connections * 10,
            packets_out: connections * 8,
            bytes_in: connections * 1000,
            bytes_out: connections * 5000,
            ..Stats64::default()
        },
    }
}

fn service(key: &str, dests: Vec<DestinationStatus>) -> ServiceStatus {
    let mut status = ServiceStatus {
        service: Service {
            key: service_key(key),
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
    for dest in dests {
        status.insert_destination(dest);
    }
    status
}

/// The lines of `text` that belong to the family `name` (its HELP, TYPE and samples).
fn family_lines(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .filter(|line| {
            let sample =
                line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")).unwrap_or(line);
            sample.starts_with(name)
                && sample[name.len()..].starts_with([' ', '{', '_'])
                && !sample[name.len()..].starts_with("_active")
                && !sample[name.len()..].starts_with("_inactive")
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn encodes_a_small_snapshot_line_by_line() {
    let metrics = Metrics::new("lb-a", 1000);
    metrics.set_ipvs_snapshot(&[service(
        "tcp:192.168.94.250:443",
        // Out of key order on purpose: .9 sorts before .10 as an address.
        vec![dest("192.168.94.10:443", 3, 1, 7), dest("192.168.94.9:443", 0, 2, 5)],
    )]);
    let text = metrics.encode(Format::PrometheusText);
    let labels9 = r#"node="lb-a",service="tcp:192.168.94.250:443",backend="192.168.94.9:443""#;
    let labels10 = r#"node="lb-a",service="tcp:192.168.94.250:443",backend="192.168.94.10:443""#;
    assert_eq!(
        family_lines(&text, "libraflux_ipvs_connections"),
        [
            "# HELP libraflux_ipvs_connections_total Connections IPVS scheduled to the backend (kernel stats64, kept monotonic).".to_owned(),
            "# TYPE libraflux_ipvs_connections_total counter".to_owned(),
            format!("libraflux_ipvs_connections_total{{{labels9}}} 5"),
            format!("libraflux_ipvs_connections_total{{{labels10}}} 7"),
        ]
    );
    for (name, kind, nine, ten) in [
        ("libraflux_ipvs_connections_active", "gauge", 0, 3),
        ("libraflux_ipvs_connections_inactive", "gauge", 2, 1),
        ("libraflux_ipvs_packets_in_total", "counter", 50, 70),
        ("libraflux_ipvs_packets_out_total", "counter", 40, 56),
        ("libraflux_ipvs_bytes_in_total", "counter", 5000, 7000),
        ("libraflux_ipvs_bytes_out_total", "counter", 25000, 35000),
    ] {
        assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name} {kind}:\n{text}");
        assert!(text.contains(&format!("{name}{{{labels9}}} {nine}\n")), "{name}:\n{text}");
        assert!(text.contains(&format!("{name}{{{labels10}}} {ten}\n")), "{name}:\n{text}");
    }
    assert!(text.contains("libraflux_metrics_series_dropped 0\n"), "{text}");
}

#[test]
fn open_metrics_names_counter_families_without_total_and_ends_with_eof() {
    let metrics = Metrics::new("lb-a", 1000);
    metrics.set_ipvs_snapshot(&[service("udp:10.0.0.1:53", vec![dest("10.0.1.1:53", 0, 0, 4)])]);
    let text = metrics.encode(Format::OpenMetrics);
    assert!(text.contains("# TYPE libraflux_ipvs_connections counter\n"), "{text}");
    assert!(
        text.contains(
            "libraflux_ipvs_connections_total{node=\"lb-a\",service=\"udp:10.0.0.1:53\",backend=\"10.0.1.1:53\"} 4\n"
        ),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

/// The per-backend IPVS series of an exposition (the sync daemon gauge is per node).
fn per_backend(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|line| line.starts_with("libraflux_ipvs_") && !line.starts_with("libraflux_ipvs_sync_daemon"))
        .collect()
}

#[test]
fn the_sync_daemon_gauge_has_both_states_from_the_start_and_follows_the_kernel() {
    let metrics = Metrics::new("lb-a", 1000);
    let lines = |metrics: &Metrics| -> Vec<String> {
        let text = metrics.encode(Format::PrometheusText);
        text.lines()
            .filter(|line| line.starts_with("libraflux_ipvs_sync_daemon{"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        lines(&metrics),
        [
            r#"libraflux_ipvs_sync_daemon{state="master"} 0"#,
            r#"libraflux_ipvs_sync_daemon{state="backup"} 0"#
        ]
    );
    metrics.set_sync_daemons(&[crate::ipvs::SyncState::Backup]);
    assert_eq!(
        lines(&metrics),
        [
            r#"libraflux_ipvs_sync_daemon{state="master"} 0"#,
            r#"libraflux_ipvs_sync_daemon{state="backup"} 1"#
        ]
    );
    metrics.set_sync_daemons(&[crate::ipvs::SyncState::Master]);
    assert_eq!(
        lines(&metrics),
        [
            r#"libraflux_ipvs_sync_daemon{state="master"} 1"#,
            r#"libraflux_ipvs_sync_daemon{state="backup"} 0"#
        ]
    );
}

#[test]
fn caps_per_backend_series_in_key_order_and_counts_the_rest() {
    // Room for two backends (7 series each) out of three.
    let metrics = Metrics::new("lb-a", 2 * super::SERIES_PER_BACKEND + 3);
    metrics.set_ipvs_snapshot(&[
        service("tcp:10.0.0.2:80", vec![dest("10.0.2.1:80", 1, 0, 1)]),
        service("tcp:10.0.0.1:80", vec![dest("10.0.1.2:80", 1, 0, 1), dest("10.0.1.1:80", 1, 0, 1)]),
    ]);
    let text = metrics.encode(Format::PrometheusText);
    let active: Vec<&str> =
        text.lines().filter(|line| line.starts_with("libraflux_ipvs_connections_active{")).collect();
    assert_eq!(
        active,
        [
            r#"libraflux_ipvs_connections_active{node="lb-a",service="tcp:10.0.0.1:80",backend="10.0.1.1:80"} 1"#,
            r#"libraflux_ipvs_connections_active{node="lb-a",service="tcp:10.0.0.1:80",backend="10.0.1.2:80"} 1"#,
        ]
    );
    assert_eq!(per_backend(&text).len() as u64, 2 * super::SERIES_PER_BACKEND);
    assert!(text.contains("libraflux_metrics_series_dropped 7\n"), "{text}");

    // The third backend leaves: everything fits again.
    metrics.set_ipvs_snapshot(&[service("tcp:10.0.0.1:80", vec![dest("10.0.1.1:80", 1, 0, 1)])]);
    assert!(metrics.encode(Format::PrometheusText).contains("libraflux_metrics_series_dropped 0\n"));
}

#[test]
fn a_zero_limit_exports_no_backend_and_counts_them_all() {
    let metrics = Metrics::new("lb-a", 0);
    metrics.set_ipvs_snapshot(&[service("tcp:10.0.0.1:80", vec![dest("10.0.1.1:80", 1, 0, 1)])]);
    let text = metrics.encode(Format::PrometheusText);
    assert!(per_backend(&text).is_empty(), "{text}");
    assert!(text.contains("libraflux_metrics_series_dropped 7\n"), "{text}");
}

#[test]
fn counters_never_go_back_when_the_kernel_resets() {
    let metrics = Metrics::new("lb-a", 1000);
    let connections = |metrics: &Metrics| -> String {
        let text = metrics.encode(Format::PrometheusText);
        let line = text.lines().find(|line| line.starts_with("libraflux_ipvs_connections_total{")).unwrap();
        line.rsplit(' ').next().unwrap().to_owned()
    };
    let snapshot = |conns| [service("tcp:10.0.0.1:80", vec![dest("10.0.1.1:80", 9, 0, conns)])];
    metrics.set_ipvs_snapshot(&snapshot(100));
    assert_eq!(connections(&metrics), "100");
    metrics.set_ipvs_snapshot(&snapshot(120));
    assert_eq!(connections(&metrics), "120");
    // `ipvsadm -Z` or the service re-created: the kernel starts again from 0.
    metrics.set_ipvs_snapshot(&snapshot(3));
    assert_eq!(connections(&metrics), "123");
    metrics.set_ipvs_snapshot(&snapshot(10));
    assert_eq!(connections(&metrics), "130");
    // Gauges follow the kernel as it is.
    assert!(metrics.encode(Format::PrometheusText).contains("libraflux_ipvs_connections_active{"));
}

#[test]
fn a_backend_that_leaves_and_returns_starts_a_new_series() {
    let metrics = Metrics::new("lb-a", 1000);
    metrics.set_ipvs_snapshot(&[service("tcp:10.0.0.1:80", vec![dest("10.0.1.1:80", 0, 0, 50)])]);
    metrics.set_ipvs_snapshot(&[]);
    let text = metrics.encode(Format::PrometheusText);
    assert!(per_backend(&text).is_empty(), "{text}");
    metrics.set_ipvs_snapshot(&[service("tcp:10.0.0.1:80", vec![dest("10.0.1.1:80", 0, 0, 2)])]);
    assert!(metrics.encode(Format::PrometheusText).contains("backend=\"10.0.1.1:80\"} 2\n"));
}

#[test]
fn daemon_metrics_start_at_zero_and_count() {
    let metrics = Metrics::new("lb-a", 1000);
    let text = metrics.encode(Format::PrometheusText);
    let build_info = format!("libraflux_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    assert!(text.lines().any(|l| l == build_info), "missing {build_info:?} in\n{text}");
    for line in [
        "libraflux_reconcile_runs_total{result=\"ok\"} 0",
        "libraflux_reconcile_runs_total{result=\"error\"} 0",
        "libraflux_reconcile_runs_total{result=\"refused\"} 0",
        "libraflux_reconcile_operations_total{kind=\"delete_backend\"} 0",
        "libraflux_config_reloads_total{result=\"failed\"} 0",
        "libraflux_drift_repairs_total 0",
        "libraflux_last_successful_reconcile_timestamp_seconds 0.0",
        "libraflux_ebpf_attached 0",
        "libraflux_reconcile_duration_seconds_count 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }

    let web = service("tcp:10.0.0.1:80", vec![]).service;
    let ops = [
        Op::AddService(web.clone()),
        Op::DeleteDest(web.key, dest_key("10.0.1.1:80")),
        Op::DeleteDest(web.key, dest_key("10.0.1.2:80")),
    ];
    metrics.record_reconcile(ReconcileResult::Ok, Duration::from_millis(30), &ops);
    metrics.record_reconcile(ReconcileResult::Refused, Duration::from_millis(2), &[]);
    metrics.record_drift_repair(2);
    metrics.record_reload(false);
    metrics.set_ebpf_attached(true);
    let text = metrics.encode(Format::PrometheusText);
    for line in [
        "libraflux_reconcile_runs_total{result=\"ok\"} 1",
        "libraflux_reconcile_runs_total{result=\"refused\"} 1",
        "libraflux_reconcile_operations_total{kind=\"add_service\"} 1",
        "libraflux_reconcile_operations_total{kind=\"delete_backend\"} 2",
        "libraflux_config_reloads_total{result=\"failed\"} 1",
        "libraflux_drift_repairs_total 2",
        "libraflux_ebpf_attached 1",
        "libraflux_reconcile_duration_seconds_count 2",
        "libraflux_reconcile_duration_seconds_bucket{le=\"0.005\"} 1",
        "libraflux_reconcile_duration_seconds_bucket{le=\"0.05\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    let timestamp = text
        .lines()
        .find_map(|line| line.strip_prefix("libraflux_last_successful_reconcile_timestamp_seconds "))
        .unwrap();
    assert!(timestamp.parse::<f64>().unwrap() > 1.7e9, "{timestamp}");
}

#[test]
fn health_series_are_ordered_by_key_and_can_be_forgotten() {
    let metrics = Metrics::new("lb-a", 1000);
    let web = service_key("tcp:10.0.0.1:80");
    let (nine, ten) = (dest_key("10.0.1.9:80"), dest_key("10.0.1.10:80"));
    metrics.set_backend_healthy(web, ten, false);
    metrics.set_backend_healthy(web, nine, true);
    metrics.record_health(web, ten, &Check::Tcp, CheckOutcome::Timeout, Duration::from_secs(1));
    metrics.record_health(web, nine, &Check::Tcp, CheckOutcome::Success, Duration::from_micros(800));
    metrics.set_fail_open(web, false);
    let text = metrics.encode(Format::PrometheusText);
    let healthy: Vec<&str> =
        text.lines().filter(|line| line.starts_with("libraflux_backend_healthy{")).collect();
    assert_eq!(
        healthy,
        [
            r#"libraflux_backend_healthy{service="tcp:10.0.0.1:80",backend="10.0.1.9:80"} 1"#,
            r#"libraflux_backend_healthy{service="tcp:10.0.0.1:80",backend="10.0.1.10:80"} 0"#,
        ]
    );
    for line in [
        r#"libraflux_health_checks_total{service="tcp:10.0.0.1:80",backend="10.0.1.9:80",outcome="success"} 1"#,
        r#"libraflux_health_checks_total{service="tcp:10.0.0.1:80",backend="10.0.1.10:80",outcome="timeout"} 1"#,
        r#"libraflux_health_check_latency_seconds_bucket{check_type="tcp",outcome="success",le="0.001"} 1"#,
        r#"libraflux_health_check_latency_seconds_bucket{check_type="tcp",outcome="timeout",le="0.5"} 0"#,
        r#"libraflux_health_check_latency_seconds_bucket{check_type="tcp",outcome="timeout",le="1"} 1"#,
        r#"libraflux_service_fail_open{service="tcp:10.0.0.1:80"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }

    metrics.forget_backend(web, ten);
    let text = metrics.encode(Format::PrometheusText);
    assert!(!text.contains("10.0.1.10:80"), "{text}");
    metrics.forget_service(web);
    let text = metrics.encode(Format::PrometheusText);
    assert!(!text.contains("tcp:10.0.0.1:80"), "{text}");
}

#[test]
fn churn_is_counted_generation_plan_sizes_and_refusals_by_reason() {
    let metrics = Metrics::new("lb-a", 1000);
    let text = metrics.encode(Format::PrometheusText);
    for reason in super::REFUSAL_REASONS {
        assert!(
            text.contains(&format!("libraflux_changes_refused_total{{reason=\"{reason}\"}} 0\n")),
            "{reason}: {text}"
        );
    }
    assert!(text.contains("libraflux_config_generation 0\n"), "{text}");
    metrics.record_config_change(3);
    metrics.record_plan(0);
    metrics.record_plan(7);
    metrics.record_plan(1200);
    metrics.record_change_refused("max_services_created");
    metrics.record_change_refused("max_services_created");
    metrics.record_change_refused("invalid_config");
    let text = metrics.encode(Format::PrometheusText);
    for line in [
        "libraflux_config_generation 3\n",
        "libraflux_changes_refused_total{reason=\"max_services_created\"} 2\n",
        "libraflux_changes_refused_total{reason=\"invalid_config\"} 1\n",
        "libraflux_changes_refused_total{reason=\"failed\"} 0\n",
        "libraflux_plan_operations_sum 1207.0\n",
        "libraflux_plan_operations_count 3\n",
        "libraflux_plan_operations_bucket{le=\"0\"} 1\n",
        "libraflux_plan_operations_bucket{le=\"10\"} 2\n",
        "libraflux_plan_operations_bucket{le=\"1000\"} 2\n",
        "libraflux_plan_operations_bucket{le=\"10000\"} 3\n",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    let changed = text
        .lines()
        .find_map(|line| line.strip_prefix("libraflux_config_last_change_timestamp_seconds "))
        .and_then(|value| value.parse::<f64>().ok())
        .expect("a last change time");
    assert!(changed > 1.7e9, "{changed}");
}
