//! The command line: one file per command.

mod debug;

use clap::{Parser, Subcommand};

/// Exit codes every command uses (PRODUCT.md).
pub mod exit {
    pub const RUNTIME_FAILURE: u8 = 1;
}

#[derive(Debug, Parser)]
#[command(name = "libraflux", version, about = "Plan, apply and observe IPVS load balancing safely")]
pub struct Args {
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Low-level tools for checking a node by hand.
    #[command(subcommand, hide = true)]
    Debug(debug::DebugCommand),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Debug(command) => debug::run(command),
    }
}

/// Logs go to stderr, one event per line (journald friendly); `log` records (aya-log) included.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// The error and each of its causes, outermost first: `a: b: c`.
pub fn render_error(err: &anyhow::Error) -> String {
    err.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}

pub fn exit_code(_err: &anyhow::Error) -> u8 {
    exit::RUNTIME_FAILURE
}
