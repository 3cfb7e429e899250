//! The steady-state benchmark: how many netlink requests the daemon sends per second while a
//! share of its backends flaps. Run through `cargo xtask bench steady`; see docs/benchmarks.md.
//!
//! This process unshares its network namespace (root), puts the backends' address on `lo` and
//! starts the listener child (`listen`, this binary), one TCP listener per backend, every
//! `--flap-every`-th of which flaps (down for half of `--period`, up for the other half, each at
//! its own offset). With `--checked-services C` only the first C services have TCP checks and
//! hold the flapping backends; the others have none (see docs/benchmarks.md for why). It starts the daemon (`BIN daemon`) on a config of S services x B backends
//! with TCP checks, waits until every backend has passed a check, starts the flapping, lets it
//! settle, and then counts for `--window` seconds, on the kernel's side (`bench::genl_trace`), the
//! generic-netlink requests sent, by socket and command. The daemon's metrics give its
//! reconciles and checks over the same window, its log the health transitions.
//!
//! Correctness, checked in the same run (a failure fails the run, after the report): the table
//! has every service and backend; in `ipvsadm-save -n` after the window, every backend that does
//! not flap has its configured weight, and every flapping backend that has been in its phase for
//! at least 3/8 of a period has weight 0 (down) or its weight (up); no backend that does not flap
//! ever changed health; each flapping backend went unhealthy and healthy again (when the run
//! covers its whole schedule).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use libraflux_tests::bench::{
    self, Daemon,
    genl_trace::{Counts, GenlTrace},
    listener::{Backends, Flapping, Listener},
    requests::{by_kind, netlink_ports},
};

const USAGE: &str = "usage: steady-bench run --libraflux BIN [--label L] [--services S] [--backends B] \
                     [--checked-services C] [--flap-every K] [--interval-ms I] [--timeout-ms T] [--rise R] [--fall F] [--period SECS] \
                     [--settle SECS] [--window SECS] [--work-dir DIR]";

const BACKEND_ADDR: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 1);
const FIRST_PORT: u16 = 20_000;
/// The VIP of every service; service `i` listens on port `i + 1`.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 10);
const WEIGHT: u32 = 100;
const METRICS: &str = "127.0.0.1:9469";
const CONVERGE_LIMIT: Duration = Duration::from_secs(1800);

#[derive(Debug)]
struct Options {
    libraflux: String,
    label: String,
    services: u32,
    backends: u32,
    /// Services 0..checked have TCP checks (and the flapping backends); the others none.
    checked: Option<u32>,
    flap_every: u32,
    interval_ms: u64,
    timeout_ms: u64,
    rise: u32,
    fall: u32,
    period: u64,
    settle: Option<u64>,
    window: u64,
    work_dir: String,
}

fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        libraflux: String::new(),
        label: "daemon".to_owned(),
        services: 1000,
        backends: 10,
        checked: None,
        flap_every: 20,
        interval_ms: 1000,
        timeout_ms: 500,
        rise: 2,
        fall: 3,
        period: 20,
        settle: None,
        window: 60,
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
            "--checked-services" => o.checked = Some(small(number(value()?)?)?),
            "--flap-every" => o.flap_every = small(number(value()?)?)?,
            "--interval-ms" => o.interval_ms = number(value()?)?,
            "--timeout-ms" => o.timeout_ms = number(value()?)?,
            "--rise" => o.rise = small(number(value()?)?)?,
            "--fall" => o.fall = small(number(value()?)?)?,
            "--period" => o.period = number(value()?)?,
            "--settle" => o.settle = Some(number(value()?)?),
            "--window" => o.window = number(value()?)?,
            "--work-dir" => o.work_dir = value()?,
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
        }
    }
    let total = o.services * o.backends;
    if o.libraflux.is_empty()
        || total == 0
        || total > 40_000
        || o.flap_every == 0
        || o.window == 0
        || o.checked.is_some_and(|checked| checked == 0 || checked > o.services)
    {
        return Err(format!("need --libraflux, 1..=40,000 backends, --flap-every and --window > 0\n{USAGE}"));
    }
    // A transition is clean when each phase outlasts the checks that detect it, with room to spare.
    let detect_ms = u64::from(o.rise.max(o.fall) + 1) * o.interval_ms + o.timeout_ms;
    if o.period * 1000 / 2 < 2 * detect_ms {
        return Err(format!(
            "--period {} s is too short: each half must last twice the {detect_ms} ms that \
             rise/fall probes take",
            o.period
        ));
    }
    Ok(o)
}

