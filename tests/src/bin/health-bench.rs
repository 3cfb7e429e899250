//! The health-check benchmark: 5,000 TCP backends checked every second, CPU and memory of the
//! checker. Run through `cargo xtask bench health`; see docs/benchmarks.md.
//!
//! This process unshares its network namespace (root), brings `lo` up, adds the backend address
//! to it and starts one listener child (this binary, `listen`), which binds every backend port
//! and accepts and closes each connection. Then, by mode:
//!
//! - `native`: the health engine in this process (`libraflux::health::Scheduler`, the daemon's
//!   options), fed by the benchmark config; CPU from `getrusage(RUSAGE_SELF)` (the listener is
//!   another process), memory from `/proc/self/status`.
//! - `daemon --libraflux BIN`: the real daemon (`BIN daemon -c FILE`), which also programs the
//!   IPVS table (needs IPVS: the VM); CPU from `/proc/PID/stat`, memory from `/proc/PID/status`,
//!   health from its `/metrics`.
//! - `keepalived`: keepalived's `TCP_CHECK` (checker process only) on the same backends, which
//!   needs IPVS (the VM); CPU of its checker process, connects counted by the kernel
//!   (`TcpActiveOpens` of the namespace), verdicts from the IPVS table it programs.
//!
//! Besides the backends that listen, `--down N` backends (default 50) of one more service have no
//! listener: they start healthy and must be found down.
//!
//! After every backend has passed a check, CPU is sampled over the window (default 60 s). The run
//! fails unless every listening backend is healthy at the end and passed checks during the window,
//! and every backend that is down is unhealthy at the end and failed checks during the window; the
//! native engine must also have found each down after exactly `fall` (3) failed probes.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use libraflux::{
    health::Transition,
    model::{DestKey, ServiceKey},
};
use libraflux_tests::bench::{
    self, Cpu, Daemon, cpu_seconds, cpu_split, fresh_namespace, keepalived, label,
    listener::{Backends, Listener},
    memory_kib, own_cpu, raise_nofile, tcp_active_opens,
};

const USAGE: &str = "usage: health-bench native|daemon|keepalived|listen [--services S] [--backends B] \
                     [--down N] [--window SECS] [--libraflux BIN] [--work-dir DIR]";
/// Consecutive failed probes that make a backend unhealthy: the config's default `fall`.
const FALL: u32 = 3;

/// The backends' address, on `lo` of the benchmark's namespace; ports from `FIRST_PORT` up.
const BACKEND_ADDR: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 1);
const FIRST_PORT: u16 = 20_000;
/// The VIP of every service; service `i` listens on port `i + 1`.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 10);
const METRICS: &str = "127.0.0.1:9469";

#[derive(Debug)]
struct Options {
    mode: String,
    services: u32,
    backends: u32,
    down: u32,
    window: u64,
    libraflux: Option<String>,
    work_dir: String,
}

fn parse_options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or(USAGE)?;
    let mut options = Options {
        mode,
        services: 500,
        backends: 10,
        down: 50,
        window: 60,
        libraflux: None,
        work_dir: "/tmp".to_owned(),
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        let number =
            |text: String| text.parse::<u32>().map_err(|_| format!("{arg}: {text:?} is not a number"));
        match arg.as_str() {
            "--services" => options.services = number(value()?)?,
            "--backends" => options.backends = number(value()?)?,
            "--down" => options.down = number(value()?)?,
            "--window" => options.window = u64::from(number(value()?)?),
            "--libraflux" => options.libraflux = Some(value()?),
            "--work-dir" => options.work_dir = value()?,
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
        }
    }
    let total = options.services * options.backends;
    if total == 0
        || total > 30_000
        || options.down > 1_000
        || options.services > 60_000
        || options.window == 0
    {
        return Err("need 1..=30,000 backends, at most 1,000 down, and a window of at least 1 s".to_owned());
    }
    Ok(options)
}

impl Options {
    fn total(&self) -> u32 {
        self.services * self.backends
    }

    fn backends(&self) -> Backends {
        Backends { address: BACKEND_ADDR, first_port: FIRST_PORT, count: self.total() }
    }

