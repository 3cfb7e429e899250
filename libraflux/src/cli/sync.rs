//! `libraflux sync master|backup|status`: the kernel's IPVS connection sync daemon (issue 17).
//! keepalived's `notify_master` / `notify_backup` scripts run `libraflux sync master` and
//! `libraflux sync backup` at each VRRP transition.
//!
//! Beside a daemon the request goes over its control socket and the daemon uses its own `sync:`.
//! When none answers, `master` and `backup` program the kernel here, over netlink, from `sync:`
//! of `-c` (so the notify scripts work before the daemon is up), and `status` reads the kernel.
//! Either way what is printed is what the kernel shows afterwards, read back from it.

use std::path::PathBuf;

use libraflux::{
    control::{Client, ClientError, Request, protocol::SyncReply},
    ipvs::{IpvsClient, SyncState, sync},
};
use serde_json::json;

use super::{
    common::{ConfigArg, Failure, Output, exit, load_config, runtime},
    control::failure,
    render_error,
};

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Config file or directory whose `sync:` section is used when no daemon answers (a running
    /// daemon uses its own). Default: /etc/libraflux/config.yaml plus config.d/*.yaml.
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: SyncCommand,
}

#[derive(Clone, Copy, Debug, clap::Subcommand)]
enum SyncCommand {
    /// This node owns the VIP: run the master sync daemon (sends its connections), stop the backup.
    Master,
    /// This node is the standby: run the backup sync daemon (takes in the peer's), stop the master.
    Backup,
    /// The sync daemons the kernel runs.
    Status,
}

/// Who carried the request out.
#[derive(Clone, Copy, Debug)]
enum Via {
    Daemon,
    /// No daemon answered: this process, over netlink.
    Here,
}

pub fn run(args: &SyncArgs, daemon: &Client) -> anyhow::Result<()> {
    let request = match args.command {
        SyncCommand::Master => Request::SyncRole { role: SyncState::Master },
        SyncCommand::Backup => Request::SyncRole { role: SyncState::Backup },
        SyncCommand::Status => Request::SyncStatus,
    };
    let (reply, via) = match daemon.call::<SyncReply>(&request) {
        Ok(reply) => (reply, Via::Daemon),
        Err(err @ ClientError::NoDaemon { .. }) => (here(args, &request, &err)?, Via::Here),
        Err(err) => return Err(failure(err)),
    };
    print(args, daemon, &reply, via)
}

/// No daemon answers (`no_daemon`): the request carried out over netlink from this process.
fn here(args: &SyncArgs, request: &Request, no_daemon: &ClientError) -> anyhow::Result<SyncReply> {
    let role = match request {
        Request::SyncRole { role } => Some(*role),
        _ => None,
    };
    let wanted = match role {
        Some(role) => {
            let arg = ConfigArg { path: args.config.clone() };
            let config = load_config(&arg)?;
            let sync = config.sync.ok_or_else(|| {
                let files = args.config.as_ref().map_or("/etc/libraflux/config.yaml".into(), |p| p.display().to_string());
                Failure::new(
                    exit::REFUSED,
                    format!(
                        "{no_daemon}, and the configuration ({files}) has no sync: section, so LibraFlux does not \
                         run the sync daemons; nothing was changed"
                    ),
                )
            })?;
            Some(sync.daemon(role))
        }
        None => None,
    };
    // As `status`: a kernel this process cannot read either is "no daemon" (69); a role that
    // could not be given is a runtime failure (1).
    let code = if wanted.is_some() { exit::RUNTIME_FAILURE } else { exit::NO_DAEMON };
    let kernel_failure = |err: libraflux::ipvs::IpvsError| -> anyhow::Error {
        Failure::new(code, format!("{no_daemon}, and here: {}", render_error(&err.into()))).into()
    };
    runtime()?.block_on(async {
        let mut client = IpvsClient::connect().await.map_err(kernel_failure)?;
        let Some(wanted) = wanted else {
            let daemons = client.sync_daemons().await.map_err(kernel_failure)?;
            return Ok(SyncReply { actions: Vec::new(), daemons });
        };
        let changed = sync::set_role(&mut client, &wanted).await.map_err(kernel_failure)?;
        if let Some(problem) = changed.problem(&wanted) {
            return Err(Failure::new(exit::RUNTIME_FAILURE, problem).into());
        }
        let actions = changed.done.iter().map(ToString::to_string).collect();
        Ok(SyncReply { actions, daemons: changed.after.unwrap_or_default() })
    })
}

fn print(args: &SyncArgs, daemon: &Client, reply: &SyncReply, via: Via) -> anyhow::Result<()> {
    let via_name = match via {
        Via::Daemon => "daemon",
        Via::Here => "netlink",
    };
    match args.output {
        Output::Json => {
            let document = json!({ "via": via_name, "actions": reply.actions, "daemons": reply.daemons });
            println!("{}", serde_json::to_string_pretty(&document)?);
        }
        Output::Text => {
            if let (Via::Here, SyncCommand::Master | SyncCommand::Backup) = (via, args.command) {
                println!(
                    "No LibraFlux daemon answers on {}: programmed the kernel here, from the configuration's sync:.",
                    daemon.path().display()
                );
            }
            for action in &reply.actions {
                println!("{}{}", action[..1].to_uppercase(), &action[1..]);
            }
            if reply.actions.is_empty() && !matches!(args.command, SyncCommand::Status) {
                println!("Nothing to change.");
            }
            match reply.daemons.as_slice() {
                [] => println!("The kernel runs no sync daemon."),
                daemons => daemons.iter().for_each(|daemon| println!("The kernel runs the {daemon}.")),
            }
        }
    }
    Ok(())
}
