//! `libraflux snapshot` on real IPVS: a restore undoes changes made by apply and by ipvsadm
//! exactly (as `ipvsadm-save -n` and the timeouts show), a tampered file is refused and touches
//! nothing, snapshots of the same big table are identical but for the time, and restoring an
//! empty snapshot over a full table is held back by the delete limit until --force.

use std::fmt::Write as _;

use super::support::{HEADER, Node, TWO_SERVICES, restore};

/// [`TWO_SERVICES`] with its node section.
fn two_services() -> String {
    format!("{HEADER}{TWO_SERVICES}")
}

fn timeouts(node: &Node) -> String {
    node.netns.exec("ipvsadm", &["-L", "--timeout"])
}

fn dir_arg(node: &Node) -> String {
    node.snapshots_dir().to_string_lossy().into_owned()
}

#[test]
fn restore_undoes_apply_and_ipvsadm_changes_exactly() {
    let node = Node::new();
    let config = node.config("config.yaml", &two_services());
    let dir = dir_arg(&node);
    node.libraflux(&["apply", "-c", &config]).assert_code(0);
    node.netns.exec("ipvsadm", &["--set", "910", "121", "301"]);
    let original = node.saved();
    let original_timeouts = timeouts(&node);

    let created = node.libraflux(&["snapshot", "create", "--name", "before", "--dir", &dir]);
    created.assert_code(0);
    let again = node.libraflux(&["snapshot", "create", "--name", "before", "--dir", &dir]);
    again.assert_code(1);
    assert!(again.stderr.contains("already exists (use --force"), "{}", again.stderr);

    // Change the table with apply: one weight, one service gone, one new.
    let edited = two_services().replace("weight: 50", "weight: 5").replace(
        "  - name: dns\n    protocol: udp\n    vip: 10.220.0.10\n    port: 53",
        "  - name: dns\n    protocol: udp\n    vip: 10.220.0.10\n    port: 5353",
    );
    let edited = node.config("edited.yaml", &edited);
    let applied = node.libraflux(&["apply", "-c", &edited, "--immediate"]);
    applied.assert_code(0);
    assert!(
        applied.stdout.contains("taken; restore with: libraflux snapshot restore pre-apply-"),
        "{}",
        applied.stdout
    );
    // ... and with ipvsadm: a service nobody configured, a weight, the timeouts.
    node.netns.exec("ipvsadm", &["-A", "-t", "10.220.0.10:8443", "-s", "rr"]);
    node.netns.exec("ipvsadm", &["-e", "-t", "10.220.0.10:80", "-r", "10.220.1.1:8080", "-m", "-w", "7"]);
    node.netns.exec("ipvsadm", &["--set", "100", "10", "50"]);
    let changed = node.saved();
    assert_ne!(changed, original);

    let dry = node.libraflux(&["snapshot", "restore", "before", "--dry-run", "--immediate", "--dir", &dir]);
    dry.assert_code(0);
    assert!(
        dry.stdout.contains("~ timeouts: tcp 100 -> 910, tcp_fin 10 -> 121, udp 50 -> 301"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("Plan: 1 to create, 1 to update, 2 to delete."), "{}", dry.stdout);
    assert_eq!(node.saved(), changed, "a dry run must not touch the kernel");

    // --immediate: the UDP service the edit added would otherwise drain for its grace period.
    let restored = node.libraflux(&["snapshot", "restore", "before", "--immediate", "--dir", &dir]);
    restored.assert_code(0);
    assert_eq!(node.saved(), original);
    assert_eq!(timeouts(&node), original_timeouts);

    let again = node.libraflux(&["snapshot", "restore", "before", "--dir", &dir]);
    again.assert_code(0);
    assert!(again.stdout.contains("No changes."), "{}", again.stdout);

    // Each apply took an automatic snapshot in the config's directory: the first of the empty
    // table, the second of the table "before" holds, so with the same checksum.
    let list = node.libraflux(&["snapshot", "list", "-c", &config, "--output", "json"]);
    list.assert_code(0);
    let value: serde_json::Value = serde_json::from_str(&list.stdout).expect("list --output json");
    let snapshots = value["snapshots"].as_array().expect("a list");
    let names: Vec<&str> = snapshots.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names.len(), 3, "{value:#}");
    assert_eq!(names[0], "before");
    assert!(names[1..].iter().all(|name| name.starts_with("pre-apply-")), "{names:?}");
    assert_eq!(snapshots[1]["services"], 0, "{value:#}");
    assert_eq!(snapshots[2]["checksum"], snapshots[0]["checksum"], "{value:#}");
}

