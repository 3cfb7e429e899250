//! `libraflux apply` end to end, as the operator runs it, against `ipvsadm -R` and
//! `ipvsadm-save -n` in the same boot (`apply-bench vm`, run in the VM by `cargo xtask bench
//! apply`); and config loading natively (`apply-bench config`, `cargo xtask bench config`).
//! See docs/benchmarks.md.
//!
//! The stage times come from the command itself: it runs with
//! `RUST_LOG=info,libraflux::stage=debug` and logs one line per stage (`libraflux::apply::Stage`),
//! which this driver reads from its stderr. Nothing asserts on timings; a wrong table, plan or
//! exit status fails the run.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs::File,
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use libraflux_tests::bench::{check, run, sorted_lines};

const USAGE: &str = "usage: apply-bench vm|config --libraflux [LABEL=]BIN... [--services N] [--backends M] \
                     [--runs R] [--work-dir DIR]";

#[derive(Debug)]
struct Options {
    mode: String,
    /// The `libraflux` binaries to time, each with its label (its file name unless given).
    libraflux: Vec<(String, String)>,
    services: u32,
    backends: u32,
    runs: u32,
    work_dir: String,
}

fn parse_options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or(USAGE)?;
    if mode != "vm" && mode != "config" {
        return Err(USAGE.to_owned());
    }
    let mut options = Options {
        mode,
        libraflux: Vec::new(),
        services: 2_000,
        backends: 10,
        runs: 3,
        work_dir: "/tmp".into(),
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        let number = |text: String| text.parse::<u32>().map_err(|_| format!("{text:?} is not a number"));
        match arg.as_str() {
            "--libraflux" => {
                let value = value()?;
                let (label, path) = match value.split_once('=') {
                    Some((label, path)) => (label.to_owned(), path.to_owned()),
                    None => (value.rsplit('/').next().unwrap_or(&value).to_owned(), value.clone()),
                };
                options.libraflux.push((label, path));
            }
            "--services" => options.services = number(value()?)?,
            "--backends" => options.backends = number(value()?)?,
            "--runs" => options.runs = number(value()?)?,
            "--work-dir" => options.work_dir = value()?,
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
        }
    }
    if options.libraflux.is_empty() || options.services == 0 || options.backends == 0 || options.runs == 0 {
        return Err(format!("--libraflux is required; counts must be at least 1\n{USAGE}"));
    }
    if options.services >= 1 << 16 || u64::from(options.services) * u64::from(options.backends) >= 1 << 20 {
        return Err("at most 65,535 services and 2^20 backends in all".to_owned());
    }
    Ok(options)
}

/// The benchmark table: N services `tcp:VIP:80` (`wrr`, NAT), each with M backends `RIP:8080`;
/// every VIP and RIP distinct, weights 1..=100 cycling (the table of `ipvs-bench`).
struct Table {
    services: u32,
    backends: u32,
}

impl Table {
    fn vip(index: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + index + 1)
    }

    fn backends(&self, index: u32) -> impl Iterator<Item = (Ipv4Addr, u32)> + use<> {
        let backends = self.backends;
        (0..backends).map(move |backend| {
            let serial = index * backends + backend;
            (Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + serial + 1), serial % 100 + 1)
        })
    }

    /// The configuration an operator would write for this table, VIPs on `interface`.
    fn config(&self, interface: &str, snapshots: &str) -> String {
        let (services, backends) = (self.services, self.backends);
        let mut text = format!(
            "node:\n  name: bench\n  interface: {interface}\nlimits:\n  max_services_created: {services}\n  \
             max_backends_per_service: {backends}\n  max_services_deleted: {services}\nsnapshots:\n  \
             dir: {snapshots}\nservices:\n"
        );
        for index in 0..services {
            let _ = write!(
                text,
                "  - name: svc-{index}\n    protocol: tcp\n    vip: {}\n    port: 80\n    scheduler: wrr\n    \
                 forwarding: nat\n    health:\n      type: none\n    backends:\n",
                Self::vip(index)
            );
            for (rip, weight) in self.backends(index) {
                let _ =
                    write!(text, "      - address: {rip}\n        port: 8080\n        weight: {weight}\n");
            }
        }
        text
    }

    /// `ipvsadm -R` input; also what `ipvsadm-save -n` prints for this table (once sorted).
    fn restore_file(&self) -> String {
        let mut text = String::new();
        for index in 0..self.services {
            let vip = Self::vip(index);
            let _ = writeln!(text, "-A -t {vip}:80 -s wrr");
            for (rip, weight) in self.backends(index) {
                let _ = writeln!(text, "-a -t {vip}:80 -r {rip}:8080 -m -w {weight}");
            }
        }
        text
    }
}

fn write(path: &str, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|err| format!("{path}: {err}"))
}