    /// The port of down backend `index`: below the listener's ports, where nothing listens, and
    /// below the ephemeral range, so that a connect can never pick it as its own source port and
    /// connect to itself.
    fn down_port(&self, index: u32) -> u16 {
        FIRST_PORT - 1 - u16::try_from(index).expect("at most 1,000 down backends")
    }

    /// The service of the down backends, as the key prefix of the tally (`"{service} "`).
    fn down_prefix(&self) -> String {
        format!("tcp:{VIP}:{} ", self.services + 1)
    }

    /// The benchmark config: S services x B backends, TCP checks every 1 s, timeout 500 ms; and
    /// one more service with the down backends.
    fn config(&self) -> String {
        let widest = self.backends.max(self.down);
        let mut text = bench::config_head(self.services + 1, widest, METRICS);
        for service in 0..self.services {
            text.push_str(&format!(
                "  - name: s{service}\n    protocol: tcp\n    vip: {VIP}\n    port: {}\n    scheduler: rr\n    \
                 health: {{ type: tcp, interval: 1s, timeout: 500ms }}\n    backends:\n",
                service + 1
            ));
            for backend in 0..self.backends {
                let port = self.backends().port(service * self.backends + backend);
                text.push_str(&format!("      - {{ address: {BACKEND_ADDR}, port: {port} }}\n"));
            }
        }
        if self.down > 0 {
            text.push_str(&format!(
                "  - name: down\n    protocol: tcp\n    vip: {VIP}\n    port: {}\n    scheduler: rr\n    \
                 health: {{ type: tcp, interval: 1s, timeout: 500ms }}\n    backends:\n",
                self.services + 1
            ));
            for index in 0..self.down {
                text.push_str(&format!(
                    "      - {{ address: {BACKEND_ADDR}, port: {} }}\n",
                    self.down_port(index)
                ));
            }
        }
        text
    }

    /// The same backends for keepalived.
    fn keepalived_servers(&self) -> Vec<keepalived::VirtualServer> {
        let mut servers: Vec<keepalived::VirtualServer> = (0..self.services)
            .map(|service| keepalived::VirtualServer {
                port: u16::try_from(service + 1).expect("at most 60,000 services"),
                real_servers: (0..self.backends)
                    .map(|backend| (BACKEND_ADDR, self.backends().port(service * self.backends + backend)))
                    .collect(),
            })
            .collect();
        if self.down > 0 {
            servers.push(keepalived::VirtualServer {
                port: u16::try_from(self.services + 1).expect("at most 60,000 services"),
                real_servers: (0..self.down).map(|index| (BACKEND_ADDR, self.down_port(index))).collect(),
            });
        }
        servers
    }
}

/// Per backend: checks by outcome, whether it is healthy now, and (native only) after how many
/// probes it first became unhealthy.
#[derive(Clone, Debug, Default)]
struct Backend {
    outcomes: BTreeMap<&'static str, u64>,
    healthy: bool,
    probes: u64,
    fell_after: Option<u64>,
}

impl Backend {
    fn successes(&self) -> u64 {
        self.outcomes.get("success").copied().unwrap_or(0)
    }

    fn failures(&self) -> u64 {
        self.outcomes.iter().filter(|(outcome, _)| **outcome != "success").map(|(_, n)| n).sum()
    }
}

/// Backends that listen and have passed a check.
fn passed(view: &BTreeMap<String, Backend>, down_prefix: &str) -> usize {
    view.iter().filter(|(name, backend)| !name.starts_with(down_prefix) && backend.successes() > 0).count()
}

/// How the backends did between two views.
#[derive(Default)]
struct Verdict {
    healthy: usize,
    checked_in_window: usize,
    successes: u64,
    failures: u64,
    /// Down backends unhealthy at the end, and those with failed checks in the window.
    down_unhealthy: usize,
    down_failed_in_window: usize,
    /// Down backends by the number of probes after which they became unhealthy (native only).
    down_fell_after: BTreeMap<u64, usize>,
}

