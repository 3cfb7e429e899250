//! Benchmarks on a real kernel: `cargo xtask bench ipvs` programs, dumps and deletes a large
//! IPVS table with LibraFlux's client and with `ipvsadm`, in one VM boot (docs/benchmarks.md).

use std::time::Duration;

use anyhow::bail;

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
    }
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
    let vm = Vm { memory_mib: args.memory, timeout: Duration::from_secs(args.timeout) };
    let status = vm.run(&format!("uname -r\n{script}"))?;
    if status != 0 {
        bail!("the IPVS benchmark failed (exit {status})");
    }
    Ok(())
}