/// One run of a whole command: its wall-clock time, and its stages (name, seconds) as it logged
/// them, in order.
struct Timed {
    wall: Duration,
    stages: Vec<(String, f64)>,
}

/// Runs `program args`, stdin and stdout from/to files, stderr read for stage lines (and shown
/// when the command fails); times the whole process.
fn timed(program: &str, args: &[&str], stdin: Option<&str>, stdout: Option<&str>) -> Result<Timed, String> {
    let mut command = Command::new(program);
    command.args(args).env("RUST_LOG", "info,libraflux::stage=debug").env("NO_COLOR", "1");
    command.stdin(match stdin {
        Some(path) => File::open(path).map_err(|err| format!("{path}: {err}"))?.into(),
        None => Stdio::null(),
    });
    command.stdout(match stdout {
        Some(path) => File::create(path).map_err(|err| format!("{path}: {err}"))?.into(),
        None => Stdio::null(),
    });
    command.stderr(Stdio::piped());
    let started = Instant::now();
    let output = command.output().map_err(|err| format!("cannot run {program}: {err}"))?;
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("{program} {} failed: {}\n{stderr}", args.join(" "), output.status));
    }
    Ok(Timed { wall, stages: stderr.lines().filter_map(stage_line).collect() })
}

/// `... libraflux::stage: stage done stage="plan" seconds=0.0123` -> ("plan", 0.0123).
fn stage_line(line: &str) -> Option<(String, f64)> {
    let rest = line.split_once("libraflux::stage:")?.1;
    let name = rest.split_once("stage=")?.1.split_whitespace().next()?.trim_matches('"');
    let seconds = rest.split_once("seconds=")?.1.split_whitespace().next()?.parse().ok()?;
    Some((name.to_owned(), seconds))
}

/// This process (and its children) in a fresh network namespace with `lo` up, an empty IPVS
/// table, and every VIP of the table on the dummy link `lfbench` (so `vips_present` passes for real).
fn fresh_namespace(table: &Table, dir: &str) -> Result<(), String> {
    // SAFETY: unshare has no memory-safety preconditions; this driver has one thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!("unshare(CLONE_NEWNET): {} (run as root)", std::io::Error::last_os_error()));
    }
    run("ip", &["link", "set", "lo", "up"])?;
    run("ip", &["link", "add", "lfbench", "type", "dummy"])?;
    run("ip", &["link", "set", "lfbench", "up"])?;
    let batch = format!("{dir}/apply-bench.vips");
    let lines: String = (0..table.services)
        .map(|index| format!("address add {}/32 dev lfbench\n", Table::vip(index)))
        .collect();
    write(&batch, &lines)?;
    run("ip", &["-batch", &batch])
}

/// What one run measured.
#[derive(Default)]
struct Run {
    /// Name -> seconds: `apply`, `noop` (wall of each command), `apply.STAGE`, `noop.STAGE`,
    /// `ipvsadm_restore`, `ipvsadm_save`.
    figures: BTreeMap<String, f64>,
}

impl Run {
    fn record(&mut self, name: &str, timed: &Timed) {
        self.figures.insert(name.to_owned(), timed.wall.as_secs_f64());
        let mut staged = 0.0;
        for (stage, seconds) in &timed.stages {
            *self.figures.entry(format!("{name}.{stage}")).or_default() += seconds;
            staged += seconds;
        }
        // Process start and exit, the runtime, and whatever no stage covers.
        self.figures.insert(format!("{name}.other"), timed.wall.as_secs_f64() - staged);
    }
}

/// `libraflux apply` from an empty table, then again (a no-op), in a fresh namespace; each
/// checked against `ipvsadm-save -n`. Figures are named `LABEL.apply`, `LABEL.noop` and
/// `LABEL.apply.STAGE`, ...
fn ours(
    options: &Options,
    (label, bin): &(String, String),
    table: &Table,
    expected: &[String],
    figures: &mut Run,
) -> Result<(), String> {
    let dir = &options.work_dir;
    fresh_namespace(table, dir)?;
    let config = format!("{dir}/apply-bench.yaml");
    let snapshots = format!("{dir}/apply-bench.snapshots");
    let _ = std::fs::remove_dir_all(&snapshots);
    write(&config, &table.config("lfbench", &snapshots))?;
    let plan_file = format!("{dir}/apply-bench.plan");
    let applied = timed(bin.as_str(), &["apply", "-c", &config], None, Some(&plan_file))?;
    figures.record(&format!("{label}.apply"), &applied);
    let plan = std::fs::read_to_string(&plan_file).map_err(|err| err.to_string())?;
    let summary = format!("Plan: {} to create, 0 to update, 0 to delete.", table.services);
    check(plan.contains(&summary), || format!("the plan does not say {summary:?}"))?;
    let saved = save(dir)?;
    check(saved == expected, || {
        format!("ipvsadm-save -n after apply differs ({} vs {} lines)", saved.len(), expected.len())
    })?;
    let noop = timed(bin.as_str(), &["apply", "-c", &config], None, Some(&plan_file))?;
    figures.record(&format!("{label}.noop"), &noop);
    let plan = std::fs::read_to_string(&plan_file).map_err(|err| err.to_string())?;
    check(plan.contains("No changes."), || "the second apply was not a no-op".to_owned())?;
    check(save(dir)? == expected, || "the no-op apply changed the table".to_owned())?;
    run("ipvsadm", &["-C"])
}

