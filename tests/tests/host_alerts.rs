//! The alert rules operators load (docs/prometheus/libraflux-rules.yaml) are valid Prometheus
//! rules (`promtool check rules`), every alert has unit tests that see it fire and see it stay
//! quiet (`promtool test rules` on docs/prometheus/libraflux-rules.test.yaml). That every metric a
//! rule names is one the daemon exports is checked against a scrape in host_metrics.

use std::{path::PathBuf, process::Command};

fn prometheus_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/prometheus"))
}

fn promtool(args: &[&str]) -> String {
    let output =
        Command::new("promtool").args(args).current_dir(prometheus_dir()).output().unwrap_or_else(|err| {
            panic!("cannot run promtool ({err}): install the Debian package `prometheus`")
        });
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn read(name: &str) -> String {
    std::fs::read_to_string(prometheus_dir().join(name)).unwrap()
}

/// The alerts the rules file defines.
fn alerts() -> Vec<String> {
    read("libraflux-rules.yaml")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: ").map(str::to_owned))
        .collect()
}

#[test]
fn the_rules_are_valid_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", "libraflux-rules.yaml"]);
    assert!(checked.contains(&format!("SUCCESS: {} rules found", alerts().len())), "{checked}");
    let tested = promtool(&["test", "rules", "libraflux-rules.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Each alert is evaluated at least twice in the tests: once expecting nothing, once firing.
#[test]
fn every_alert_is_tested_quiet_and_firing() {
    let tests = read("libraflux-rules.test.yaml");
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for alert in alerts() {
        let mut quiet = false;
        let mut firing = false;
        for (i, line) in lines.iter().enumerate() {
            if *line != format!("alertname: {alert}") {
                continue;
            }
            match lines.get(i + 1) {
                Some(&"exp_alerts: []") => quiet = true,
                Some(&"exp_alerts:") => {
                    firing = lines.get(i + 2).is_some_and(|next| next.starts_with("- exp_labels:"))
                }
                _ => {}
            }
        }
        assert!(quiet && firing, "{alert}: tested quiet {quiet}, firing {firing}");
    }
}
