//! The command line: one file per command.

mod announce;
mod apply;
mod bundle;
mod canary;
mod common;
mod config;
mod control;
mod convert;
mod daemon;
mod debug;
mod docs;
mod drain;
mod handoff;
mod preflight;
mod removals;
mod replication;
mod snapshot;
mod status;
mod sync;
mod validate;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "libraflux", version, about = "Plan, apply and observe IPVS load balancing safely")]
pub struct Args {
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The daemon's control socket: where `daemon` listens, and where `status`, `drain`,
    /// `undrain`, `apply`, `snapshot restore` and `sync` find a running daemon.
    #[arg(long, global = true, value_name = "PATH", default_value = libraflux::control::DEFAULT_SOCKET)]
    pub control_socket: std::path::PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and validate the configuration; every error as file:line:col. Touches nothing.
    Validate(validate::ValidateArgs),
    /// Show the plan, refuse it on a failed check or limit, then carry it out exactly.
    Apply(apply::ApplyArgs),
    /// Run the pre-flight checks alone.
    Preflight(preflight::PreflightArgs),
    /// The live IPVS table with the daemon's health, drain and traffic view, when a daemon answers.
    Status(status::StatusArgs),
    /// Drain a backend: weight 0, then wait for its connections (TCP) or for quiet (UDP).
    Drain(drain::DrainArgs),
    /// Undo a drain: the daemon restores the backend's configured weight.
    Undrain(drain::UndrainArgs),
    /// Roll a backend in gradually by its share of new connections; promote or abort it.
    Canary(canary::CanaryArgs),
    /// Save the IPVS table to a checksummed file, list, show, delete, and restore it through plan.
    Snapshot(snapshot::SnapshotArgs),
    /// A fleet's config.d in etcd: push it (one compare-and-swap transaction), or diff it.
    Config(config::ConfigArgs),
    /// Replication bundles: config.d as one content-addressed file; create one, verify one.
    Bundle(bundle::BundleArgs),
    /// Config replication in a pair: what the daemon's replication did last.
    #[command(subcommand)]
    Replication(replication::ReplicationCommand),
    /// The kernel's connection sync daemon of an HA pair: make this node master or backup, or show it.
    Sync(sync::SyncArgs),
    /// VIPs announced over BGP through BIRD: withdraw them all when no daemon runs (the unit's stop path).
    Announce(announce::AnnounceArgs),
    /// Convert another load balancer's configuration (nginx `stream {}`) to LibraFlux services.
    Convert(convert::ConvertArgs),
    /// Keep IPVS converged (the systemd service).
    Daemon(daemon::DaemonArgs),
    /// Shell completions on stdout (bash, zsh, fish, ...).
    Completions(docs::CompletionsArgs),
    /// The man page (roff, section 8) on stdout.
    Manpage,
    /// The JSON Schema (draft 2020-12) of a configuration file on stdout, for editors and CI.
    Schema,
    /// Low-level tools for checking a node by hand.
    #[command(subcommand, hide = true)]
    Debug(debug::DebugCommand),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.command.only_reports() {
        end_quietly_on_a_closed_pipe();
    }
    let socket = libraflux::control::Client::new(&args.control_socket);
    match args.command {
        Command::Validate(args) => validate::run(&args),
        Command::Apply(args) => apply::run(&args, &socket),
        Command::Preflight(args) => preflight::run(&args),
        Command::Status(args) => status::run(&args, &socket),
        Command::Replication(command) => replication::run(&command, &socket),
        Command::Drain(args) => drain::run(&args, &socket),
        Command::Undrain(args) => drain::undrain(&args, &socket),
        Command::Canary(args) => canary::run(&args, &socket),
        Command::Snapshot(args) => snapshot::run(&args, &socket),
        Command::Bundle(args) => bundle::run(&args),
        Command::Config(args) => config::run(&args),
        Command::Sync(args) => sync::run(&args, &socket),
        Command::Announce(args) => announce::run(&args),
        Command::Convert(args) => convert::run(&args),
        Command::Daemon(args) => daemon::run(&args, socket.path()),
        Command::Completions(args) => docs::completions(&args),
        Command::Manpage => docs::manpage(),
        Command::Schema => docs::schema(),
        Command::Debug(command) => debug::run(command),
    }
}

impl Command {
    /// Changes nothing, or nothing after its first print (`bundle create` writes its file
    /// before it says so): a reader that goes away (`| head`) may end it at any print. Commands
    /// that change IPVS, a daemon or state files as they go keep Rust's default of ignoring
    /// SIGPIPE, so that a closed pipe never stops one half way.
    fn only_reports(&self) -> bool {
        match self {
            Self::Validate(_)
            | Self::Preflight(_)
            | Self::Status(_)
            | Self::Bundle(_)
            | Self::Completions(_)
            | Self::Manpage
            | Self::Schema => true,
            Self::Snapshot(args) => args.only_reports(),
            Self::Config(args) => args.only_reports(),
            _ => false,
        }
    }
}

/// Puts SIGPIPE back to its default, as for any filter: printing into a closed pipe ends the
/// process quietly, where Rust's `println!` would panic on EPIPE.
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler; called before any thread is started.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The error and each of its causes, outermost first: `a: b: c`.
pub fn render_error(err: &anyhow::Error) -> String {
    err.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}

/// The exit code of a failed command: the one a [`common::Failure`] carries, else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.downcast_ref::<common::Failure>().map_or(common::exit::RUNTIME_FAILURE, |failure| failure.code)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{Args, Command};

    /// Every command line of the roadmap (`seeds/000_*.txt`), its `lbctl` read as `libraflux` and
    /// `/etc/lbctl` as `/etc/libraflux`.
    const ROADMAP: &[&str] = &[
        "libraflux apply --config /etc/libraflux/config.yaml --dry-run",
        "libraflux snapshot create --name before-upgrade",
        "libraflux apply --config /etc/libraflux/config.yaml",
        "libraflux snapshot restore --name before-upgrade",
        "libraflux convert nginx --input /etc/nginx/nginx.conf --output /etc/libraflux/config.d/",
    ];

    #[test]
    fn the_roadmaps_command_lines_parse() {
        for line in ROADMAP {
            if let Err(error) = Args::try_parse_from(line.split(' ')) {
                panic!("{line}: {error}");
            }
        }
    }

    /// A snapshot is named by `NAME` or by `--name NAME`, in every subcommand, but not by both.
    #[test]
    fn a_snapshot_name_is_positional_or_an_option() {
        for command in ["create", "show", "delete", "restore"] {
            for line in [
                format!("libraflux snapshot {command} n1"),
                format!("libraflux snapshot {command} --name n1"),
            ] {
                let args =
                    Args::try_parse_from(line.split(' ')).unwrap_or_else(|error| panic!("{line}: {error}"));
                let Command::Snapshot(snapshot) = args.command else {
                    panic!("{line}: not a snapshot command")
                };
                assert!(format!("{snapshot:?}").contains("\"n1\""), "{line}: {snapshot:?}");
            }
            for line in
                [format!("libraflux snapshot {command}"), format!("libraflux snapshot {command} a --name b")]
            {
                let error = Args::try_parse_from(line.split(' ')).expect_err(&line);
                assert_eq!(error.exit_code(), 2, "{line}");
            }
        }
    }
}
