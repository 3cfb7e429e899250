//! The daemon at rest: what `libraflux daemon` costs on a large node when nothing changes. Run
//! through `cargo xtask bench idle`; see docs/benchmarks.md.
//!
//! This process unshares its network namespace (root; the namespace's IPVS table starts empty)
//! and starts the daemon (`BIN daemon`) on S services x B backends with `health: { type: none }`
//! and every interval at its default (reconcile 10 s, `metrics.collect_interval` 30 s). The
//! backends are addresses nothing answers on: with no checks and no traffic, none is contacted.
//! It waits until the table is complete (`/proc/net/ip_vs`), lets the daemon settle, and then,
//! over `--window` seconds, measures the daemon's CPU (`/proc/PID/stat`), its memory (VmRSS and
//! VmHWM) and, on the kernel's side (`bench::genl_trace`), every generic-netlink request its
//! sockets send, by command. Nothing scrapes `/metrics` during the window (a scrape of 100,000
//! backends' series would be work the daemon does for the bench): the reconcile counters are read
//! just before and just after it.
//!
//! Correctness, checked in the same run: after the window `ipvsadm-save -n` lists every service
//! and backend at its weight, and the daemon is still running.

use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use libraflux_tests::bench::{
    self, Daemon,
    genl_trace::{Counts, GenlTrace},
    requests::{by_kind, netlink_ports},
};

const USAGE: &str = "usage: idle-bench run --libraflux BIN [--label L] [--services S] [--backends B] \
                     [--settle SECS] [--window SECS] [--work-dir DIR]";

const VIP: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 10);
/// Backend `b` of every service is 10.212.0.(b + 1), on the service's own port.
const BACKEND_NET: [u8; 3] = [10, 212, 0];
const WEIGHT: u32 = 100;
const METRICS: &str = "127.0.0.1:9469";
const CONVERGE_LIMIT: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Options {
    libraflux: String,
    label: String,
    services: u32,
    backends: u32,
    settle: u64,
    window: u64,
    work_dir: String,
}

fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        libraflux: String::new(),
        label: "daemon".to_owned(),
        services: 10_000,
        backends: 10,
        settle: 60,
        window: 300,
        work_dir: "/tmp".to_owned(),
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        let number =
            |text: String| text.parse::<u64>().map_err(|_| format!("{arg}: {text:?} is not a number"));
        let small = |n: u64| u32::try_from(n).map_err(|_| format!("{arg}: {n} is too large"));
        match arg.as_str() {
            "--libraflux" => o.libraflux = value()?,
            "--label" => o.label = value()?,
            "--services" => o.services = small(number(value()?)?)?,
            "--backends" => o.backends = small(number(value()?)?)?,
            "--settle" => o.settle = number(value()?)?,
            "--window" => o.window = number(value()?)?,
            "--work-dir" => o.work_dir = value()?,
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
        }
    }
    if o.libraflux.is_empty() || !(1..=60_000).contains(&o.services) || !(1..=250).contains(&o.backends) {
        return Err(format!("need --libraflux, 1..=60,000 services and 1..=250 backends\n{USAGE}"));
    }
    if o.window == 0 {
        return Err(format!("--window must be above 0\n{USAGE}"));
    }
    Ok(o)
}

impl Options {
    fn total(&self) -> u32 {
        self.services * self.backends
    }

    /// Service `s` is `tcp:VIP:(s + 1)`; its backends are on port 10,000 + s + 1.
    fn config(&self) -> String {
        let mut text = bench::config_head(self.services, self.backends, METRICS);
        let [a, b, c] = BACKEND_NET;
        for service in 0..self.services {
            let port = service + 1;
            text.push_str(&format!(
                "  - name: s{service}\n    protocol: tcp\n    vip: {VIP}\n    port: {port}\n    scheduler: wrr\n    \
                 health: {{ type: none }}\n    backends:\n"
            ));
            for backend in 0..self.backends {
                text.push_str(&format!(
                    "      - {{ address: {a}.{b}.{c}.{}, port: {}, weight: {WEIGHT} }}\n",
                    backend + 1,
                    10_000 + port
                ));
            }
        }
        text
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("run") => parse_options(args).and_then(|options| run(&options)),
        _ => Err(USAGE.to_owned()),
    };
    if let Err(err) = result {
        eprintln!("idle-bench: {err}");
        std::process::exit(1);
    }
}