/// `ipvsadm -R` of the same table, then `ipvsadm-save -n`, in a fresh namespace.
fn reference(options: &Options, table: &Table, expected: &[String], figures: &mut Run) -> Result<(), String> {
    let dir = &options.work_dir;
    fresh_namespace(table, dir)?;
    let restore = format!("{dir}/apply-bench.restore");
    write(&restore, &table.restore_file())?;
    let restored = timed("ipvsadm", &["-R"], Some(&restore), None)?;
    figures.figures.insert("ipvsadm_restore".into(), restored.wall.as_secs_f64());
    let saved_path = format!("{dir}/apply-bench.save");
    let saved = timed("ipvsadm-save", &["-n"], None, Some(&saved_path))?;
    figures.figures.insert("ipvsadm_save".into(), saved.wall.as_secs_f64());
    let lines = sorted_lines(&std::fs::read_to_string(&saved_path).map_err(|err| err.to_string())?);
    check(lines == expected, || "ipvsadm-save -n after ipvsadm -R differs from the restore file".into())?;
    run("ipvsadm", &["-C"])
}

fn save(dir: &str) -> Result<Vec<String>, String> {
    let path = format!("{dir}/apply-bench.check");
    timed("ipvsadm-save", &["-n"], None, Some(&path))?;
    Ok(sorted_lines(&std::fs::read_to_string(&path).map_err(|err| format!("{path}: {err}"))?))
}

/// Median, min and max.
fn spread(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 };
    (median, values[0], values[n - 1])
}

/// The spread of `name` over the runs that have it.
fn figure(runs: &[Run], name: &str) -> Option<(f64, f64, f64)> {
    let mut values: Vec<f64> = runs.iter().filter_map(|run| run.figures.get(name).copied()).collect();
    (!values.is_empty()).then(|| spread(&mut values))
}

/// The spread over the runs of `numerator / denominator`, each ratio from one run.
fn ratio(runs: &[Run], numerator: &str, denominator: &str) -> (f64, f64, f64) {
    let mut values: Vec<f64> =
        runs.iter().map(|run| run.figures[numerator] / run.figures[denominator]).collect();
    spread(&mut values)
}

fn vm(options: &Options) -> Result<(), String> {
    let table = Table { services: options.services, backends: options.backends };
    let expected = sorted_lines(&table.restore_file());
    let mut runs = Vec::new();
    for index in 0..options.runs {
        let mut run = Run::default();
        // Mirrored order, so a drift of the machine's speed weighs on every side alike.
        let mut sides: Vec<Option<&(String, String)>> = options.libraflux.iter().map(Some).collect();
        sides.push(None);
        if index % 2 == 1 {
            sides.reverse();
        }
        for side in sides {
            match side {
                Some(binary) => ours(options, binary, &table, &expected, &mut run)?,
                None => reference(options, &table, &expected, &mut run)?,
            }
        }
        let line: Vec<String> =
            run.figures.iter().map(|(name, value)| format!("{name}={value:.3}")).collect();
        println!("run {}: {}", index + 1, line.join(" "));
        runs.push(run);
    }
    print_vm(options, &runs);
    Ok(())
}