fn verdict(
    before: &BTreeMap<String, Backend>,
    after: &BTreeMap<String, Backend>,
    down_prefix: &str,
) -> Verdict {
    let mut verdict = Verdict::default();
    for (name, now) in after {
        let then = before.get(name).cloned().unwrap_or_default();
        if name.starts_with(down_prefix) {
            verdict.down_unhealthy += usize::from(!now.healthy);
            verdict.down_failed_in_window += usize::from(now.failures() > then.failures());
            if let Some(probes) = now.fell_after {
                *verdict.down_fell_after.entry(probes).or_default() += 1;
            }
            continue;
        }
        verdict.healthy += usize::from(now.healthy);
        let successes = now.successes() - then.successes().min(now.successes());
        verdict.checked_in_window += usize::from(successes > 0);
        verdict.successes += successes;
        verdict.failures += now.failures() - then.failures().min(now.failures());
    }
    verdict
}

/// Scrapes the daemon's /metrics over HTTP/1.0 and reads the health series.
fn scrape() -> Result<BTreeMap<String, Backend>, String> {
    let body = bench::scrape(METRICS)?;
    let mut backends: BTreeMap<String, Backend> = BTreeMap::new();
    for line in body.lines() {
        let value = line.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok());
        let (Some(value), Some(service), Some(backend)) =
            (value, label(line, "service"), label(line, "backend"))
        else {
            continue;
        };
        let key = format!("{service} {backend}");
        if line.starts_with("libraflux_backend_healthy{") {
            backends.entry(key).or_default().healthy = value == 1.0;
        } else if line.starts_with("libraflux_health_checks_total{") {
            // Only success or not matters here.
            let outcome =
                if label(line, "outcome").as_deref() == Some("success") { "success" } else { "failure" };
            *backends.entry(key).or_default().outcomes.entry(outcome).or_default() += value as u64;
        }
    }
    Ok(backends)
}

/// What the measurement yields, printed the same way for both modes.
struct Measured {
    engine: &'static str,
    converge: Duration,
    window: Duration,
    cpu: Cpu,
    /// Connections the namespace opened in the window (`TcpActiveOpens`).
    connects: u64,
    rss_kib: u64,
    hwm_kib: u64,
    verdict: Verdict,
    listener_cpu: f64,
}

fn report(options: &Options, m: &Measured) -> Result<(), String> {
    let seconds = m.window.as_secs_f64();
    let share = m.cpu.total() / seconds;
    let v = &m.verdict;
    println!();
    println!(
        "health benchmark ({}): {} services x {} backends = {} TCP backends (+ {} down), interval 1s, timeout 500ms",
        m.engine,
        options.services,
        options.backends,
        options.total(),
        options.down
    );
    println!("  converged (every backend passed a check) after {:.1} s", m.converge.as_secs_f64());
    println!(
        "  window {seconds:.1} s: CPU {:.2} s = {:.1} % of one core (user {:.2} s, system {:.2} s); VmRSS {} KiB, \
         VmHWM {} KiB",
        m.cpu.total(),
        share * 100.0,
        m.cpu.user,
        m.cpu.system,
        m.rss_kib,
        m.hwm_kib
    );
    println!(
        "  checks in window: {} successes ({:.0}/s), {} failures; {} connects by the kernel's count ({:.0}/s, \
         {:.1} us of CPU each); backends healthy at end {}/{}, passed a check in the window {}/{}",
        v.successes,
        v.successes as f64 / seconds,
        v.failures,
        m.connects,
        m.connects as f64 / seconds,
        m.cpu.total() * 1e6 / (m.connects.max(1) as f64),
        v.healthy,
        options.total(),
        v.checked_in_window,
        options.total()
    );
    let fell: Vec<String> =
        v.down_fell_after.iter().map(|(probes, n)| format!("{n} after {probes}")).collect();
    println!(
        "  down backends: {}/{} unhealthy at end, {}/{} failed checks in the window; became unhealthy: {}",
        v.down_unhealthy,
        options.down,
        v.down_failed_in_window,
        options.down,
        if fell.is_empty() {
            "not observed (not in /metrics)".to_owned()
        } else {
            fell.join(", ") + " probes"
        }
    );
    println!("  listener process CPU in window: {:.2} s", m.listener_cpu);
    println!(
        "HEALTH_BENCH engine={} backends={} down={} window_s={seconds:.1} cpu_s={:.2} user_s={:.2} system_s={:.2} \
         cpu_share={share:.4} vmrss_kib={} vmhwm_kib={} successes={} failures={} connects={} healthy={} checked={} \
         down_unhealthy={} converge_s={:.1}",
        m.engine,
        options.total(),
        options.down,
        m.cpu.total(),
        m.cpu.user,
        m.cpu.system,
        m.rss_kib,
        m.hwm_kib,
        v.successes,
        v.failures,
        m.connects,
        v.healthy,
        v.checked_in_window,
        v.down_unhealthy,
        m.converge.as_secs_f64()
    );
    let total = options.total() as usize;
    if v.healthy != total || v.checked_in_window != total {
        return Err(format!(
            "false negatives: {} of {total} healthy at the end, {} of {total} passed a check in the window",
            v.healthy, v.checked_in_window
        ));
    }
    let down = options.down as usize;
    if v.down_unhealthy != down || v.down_failed_in_window != down {
        return Err(format!(
            "false positives: {} of {down} down backends unhealthy at the end, {} of {down} failed checks in the window",
            v.down_unhealthy, v.down_failed_in_window
        ));
    }
    let on_time = v.down_fell_after.get(&u64::from(FALL)).copied().unwrap_or(0);
    if !v.down_fell_after.is_empty() && on_time != down {
        return Err(format!(
            "only {on_time} of {down} down backends became unhealthy on their probe number {FALL}"
        ));
    }
    Ok(())
}

