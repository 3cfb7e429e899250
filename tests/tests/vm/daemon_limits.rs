//! The daemon's change limits on real IPVS: they bound changes of the configuration, measured
//! against the configuration accepted last, never the health and drain weights it sets. A
//! reload over a limit is refused whole; a daemon restarted with half of an accepted change in
//! the table finishes it; a start over a limit against both the table and the accepted
//! configuration exits 3 having touched nothing; a service applied once over
//! `max_backends_per_service` (with --force) can still be drained.

use std::time::{Duration, Instant};

use libraflux_tests::sorted_lines;

use super::{daemon::Daemon, support::Node};

const HEADER: &str = "node:\n  interface: lfvip0\nlimits:\n  max_services_created: 5\nservices:\n";

/// `count` TCP services on the VIP, ports 81.., one backend each.
fn services(count: u16) -> String {
    (81..81 + count)
        .map(|port| {
            format!(
                "  - name: s{port}\n    protocol: tcp\n    vip: 10.220.0.10\n    port: {port}\n    \
                 scheduler: rr\n    backends:\n      - address: 10.220.1.1\n"
            )
        })
        .collect()
}

fn service_lines(node: &Node) -> usize {
    node.saved().lines().filter(|line| line.starts_with("-A")).count()
}

fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    done()
}

fn stop(mut daemon: Daemon) {
    daemon.signal(libc::SIGTERM);
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "{status}:\n{}", daemon.log());
}

/// Removes the services on ports 81..81+count by hand, as a daemon killed in the middle of
/// creating them would have left the table.
fn delete_services(node: &Node, count: u16) {
    for port in 81..81 + count {
        node.netns.exec("ipvsadm", &["-D", "-t", &format!("10.220.0.10:{port}")]);
    }
}

#[test]
fn limits_refuse_a_reload_and_a_start_but_not_finishing_an_accepted_change() {
    let node = Node::new();
    let twelve = format!("{HEADER}{}", services(12));
    let config = node.config("config.yaml", &twelve);
    let state_dir = node.dir.to_string_lossy().into_owned();
    let socket = node.socket.to_string_lossy().into_owned();
    node.libraflux(&["apply", "-c", &config]).assert_code(3);
    node.libraflux(&["apply", "-c", &config, "--force"]).assert_code(0);
    let table = node.saved();

    // Started on the table it already runs: nothing to create, accepted.
    let daemon = Daemon::start(&node, &config);
    assert_eq!(node.saved(), table);

    // A reload that creates 8 services at once is refused whole; the table stays.
    node.config("config.yaml", &format!("{HEADER}{}", services(20)));
    daemon.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || daemon
            .log()
            .contains("config reload refused by a change limit")),
        "{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(node.saved(), table, "a refused reload changed IPVS:\n{}", daemon.log());
    let metrics = node.http_get("127.0.0.1:9469", "/metrics");
    let value = |name: &str, labels: &[&str]| super::daemon_reload::metric(&metrics, name, labels);
    assert_eq!(
        value("libraflux_changes_refused_total", &["reason=\"max_services_created\""]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(value("libraflux_config_generation", &[]), Some(1.0), "a refused change is no new generation");
    stop(daemon);

    // Killed half way through creating the accepted twelve: a restart finishes them.
    node.config("config.yaml", &twelve);
    delete_services(&node, 9);
    assert_eq!(service_lines(&node), 3);
    let daemon = Daemon::start(&node, &config);
    assert_eq!(node.saved(), table, "the restart did not finish the accepted change:\n{}", daemon.log());
    stop(daemon);

    // With no accepted configuration on record, creating 9 at start is over the limit: exit 3.
    std::fs::remove_file(node.dir.join("state/accepted.json")).expect("the daemon records what it accepted");
    delete_services(&node, 9);
    let refused = node.netns.run(
        "timeout",
        &[
            "20",
            &libraflux_tests::libraflux_bin(),
            "daemon",
            "-c",
            &config,
            "--state-dir",
            &state_dir,
            "--control-socket",
            &socket,
        ],
    );
    refused.assert_code(3);
    assert!(refused.stderr.contains("max_services_created"), "{}", refused.stderr);
    assert_eq!(service_lines(&node), 3, "a refused start touched IPVS");
}

#[test]
fn a_service_forced_over_the_backend_limit_can_still_be_drained() {
    let node = Node::new();
    let text = "node:\n  interface: lfvip0\nlimits:\n  max_backends_per_service: 2\nservices:
  - name: web
    protocol: tcp
    vip: 10.220.0.10
    port: 80
    scheduler: wrr
    health:
      type: none
    backends:
      - address: 10.220.1.1
      - address: 10.220.1.2
      - address: 10.220.1.3
";
    let config = node.config("config.yaml", text);
    node.libraflux(&["apply", "-c", &config]).assert_code(3);
    node.libraflux(&["apply", "-c", &config, "--force"]).assert_code(0);
    let daemon = Daemon::start(&node, &config);
    let drained = node.libraflux(&["drain", "10.220.1.3:80"]);
    drained.assert_code(0);
    let want = sorted_lines(
        "-A -t 10.220.0.10:80 -s wrr\n-a -t 10.220.0.10:80 -r 10.220.1.1:80 -m -w 1\n\
         -a -t 10.220.0.10:80 -r 10.220.1.2:80 -m -w 1\n-a -t 10.220.0.10:80 -r 10.220.1.3:80 -m -w 0\n",
    );
    assert!(
        wait_until(Duration::from_secs(10), || node.saved() == want),
        "the drain did not reach weight 0:\n{}\n{}",
        node.saved(),
        daemon.log()
    );
}
