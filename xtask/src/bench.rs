//! Benchmarks on a real kernel: `cargo xtask bench ipvs` programs, dumps and deletes a large
//! IPVS table with LibraFlux's client and with `ipvsadm`, in one VM boot; `health` checks 5,000
//! TCP backends (native engine on the host, the daemon in the VM); `ebpf` measures the flow
//! counter's packet-rate cost and its map read against an IPVS dump; `steady` counts the
//! netlink requests of the daemon in steady state while backends flap, and `idle` what it costs
//! at rest on a large table, for one or more daemon binaries in one boot; `apply` times
//! `libraflux apply` of a 2,000 x 10 table end to end, stage by stage, beside `ipvsadm -R` and
//! `ipvsadm-save -n` in one boot; `config` times config loading natively (docs/benchmarks.md).

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};

use crate::{
    util::{cargo, checked, workspace_root},
    vm::{Vm, shell_quote},
};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, clap::Subcommand)]
enum Bench {
    /// Program N services x M backends, dump and delete them: ours against `ipvsadm`.
    Ipvs(IpvsArgs),
    /// 5,000 TCP backends checked every second: CPU and memory of the health engine natively
    /// on the host; in one VM boot, the same engine and keepalived's TCP_CHECK (which needs
    /// IPVS) on the same backends, then the real daemon.
    Health(HealthArgs),
    /// The eBPF counter: veth pps with and without it (host), and reading its maps against an
    /// IPVS stats dump (VM, and the map read on the host too).
    Ebpf(EbpfArgs),
    /// Netlink requests per second of the daemon in steady state with flapping backends,
    /// counted in the kernel; for each daemon binary given (before/after), in one boot.
    Steady(SteadyArgs),
    /// The daemon at rest on a large table (10,000 x 10, no health checks): its CPU, memory and
    /// netlink requests per minute; for each daemon binary given (before/after), in one boot.
    Idle(SteadyArgs),
    /// `libraflux apply` from an empty table and again (a no-op), stage by stage, against
    /// `ipvsadm -R` and `ipvsadm-save -n` of the same table, several runs in one boot.
    Apply(ApplyArgs),
    /// Config loading natively: `libraflux validate` of a large file, and its parts.
    Config(ConfigArgs),
}

#[derive(Debug, clap::Args)]
struct ApplyArgs {
    /// `libraflux` binaries to time instead of this workspace's, `LABEL=PATH` or a path
    /// (labelled by its file name); repeatable, all in the same boot.
    #[arg(long = "binary")]
    binaries: Vec<String>,
    /// Services in the configuration.
    #[arg(long, default_value_t = 2_000)]
    services: u32,
    /// Backends per service.
    #[arg(long, default_value_t = 10)]
    backends: u32,
    /// Runs (each: ours and the reference, in mirrored order).
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
}

#[derive(Debug, clap::Args)]
struct ConfigArgs {
    /// Services in the configuration.
    #[arg(long, default_value_t = 20_000)]
    services: u32,
    /// Backends per service.
    #[arg(long, default_value_t = 10)]
    backends: u32,
    /// Samples of each measurement.
    #[arg(long, default_value_t = 5)]
    runs: u32,
}

