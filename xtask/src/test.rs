//! The test tiers: lint (fmt, clippy), host (unit tests and host tests in fresh network
//! namespaces), fuzz (every fuzz target for a few seconds from its seeds), and vm (integration
//! tests on real IPVS inside the VM, in one boot).

use std::{path::PathBuf, process::Stdio};

use anyhow::{Context as _, bail};

use crate::{
    util::{cargo, checked},
    vm::{
        Vm,
        kernel::{KERNELS, Series},
        shell_quote,
    },
};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Run only these tiers (default: all, in this order).
    #[arg(long = "tier", value_enum)]
    tiers: Vec<Tier>,
    /// Skip `cargo xtask setup` (everything is known to be installed).
    #[arg(long)]
    no_setup: bool,
    /// Run the VM tier on these kernels only (repeatable; default: every one of
    /// `vm::kernel::KERNELS`, side by side).
    #[arg(long = "kernel")]
    kernels: Vec<String>,
    /// Passed to the VM tier's test binaries: a test name filter, `--exact`, ...
    #[arg(last = true)]
    vm_test_args: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Tier {
    Lint,
    Host,
    Fuzz,
    Vm,
}

/// Test binaries of `libraflux-tests` that run in the VM: the VM tier itself, and the eBPF host
/// tests again, because the VM's 6.1 kernel attaches through netlink clsact instead of tcx.
const VM_TEST_TARGETS: &[&str] = &["vm", "host_ebpf"];

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    if !args.no_setup {
        crate::setup::run()?;
    }
    // The fuzz tier runs before the VM tier, alone: the two kernels' VMs take both cores.
    let tiers = if args.tiers.is_empty() {
        vec![Tier::Lint, Tier::Host, Tier::Fuzz, Tier::Vm]
    } else {
        args.tiers.clone()
    };
    for tier in tiers {
        eprintln!("==> tier: {tier:?}");
        match tier {
            Tier::Lint => lint()?,
            Tier::Host => host()?,
            Tier::Fuzz => crate::fuzz::ci()?,
            Tier::Vm => vm(&args.kernels, &args.vm_test_args)?,
        }
    }
    eprintln!("==> all requested tiers passed");
    Ok(())
}

fn lint() -> anyhow::Result<()> {
    checked(cargo().args(["fmt", "--all", "--check"]))?;
    checked(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    checked(cargo().args([
        "clippy",
        "-p",
        "libraflux-tests",
        "--all-targets",
        "--features",
        "vm",
        "--",
        "-D",
        "warnings",
    ]))
}

fn host() -> anyhow::Result<()> {
    checked(cargo().args(["test", "--workspace", "--exclude", "libraflux-ebpf"]))
}

/// The VM tier: every test binary in one boot per kernel. The kernels' VMs run side by side (one
/// vCPU each), except under BLESS, where each rewrites its kernel's part of the generated docs
/// and they run one after the other.
fn vm(kernels: &[String], test_args: &[String]) -> anyhow::Result<()> {
    let kernels: Vec<Series> = if kernels.is_empty() {
        KERNELS.to_vec()
    } else {
        kernels.iter().map(|name| Series::named(name)).collect::<anyhow::Result<_>>()?
    };
    // The binary under test is the release build: under the VM's emulated CPU the debug build
    // made the tests 2-2.7 times slower (9 apply, snapshot and daemon tests: 147 s against 63 s,
    // docs/development.md), for about 6 minutes of compiling from scratch on two cores.
    checked(cargo().args(["build", "--release", "-p", "libraflux"]))?;
    let binaries = test_binaries()?;
    let libraflux = crate::util::workspace_root().join("target/release/libraflux");
    let mut script =
        format!("export LIBRAFLUX_BIN={}\nfailed=0\n", shell_quote(&libraflux.to_string_lossy()));
    // BLESS=1 on the host lets the behaviour matrix rewrite docs/connection-behavior.md.
    let bless = std::env::var_os("BLESS").is_some();
    if bless {
        script.push_str("export BLESS=1\n");
    }
    for binary in &binaries {
        let binary = shell_quote(&binary.to_string_lossy());
        let extra: Vec<String> = test_args.iter().map(|arg| shell_quote(arg)).collect();
        let extra = extra.join(" ");
        // --report-time (unstable in libtest, enabled by RUSTC_BOOTSTRAP) puts each test's duration
        // in the log, so a run that nears the VM's time limit shows which tests took the time.
        script.push_str(&format!(
            "echo \"==> {binary}\"\nRUSTC_BOOTSTRAP=1 {binary} --test-threads=1 -Z unstable-options --report-time {extra} || failed=1\n"
        ));
    }
    script.push_str("exit $failed\n");
    let label = |series: Series| (kernels.len() > 1).then(|| format!("[{}] ", series.name));
    let run = |series: Series| Vm { kernel: series, label: label(series), ..Vm::default() }.run(&script);
    let results: Vec<(Series, anyhow::Result<i32>)> = if bless || kernels.len() == 1 {
        kernels.iter().map(|&series| (series, run(series))).collect()
    } else {
        std::thread::scope(|scope| {
            let running: Vec<_> =
                kernels.iter().map(|&series| (series, scope.spawn(move || run(series)))).collect();
            running
                .into_iter()
                .map(|(series, handle)| {
                    (series, handle.join().unwrap_or_else(|_| bail!("the VM thread panicked")))
                })
                .collect()
        })
    };
    let mut failed = Vec::new();
    for (series, result) in results {
        match result {
            Ok(0) => eprintln!("==> VM tier on Linux {}: passed", series.name),
            Ok(status) => failed.push(format!("Linux {} (exit {status})", series.name)),
            Err(err) => failed.push(format!("Linux {} ({err:#})", series.name)),
        }
    }
    if !failed.is_empty() {
        bail!("VM tier failed on {}", failed.join(", "));
    }
    Ok(())
}

/// Builds the VM-tier test binaries and returns their paths.
fn test_binaries() -> anyhow::Result<Vec<PathBuf>> {
    let mut command = cargo();
    command.args(["test", "-p", "libraflux-tests", "--features", "vm", "--no-run", "--message-format=json"]);
    for target in VM_TEST_TARGETS {
        command.args(["--test", target]);
    }
    let output = command.stderr(Stdio::inherit()).output().context("building the VM tests")?;
    if !output.status.success() {
        bail!("building the VM tests failed: {}", output.status);
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let is_test = message["profile"]["test"].as_bool() == Some(true);
        if let (true, Some(executable)) = (is_test, message["executable"].as_str()) {
            binaries.push(PathBuf::from(executable));
        }
    }
    if binaries.len() != VM_TEST_TARGETS.len() {
        bail!("expected {} VM test binaries, cargo built {binaries:?}", VM_TEST_TARGETS.len());
    }
    Ok(binaries)
}