impl Options {
    fn total(&self) -> u32 {
        self.services * self.backends
    }

    fn backends(&self) -> Backends {
        Backends { address: BACKEND_ADDR, first_port: FIRST_PORT, count: self.total() }
    }

    fn checked_services(&self) -> u32 {
        self.checked.unwrap_or(self.services)
    }

    /// The backends of the checked services, the first ones; every `flap_every`-th of them flaps.
    fn checked_backends(&self) -> u32 {
        self.checked_services() * self.backends
    }

    fn flapping(&self) -> Flapping {
        Flapping::new(self.checked_backends(), self.flap_every, Duration::from_secs(self.period))
    }

    fn settle(&self) -> u64 {
        self.settle.unwrap_or(self.period)
    }

    /// S services x B backends (weight 100), TCP checks; change limits raised to the table.
    fn config(&self) -> String {
        let mut text = bench::config_head(self.services, self.backends, METRICS);
        for service in 0..self.services {
            let health = if service < self.checked_services() {
                format!(
                    "{{ type: tcp, interval: {}ms, timeout: {}ms, rise: {}, fall: {} }}",
                    self.interval_ms, self.timeout_ms, self.rise, self.fall
                )
            } else {
                "{ type: none }".to_owned()
            };
            text.push_str(&format!(
                "  - name: s{service}\n    protocol: tcp\n    vip: {VIP}\n    port: {}\n    scheduler: wrr\n    \
                 health: {health}\n    backends:\n",
                service + 1,
            ));
            for backend in 0..self.backends {
                let port = self.backends().port(service * self.backends + backend);
                text.push_str(&format!(
                    "      - {{ address: {BACKEND_ADDR}, port: {port}, weight: {WEIGHT} }}\n"
                ));
            }
        }
        text
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("listen") => bench::listener::serve(&args.collect::<Vec<_>>()),
        Some("run") => parse_options(args).and_then(|options| run(&options)),
        _ => Err(USAGE.to_owned()),
    };
    if let Err(err) = result {
        eprintln!("steady-bench: {err}");
        std::process::exit(1);
    }
}

/// What the daemon did in the window.
struct Window {
    elapsed: Duration,
    counts: Counts,
    daemon_ports: BTreeSet<u32>,
    reconciles: f64,
    reconcile_seconds: f64,
    checks: f64,
    cpu: f64,
    transitions: usize,
}

fn run(o: &Options) -> Result<(), String> {
    bench::fresh_namespace(BACKEND_ADDR)?;
    bench::raise_nofile()?;
    let ipvs_family = libraflux_tests::genl_family_id("IPVS");
    let flapping = o.flapping();
    let mut listener = Listener::start(o.backends(), Some(flapping))?;
    let config = format!("{}/steady-{}.yaml", o.work_dir, o.label);
    std::fs::write(&config, o.config()).map_err(|err| format!("{config}: {err}"))?;
    let log = format!("{}/steady-{}.log", o.work_dir, o.label);
    let state = format!("{}/steady-{}-state-{}", o.work_dir, o.label, std::process::id());
    let _ = std::fs::remove_file("/run/libraflux/control.sock");
    println!(
        "[{}] {} services x {} backends, {} flapping (every {}th, period {} s), checks every {} ms",
        o.label, o.services, o.backends, flapping.flappers, o.flap_every, o.period, o.interval_ms
    );
    let started = Instant::now();
    let child = Command::new(&o.libraflux)
        .args(["daemon", "-c", &config, "--skip-check", "vips_present", "--state-dir", &state])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map_err(|err| format!("{log}: {err}"))?)
        .spawn()
        .map_err(|err| format!("start {}: {err}", o.libraflux))?;
    let daemon = Daemon(child);
    let converged = converge(o, &log)?;
    println!("[{}] converged after {:.1} s: every backend passed a check", o.label, converged.as_secs_f64());
    let trace = GenlTrace::install()?;
    let flap_start = listener.start_flapping()?;
    let flap_log_offset = log_len(&log);
    std::thread::sleep(Duration::from_secs(o.settle()));
    let window = measure(o, &trace, &daemon, &log)?;
    drop(trace);
    let check = check_table(o, flapping, flap_start)?;
    let history = read_transitions(&log, flap_log_offset)?;
    let (rss_kib, _) = bench::memory_kib(&daemon.pid())?;
    let listener_cpu = bench::cpu_seconds(&listener.pid())?;
    drop(daemon);
    drop(listener);
    report(o, &window, ipvs_family, rss_kib, started.elapsed(), listener_cpu);
    judge(o, flapping, &check, &history, flap_start.elapsed())
}

