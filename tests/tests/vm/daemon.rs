//! `libraflux daemon` on real IPVS: it tells systemd it is ready after the first reconcile,
//! repairs drift made with ipvsadm, keeps the running config when a reload is invalid, applies a
//! valid reload, is the only writer (`apply` beside it hands the config over, as a reload), and
//! exits on SIGTERM without flushing the table.

use std::{
    fs::File,
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use libraflux_tests::{creds::Credentials, sorted_lines, unit::Unit};

use super::support::Node;

/// Two backends, nothing checked; the control socket tests use it too.
pub(super) const CONFIG: &str = "node:\n  interface: lfvip0\nservices:
  - name: web
    protocol: tcp
    vip: 10.220.0.10
    port: 80
    scheduler: wrr
    # Nothing listens on the backends: a health check would quiesce them mid-test.
    health:
      type: none
    backends:
      - address: 10.220.1.1
        weight: 5
      - address: 10.220.1.2
        weight: 5
";

/// What `ipvsadm-save -n` shows for [`CONFIG`].
pub(super) const SAVED: &str = "\
-A -t 10.220.0.10:80 -s wrr
-a -t 10.220.0.10:80 -r 10.220.1.1:80 -m -w 5
-a -t 10.220.0.10:80 -r 10.220.1.2:80 -m -w 5
";

/// systemd's PATH for services (Debian's build).
const SYSTEMD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin";

/// The daemon process, killed if the test ends early.
pub struct Daemon {
    pub child: Child,
    log: std::path::PathBuf,
    /// Where the daemon sends its sd_notify messages.
    notify: UnixDatagram,
    first_notification: std::sync::OnceLock<String>,
}

impl Daemon {
    /// Starts the daemon in `node`'s namespace with NOTIFY_SOCKET set, and waits for READY=1.
    pub fn start(node: &Node, config: &str) -> Self {
        Self::start_within(node, config, Duration::from_secs(30))
    }

    /// [`Daemon::start`], waiting at most `within` for READY=1.
    pub fn start_within(node: &Node, config: &str, within: Duration) -> Self {
        Self::start_with(node, config, within, &[])
    }

    /// [`Daemon::start_within`] with `env` set for the daemon.
    pub fn start_with(node: &Node, config: &str, within: Duration, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", node.netns.name(), &node.bin, "daemon"]);
        Self::launch(node, command, config, &node.dir, within, false, env)
    }

    /// Starts the daemon as systemd starts `unit`'s service: the arguments of ExecStart= (given to
    /// the binary under test), an environment as bare as systemd's, the unit's credentials
    /// ([`Credentials::of_unit`]) and `state_dir`, which the caller made as systemd makes the
    /// unit's StateDirectory= ([`Unit::make_state_directory`]), as the state directory.
    pub fn start_as_unit(node: &Node, config: &str, unit: &Unit, state_dir: &Path) -> Self {
        let (program, args) = unit.exec_start.split_first().expect("the unit has an ExecStart=");
        assert!(program.ends_with("/libraflux"), "ExecStart= runs {program}, not libraflux");
        let mut command = Command::new(&node.bin);
        command.args(args).env_clear().env("PATH", SYSTEMD_PATH).env("STATE_DIRECTORY", state_dir);
        if let Some(runtime) = node.socket.parent() {
            command.env("RUNTIME_DIRECTORY", runtime);
        }
        Credentials::of_unit(unit).apply(&mut command);
        Self::launch(node, command, config, state_dir, Duration::from_secs(30), true, &[])
    }

    /// Runs `command` (which ends with `libraflux daemon`) with `-c config`, a 1 s reconcile
    /// interval, this node's control socket and `env`; waits for READY=1.
    /// `fork_in_netns`: `command` does not enter the node's namespace itself (`ip netns exec`
    /// needs root), so it is started from a thread that has.
    fn launch(
        node: &Node,
        mut command: Command,
        config: &str,
        state_dir: &Path,
        within: Duration,
        fork_in_netns: bool,
        env: &[(&str, &str)],
    ) -> Self {
        let notify_path = node.dir.join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
        // A daemon that is not root must be able to send to it.
        std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o666)).unwrap();
        notify.set_read_timeout(Some(within)).unwrap();
        let log = node.dir.join("daemon.log");
        command
            .args(["-c", config, "--reconcile-interval", "1s", "--state-dir"])
            .arg(state_dir)
            .arg("--control-socket")
            .arg(&node.socket)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        let child = if fork_in_netns { node.netns.enter(move || command.spawn()) } else { command.spawn() };
        let child = child.expect("start the daemon");
        let daemon = Self { child, log, notify, first_notification: std::sync::OnceLock::new() };
        let first = daemon
            .next_notification()
            .unwrap_or_else(|err| panic!("no READY=1 within {within:?} ({err}):\n{}", daemon.log()));
        assert_eq!(first.lines().next(), Some("READY=1"), "first notification:\n{first}\n{}", daemon.log());
        daemon.first_notification.set(first).expect("set once");
        daemon
    }

    /// The next sd_notify message, waiting as long as the socket's timeout allows.
    pub fn next_notification(&self) -> std::io::Result<String> {
        let mut buf = [0u8; 1024];
        let len = self.notify.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
    }

    /// Reads and drops every sd_notify message already queued, so that what is counted next was
    /// sent from now on.
    pub fn drop_queued_notifications(&self) {
        self.notify.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1024];
        while self.notify.recv(&mut buf).is_ok() {}
        self.notify.set_nonblocking(false).unwrap();
    }

    /// The message that said READY=1 (with the STATUS= that came with it).
    pub fn ready_notification(&self) -> &str {
        self.first_notification.get().map_or("", String::as_str)
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({pid}, {signal})");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `ipvsadm-save` until it equals `want` (sorted) or `within` passes.
fn wait_for_table(node: &Node, want: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if node.saved() == sorted_lines(want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn the_daemon_converges_repairs_drift_survives_a_bad_reload_and_leaves_ipvs_on_exit() {
    let node = Node::new();
    let config = node.config("config.yaml", CONFIG);
    let mut daemon = Daemon::start(&node, &config);
    assert_eq!(node.saved(), sorted_lines(SAVED), "READY comes after the first reconcile:\n{}", daemon.log());

    // At rest the interval does not read the table: the write watch (a kprobe on the kernel's
    // entry points for changes to IPVS) saw nobody else write to it.
    let metric = |name: &str| {
        let metrics = node.http_get("127.0.0.1:9469", "/metrics");
        super::daemon_reload::metric(&metrics, name, &[])
    };
    // The watch starts after READY (loading eBPF takes seconds under TCG).
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric("libraflux_write_watch_attached") != Some(1.0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(metric("libraflux_write_watch_attached"), Some(1.0), "{}", daemon.log());
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric("libraflux_reconcile_reads_skipped_total").unwrap_or(0.0) < 3.0 && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(500));
    }
    let skipped = metric("libraflux_reconcile_reads_skipped_total").unwrap_or(0.0);
    assert!(
        skipped >= 3.0,
        "3 intervals at rest read the table anyway ({skipped} skipped):\n{}",
        daemon.log()
    );
    assert_eq!(metric("libraflux_foreign_writes_total"), Some(0.0));

    // Drift: someone removes a backend by hand; the next interval puts it back.
    node.netns.exec("ipvsadm", &["-d", "-t", "10.220.0.10:80", "-r", "10.220.1.2:80"]);
    assert!(wait_for_table(&node, SAVED, Duration::from_secs(10)), "drift not repaired:\n{}", daemon.log());
    assert!(daemon.log().contains("drift repaired"), "{}", daemon.log());
    assert!(metric("libraflux_foreign_writes_total").is_some_and(|writes| writes >= 1.0));
    // A write the kernel refuses (a backend that is not there) is counted, and read after, too.
    let refused = Command::new("ip")
        .args([
            "netns",
            "exec",
            node.netns.name(),
            "ipvsadm",
            "-d",
            "-t",
            "10.220.0.10:80",
            "-r",
            "10.220.9.9:80",
        ])
        .status()
        .expect("run ipvsadm");
    assert!(!refused.success(), "ipvsadm deleted a backend that is not there");
    // The metric follows at the next interval.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric("libraflux_foreign_writes_total").unwrap_or(0.0) < 2.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let foreign = metric("libraflux_foreign_writes_total").unwrap_or(0.0);
    assert!(foreign >= 2.0, "the refused write was not counted ({foreign}):\n{}", daemon.log());

    // A reload with a broken config is rejected; the running config stays in force.
    std::fs::write(
        &config,
        CONFIG.replace("weight: 5\n      - address: 10.220.1.2", "weight: -1\n      - address: 10.220.1.2"),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("config reload rejected") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(daemon.log().contains("config reload rejected"), "{}", daemon.log());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(node.saved(), sorted_lines(SAVED), "a rejected reload must not change IPVS");

    // A valid reload applies.
    std::fs::write(
        &config,
        CONFIG.replace("weight: 5\n      - address: 10.220.1.2", "weight: 9\n      - address: 10.220.1.2"),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    let reweighted = SAVED.replace("10.220.1.1:80 -m -w 5", "10.220.1.1:80 -m -w 9");
    assert!(
        wait_for_table(&node, &reweighted, Duration::from_secs(10)),
        "reload not applied:\n{}",
        daemon.log()
    );

    // One writer: beside the daemon, apply hands it the configuration (a reload over the control
    // socket) and prints what the daemon did, which IPVS shows by the time apply returns. A dry
    // run still shows the plan, with a warning, and changes nothing. (More in control.rs.)
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("10.220.1.2\n        weight: 5", "10.220.1.2\n        weight: 3"))
        .unwrap();
    let dry = node.libraflux(&["apply", "-c", &config, "--dry-run"]);
    dry.assert_code(0);
    assert!(dry.stderr.contains("without --dry-run, apply hands this configuration to it"), "{}", dry.stderr);
    assert!(dry.stdout.contains("Plan: 0 to create, 1 to update, 0 to delete."), "{}", dry.stdout);
    assert_eq!(node.saved(), sorted_lines(&reweighted), "a dry run changed IPVS");
    let apply = node.libraflux(&["apply", "-c", &config]);
    apply.assert_code(0);
    assert!(apply.stdout.contains("it reloaded its configuration (1 services)"), "{}", apply.stdout);
    assert!(
        apply.stdout.contains("set backend 10.220.1.2:80 in tcp:10.220.0.10:80 to weight 3"),
        "{}",
        apply.stdout
    );
    let reweighted = reweighted.replace("10.220.1.2:80 -m -w 5", "10.220.1.2:80 -m -w 3");
    assert_eq!(node.saved(), sorted_lines(&reweighted), "apply returned before IPVS showed the change");

    // Churn, as the metrics count it: the start, the valid reload and the apply each changed the
    // configuration in force (generation 3); the broken reload was refused as invalid.
    let metrics = node.http_get("127.0.0.1:9469", "/metrics");
    let value = |name: &str, labels: &[&str]| super::daemon_reload::metric(&metrics, name, labels);
    assert_eq!(value("libraflux_config_generation", &[]), Some(3.0), "{metrics}");
    assert_eq!(
        value("libraflux_changes_refused_total", &["reason=\"invalid_config\""]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(value("libraflux_changes_refused_total", &["reason=\"max_services_created\""]), Some(0.0));
    assert!(value("libraflux_plan_operations_count", &[]).is_some_and(|plans| plans >= 3.0), "{metrics}");
    assert!(
        value("libraflux_config_last_change_timestamp_seconds", &[]).is_some_and(|at| at > 1.7e9),
        "{metrics}"
    );

    // SIGTERM: a clean exit that leaves the table, so traffic keeps flowing.
    daemon.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the daemon did not exit on SIGTERM:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit status {status}:\n{}", daemon.log());
    assert_eq!(node.saved(), sorted_lines(&reweighted), "SIGTERM must not flush IPVS");
}

/// Honest readiness: a daemon whose first reconcile fails is ready (it serves health, drains and
/// metrics, and retries) but says it is degraded, and why, in systemd's status line; the line
/// turns to converged once a reconcile succeeds. The loop feeds systemd's watchdog.
#[test]
fn readiness_says_degraded_until_converged_and_the_watchdog_is_fed() {
    let node = Node::new();
    // 10.220.5.255 is the broadcast address of a subnet on this node: the kernel refuses such a
    // destination (EINVAL), which the config cannot know.
    node.netns.ip(&["addr", "add", "10.220.5.1/24", "dev", "lfvip0"]);
    let refused = CONFIG.replace("      - address: 10.220.1.2", "      - address: 10.220.5.255");
    let config = node.config("config.yaml", &refused);
    let daemon = Daemon::start_with(&node, &config, Duration::from_secs(30), &[("WATCHDOG_USEC", "1000000")]);
    let ready = daemon.ready_notification();
    assert!(
        ready.contains("STATUS=degraded: the last reconcile failed (")
            && ready.contains("10.220.5.255")
            && ready.contains("retrying every 1s"),
        "{ready}\n{}",
        daemon.log()
    );
    let status: serde_json::Value =
        serde_json::from_str(&node.http_get("127.0.0.1:9469", "/status")).unwrap();
    assert!(status["degraded"].as_str().is_some_and(|why| why.contains("10.220.5.255")), "{status}");

    // WATCHDOG_USEC of 1 s: a ping every 500 ms. (Pings queued while the test was busy above
    // are not counted: on a loaded machine they made 9 to 11 in "3 s".)
    daemon.drop_queued_notifications();
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let message = daemon.next_notification().expect("a notification within the socket's timeout");
        pings += message.lines().filter(|line| *line == "WATCHDOG=1").count();
    }
    assert!((4..=8).contains(&pings), "{pings} watchdog pings in 3 s, expected about 6");

    std::fs::write(&config, CONFIG).unwrap();
    daemon.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let message = daemon.next_notification().expect("a notification");
        if message.contains("STATUS=converged: 1 services") {
            break;
        }
        assert!(Instant::now() < deadline, "never converged:\n{}", daemon.log());
    }
    assert_eq!(node.saved(), sorted_lines(SAVED));
}

/// A reload of 10,100 operations is carried out in turns of at most 1,000, and signals come
/// before the next turn, so SIGTERM in the middle of it is answered after the turn under way:
/// the daemon exits with the table part-way (the next start converges it, as `reliability`
/// shows), instead of after the whole reload.
#[test]
fn sigterm_in_the_middle_of_a_large_reload_is_answered_within_a_turn() {
    const SERVICES: u16 = 100;
    const BACKENDS: u16 = 100;
    let node = Node::new();
    let config = node.config("config.yaml", CONFIG);
    let mut daemon = Daemon::start(&node, &config);
    let mut large = String::from(
        "node:\n  interface: lfvip0\nlimits:\n  max_services_created: 1000\n  max_backends_per_service: 1000\nservices:\n",
    );
    for service in 0..SERVICES {
        large.push_str(&format!(
            "  - name: s{service}\n    protocol: tcp\n    vip: 10.220.0.10\n    port: {}\n    scheduler: rr\n    \
             health:\n      type: none\n    backends:\n",
            10_000 + service
        ));
        for backend in 0..BACKENDS {
            large.push_str(&format!(
                "      - {{ address: 10.221.{}.{}, port: 80 }}\n",
                backend / 200,
                1 + backend % 200
            ));
        }
    }
    node.config("config.yaml", &large);
    let started = Instant::now();
    daemon.signal(libc::SIGHUP);
    let deadline = started + Duration::from_secs(60);
    while !daemon.log().contains("the plan is larger than one turn") {
        assert!(Instant::now() < deadline, "the reload never began:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Turns the log shows as done when SIGTERM is sent: at most one more (the one under way) may
    // follow. Counted from the log rather than from the test's clock, so that a test process slow
    // to send the signal cannot make the daemon look slow.
    let turns = |log: &str| log.matches("the plan is larger than one turn").count();
    let before = turns(&daemon.log());
    let asked = Instant::now();
    daemon.signal(libc::SIGTERM);
    let deadline = asked + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "SIGTERM not answered within 90 s:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    let answered = asked.elapsed();
    let lines = node.netns.exec("ipvsadm-save", &["-n"]).lines().count();
    let total = usize::from(SERVICES) * (1 + usize::from(BACKENDS)) + 3;
    let log = daemon.log();
    let milestones: Vec<&str> = log
        .lines()
        .filter(|line| {
            ["reloaded", "larger than one turn", "stopping", "stopped"].iter().any(|m| line.contains(m))
        })
        .collect();
    eprintln!("{}", milestones.join("\n"));
    eprintln!(
        "SIGTERM sent after {before} turn(s), answered after {answered:.1?} with {} turn(s) done, {lines} of \
         {total} table lines in IPVS; the reload began {:.1?} before",
        turns(&log),
        asked - started
    );
    assert!(status.success(), "{status}:\n{}", daemon.log());
    assert!(lines < total, "the reload finished before SIGTERM was answered: {lines} lines");
    // The turn under way when SIGTERM came may finish, no other. (Before the daemon let its
    // runtime see signals between turns, five more ran.)
    let after = turns(&log);
    assert!(after <= before + 1, "{before} turns done when SIGTERM was sent, {after} when it was answered");
    assert!(log.contains("stopped"), "{log}");
}
