//! Talking to the daemon from the CLI: what its answers and failures mean as exit codes, and
//! whether a daemon runs at all.

use libraflux::control::{Client, ClientError, ErrorKind, Request, protocol::Ping};

use super::common::{Failure, exit};

/// The failure a command ends with: no daemon (69), not allowed (77), refused (3), an invalid
/// configuration (65), anything else 1. The daemon's details (limit violations, config errors,
/// one per line) follow its message.
pub fn failure(err: ClientError) -> anyhow::Error {
    let code = match &err {
        ClientError::NoDaemon { .. } => exit::NO_DAEMON,
        ClientError::PermissionDenied { .. } => exit::NO_PERMISSION,
        ClientError::Daemon(reply) => match reply.kind {
            ErrorKind::Refused => exit::REFUSED,
            ErrorKind::InvalidConfig => exit::INVALID_CONFIG,
            ErrorKind::PermissionDenied => exit::NO_PERMISSION,
            _ => exit::RUNTIME_FAILURE,
        },
        _ => exit::RUNTIME_FAILURE,
    };
    let mut message = err.to_string();
    if let ClientError::NoDaemon { .. } = &err {
        message.push_str(
            "; start it (systemctl start libraflux), or name its socket with --control-socket; nothing was changed",
        );
    }
    if let ClientError::Daemon(reply) = &err {
        for detail in &reply.details {
            message.push_str(&format!("\n  {detail}"));
        }
    }
    Failure::new(code, message).into()
}

/// The daemon that answers on the socket; `None` when none does. One that may run but cannot be
/// asked (permission denied, no answer) is an error: a command that must not run beside a
/// daemon cannot tell that it may.
pub fn running_daemon(client: &Client) -> anyhow::Result<Option<Ping>> {
    match client.call::<Ping>(&Request::Ping) {
        Ok(ping) => Ok(Some(ping)),
        Err(ClientError::NoDaemon { .. }) => Ok(None),
        Err(err) => Err(failure(err).context("cannot tell whether a LibraFlux daemon runs")),
    }
}