/// Waits until every backend has passed a check, scraping every 10 s (a scrape of thousands of
/// backends' series costs the daemon CPU, so not more often).
fn converge(o: &Options, log: &str) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(10));
        let passed = bench::scrape(METRICS).map(|text| checked_backends(&text)).unwrap_or(0);
        if passed == o.checked_backends() as usize {
            return Ok(started.elapsed());
        }
        if started.elapsed() > CONVERGE_LIMIT {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!(
                "not converged within {CONVERGE_LIMIT:?}: {passed} backends passed a check\n{tail}"
            ));
        }
    }
}

/// Backends with at least one successful check.
fn checked_backends(text: &str) -> usize {
    text.lines()
        .filter(|line| {
            line.starts_with("libraflux_health_checks_total{") && line.contains("outcome=\"success\"")
        })
        .filter(|line| {
            line.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0)
        })
        .filter_map(|line| Some((bench::label(line, "service")?, bench::label(line, "backend")?)))
        .collect::<BTreeSet<_>>()
        .len()
}

fn measure(o: &Options, trace: &GenlTrace, daemon: &Daemon, log: &str) -> Result<Window, String> {
    let pid = daemon.pid();
    let before = bench::scrape(METRICS)?;
    let (log0, cpu0) = (log_len(log), bench::cpu_seconds(&pid)?);
    let profile = trace.start()?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(o.window));
    let counts = trace.stop(&profile)?;
    let elapsed = t0.elapsed();
    let daemon_ports = netlink_ports(&pid)?;
    let (log1, cpu1) = (log_len(log), bench::cpu_seconds(&pid)?);
    let after = bench::scrape(METRICS)?;
    let delta = |metric: &str| bench::metric_sum(&after, metric) - bench::metric_sum(&before, metric);
    let text = std::fs::read(log).map_err(|err| format!("{log}: {err}"))?;
    let window_log = String::from_utf8_lossy(&text[log0.min(text.len())..log1.min(text.len())]);
    Ok(Window {
        elapsed,
        counts,
        daemon_ports,
        reconciles: delta("libraflux_reconcile_runs_total"),
        reconcile_seconds: delta("libraflux_reconcile_duration_seconds_sum"),
        checks: delta("libraflux_health_checks_total"),
        cpu: cpu1 - cpu0,
        transitions: window_log.lines().filter(|line| line.contains("backend is now")).count(),
    })
}

fn log_len(log: &str) -> usize {
    std::fs::metadata(log).map_or(0, |meta| usize::try_from(meta.len()).unwrap_or(usize::MAX))
}

