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
//!
//! After every backend has passed a check, CPU is sampled over the window (default 60 s). The run
//! fails unless every backend is healthy at the end and passed checks during the window.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use libraflux_tests::bench::{
    self, Daemon, cpu_seconds, fresh_namespace, label,
    listener::{Backends, Listener},
    memory_kib, raise_nofile,
};

const USAGE: &str = "usage: health-bench native|daemon|listen [--services S] [--backends B] [--window SECS] \
                     [--libraflux BIN] [--work-dir DIR]";

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
            "--window" => options.window = u64::from(number(value()?)?),
            "--libraflux" => options.libraflux = Some(value()?),
            "--work-dir" => options.work_dir = value()?,
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
        }
    }
    let total = options.services * options.backends;
    if total == 0 || total > 30_000 || options.services > 60_000 || options.window == 0 {
        return Err("need 1..=30,000 backends in all and a window of at least 1 s".to_owned());
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

    /// The benchmark config: S services x B backends, TCP checks every 1 s, timeout 500 ms.
    fn config(&self) -> String {
        let mut text = bench::config_head(self.services, self.backends, METRICS);
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
        text
    }
}

fn rusage_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Per backend: checks by outcome, and whether it is healthy now.
#[derive(Clone, Debug, Default)]
struct Backend {
    outcomes: BTreeMap<String, u64>,
    healthy: bool,
}

impl Backend {
    fn successes(&self) -> u64 {
        self.outcomes.get("success").copied().unwrap_or(0)
    }

    fn failures(&self) -> u64 {
        self.outcomes.iter().filter(|(outcome, _)| *outcome != "success").map(|(_, n)| n).sum()
    }
}

/// How the backends did between two views.
struct Verdict {
    healthy: usize,
    checked_in_window: usize,
    successes: u64,
    failures: u64,
}

fn verdict(before: &BTreeMap<String, Backend>, after: &BTreeMap<String, Backend>) -> Verdict {
    let mut verdict = Verdict { healthy: 0, checked_in_window: 0, successes: 0, failures: 0 };
    for (name, now) in after {
        let then = before.get(name).cloned().unwrap_or_default();
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
            let outcome = label(line, "outcome").unwrap_or_default();
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
    cpu: f64,
    rss_kib: u64,
    hwm_kib: u64,
    verdict: Verdict,
    listener_cpu: f64,
}

fn report(options: &Options, m: &Measured) -> Result<(), String> {
    let share = m.cpu / m.window.as_secs_f64();
    let v = &m.verdict;
    println!();
    println!(
        "health benchmark ({}): {} services x {} backends = {} TCP backends, interval 1s, timeout 500ms",
        m.engine,
        options.services,
        options.backends,
        options.total()
    );
    println!("  converged (every backend passed a check) after {:.1} s", m.converge.as_secs_f64());
    println!(
        "  window {:.1} s: CPU {:.2} s = {:.1} % of one core; VmRSS {} KiB, VmHWM {} KiB",
        m.window.as_secs_f64(),
        m.cpu,
        share * 100.0,
        m.rss_kib,
        m.hwm_kib
    );
    println!(
        "  checks in window: {} successes ({:.0}/s), {} failures; backends healthy at end {}/{}, \
         passed a check in the window {}/{}",
        v.successes,
        v.successes as f64 / m.window.as_secs_f64(),
        v.failures,
        v.healthy,
        options.total(),
        v.checked_in_window,
        options.total()
    );
    println!("  listener process CPU in window: {:.2} s", m.listener_cpu);
    println!(
        "HEALTH_BENCH engine={} backends={} window_s={:.1} cpu_s={:.2} cpu_share={:.4} vmrss_kib={} vmhwm_kib={} \
         successes={} failures={} healthy={} checked={} converge_s={:.1}",
        m.engine,
        options.total(),
        m.window.as_secs_f64(),
        m.cpu,
        share,
        m.rss_kib,
        m.hwm_kib,
        v.successes,
        v.failures,
        v.healthy,
        v.checked_in_window,
        m.converge.as_secs_f64()
    );
    let total = options.total() as usize;
    if v.healthy != total || v.checked_in_window != total {
        return Err(format!(
            "false negatives: {} of {total} healthy at the end, {} of {total} passed a check in the window",
            v.healthy, v.checked_in_window
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
        // The event reader, as the daemon has one: per backend, checks by outcome.
        let (tally_tx, tally_rx) = tokio::sync::watch::channel(BTreeMap::<String, Backend>::new());
        let reader = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let key = format!("{} {}", event.service, event.backend);
                tally_tx.send_modify(|tally| {
                    *tally.entry(key).or_default().outcomes.entry(event.outcome().to_owned()).or_default() +=
                        1;
                });
            }
        });
        let view = |scheduler: &libraflux::health::Scheduler| {
            let table = scheduler.snapshot();
            let mut view = tally_rx.borrow().clone();
            for (service, backends) in table.services() {
                for (backend, status) in backends {
                    view.entry(format!("{service} {backend}")).or_default().healthy = status.healthy();
                }
            }
            view
        };
        let total = options.total() as usize;
        let converge_deadline = started + Duration::from_secs(120);
        loop {
            let current = view(&scheduler);
            if current.values().filter(|b| b.successes() > 0).count() == total {
                break;
            }
            if Instant::now() > converge_deadline {
                return Err(format!(
                    "not converged within 120 s: {} of {total} backends passed a check",
                    current.values().filter(|b| b.successes() > 0).count()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let converge = started.elapsed();
        let before = view(&scheduler);
        let (cpu0, listener0, t0) = (rusage_seconds(), cpu_seconds(&listener_pid)?, Instant::now());
        tokio::time::sleep(Duration::from_secs(options.window)).await;
        let (cpu1, listener1, window) = (rusage_seconds(), cpu_seconds(&listener_pid)?, t0.elapsed());
        let after = view(&scheduler);
        let (rss_kib, hwm_kib) = memory_kib("self")?;
        drop(scheduler);
        reader.abort();
        Ok(Measured {
            engine: "native Scheduler",
            converge,
            window,
            cpu: cpu1 - cpu0,
            rss_kib,
            hwm_kib,
            verdict: verdict(&before, &after),
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
        let passed = scrape().map(|view| view.values().filter(|b| b.successes() > 0).count()).unwrap_or(0);
        if passed == total {
            break started.elapsed();
        }
        if Instant::now() > deadline {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("not converged within 300 s: {passed} of {total} passed a check\n{tail}"));
        }
    };
    let before = scrape()?;
    let (cpu0, listener0, t0) = (cpu_seconds(&pid)?, cpu_seconds(&listener_pid)?, Instant::now());
    std::thread::sleep(Duration::from_secs(options.window));
    let (cpu1, listener1, window) = (cpu_seconds(&pid)?, cpu_seconds(&listener_pid)?, t0.elapsed());
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
            rss_kib,
            hwm_kib,
            verdict: verdict(&before, &after),
            listener_cpu: listener1 - listener0,
        },
    )
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
        other => Err(format!("unknown mode {other:?}\n{USAGE}")),
    };
    if let Err(err) = result {
        eprintln!("health-bench: {err}");
        std::process::exit(1);
    }
}
