//! The daemon's health checks on real IPVS, with real listeners (busybox httpd) in a backend
//! namespace: `quiesce` sets weight 0 and restores it, `remove` deletes and re-adds, all
//! backends down fails open, and `/metrics` reports it all and passes `promtool check metrics`.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use libraflux_tests::{NetNs, sorted_lines};

use super::{daemon::Daemon, support::Node};

const CONFIG: &str = "node:
  interface: lfvip0
metrics:
  listen: 127.0.0.1:19469
  collect_interval: 1s
services:
  - name: quiesce
    protocol: tcp
    vip: 10.220.0.10
    port: 80
    scheduler: rr
    health:
      type: tcp
      interval: 500ms
      timeout: 250ms
      rise: 2
      fall: 2
    on_unhealthy: quiesce
    backends:
      - address: 10.200.0.2
        port: 8080
        weight: 3
      - address: 10.200.0.2
        port: 8081
        weight: 3
  - name: remove
    protocol: tcp
    vip: 10.220.0.10
    port: 81
    scheduler: rr
    health:
      type: tcp
      interval: 500ms
      timeout: 250ms
      rise: 2
      fall: 2
    on_unhealthy: remove
    backends:
      - address: 10.200.0.2
        port: 8082
      - address: 10.200.0.2
        port: 8083
";

const ALL_UP: &str = "\
-A -t 10.220.0.10:80 -s rr
-a -t 10.220.0.10:80 -r 10.200.0.2:8080 -m -w 3
-a -t 10.220.0.10:80 -r 10.200.0.2:8081 -m -w 3
-A -t 10.220.0.10:81 -s rr
-a -t 10.220.0.10:81 -r 10.200.0.2:8082 -m -w 1
-a -t 10.220.0.10:81 -r 10.200.0.2:8083 -m -w 1
";

/// busybox httpd listeners in the backend namespace, one per port, stopped on drop.
struct Backends {
    netns: NetNs,
    servers: Vec<(u16, Child)>,
    root: std::path::PathBuf,
}