fn report(o: &Options, w: &Window, ipvs_family: u16, rss_kib: u64, total: Duration, listener_cpu: f64) {
    let seconds = w.elapsed.as_secs_f64();
    let ours = |portid: u32| w.daemon_ports.contains(&portid);
    let daemon_total: u64 = w.counts.requests.iter().filter(|(r, _)| ours(r.portid)).map(|(_, n)| n).sum();
    let other = w.counts.total() - daemon_total;
    let kinds = by_kind(&w.counts, ipvs_family, ours);
    let table_reads = kinds.get("GET_SERVICE dump").copied().unwrap_or(0);
    println!();
    println!("steady-state benchmark [{}], window {seconds:.1} s:", o.label);
    println!(
        "  generic netlink requests from the daemon: {daemon_total} = {:.1}/s ({other} from other processes); \
         datagrams sent (all netlink, all processes) {}; dump buffers filled {}",
        daemon_total as f64 / seconds,
        w.counts.datagrams,
        w.counts.dump_buffers
    );
    for (kind, hits) in &kinds {
        println!("    {kind:<20} {hits:>9}  {:>9.1}/s", *hits as f64 / seconds);
    }
    let mut sockets: BTreeMap<u32, u64> = BTreeMap::new();
    for (request, hits) in w.counts.requests.iter().filter(|(r, _)| ours(r.portid)) {
        *sockets.entry(request.portid).or_default() += hits;
    }
    for (portid, hits) in &sockets {
        let one = by_kind(&w.counts, ipvs_family, |p| p == *portid);
        let reads = one.get("GET_SERVICE dump").copied().unwrap_or(0);
        println!("    socket {portid}: {hits} requests, {reads} table reads, {one:?}");
    }
    if table_reads > 0 {
        println!(
            "  requests per table read (GET_SERVICE dump): {:.1}",
            daemon_total as f64 / table_reads as f64
        );
    }
    let mean_ms = if w.reconciles > 0.0 { w.reconcile_seconds / w.reconciles * 1000.0 } else { 0.0 };
    println!(
        "  reconciles {:.0} = {:.2}/s (mean {mean_ms:.0} ms); health transitions logged {} = {:.2}/s; checks {:.0} = \
         {:.0}/s; daemon CPU {:.1} s = {:.0} % of a CPU; VmRSS {rss_kib} KiB; listener CPU {listener_cpu:.1} s \
         over the run ({:.0} s)",
        w.reconciles,
        w.reconciles / seconds,
        w.transitions,
        w.transitions as f64 / seconds,
        w.checks,
        w.checks / seconds,
        w.cpu,
        w.cpu / seconds * 100.0,
        total.as_secs_f64()
    );
    let kind = |name: &str| kinds.get(name).copied().unwrap_or(0);
    println!(
        "STEADY_BENCH label={} services={} backends={} checked={} flapping={} period_s={} interval_ms={} window_s={seconds:.1} \
         requests={daemon_total} requests_per_s={:.1} table_reads={table_reads} get_dest_dumps={} set_dest={} \
         other_requests={other} datagrams={} dump_buffers={} reconciles={:.0} reconciles_per_s={:.3} \
         reconcile_mean_ms={mean_ms:.0} transitions={} checks_per_s={:.0} cpu_share={:.3} vmrss_kib={rss_kib} dropped={}",
        o.label,
        o.services,
        o.backends,
        o.checked_backends(),
        o.flapping().flappers,
        o.period,
        o.interval_ms,
        daemon_total as f64 / seconds,
        kind("GET_DEST dump"),
        kind("SET_DEST"),
        w.counts.datagrams,
        w.counts.dump_buffers,
        w.reconciles,
        w.reconciles / seconds,
        w.transitions,
        w.checks / seconds,
        w.cpu / seconds,
        w.counts.dropped
    );
}

/// The table as `ipvsadm-save -n` shows it, against the schedule.
struct TableCheck {
    services: usize,
    /// Backend index -> weight.
    weights: BTreeMap<u32, u32>,
    /// Flapping backends whose phase was settled through the read: index -> up.
    settled: BTreeMap<u32, bool>,
}