/// What the daemon did over the window.
struct Window {
    elapsed: Duration,
    counts: Counts,
    requests: u64,
    reconciles: f64,
    reconcile_seconds: f64,
    cpu: f64,
    user: f64,
    system: f64,
    /// Collections of the statistics that read nothing from netlink (the kernel's totals had not
    /// moved), and all collections; both from the daemon's metrics (0 for a daemon without them).
    collections_at_rest: f64,
    collections: f64,
}

fn run(o: &Options) -> Result<(), String> {
    bench::fresh_namespace(Ipv4Addr::new(10, 211, 0, 1))?;
    let ipvs_family = libraflux_tests::genl_family_id("IPVS");
    let config = format!("{}/idle-{}.yaml", o.work_dir, o.label);
    std::fs::write(&config, o.config()).map_err(|err| format!("{config}: {err}"))?;
    let log = format!("{}/idle-{}.log", o.work_dir, o.label);
    let state = format!("{}/idle-{}-state-{}", o.work_dir, o.label, std::process::id());
    let _ = std::fs::remove_file("/run/libraflux/control.sock");
    println!(
        "[{}] {} services x {} backends, no health checks, default intervals",
        o.label, o.services, o.backends
    );
    let started = Instant::now();
    let child = Command::new(&o.libraflux)
        .args(["daemon", "-c", &config, "--skip-check", "vips_present", "--state-dir", &state])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map_err(|err| format!("{log}: {err}"))?)
        .spawn()
        .map_err(|err| format!("start {}: {err}", o.libraflux))?;
    let mut daemon = Daemon(child);
    let converged = converge(o, &mut daemon, &log)?;
    println!(
        "[{}] the table was complete after {:.1} s; settling {} s",
        o.label,
        converged.as_secs_f64(),
        o.settle
    );
    std::thread::sleep(Duration::from_secs(o.settle));
    let trace = GenlTrace::install()?;
    let window = measure(o, &trace, &daemon)?;
    drop(trace);
    let (rss_kib, hwm_kib) = bench::memory_kib(&daemon.pid())?;
    let alive = matches!(daemon.0.try_wait(), Ok(None));
    let (services, backends) = saved_table()?;
    drop(daemon);
    report(o, &window, ipvs_family, (rss_kib, hwm_kib), started.elapsed());
    let mut problems = Vec::new();
    if !alive {
        problems.push(format!("the daemon exited during the run; its log: {log}"));
    }
    if (services, backends) != (o.services as usize, o.total() as usize) {
        problems.push(format!(
            "ipvsadm-save -n lists {services} services and {backends} backends at weight {WEIGHT}, not {} and {}",
            o.services,
            o.total()
        ));
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

/// Waits until `/proc/net/ip_vs` holds every service and backend, reading it every 10 s.
fn converge(o: &Options, daemon: &mut Daemon, log: &str) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(10));
        let (services, backends) = proc_table()?;
        if (services, backends) == (o.services as usize, o.total() as usize) {
            return Ok(started.elapsed());
        }
        let exited = !matches!(daemon.0.try_wait(), Ok(None));
        if exited || started.elapsed() > CONVERGE_LIMIT {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let why = if exited {
                "the daemon exited".to_owned()
            } else {
                format!("not complete within {CONVERGE_LIMIT:?}")
            };
            return Err(format!("{why}: {services} services and {backends} backends in IPVS\n{tail}"));
        }
    }
}

/// Services and destinations in this namespace's table, from /proc/net/ip_vs.
fn proc_table() -> Result<(usize, usize), String> {
    let table =
        std::fs::read_to_string("/proc/net/ip_vs").map_err(|err| format!("/proc/net/ip_vs: {err}"))?;
    let services = table.lines().filter(|line| line.starts_with("TCP") || line.starts_with("UDP")).count();
    let backends = table
        .lines()
        .filter(|line| line.trim_start().starts_with("->") && !line.contains("RemoteAddress"))
        .count();
    Ok((services, backends))
}

