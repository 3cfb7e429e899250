//! `libraflux apply` on real IPVS: dry run writes nothing, apply writes exactly what
//! `ipvsadm-save -n` then shows, a second apply is a no-op, an edit yields the minimal plan, and
//! limits, failed pre-flight checks and invalid configs leave the table untouched.

use libraflux_tests::sorted_lines;

use super::support::{HEADER, Node, TWO_SERVICES};

const TWO_SERVICES_SAVED: &str = "\
-A -t 10.220.0.10:80 -s wrr -p 300
-a -t 10.220.0.10:80 -r 10.220.1.1:8080 -m -w 100
-a -t 10.220.0.10:80 -r 10.220.1.2:8080 -m -w 50
-A -u 10.220.0.10:53 -s rr
-a -u 10.220.0.10:53 -r 10.220.1.1:53 -m -w 1
-a -u 10.220.0.10:53 -r 10.220.1.2:53 -m -w 1
";

#[test]
fn dry_run_writes_nothing_apply_writes_exactly_the_plan_and_reapply_is_a_no_op() {
    let node = Node::new();
    let config = node.config("config.yaml", &format!("{HEADER}{TWO_SERVICES}"));

    let dry = node.libraflux(&["apply", "-c", &config, "--dry-run"]);
    dry.assert_code(0);
    assert!(dry.stdout.contains("Plan: 2 to create, 0 to update, 0 to delete."), "{}", dry.stdout);
    assert_eq!(node.saved(), "", "a dry run must not touch the kernel");

    let applied = node.libraflux(&["apply", "-c", &config]);
    applied.assert_code(0);
    assert!(applied.stdout.contains("Applied 6 of 6 operations"), "{}", applied.stdout);
    assert_eq!(node.saved(), sorted_lines(TWO_SERVICES_SAVED));

    let again = node.libraflux(&["apply", "-c", &config]);
    again.assert_code(0);
    assert!(again.stdout.contains("No changes."), "{}", again.stdout);
    assert_eq!(node.saved(), sorted_lines(TWO_SERVICES_SAVED));

    // No daemon runs: status says so and still shows the kernel's table.
    let status = node.libraflux(&["status", "--output", "json"]);
    status.assert_code(0);
    let value: serde_json::Value = serde_json::from_str(&status.stdout).expect("status --output json");
    assert_eq!(value["daemon"], serde_json::Value::Null);
    let why = value["daemon_error"].as_str().unwrap_or_default();
    assert!(why.starts_with("no LibraFlux daemon answers on "), "{value:#}");
    assert_eq!(value["services"].as_array().map(Vec::len), Some(2), "{value:#}");
    assert_eq!(value["services"][0]["service"], "tcp:10.220.0.10:80", "ordered by key: {value:#}");
}

#[test]
fn an_edit_yields_the_minimal_plan() {
    let node = Node::new();
    let first = node.config("first.yaml", &format!("{HEADER}{TWO_SERVICES}"));
    node.libraflux(&["apply", "-c", &first]).assert_code(0);
    // web: one backend re-weighted, one added; dns removed.
    let edited = node.config(
        "edited.yaml",
        &format!(
            "{HEADER}
services:
  - name: web
    protocol: tcp
    vip: 10.220.0.10
    port: 80
    scheduler: wrr
    persistence: 300s
    backends:
      - address: 10.220.1.1
        port: 8080
        weight: 100
      - address: 10.220.1.2
        port: 8080
        weight: 10
      - address: 10.220.1.3
        port: 8080
        weight: 50
"
        ),
    );
    // --immediate: deleted at once, as before graceful removal (tests/tests/vm/removal.rs drains).
    let json = node.libraflux(&["apply", "-c", &edited, "--dry-run", "--immediate", "--output", "json"]);
    json.assert_code(0);
    let value: serde_json::Value =
        serde_json::from_str(&json.stdout).expect("apply --output json prints JSON");
    assert_eq!(
        value["plan"]["summary"],
        serde_json::json!({"create": 0, "update": 1, "delete": 1}),
        "{value:#}"
    );

    let applied = node.libraflux(&["apply", "-c", &edited, "--immediate"]);
    applied.assert_code(0);
    assert!(applied.stdout.contains("Applied 3 of 3 operations"), "{}", applied.stdout);
    assert_eq!(
        node.saved(),
        sorted_lines(
            "\
-A -t 10.220.0.10:80 -s wrr -p 300
-a -t 10.220.0.10:80 -r 10.220.1.1:8080 -m -w 100
-a -t 10.220.0.10:80 -r 10.220.1.2:8080 -m -w 10
-a -t 10.220.0.10:80 -r 10.220.1.3:8080 -m -w 50
"
        )
    );
}