fn check_table(o: &Options, flapping: Flapping, flap_start: Instant) -> Result<TableCheck, String> {
    let before = flap_start.elapsed();
    let output =
        Command::new("ipvsadm-save").arg("-n").output().map_err(|err| format!("ipvsadm-save: {err}"))?;
    let after = flap_start.elapsed();
    let text = String::from_utf8_lossy(&output.stdout);
    let mut weights = BTreeMap::new();
    for line in text.lines().filter(|line| line.starts_with("-a ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let value = |flag: &str| words.iter().position(|w| *w == flag).and_then(|i| words.get(i + 1));
        let port = value("-r").and_then(|r| r.rsplit_once(':')).and_then(|(_, p)| p.parse::<u32>().ok());
        let weight = value("-w").and_then(|w| w.parse::<u32>().ok());
        if let (Some(port), Some(weight)) = (port, weight) {
            weights.insert(port.saturating_sub(u32::from(FIRST_PORT)), weight);
        }
    }
    // Detection takes at most a quarter period (checked in parse_options); an eighth more is
    // left for the reconcile that follows it.
    let margin = Duration::from_secs(o.period) * 3 / 8;
    let settled = (0..o.total())
        .filter_map(|index| {
            let rank = flapping.rank(index)?;
            let (start, end) = (flapping.phase(rank, before), flapping.phase(rank, after));
            (start.up == end.up && start.since >= margin && end.since >= start.since)
                .then_some((index, start.up))
        })
        .collect();
    Ok(TableCheck { services: text.lines().filter(|line| line.starts_with("-A ")).count(), weights, settled })
}

/// Health transitions the daemon logged from `offset` on: backend index -> (went down, came up).
fn read_transitions(log: &str, offset: usize) -> Result<BTreeMap<u32, (u32, u32)>, String> {
    let text = std::fs::read(log).map_err(|err| format!("{log}: {err}"))?;
    let mut history: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
    for line in String::from_utf8_lossy(&text[offset.min(text.len())..]).lines() {
        let Some(rest) = line.split_once("backend is now ").map(|(_, rest)| rest) else { continue };
        let Some(port) = rest
            .split_whitespace()
            .find_map(|word| word.strip_prefix("backend="))
            .and_then(|backend| backend.rsplit_once(':'))
            .and_then(|(_, port)| port.parse::<u32>().ok())
        else {
            continue;
        };
        let entry = history.entry(port.saturating_sub(u32::from(FIRST_PORT))).or_default();
        if rest.starts_with("unhealthy") { entry.0 += 1 } else { entry.1 += 1 }
    }
    Ok(history)
}

fn judge(
    o: &Options,
    flapping: Flapping,
    table: &TableCheck,
    history: &BTreeMap<u32, (u32, u32)>,
    flapped_for: Duration,
) -> Result<(), String> {
    let mut problems = Vec::new();
    if table.services != o.services as usize || table.weights.len() != o.total() as usize {
        problems.push(format!(
            "ipvsadm-save lists {} services and {} backends, not {} and {}",
            table.services,
            table.weights.len(),
            o.services,
            o.total()
        ));
    }
    let stable_wrong = (0..o.total())
        .filter(|i| flapping.rank(*i).is_none() && table.weights.get(i).is_some_and(|w| *w != WEIGHT))
        .count();
    let settled_wrong: Vec<u32> = table
        .settled
        .iter()
        .filter(|(i, up)| table.weights.get(i).is_some_and(|w| *w != if **up { WEIGHT } else { 0 }))
        .map(|(i, _)| *i)
        .collect();
    let down = table.settled.values().filter(|up| !**up).count();
    println!(
        "  ipvsadm-save -n: {} services, {} backends; {} flapping backends settled in a phase ({down} down, {} up), \
         {} of them at the wrong weight; {stable_wrong} other backends not at weight {WEIGHT}",
        table.services,
        table.weights.len(),
        table.settled.len(),
        table.settled.len() - down,
        settled_wrong.len()
    );
    if stable_wrong > 0 || !settled_wrong.is_empty() {
        problems.push(format!(
            "weights do not follow health: {stable_wrong} stable backends, flapping backends {settled_wrong:?}"
        ));
    }
    let false_transitions: Vec<u32> =
        history.keys().filter(|i| flapping.rank(**i).is_none()).copied().collect();
    if !false_transitions.is_empty() {
        problems.push(format!("backends that do not flap changed health: {false_transitions:?}"));
    }
    // The last flapper first goes down at almost a period, and is back up half a period later.
    let whole = Duration::from_secs(o.period) * 3 / 2 + Duration::from_secs(o.period) / 4;
    if flapped_for >= whole {
        let missed = (0..o.total()).filter(|i| {
            flapping.rank(*i).is_some() && !history.get(i).is_some_and(|(d, u)| *d > 0 && *u > 0)
        });
        let missed: Vec<u32> = missed.collect();
        println!("  flapping backends that never went down and up again: {}", missed.len());
        if !missed.is_empty() {
            problems.push(format!("flapping backends that never went down and up again: {missed:?}"));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}
