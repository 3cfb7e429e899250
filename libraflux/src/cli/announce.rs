//! `libraflux announce withdraw`: every VIP of `announce:` withdrawn through BIRD, without the
//! daemon. The unit's stop path runs it (`ExecStopPost=`), so that a daemon that crashed or was
//! killed leaves no route behind; a running daemon withdraws by itself on SIGTERM and would
//! announce again after this, so stop it instead (docs/fleet.md).

use libraflux::announce;

use super::common::{ConfigArg, Failure, exit, report_config, runtime};

#[derive(Debug, clap::Args)]
pub struct AnnounceArgs {
    #[command(subcommand)]
    command: AnnounceCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AnnounceCommand {
    /// Write the announce file with no routes and have BIRD reconfigure. Nothing to do (exit 0)
    /// without `announce:`.
    Withdraw {
        #[command(flatten)]
        config: ConfigArg,
        /// The daemon's state directory, where a replication secondary keeps the primary's config.d.
        #[arg(long, default_value = super::common::DEFAULT_STATE_DIR)]
        state_dir: std::path::PathBuf,
    },
}

pub fn run(args: &AnnounceArgs) -> anyhow::Result<()> {
    let AnnounceCommand::Withdraw { config, state_dir } = &args.command;
    // Loaded as the daemon loads it: a secondary's services come from the replicated config.d,
    // a fleet node's from the last good configuration from etcd.
    let state = state_dir.join("state");
    let config = report_config(libraflux::replication::load_config(config.path.as_deref(), &state, None))?;
    let Some(announce) = config.announce else {
        println!("nothing to withdraw: the configuration has no announce: section");
        return Ok(());
    };
    runtime()?
        .block_on(announce::withdraw_all(&announce))
        .map_err(|err| Failure::new(exit::RUNTIME_FAILURE, format!("withdrawing the VIPs failed: {err}")))?;
    println!(
        "withdrawn: {} holds no route and BIRD ({}) reconfigured",
        announce.include.display(),
        announce.socket.display()
    );
    Ok(())
}