fn print_vm(options: &Options, runs: &[Run]) {
    let config_bytes = Table { services: options.services, backends: options.backends }
        .config("lfbench", "/tmp/apply-bench.snapshots")
        .len();
    println!(
        "\nlibraflux apply, {} services x {} backends ({config_bytes} bytes of YAML), {} runs: median (min-max) s",
        options.services,
        options.backends,
        runs.len()
    );
    let names: std::collections::BTreeSet<&String> = runs.iter().flat_map(|run| run.figures.keys()).collect();
    for name in names {
        if let Some((median, min, max)) = figure(runs, name) {
            println!("{name:<28} {median:>8.3} ({min:.3}-{max:.3})");
        }
    }
    let mut line = format!(
        "APPLY_BENCH services={} backends={} runs={}",
        options.services,
        options.backends,
        runs.len()
    );
    let commands: Vec<String> = options
        .libraflux
        .iter()
        .flat_map(|(label, _)| [format!("{label}.apply"), format!("{label}.noop")])
        .collect();
    for command in &commands {
        let denominator = if command.ends_with(".apply") { "ipvsadm_restore" } else { "ipvsadm_save" };
        let (median, min, max) = ratio(runs, command, denominator);
        println!("ratio {command} / {denominator}: {median:.3} ({min:.3}-{max:.3})");
        let _ = write!(line, " ratio_{command}={median:.3}");
    }
    for command in &commands {
        let prefix = format!("{command}.");
        let slowest = runs[0]
            .figures
            .keys()
            .filter_map(|name| name.strip_prefix(&prefix))
            .filter_map(|stage| Some((stage, figure(runs, &format!("{prefix}{stage}"))?.0)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((stage, seconds)) = slowest {
            println!("slowest stage of {command}: {stage} ({seconds:.3} s median)");
            let _ = write!(line, " slowest_{command}={stage}");
        }
    }
    for name in commands.iter().map(String::as_str).chain(["ipvsadm_restore", "ipvsadm_save"]) {
        if let Some((median, ..)) = figure(runs, name) {
            let _ = write!(line, " {name}_s={median:.3}");
        }
    }
    println!("{line}");
}

fn main() {
    let options = parse_options().unwrap_or_else(|err| {
        eprintln!("{err}");
        std::process::exit(2);
    });
    let result = match options.mode.as_str() {
        "vm" => vm(&options),
        _ => config_bench(&options),
    };
    if let Err(err) = result {
        eprintln!("apply-bench: {err}");
        std::process::exit(1);
    }
}

/// Config loading natively: `libraflux validate -c FILE` as a whole process, and in this process
/// the parts of it (the YAML parser's events alone, marked-yaml's tree with positions, the whole
/// `config::load`), each `runs` times.
fn config_bench(options: &Options) -> Result<(), String> {
    let table = Table { services: options.services, backends: options.backends };
    let path = format!("{}/apply-bench-config.yaml", options.work_dir);
    let text = table.config("eth0", "/var/lib/libraflux/snapshots");
    write(&path, &text)?;
    let megabytes = text.len() as f64 / 1e6;
    println!("{path}: {} services x {} backends, {:.2} MB", options.services, options.backends, megabytes);
    let mut rows: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut samples = |name, f: &mut dyn FnMut() -> Result<(), String>| -> Result<(), String> {
        let mut values = Vec::new();
        for _ in 0..options.runs {
            let started = Instant::now();
            f()?;
            values.push(started.elapsed().as_secs_f64());
        }
        rows.push((name, values));
        Ok(())
    };
    samples("libraflux validate (process)", &mut || {
        timed(&options.libraflux[0].1, &["validate", "-c", &path], None, None).map(drop)
    })?;
    samples("read the file", &mut || std::fs::read_to_string(&path).map(drop).map_err(|e| e.to_string()))?;
    samples("YAML events only (yaml-rust2)", &mut || yaml_events(&text))?;
    samples("YAML tree with positions (marked-yaml)", &mut || {
        let options =
            marked_yaml::LoaderOptions::default().error_on_duplicate_keys(true).prevent_coercion(true);
        marked_yaml::parse_yaml_with_options(0, &text, options).map(drop).map_err(|err| err.to_string())
    })?;
    samples("config::load (all of it)", &mut || {
        libraflux::config::load(Some(Path::new(&path))).map(drop).map_err(|err| err.to_string())
    })?;
    println!("\n{:<42} {:>22} {:>8}", "what", "median (min-max) s", "MB/s");
    let mut line = format!("CONFIG_BENCH services={} bytes={}", options.services, text.len());
    for (name, mut values) in rows {
        let (median, min, max) = spread(&mut values);
        println!("{name:<42} {median:>8.3} ({min:.3}-{max:.3}) {:>8.1}", megabytes / median);
        let key: String = name.split(' ').next().unwrap_or(name).to_lowercase();
        let _ = write!(line, " {key}_s={median:.4}");
    }
    println!("{line}");
    Ok(())
}

/// Runs yaml-rust2's parser over `text`, dropping every event: what the scanner and parser cost
/// before any tree is built.
fn yaml_events(text: &str) -> Result<(), String> {
    struct Count(usize);
    impl yaml_rust2::parser::MarkedEventReceiver for Count {
        fn on_event(&mut self, _event: yaml_rust2::Event, _mark: yaml_rust2::scanner::Marker) {
            self.0 += 1;
        }
    }
    let mut count = Count(0);
    yaml_rust2::parser::Parser::new_from_str(text).load(&mut count, false).map_err(|err| err.to_string())?;
    check(count.0 > 0, || "no YAML events".to_owned())
}
