//! `cargo xtask`: what cargo alone cannot do. Installs the toolchain and packages the build and
//! tests need, boots a throwaway VM with Debian's stock kernel (real IPVS), runs the test tiers,
//! runs the end-to-end demo and the benchmarks, builds the Debian package, builds and runs the
//! fuzz targets.

mod bench;
mod deb;
mod demo;
mod fuzz;
mod setup;
mod test;
mod util;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "LibraFlux build, VM and test orchestration")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what the build and the tests need (apt packages, pinned nightly, bpf-linker, the
    /// VM kernel); quick when everything is present.
    Setup,
    /// Boot the VM and run a command inside it, with the workspace shared at the same path.
    Vm(vm::VmArgs),
    /// Run the whole suite: fmt, clippy, unit and host tests, the fuzz targets briefly, then the
    /// VM tier.
    Test(test::TestArgs),
    /// The main job end to end in the VM.
    Demo,
    /// Benchmarks on the VM's real kernel (`bench ipvs`: our client against ipvsadm).
    Bench(bench::BenchArgs),
    /// Build the Debian package (release build, then dpkg-deb) and print its path.
    Deb(deb::DebArgs),
    /// Build the fuzz targets (pinned nightly, libFuzzer) and run them, each from its seeds.
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Setup => setup::run(),
        Command::Vm(args) => vm::run_command(&args),
        Command::Test(args) => test::run(&args),
        Command::Demo => demo::run(),
        Command::Bench(args) => bench::run(&args),
        Command::Deb(args) => deb::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
    }
}