#[derive(Debug, clap::Args)]
struct SteadyArgs {
    /// An older daemon binary, run (labelled `before`) before this workspace's (`after`).
    #[arg(long)]
    before: Option<PathBuf>,
    /// Daemon binaries to run instead of this workspace's, each labelled by its file name
    /// (repeatable; after `--before` when both are given).
    #[arg(long = "binary")]
    binaries: Vec<PathBuf>,
    /// How many times the whole list runs; odd rounds run it in reverse, so that a drift of the
    /// machine's speed weighs on every binary alike.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// Kill the VM after this many seconds.
    #[arg(long, default_value_t = 14_400)]
    timeout: u64,
    /// More arguments for every run of the in-guest driver (`steady-bench run`), e.g.
    /// `--services 100 --window 30`.
    #[arg(last = true)]
    extra: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct HealthArgs {
    /// Services in the benchmark config.
    #[arg(long, default_value_t = 500)]
    services: u32,
    /// Backends per service (each a distinct TCP port).
    #[arg(long, default_value_t = 10)]
    backends: u32,
    /// Backends of one more service that nothing listens on: they must be found down.
    #[arg(long, default_value_t = 50)]
    down: u32,
    /// Seconds over which CPU is sampled, after every backend has passed a check.
    #[arg(long, default_value_t = 60)]
    window: u32,
    /// Skip keepalived in the VM.
    #[arg(long)]
    no_keepalived: bool,
    /// Services (of `--backends` each) for the comparison with keepalived in the VM: one
    /// emulated vCPU cannot probe 5,000 backends a second, whoever probes them.
    #[arg(long, default_value_t = 20)]
    compare_services: u32,
    /// Down backends in the comparison with keepalived.
    #[arg(long, default_value_t = 10)]
    compare_down: u32,
    /// Skip the VM run (the daemon); run the native engine only.
    #[arg(long)]
    host_only: bool,
    /// Skip the native run.
    #[arg(long)]
    vm_only: bool,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
}

#[derive(Debug, clap::Args)]
struct EbpfArgs {
    /// Rounds of each kind (without, with the counter), alternating.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Seconds per round.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Watched destinations / IPVS services for the read comparison.
    #[arg(long, default_value_t = 10_000)]
    entries: u32,
    /// Reads timed per side.
    #[arg(long, default_value_t = 10)]
    iterations: u32,
    /// Skip the VM run.
    #[arg(long)]
    host_only: bool,
    /// Skip the host runs (pps, the program's run time and the host map read).
    #[arg(long)]
    vm_only: bool,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
}

#[derive(Debug, clap::Args)]
struct IpvsArgs {
    /// Virtual services in the table.
    #[arg(long, default_value_t = 10_000)]
    services: u32,
    /// Destinations per service.
    #[arg(long, default_value_t = 10)]
    backends: u32,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 3072)]
    memory: u32,
    /// Kill the VM after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    /// More arguments for the in-guest driver (`ipvs-bench --help`), e.g. `--max-requests 512`
    /// or `--no-reference`.
    #[arg(last = true)]
    extra: Vec<String>,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    match &args.bench {
        Bench::Ipvs(args) => ipvs(args),
        Bench::Health(args) => health(args),
        Bench::Ebpf(args) => ebpf(args),
        Bench::Steady(args) => daemon_runs(args, "steady-bench"),
        Bench::Idle(args) => daemon_runs(args, "idle-bench"),
        Bench::Apply(args) => apply(args),
        Bench::Config(args) => config(args),
    }
}

/// The release `libraflux` and `apply-bench`; their paths.
fn apply_binaries() -> anyhow::Result<(String, String)> {
    checked(cargo().args(["build", "--release", "-p", "libraflux", "--bin", "libraflux"]))?;
    let libraflux = workspace_root().join("target/release/libraflux").to_string_lossy().into_owned();
    Ok((release_bin("apply-bench")?, libraflux))
}

fn apply(args: &ApplyArgs) -> anyhow::Result<()> {
    let (bench, binaries) = if args.binaries.is_empty() {
        let (bench, libraflux) = apply_binaries()?;
        (bench, vec![format!("workspace={libraflux}")])
    } else {
        (release_bin("apply-bench")?, args.binaries.clone())
    };
    let mut command = vec![bench, "vm".to_owned()];
    for binary in binaries {
        command.extend(["--libraflux".to_owned(), binary]);
    }
    command.extend(table_args(args.services, args.backends, args.runs));
    let script = command.iter().map(|arg| shell_quote(arg)).collect::<Vec<_>>().join(" ");
    vm_run(args.memory, &script, "apply")
}

