//! The client side: one connection per request, blocking (the CLI has nothing else to do while
//! it waits), bounded in time and size.

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::de::DeserializeOwned;

use super::protocol::{self, ErrorKind, ProtocolError, ReplyError, Request};

/// How long a request may take when nothing says otherwise. A reload answers once its reconcile
/// is done, which takes minutes for a table of tens of thousands of backends: see
/// [`Client::with_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens: no socket file, or a file nobody accepts on (a daemon that died).
    #[error("no LibraFlux daemon answers on {path} ({source})")]
    NoDaemon { path: PathBuf, source: io::Error },
    /// The socket's file mode, or the daemon's check of the peer's credentials, refused us.
    #[error("permission denied on the control socket {path}: {reason}")]
    PermissionDenied { path: PathBuf, reason: String },
    /// The daemon answered with an error.
    #[error("{0}")]
    Daemon(ReplyError),
    #[error("talking to the daemon on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the daemon on {path} did not answer within {timeout:?}")]
    TimedOut { path: PathBuf, timeout: Duration },
    #[error("the daemon on {path} closed the connection without answering (is it stopping?)")]
    NoAnswer { path: PathBuf },
    #[error("the daemon on {path} answered something this libraflux cannot read: {source}")]
    Protocol { path: PathBuf, source: ProtocolError },
}

impl ClientError {
    /// No daemon could answer just now, and one started later can: none listens, it closed the
    /// connection or reset it, or it said it is stopping. What a client that waits across a
    /// daemon's restart (`drain --wait`) keeps waiting through; anything else is an answer.
    pub fn daemon_is_away(&self) -> bool {
        match self {
            Self::NoDaemon { .. } | Self::NoAnswer { .. } => true,
            Self::Daemon(reply) => reply.kind == ErrorKind::Stopping,
            Self::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe
            ),
            Self::PermissionDenied { .. } | Self::TimedOut { .. } | Self::Protocol { .. } => false,
        }
    }
}

/// A client of the daemon's control socket.
#[derive(Clone, Debug)]
pub struct Client {
    path: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), timeout: DEFAULT_TIMEOUT }
    }

    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `request` and returns the daemon's result as `T`.
    pub fn call<T: DeserializeOwned>(&self, request: &Request) -> Result<T, ClientError> {
        let value = self.exchange(request)?.map_err(|error| match error.kind {
            ErrorKind::PermissionDenied => {
                ClientError::PermissionDenied { path: self.path.clone(), reason: error.message }
            }
            _ => ClientError::Daemon(error),
        })?;
        protocol::result(value).map_err(|source| self.protocol(source))
    }

    fn exchange(&self, request: &Request) -> Result<Result<serde_json::Value, ReplyError>, ClientError> {
        let stream = UnixStream::connect(&self.path).map_err(|source| self.connect_error(source))?;
        stream.set_read_timeout(Some(self.timeout)).map_err(|source| self.io(source))?;
        stream.set_write_timeout(Some(self.timeout)).map_err(|source| self.io(source))?;
        let mut line = protocol::encode_request(request);
        line.push('\n');
        (&stream).write_all(line.as_bytes()).map_err(|source| self.io(source))?;
        let mut reply = String::new();
        let read = BufReader::new((&stream).take(protocol::MAX_REPLY_BYTES)).read_line(&mut reply);
        match read {
            Ok(0) => return Err(ClientError::NoAnswer { path: self.path.clone() }),
            Ok(_) => {}
            Err(err) if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(ClientError::TimedOut { path: self.path.clone(), timeout: self.timeout });
            }
            Err(source) => return Err(self.io(source)),
        }
        protocol::decode_reply(reply.trim_end()).map_err(|source| self.protocol(source))
    }

    fn connect_error(&self, source: io::Error) -> ClientError {
        let path = self.path.clone();
        match source.raw_os_error() {
            Some(libc::ENOENT | libc::ECONNREFUSED | libc::ENOTDIR) => ClientError::NoDaemon { path, source },
            Some(libc::EACCES | libc::EPERM) => ClientError::PermissionDenied {
                path,
                reason: format!(
                    "{source}; the socket is open to root, the daemon's user and members of the group \
                     set as control.group"
                ),
            },
            _ => ClientError::Io { path, source },
        }
    }

    fn io(&self, source: io::Error) -> ClientError {
        ClientError::Io { path: self.path.clone(), source }
    }

    fn protocol(&self, source: ProtocolError) -> ClientError {
        ClientError::Protocol { path: self.path.clone(), source }
    }
}
