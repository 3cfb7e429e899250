//! `libraflux replication status`: what the daemon's replication did last, from its control
//! socket (docs/ha.md).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libraflux::{
    control::{Client, Request},
    replication::Status,
};

use super::{common::Output, control::failure};

#[derive(Debug, clap::Subcommand)]
pub enum ReplicationCommand {
    /// Role, generation and bundle, peer, last success and last error.
    Status {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

pub fn run(command: &ReplicationCommand, daemon: &Client) -> anyhow::Result<()> {
    let ReplicationCommand::Status { output } = command;
    let status: Status = daemon.call(&Request::Replication).map_err(failure)?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        Output::Text => print!("{}", render(&status, SystemTime::now())),
    }
    Ok(())
}

fn render(status: &Status, now: SystemTime) -> String {
    let role = status.role.map_or("none", |role| role.name());
    let address =
        |addr: Option<std::net::SocketAddr>| addr.map_or_else(|| "-".to_owned(), |addr| addr.to_string());
    let mut text = format!(
        "role:         {role} (listening on {}, peer {})\n",
        address(status.listen),
        address(status.peer)
    );
    let sha =
        status.sha256.as_deref().map_or_else(|| "none yet".to_owned(), |sha| format!("bundle-{sha}.tar.gz"));
    text += &format!("generation:   {} ({sha})\n", status.generation);
    if let Some(peer) = status.peer_generation {
        text += &format!("peer runs:    generation {peer}\n");
    }
    text += &format!(
        "last success: {}\n",
        status.last_success_unix.map_or_else(|| "never".to_owned(), |at| when(at, now))
    );
    match &status.last_error {
        Some(error) => {
            text +=
                &format!("last error:   {} ({}): {}\n", error.reason, when(error.at_unix, now), error.detail)
        }
        None => text += "last error:   none\n",
    }
    text
}

fn when(unix: u64, now: SystemTime) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(unix);
    let ago = now.duration_since(at).unwrap_or_default();
    format!(
        "{}, {} ago",
        humantime::format_rfc3339_seconds(at),
        humantime::format_duration(Duration::from_secs(ago.as_secs()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use libraflux::{config::Role, replication::LastError};

    #[test]
    fn the_text_names_every_field() {
        let status = Status {
            role: Some(Role::Primary),
            listen: Some("10.0.0.1:9470".parse().unwrap()),
            peer: Some("10.0.0.2:9470".parse().unwrap()),
            generation: 7,
            sha256: Some("ab".repeat(32)),
            peer_generation: Some(6),
            last_success_unix: Some(1_000),
            last_error: Some(LastError {
                reason: "replay".into(),
                detail: "generation 6 is old".into(),
                at_unix: 990,
            }),
        };
        let text = render(&status, UNIX_EPOCH + Duration::from_secs(1_010));
        assert_eq!(
            text,
            format!(
                "role:         primary (listening on 10.0.0.1:9470, peer 10.0.0.2:9470)\n\
                 generation:   7 (bundle-{}.tar.gz)\n\
                 peer runs:    generation 6\n\
                 last success: 1970-01-01T00:16:40Z, 10s ago\n\
                 last error:   replay (1970-01-01T00:16:30Z, 20s ago): generation 6 is old\n",
                "ab".repeat(32)
            )
        );
    }
}