fn config(args: &ConfigArgs) -> anyhow::Result<()> {
    let (bench, libraflux) = apply_binaries()?;
    let mut command = vec!["config".to_owned(), "--libraflux".to_owned(), libraflux];
    command.extend(table_args(args.services, args.backends, args.runs));
    host_run(&bench, &command)
}

/// `apply-bench`'s table and run count arguments.
fn table_args(services: u32, backends: u32, runs: u32) -> Vec<String> {
    [("--services", services), ("--backends", backends), ("--runs", runs)]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value.to_string()])
        .collect()
}

/// Builds a benchmark driver in release mode; its path.
fn release_bin(name: &str) -> anyhow::Result<String> {
    checked(cargo().args(["build", "--release", "-p", "libraflux-tests", "--bin", name]))?;
    Ok(workspace_root().join("target/release").join(name).to_string_lossy().into_owned())
}

fn host_run(program: &str, args: &[String]) -> anyhow::Result<()> {
    println!("host: {program} {}", args.join(" "));
    checked(std::process::Command::new(program).args(args))
}

fn vm_run(memory_mib: u32, script: &str, what: &str) -> anyhow::Result<()> {
    let vm = Vm { memory_mib, timeout: Duration::from_secs(1800), ..Vm::default() };
    let status = vm.run(&format!("uname -r\n{script}"))?;
    if status != 0 {
        bail!("the {what} benchmark failed in the VM (exit {status})");
    }
    Ok(())
}

fn health(args: &HealthArgs) -> anyhow::Result<()> {
    let bench = release_bin("health-bench")?;
    let common = vec![
        "--services".to_owned(),
        args.services.to_string(),
        "--backends".to_owned(),
        args.backends.to_string(),
        "--down".to_owned(),
        args.down.to_string(),
        "--window".to_owned(),
        args.window.to_string(),
    ];
    if !args.vm_only {
        let mut native = vec!["native".to_owned()];
        native.extend(common.iter().cloned());
        host_run(&bench, &native)?;
    }
    if !args.host_only {
        checked(cargo().args(["build", "--release", "-p", "libraflux", "--bin", "libraflux"]))?;
        let libraflux = workspace_root().join("target/release/libraflux").to_string_lossy().into_owned();
        let line = |mode: &[String], common: &[String]| {
            let mut command = vec![bench.clone()];
            command.extend(mode.iter().cloned());
            command.extend(common.iter().cloned());
            command.iter().map(|arg| shell_quote(arg)).collect::<Vec<_>>().join(" ")
        };
        let compare = [
            "--services".to_owned(),
            args.compare_services.to_string(),
            "--backends".to_owned(),
            args.backends.to_string(),
            "--down".to_owned(),
            args.compare_down.to_string(),
            "--window".to_owned(),
            args.window.to_string(),
        ];
        // The native engine and keepalived on the same backends in one boot, each in a fresh
        // namespace, for a ratio measured under the same conditions; then the whole daemon.
        let mut script = String::from("set -e\n");
        if !args.no_keepalived {
            script.push_str(&format!(
                "{}\n{}\n",
                line(&["native".to_owned()], &compare),
                line(&["keepalived".to_owned()], &compare)
            ));
        }
        script.push_str(&line(&["daemon".to_owned(), "--libraflux".to_owned(), libraflux], &common));
        vm_run(args.memory, &script, "health")?;
    }
    Ok(())
}

