//! The daemon's control socket (`/run/libraflux/control.sock`): the one way the CLI talks to a
//! running daemon. The CLI asks; the daemon decides, writes its own state and answers with what
//! it did. [`protocol`] is the wire format (docs/control.md), [`client`] the CLI's side, [`peer`]
//! who may connect. The server is the daemon's (`daemon::control`).

pub mod client;
pub mod peer;
pub mod protocol;

pub use client::{Client, ClientError};
pub use peer::{Access, Allowed, Group, Peer, Refused};
pub use protocol::{ErrorKind, ReplyError, Request};

/// Where the daemon listens unless told otherwise (`--control-socket`); systemd creates the
/// directory (`RuntimeDirectory=libraflux`).
pub const DEFAULT_SOCKET: &str = "/run/libraflux/control.sock";