impl Backends {
    /// A namespace joined to the director's by veth: director 10.200.0.1, backends 10.200.0.2.
    fn new(director: &NetNs, dir: &std::path::Path) -> Self {
        let netns = NetNs::new("backends");
        director.ip(&["link", "add", "lf-d", "type", "veth", "peer", "name", "lf-b", "netns", netns.name()]);
        director.ip(&["addr", "add", "10.200.0.1/24", "dev", "lf-d"]);
        director.ip(&["link", "set", "lf-d", "up"]);
        netns.ip(&["addr", "add", "10.200.0.2/24", "dev", "lf-b"]);
        netns.ip(&["link", "set", "lf-b", "up"]);
        let root = dir.join("www");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), "ok\n").unwrap();
        Self { netns, servers: Vec::new(), root }
    }

    fn start(&mut self, port: u16) {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.netns.name(),
                "busybox",
                "httpd",
                "-f",
                "-p",
                &port.to_string(),
                "-h",
            ])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start busybox httpd");
        self.servers.push((port, child));
    }

    fn stop(&mut self, port: u16) {
        let index = self.servers.iter().position(|(p, _)| *p == port).expect("a running server");
        let (_, mut child) = self.servers.remove(index);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        for (_, child) in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for(node: &Node, daemon: &Daemon, want: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if node.saved() == sorted_lines(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: IPVS never became\n{want}\nit is\n{}\ndaemon log:\n{}", node.saved(), daemon.log());
}

/// GET /metrics from inside the director's namespace.
fn scrape(node: &Node) -> String {
    node.http_get("127.0.0.1:19469", "/metrics")
}

fn gauge(metrics: &str, name: &str, label: &str) -> Option<String> {
    metrics
        .lines()
        .find(|line| line.starts_with(&format!("{name}{{")) && line.contains(label))
        .and_then(|line| line.rsplit(' ').next())
        .map(str::to_owned)
}

#[test]
fn health_checks_quiesce_remove_restore_and_fail_open() {
    let node = Node::new();
    let mut backends = Backends::new(&node.netns, &node.dir);
    for port in [8080, 8081, 8082, 8083] {
        backends.start(port);
    }
    let config = node.config("config.yaml", CONFIG);
    let daemon = Daemon::start(&node, &config);
    wait_for(&node, &daemon, ALL_UP, "start");

    // fall 2 x interval 0.5 s, plus one interval: the bound the daemon promises, with 3 s of
    // slack for the emulated CPU, the reconcile and this test's 200 ms polling.
    let bound = Duration::from_millis(2 * 500 + 500) + Duration::from_secs(3);
    let stopped = Instant::now();
    backends.stop(8081);
    backends.stop(8082);
    let degraded = ALL_UP
        .replace("10.200.0.2:8081 -m -w 3", "10.200.0.2:8081 -m -w 0")
        .replace("-a -t 10.220.0.10:81 -r 10.200.0.2:8082 -m -w 1\n", "");
    wait_for(&node, &daemon, &degraded, "quiesce 8081, remove 8082");
    let took = stopped.elapsed();
    println!("unhealthy -> weight 0 / removed after {took:?}");
    assert!(took <= bound, "took {took:?}, more than fall x interval + interval (+3 s slack)");

    let metrics = scrape(&node);
    assert_eq!(
        gauge(&metrics, "libraflux_backend_healthy", "10.200.0.2:8081").as_deref(),
        Some("0"),
        "{metrics}"
    );
    assert_eq!(
        gauge(&metrics, "libraflux_backend_healthy", "10.200.0.2:8080").as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert!(metrics.contains("libraflux_ipvs_connections_total{"), "{metrics}");
    assert!(
        metrics.lines().any(|line| line == "libraflux_ebpf_attached 1"),
        "the observer attaches to lfvip0:\n{metrics}"
    );
    let path = node.dir.join("metrics.txt");
    std::fs::write(&path, &metrics).unwrap();
    let lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output();
    let lint = lint.expect("promtool in the VM");
    let said = format!("{}{}", String::from_utf8_lossy(&lint.stdout), String::from_utf8_lossy(&lint.stderr));
    assert!(lint.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}");

    let status = node.libraflux(&["status"]);
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    let line = status.stdout.lines().find(|line| line.contains("10.200.0.2:8081")).unwrap_or_default();
    assert!(line.contains("weight 0") && line.contains("UNHEALTHY"), "status:\n{}", status.stdout);
    let header = format!("daemon on {}: last reconcile ok", node.socket.display());
    assert!(status.stdout.starts_with(&header), "{}", status.stdout);

    let restarted = Instant::now();
    backends.start(8081);
    backends.start(8082);
    wait_for(&node, &daemon, ALL_UP, "restore after recovery");
    let took = restarted.elapsed();
    println!("healthy again -> weight restored after {took:?}");
    assert!(took <= bound, "took {took:?}, more than rise x interval + interval (+3 s slack)");

    // Every backend of tcp:10.220.0.10:80 down: fail open, both keep their weight.
    backends.stop(8080);
    backends.stop(8081);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !daemon.log().contains("failing open") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(daemon.log().contains("every backend is unhealthy: failing open"), "{}", daemon.log());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(node.saved(), sorted_lines(ALL_UP), "fail open keeps every backend in service");
    let metrics = scrape(&node);
    assert_eq!(
        gauge(&metrics, "libraflux_service_fail_open", "tcp:10.220.0.10:80").as_deref(),
        Some("1"),
        "{metrics}"
    );
}

/// Issue #16: every health transition ran its own full-table reconcile. Twelve backends that
/// fail together (their switch port flaps) fail their checks within one interval of each other;
/// transitions within 250 ms of the first are reconciled together, so the burst costs a few
/// reconciles, not twelve, and IPVS still follows each of them.
#[test]
fn a_burst_of_health_transitions_is_reconciled_a_few_times_not_once_each() {
    const FAILING: u16 = 12;
    let node = Node::new();
    let mut backends = Backends::new(&node.netns, &node.dir);
    let mut config = String::from(
        "node:\n  interface: lfvip0\nmetrics:\n  listen: 127.0.0.1:19469\nservices:\n  - name: burst\n    \
         protocol: tcp\n    vip: 10.220.0.10\n    port: 80\n    scheduler: rr\n    health:\n      type: tcp\n      \
         interval: 500ms\n      timeout: 250ms\n      rise: 1\n      fall: 2\n    on_unhealthy: quiesce\n    backends:\n",
    );
    let mut up = String::from("-A -t 10.220.0.10:80 -s rr\n");
    for port in 8100..=8100 + FAILING {
        backends.start(port);
        config.push_str(&format!("      - {{ address: 10.200.0.2, port: {port} }}\n"));
        up.push_str(&format!("-a -t 10.220.0.10:80 -r 10.200.0.2:{port} -m -w 1\n"));
    }
    let config = node.config("config.yaml", &config);
    let daemon = Daemon::start(&node, &config);
    wait_for(&node, &daemon, &up, "start");
    let health_reconciles = || {
        let metrics = scrape(&node);
        let line = metrics
            .lines()
            .find(|line| line.starts_with("libraflux_reconcile_triggers_total{trigger=\"health_change\"}"));
        line.and_then(|line| line.rsplit(' ').next()).map(|n| n.parse::<u64>().unwrap()).expect(&metrics)
    };
    let transitions = || daemon.log().matches("backend is now unhealthy").count();
    let (reconciles_before, transitions_before) = (health_reconciles(), transitions());

    // The last backend stays up, so the service does not fail open.
    for port in 8100..8100 + FAILING {
        backends.stop(port);
    }
    let mut down = up.clone();
    for port in 8100..8100 + FAILING {
        down = down.replace(&format!("10.200.0.2:{port} -m -w 1"), &format!("10.200.0.2:{port} -m -w 0"));
    }
    wait_for(&node, &daemon, &down, "twelve backends quiesced");
    std::thread::sleep(Duration::from_secs(1));
    let reconciles = health_reconciles() - reconciles_before;
    let seen = transitions() - transitions_before;
    println!("{seen} health transitions, reconciled by {reconciles} health-change reconcile(s)");
    assert_eq!(seen, usize::from(FAILING), "{}", daemon.log());
    // An interval (1 s here) that comes while transitions wait to be coalesced takes them in:
    // what it changes is theirs, not drift (it was reported as drift before).
    assert!(!daemon.log().contains("drift repaired"), "{}", daemon.log());
    // A transition starts a 250 ms window that every later one joins until the window's reconcile;
    // a 1 s interval reconcile in a window takes its transitions in and counts as theirs, and the
    // transitions after it open the next window. So the bound is the 250 ms windows the logged
    // times need, plus the interval ticks the burst spans. The backends fail within about one
    // 500 ms probe interval of each other: usually two or three windows and one tick, more when
    // the emulated CPU spreads them.
    let times = transition_times(&daemon.log());
    let burst = &times[times.len() - usize::from(FAILING)..];
    let windows = coalescing_windows(burst, 0.25);
    let span = burst[burst.len() - 1] - burst[0] + 0.25;
    let ticks = span.floor() as u64 + 1;
    println!(
        "the transitions span {span:.3} s: {windows} windows of 250 ms, at most {ticks} interval tick(s)"
    );
    assert!(
        (1..=windows + ticks).contains(&reconciles) && reconciles < u64::from(FAILING),
        "{reconciles} reconciles for {seen} transitions ({windows} windows, {ticks} ticks):\n{}",
        daemon.log()
    );
}

/// The times (seconds from the first line's midnight, UTC) of the daemon's "backend is now
/// unhealthy" lines, in order.
fn transition_times(log: &str) -> Vec<f64> {
    let mut days = 0.0;
    let mut last = 0.0;
    log.lines()
        .filter(|line| line.contains("backend is now unhealthy"))
        .map(|line| {
            let time = line.split_whitespace().next().and_then(|stamp| stamp.split_once('T')).map(|(_, t)| t);
            let time =
                time.and_then(|t| t.strip_suffix('Z')).unwrap_or_else(|| panic!("no time stamp: {line}"));
            let parts: Vec<f64> = time.split(':').map(|part| part.parse().expect("a time stamp")).collect();
            let of_day = parts[0] * 3600.0 + parts[1] * 60.0 + parts[2];
            // A burst that crosses midnight.
            if of_day < last {
                days += 86_400.0;
            }
            last = of_day;
            of_day + days
        })
        .collect()
}

/// How many windows of `width` seconds the times need, each opened by the first time after the
/// previous window closed.
fn coalescing_windows(times: &[f64], width: f64) -> u64 {
    let mut windows = 0;
    let mut open_until = f64::NEG_INFINITY;
    for &time in times {
        if time > open_until {
            windows += 1;
            open_until = time + width;
        }
    }
    windows
}