fn ebpf(args: &EbpfArgs) -> anyhow::Result<()> {
    let bench = release_bin("ebpf-bench")?;
    let (entries, iterations) = (args.entries.to_string(), args.iterations.to_string());
    let maps = ["maps", "--destinations", entries.as_str(), "--iterations", iterations.as_str()];
    if !args.vm_only {
        let pps = ["pps", "--rounds", &args.rounds.to_string(), "--seconds", &args.seconds.to_string()];
        host_run(&bench, &pps.map(str::to_owned))?;
        host_run(&bench, &["run", "--repeat", "2000000"].map(str::to_owned))?;
        host_run(&bench, &maps.map(str::to_owned))?;
    }
    if !args.host_only {
        let ipvs = ["ipvs", "--services", entries.as_str(), "--iterations", iterations.as_str()];
        let script = [maps, ipvs]
            .iter()
            .map(|line| {
                std::iter::once(bench.as_str())
                    .chain(line.iter().copied())
                    .map(shell_quote)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n");
        vm_run(args.memory, &script, "eBPF")?;
    }
    Ok(())
}

fn ipvs(args: &IpvsArgs) -> anyhow::Result<()> {
    checked(cargo().args(["build", "--release", "-p", "libraflux-tests", "--bin", "ipvs-bench"]))?;
    let binary = workspace_root().join("target/release/ipvs-bench");
    let mut command = vec![
        binary.to_string_lossy().into_owned(),
        "--services".to_owned(),
        args.services.to_string(),
        "--backends".to_owned(),
        args.backends.to_string(),
    ];
    command.extend(args.extra.iter().cloned());
    let script = command.iter().map(|arg| shell_quote(arg)).collect::<Vec<_>>().join(" ");
    let vm = Vm { memory_mib: args.memory, timeout: Duration::from_secs(args.timeout), ..Vm::default() };
    let status = vm.run(&format!("uname -r\n{script}"))?;
    if status != 0 {
        bail!("the IPVS benchmark failed (exit {status})");
    }
    Ok(())
}

/// Copies each daemon binary into `target/steady/` (the guest sees only the workspace) and runs
/// `DRIVER run` (`steady-bench`, `idle-bench`) for each, `rounds` times, in one boot.
fn daemon_runs(args: &SteadyArgs, driver: &str) -> anyhow::Result<()> {
    let bench = release_bin(driver)?;
    let mut daemons: Vec<(String, PathBuf)> = Vec::new();
    if let Some(before) = &args.before {
        daemons.push(("before".to_owned(), before.clone()));
    }
    for binary in &args.binaries {
        let name = binary.file_name().map_or_else(|| "daemon".into(), |n| n.to_string_lossy().into_owned());
        daemons.push((name, binary.clone()));
    }
    if args.binaries.is_empty() {
        checked(cargo().args(["build", "--release", "-p", "libraflux", "--bin", "libraflux"]))?;
        let label = if args.before.is_some() { "after" } else { "workspace" };
        daemons.push((label.to_owned(), workspace_root().join("target/release/libraflux")));
    }
    let dir = workspace_root().join("target/steady");
    std::fs::create_dir_all(&dir)?;
    let mut runs = Vec::new();
    for (label, binary) in &daemons {
        let copy = dir.join(format!("libraflux-{label}"));
        if binary.canonicalize()? != copy.canonicalize().unwrap_or_default() {
            std::fs::copy(binary, &copy).with_context(|| format!("copying {}", binary.display()))?;
        }
        let mut command = vec![
            bench.clone(),
            "run".to_owned(),
            "--libraflux".to_owned(),
            copy.to_string_lossy().into_owned(),
        ];
        command.extend(["--label".to_owned(), label.clone()]);
        command.extend(args.extra.iter().cloned());
        runs.push(command.iter().map(|arg| shell_quote(arg)).collect::<Vec<_>>().join(" "));
    }
    // Every run goes on when one fails (a failed check is a finding about that binary); the
    // job fails at the end.
    let mut script = String::from("failed=0\n");
    for round in 0..args.rounds {
        script.push_str(&format!("echo '== round {} of {}'\n", round + 1, args.rounds));
        let order: Vec<&String> =
            if round % 2 == 0 { runs.iter().collect() } else { runs.iter().rev().collect() };
        for run in order {
            script.push_str(&format!("{run} || failed=1\n"));
        }
    }
    let vm = Vm { memory_mib: args.memory, timeout: Duration::from_secs(args.timeout), ..Vm::default() };
    let status = vm.run(&format!("uname -r\n{script}exit $failed\n"))?;
    if status != 0 {
        bail!("{driver} failed in the VM (exit {status})");
    }
    Ok(())
}