#[test]
fn a_tampered_snapshot_is_refused_and_touches_nothing() {
    let node = Node::new();
    let config = node.config("config.yaml", &two_services());
    let dir = dir_arg(&node);
    node.libraflux(&["apply", "-c", &config]).assert_code(0);
    node.libraflux(&["snapshot", "create", "--name", "good", "--dir", &dir]).assert_code(0);
    node.netns.exec("ipvsadm", &["-d", "-u", "10.220.0.10:53", "-r", "10.220.1.2:53"]);
    let before = node.saved();

    let path = node.snapshots_dir().join("good.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let tampered = text.replacen("\"weight\": 50", "\"weight\": 60", 1);
    assert_ne!(text, tampered, "the file holds a weight of 50");
    std::fs::write(&path, tampered).unwrap();

    let ran = node.libraflux(&["snapshot", "restore", "good", "--dir", &dir]);
    ran.assert_code(65);
    assert!(ran.stderr.contains("snapshot good is corrupt: checksum mismatch"), "{}", ran.stderr);
    assert_eq!(node.saved(), before, "a refused restore must not touch the kernel");
    let show = node.libraflux(&["snapshot", "show", "good", "--dir", &dir]);
    show.assert_code(65);
}

fn big_table(services: usize, dests: usize) -> String {
    let mut rules = String::new();
    for s in 0..services {
        let vip = format!("10.222.{}.{}:80", s / 250, s % 250 + 1);
        writeln!(rules, "-A -t {vip} -s wrr").unwrap();
        for d in 0..dests {
            writeln!(rules, "-a -t {vip} -r 10.221.{}.{}:8080 -m -w {}", d, s % 250 + 1, d + 1).unwrap();
        }
    }
    rules
}

/// Destinations in 10.221.0.0/16 must be routable for the kernel to take them.
fn routable(node: &Node) {
    node.netns.ip(&["addr", "add", "10.221.255.254/16", "dev", "lfvip0"]);
}

#[test]
fn snapshots_of_a_big_table_are_identical_but_for_the_time() {
    let node = Node::new();
    routable(&node);
    restore(&node.netns, &big_table(1000, 10));
    let dir = dir_arg(&node);
    node.libraflux(&["snapshot", "create", "--name", "a", "--dir", &dir]).assert_code(0);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    node.libraflux(&["snapshot", "create", "--name", "b", "--dir", &dir]).assert_code(0);
    let read = |name: &str| std::fs::read_to_string(node.snapshots_dir().join(name)).unwrap();
    let (a, b) = (read("a.json"), read("b.json"));
    assert_ne!(a, b, "the creation times differ");
    let without_time = |text: &str| {
        text.lines().filter(|line| !line.contains("\"created_at\"")).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(without_time(&a), without_time(&b));
    let value: serde_json::Value = serde_json::from_str(&a).unwrap();
    assert_eq!(value["services"].as_array().map(Vec::len), Some(1000));
    assert_eq!(value["services"][999]["destinations"].as_array().map(Vec::len), Some(10));
}

#[test]
fn restoring_an_empty_snapshot_over_twenty_services_needs_force() {
    let node = Node::new();
    routable(&node);
    let dir = dir_arg(&node);
    node.libraflux(&["snapshot", "create", "--name", "empty", "--dir", &dir]).assert_code(0);
    restore(&node.netns, &big_table(20, 2));
    let full = node.saved();

    let refused = node.libraflux(&["snapshot", "restore", "empty", "--dir", &dir]);
    refused.assert_code(3);
    assert!(refused.stdout.contains("refused:"), "{}", refused.stdout);
    assert!(refused.stderr.contains("use --force to restore anyway"), "{}", refused.stderr);
    assert_eq!(node.saved(), full, "a refused restore must not touch the kernel");

    let forced = node.libraflux(&["snapshot", "restore", "empty", "--force", "--dir", &dir]);
    forced.assert_code(0);
    assert_eq!(node.saved(), "");
}

#[test]
fn a_restore_is_refused_while_a_daemon_runs_and_counted_once_it_does() {
    let node = Node::new();
    let config =
        node.config("config.yaml", &format!("{}metrics:\n  listen: 127.0.0.1:19471\n", two_services()));
    let dir = dir_arg(&node);
    node.libraflux(&["apply", "-c", &config]).assert_code(0);
    node.libraflux(&["snapshot", "create", "--name", "known-good", "-c", &config, "--dir", &dir])
        .assert_code(0);

    let daemon = super::daemon::Daemon::start(&node, &config);
    let refused = node.libraflux(&["snapshot", "restore", "known-good", "-c", &config, "--dir", &dir]);
    refused.assert_code(3);
    assert!(refused.stderr.contains("would undo the restore"), "{}", refused.stderr);
    drop(daemon);

    node.libraflux(&["snapshot", "restore", "known-good", "-c", &config, "--dir", &dir]).assert_code(0);
    let _daemon = super::daemon::Daemon::start(&node, &config);
    let metrics = node.http_get("127.0.0.1:19471", "/metrics");
    // The daemon reads the rollback log at start (and then on its collect interval).
    assert!(metrics.lines().any(|line| line == "libraflux_rollbacks_total 1"), "{metrics}");
}