/// Services, and backends at the configured weight, in `ipvsadm-save -n`.
fn saved_table() -> Result<(usize, usize), String> {
    let output =
        Command::new("ipvsadm-save").arg("-n").output().map_err(|err| format!("ipvsadm-save: {err}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let services = text.lines().filter(|line| line.starts_with("-A ")).count();
    let weight = format!("-w {WEIGHT}");
    let backends = text.lines().filter(|line| line.starts_with("-a ") && line.contains(&weight)).count();
    Ok((services, backends))
}

fn measure(o: &Options, trace: &GenlTrace, daemon: &Daemon) -> Result<Window, String> {
    let pid = daemon.pid();
    let before = bench::scrape(METRICS)?;
    let cpu0 = bench::cpu_split(&pid)?;
    let profile = trace.start()?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(o.window));
    let counts = trace.stop(&profile)?;
    let elapsed = t0.elapsed();
    let cpu = bench::cpu_split(&pid)? - cpu0;
    let ports = netlink_ports(&pid)?;
    let after = bench::scrape(METRICS)?;
    let delta = |metric: &str| bench::metric_sum(&after, metric) - bench::metric_sum(&before, metric);
    let mut counts = counts;
    counts.requests.retain(|request, _| ports.contains(&request.portid));
    let requests = counts.requests.values().sum();
    Ok(Window {
        elapsed,
        counts,
        requests,
        reconciles: delta("libraflux_reconcile_runs_total"),
        reconcile_seconds: delta("libraflux_reconcile_duration_seconds_sum"),
        cpu: cpu.total(),
        user: cpu.user,
        system: cpu.system,
        collections_at_rest: delta(r#"libraflux_stats_collections_total{read="none"}"#),
        collections: delta("libraflux_stats_collections_total"),
    })
}

fn report(o: &Options, w: &Window, ipvs_family: u16, (rss_kib, hwm_kib): (u64, u64), total: Duration) {
    let seconds = w.elapsed.as_secs_f64();
    let minutes = seconds / 60.0;
    let kinds = by_kind(&w.counts, ipvs_family, |_| true);
    let kind = |name: &str| kinds.get(name).copied().unwrap_or(0);
    let reads = kind("GET_SERVICE dump");
    let mean_ms = if w.reconciles > 0.0 { w.reconcile_seconds / w.reconciles * 1000.0 } else { 0.0 };
    println!();
    println!("idle benchmark [{}], window {seconds:.1} s:", o.label);
    println!(
        "  generic netlink requests from the daemon: {} = {:.0}/min; table reads (GET_SERVICE dumps) {reads}",
        w.requests,
        w.requests as f64 / minutes
    );
    for (name, hits) in &kinds {
        println!("    {name:<20} {hits:>9}  {:>9.1}/min", *hits as f64 / minutes);
    }
    println!(
        "  reconciles {:.0} (mean {mean_ms:.0} ms); daemon CPU {:.1} s = {:.2} % of a CPU; VmRSS {:.1} MiB, VmHWM {:.1} MiB; \
         whole run {:.0} s",
        w.reconciles,
        w.cpu,
        w.cpu / seconds * 100.0,
        rss_kib as f64 / 1024.0,
        hwm_kib as f64 / 1024.0,
        total.as_secs_f64()
    );
    println!(
        "  daemon CPU user {:.2} s, system {:.2} s; statistics collections {:.0}, of which {:.0} read nothing",
        w.user, w.system, w.collections, w.collections_at_rest
    );
    println!(
        "IDLE_BENCH label={} services={} backends={} window_s={seconds:.1} cpu_s={:.2} user_s={:.2} system_s={:.2} \
         cpu_share={:.4} vmrss_kib={rss_kib} vmhwm_kib={hwm_kib} requests={} requests_per_min={:.0} table_reads={reads} \
         get_dest_dumps={} reconciles={:.0} reconcile_mean_ms={mean_ms:.0} collections={:.0} collections_at_rest={:.0} \
         dropped={}",
        o.label,
        o.services,
        o.backends,
        w.cpu,
        w.user,
        w.system,
        w.cpu / seconds,
        w.requests,
        w.requests as f64 / minutes,
        kind("GET_DEST dump"),
        w.reconciles,
        w.collections,
        w.collections_at_rest,
        w.counts.dropped
    );
}