fn native(options: &Options) -> Result<(), String> {
    fresh_namespace(BACKEND_ADDR)?;
    raise_nofile()?;
    let listener = Listener::start(options.backends(), None)?;
    let listener_pid = listener.pid();
    let path = format!("{}/health-bench.yaml", options.work_dir);
    std::fs::write(&path, options.config()).map_err(|err| format!("{path}: {err}"))?;
    let config =
        libraflux::config::load(Some(std::path::Path::new(&path))).map_err(|err| format!("{err:?}"))?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let measured = runtime.block_on(async {
        let (mut scheduler, mut events) =
            libraflux::health::Scheduler::new(libraflux::health::SchedulerOptions::default());
        let started = Instant::now();
        let summary = scheduler.update(&config.desired, &config.settings);
        println!("native: scheduler started {} probes", summary.added);
        // The event reader, as the daemon has one: per backend, checks by outcome (and when it
        // first became unhealthy, for the down backends), keyed by the event's own keys so that
        // counting costs a hash lookup, not a formatted string, per event.
        type Tally = std::collections::HashMap<(ServiceKey, DestKey), Backend>;
        let tally = std::sync::Arc::new(std::sync::Mutex::new(Tally::new()));
        let reader = tokio::spawn({
            let tally = std::sync::Arc::clone(&tally);
            async move {
                while let Some(event) = events.recv().await {
                    let mut tally = tally.lock().expect("tally");
                    let backend = tally.entry((event.service, event.backend)).or_default();
                    *backend.outcomes.entry(event.outcome()).or_default() += 1;
                    backend.probes += 1;
                    if matches!(event.transition, Some(Transition::BecameUnhealthy { .. }))
                        && backend.fell_after.is_none()
                    {
                        backend.fell_after = Some(backend.probes);
                    }
                }
            }
        });
        let view = |scheduler: &libraflux::health::Scheduler| {
            let table = scheduler.snapshot();
            let mut view: BTreeMap<String, Backend> = tally
                .lock()
                .expect("tally")
                .iter()
                .map(|((service, backend), tally)| (format!("{service} {backend}"), tally.clone()))
                .collect();
            for (service, backends) in table.services() {
                for (backend, status) in backends {
                    view.entry(format!("{service} {backend}")).or_default().healthy = status.healthy();
                }
            }
            view
        };
        let total = options.total() as usize;
        let down_prefix = options.down_prefix();
        let converge_deadline = started + Duration::from_secs(120);
        loop {
            let current = view(&scheduler);
            if passed(&current, &down_prefix) == total {
                break;
            }
            if Instant::now() > converge_deadline {
                return Err(format!(
                    "not converged within 120 s: {} of {total} backends passed a check",
                    passed(&current, &down_prefix)
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let converge = started.elapsed();
        let before = view(&scheduler);
        let (cpu0, listener0, opens0, t0) =
            (own_cpu(), cpu_seconds(&listener_pid)?, tcp_active_opens()?, Instant::now());
        tokio::time::sleep(Duration::from_secs(options.window)).await;
        let (cpu1, listener1, opens1, window) =
            (own_cpu(), cpu_seconds(&listener_pid)?, tcp_active_opens()?, t0.elapsed());
        let after = view(&scheduler);
        let (rss_kib, hwm_kib) = memory_kib("self")?;
        drop(scheduler);
        reader.abort();
        Ok(Measured {
            engine: "native Scheduler",
            converge,
            window,
            cpu: cpu1 - cpu0,
            connects: opens1 - opens0,
            rss_kib,
            hwm_kib,
            verdict: verdict(&before, &after, &options.down_prefix()),
            listener_cpu: listener1 - listener0,
        })
    })?;
    drop(listener);
    report(options, &measured)
}

fn daemon(options: &Options) -> Result<(), String> {
    let binary = options.libraflux.as_deref().ok_or("daemon mode needs --libraflux BIN")?;
    fresh_namespace(BACKEND_ADDR)?;
    raise_nofile()?;
    let listener = Listener::start(options.backends(), None)?;
    let listener_pid = listener.pid();
    let path = format!("{}/health-bench.yaml", options.work_dir);
    std::fs::write(&path, options.config()).map_err(|err| format!("{path}: {err}"))?;
    let log = format!("{}/health-bench-daemon.log", options.work_dir);
    let started = Instant::now();
    let child = Command::new(binary)
        .args(["daemon", "-c", &path, "--reconcile-interval", "10s", "--skip-check", "vips_present"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map_err(|err| format!("{log}: {err}"))?)
        .spawn()
        .map_err(|err| format!("start {binary}: {err}"))?;
    let daemon = Daemon(child);
    let pid = daemon.pid();
    let total = options.total() as usize;
    let deadline = started + Duration::from_secs(300);
    let converge = loop {
        std::thread::sleep(Duration::from_secs(2));
        let passed = scrape().map(|view| passed(&view, &options.down_prefix())).unwrap_or(0);
        if passed == total {
            break started.elapsed();
        }
        if Instant::now() > deadline {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("not converged within 300 s: {passed} of {total} passed a check\n{tail}"));
        }
    };
    let before = scrape()?;
    let (cpu0, listener0, opens0, t0) =
        (cpu_split(&pid)?, cpu_seconds(&listener_pid)?, tcp_active_opens()?, Instant::now());
    std::thread::sleep(Duration::from_secs(options.window));
    let (cpu1, listener1, opens1, window) =
        (cpu_split(&pid)?, cpu_seconds(&listener_pid)?, tcp_active_opens()?, t0.elapsed());
    let (rss_kib, hwm_kib) = memory_kib(&pid)?;
    let after = scrape()?;
    let services = Command::new("ipvsadm").args(["-Ln"]).output().map_err(|e| e.to_string())?;
    let listed = String::from_utf8_lossy(&services.stdout).lines().filter(|l| l.contains("->")).count();
    println!("ipvsadm -Ln: {listed} lines with '->' (destinations plus the header line)");
    drop(daemon);
    drop(listener);
    report(
        options,
        &Measured {
            engine: "daemon",
            converge,
            window,
            cpu: cpu1 - cpu0,
            connects: opens1 - opens0,
            rss_kib,
            hwm_kib,
            verdict: verdict(&before, &after, &options.down_prefix()),
            listener_cpu: listener1 - listener0,
        },
    )
}

/// keepalived's checker on the same backends: CPU of its checker process over the window, the
/// connects the namespace made, and the verdicts it programmed into IPVS.
fn keepalived_mode(options: &Options) -> Result<(), String> {
    fresh_namespace(BACKEND_ADDR)?;
    raise_nofile()?;
    let listener = Listener::start(options.backends(), None)?;
    let listener_pid = listener.pid();
    let path = format!("{}/health-bench-keepalived.conf", options.work_dir);
    let config = keepalived::config(VIP, &options.keepalived_servers(), Duration::from_millis(500), FALL);
    std::fs::write(&path, config).map_err(|err| format!("{path}: {err}"))?;
    let log = format!("{}/health-bench-keepalived.log", options.work_dir);
    let started = Instant::now();
    let opens_at_start = tcp_active_opens()?;
    let keepalived = keepalived::Keepalived::start(&path, &options.work_dir, &log)?;
    let pid = keepalived.checker_pid().to_owned();
    // keepalived exports no count of checks: converged once the namespace has made two connects
    // per backend (its first checks are spread over one delay_loop).
    let all = u64::from(options.total() + options.down);
    let deadline = started + Duration::from_secs(300);
    let converge = loop {
        std::thread::sleep(Duration::from_secs(1));
        let made = tcp_active_opens()? - opens_at_start;
        if made >= 2 * all {
            break started.elapsed();
        }
        if Instant::now() > deadline {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!(
                "keepalived made {made} connects in 300 s, fewer than 2 per backend\n{tail}"
            ));
        }
    };
    let (cpu0, listener0, opens0, t0) =
        (cpu_split(&pid)?, cpu_seconds(&listener_pid)?, tcp_active_opens()?, Instant::now());
    std::thread::sleep(Duration::from_secs(options.window));
    let (cpu1, listener1, opens1, window) =
        (cpu_split(&pid)?, cpu_seconds(&listener_pid)?, tcp_active_opens()?, t0.elapsed());
    let (rss_kib, hwm_kib) = memory_kib(&pid)?;
    let serving: std::collections::BTreeSet<String> =
        keepalived::serving_real_servers()?.into_iter().collect();
    drop(keepalived);
    drop(listener);
    let is_serving = |port: u16| serving.contains(&format!("{BACKEND_ADDR}:{port}"));
    let healthy = (0..options.total()).filter(|&i| is_serving(options.backends().port(i))).count();
    let down_serving = (0..options.down).filter(|&i| is_serving(options.down_port(i))).count();
    let cpu = cpu1 - cpu0;
    let seconds = window.as_secs_f64();
    let connects = opens1 - opens0;
    println!();
    println!(
        "health benchmark (keepalived TCP_CHECK): {} backends (+ {} down), delay_loop 1, connect_timeout 0.5",
        options.total(),
        options.down
    );
    println!("  converged (two connects per backend) after {:.1} s", converge.as_secs_f64());
    println!(
        "  window {seconds:.1} s: checker process CPU {:.2} s = {:.1} % of one core (user {:.2} s, system {:.2} s); \
         VmRSS {rss_kib} KiB, VmHWM {hwm_kib} KiB",
        cpu.total(),
        cpu.total() / seconds * 100.0,
        cpu.user,
        cpu.system
    );
    println!(
        "  {connects} connects by the kernel's count ({:.0}/s, {:.1} us of CPU each); real servers serving at end \
         {healthy}/{}, down ones serving {down_serving}/{}",
        connects as f64 / seconds,
        cpu.total() * 1e6 / (connects.max(1) as f64),
        options.total(),
        options.down
    );
    println!("  listener process CPU in window: {:.2} s", listener1 - listener0);
    println!(
        "HEALTH_BENCH engine=keepalived backends={} down={} window_s={seconds:.1} cpu_s={:.2} user_s={:.2} \
         system_s={:.2} cpu_share={:.4} vmrss_kib={rss_kib} vmhwm_kib={hwm_kib} connects={connects} healthy={healthy} \
         down_serving={down_serving} converge_s={:.1}",
        options.total(),
        options.down,
        cpu.total(),
        cpu.user,
        cpu.system,
        cpu.total() / seconds,
        converge.as_secs_f64()
    );
    if healthy != options.total() as usize || down_serving != 0 {
        return Err(format!(
            "keepalived's verdicts: {healthy} of {} listening backends serving, {down_serving} of {} down ones serving",
            options.total(),
            options.down
        ));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("listen")
        && let Err(err) = bench::listener::serve(&args[1..])
    {
        eprintln!("health-bench: {err}");
        std::process::exit(1);
    }
    let options = parse_options().unwrap_or_else(|err| {
        eprintln!("{err}");
        std::process::exit(2);
    });
    let result = match options.mode.as_str() {
        "native" => native(&options),
        "daemon" => daemon(&options),
        "keepalived" => keepalived_mode(&options),
        other => Err(format!("unknown mode {other:?}\n{USAGE}")),
    };
    if let Err(err) = result {
        eprintln!("health-bench: {err}");
        std::process::exit(1);
    }
}