#[test]
fn a_plan_over_a_limit_is_refused_untouched_unless_forced() {
    let node = Node::new();
    let limited = format!("{HEADER}limits:\n  max_services_created: 1\n{TWO_SERVICES}");
    let config = node.config("limited.yaml", &limited);
    let refused = node.libraflux(&["apply", "-c", &config]);
    refused.assert_code(3);
    assert!(refused.stdout.contains("max_services_created"), "{}", refused.stdout);
    assert_eq!(node.saved(), "", "a refused plan must not touch the kernel");

    let forced = node.libraflux(&["apply", "-c", &config, "--force"]);
    forced.assert_code(0);
    assert_eq!(node.saved(), sorted_lines(TWO_SERVICES_SAVED));
}

#[test]
fn a_failed_preflight_check_or_an_invalid_config_leaves_the_table_untouched() {
    let node = Node::new();
    node.netns.exec("ipvsadm", &["-A", "-t", "10.220.0.99:22", "-s", "rr"]);
    let before = node.saved();
    let missing_vip = TWO_SERVICES.replace("10.220.0.10", "10.220.0.11");
    let config = node.config("missing-vip.yaml", &format!("{HEADER}{missing_vip}"));
    let refused = node.libraflux(&["apply", "-c", &config]);
    refused.assert_code(3);
    assert!(refused.stdout.contains("FAIL    vips_present"), "{}", refused.stdout);
    assert!(refused.stderr.contains("pre-flight check(s) failed: vips_present"), "{}", refused.stderr);
    assert_eq!(node.saved(), before);
    // The checks alone, as JSON (docs/operations.md): every check in order, exit 3 on a failure.
    let report = node.libraflux(&["preflight", "-c", &config, "--output", "json"]);
    report.assert_code(3);
    let value: serde_json::Value = serde_json::from_str(&report.stdout).expect("preflight --output json");
    let checks = value["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().map(|check| check["name"].as_str().unwrap()).collect();
    assert_eq!(names, libraflux::preflight::CHECK_NAMES, "{value:#}");
    let verdict = |name: &str| checks.iter().find(|check| check["name"] == name).unwrap()["verdict"].clone();
    assert_eq!(
        (verdict("ipvs_available"), verdict("vips_present")),
        ("pass".into(), "fail".into()),
        "{value:#}"
    );

    let invalid = node
        .config("invalid.yaml", &format!("{HEADER}{}", TWO_SERVICES.replace("weight: 50", "weight: 70000")));
    let rejected = node.libraflux(&["apply", "-c", &invalid]);
    rejected.assert_code(65);
    assert!(rejected.stderr.contains("invalid.yaml:"), "errors name the file: {}", rejected.stderr);
    assert_eq!(node.saved(), before);
}

#[test]
fn a_kernel_refusal_midway_stops_reports_and_the_next_apply_converges() {
    let node = Node::new();
    // 10.220.5.255 is the broadcast address of a subnet on this node: the config cannot know
    // that, but the kernel refuses such a destination (EINVAL).
    node.netns.ip(&["addr", "add", "10.220.5.1/24", "dev", "lfvip0"]);
    let services = format!(
        "{HEADER}{TWO_SERVICES}
  - name: zz-broadcast
    protocol: tcp
    vip: 10.220.0.10
    port: 9000
    scheduler: rr
    backends:
      - address: 10.220.5.255
      - address: 10.220.1.1
"
    );
    let config = node.config("refused.yaml", &services);
    let failed = node.libraflux(&["apply", "-c", &config]);
    failed.assert_code(1);
    assert!(
        failed.stdout.contains(
            "refused by the kernel: creating destination 10.220.5.255:9000 in tcp:10.220.0.10:9000"
        ),
        "{}",
        failed.stdout
    );
    assert!(failed.stderr.contains("run apply again to converge"), "{}", failed.stderr);
    let saved = node.saved();
    for line in TWO_SERVICES_SAVED.lines() {
        assert!(saved.lines().any(|have| have == line), "applied before the refusal: {line}\n{saved}");
    }
    assert!(!saved.contains("10.220.5.255"), "{saved}");

    // Once the cause is gone, the same config converges, and then there is nothing left to do.
    node.netns.ip(&["addr", "del", "10.220.5.1/24", "dev", "lfvip0"]);
    node.libraflux(&["apply", "-c", &config]).assert_code(0);
    assert!(node.saved().contains("-a -t 10.220.0.10:9000 -r 10.220.5.255:9000 -m -w 1"), "{}", node.saved());
    let again = node.libraflux(&["apply", "-c", &config]);
    again.assert_code(0);
    assert!(again.stdout.contains("No changes."), "{}", again.stdout);
}
