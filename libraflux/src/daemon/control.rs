//! The daemon's side of the control socket (docs/control.md): bound as mode 0660, owned by the
//! daemon's user and `control.group`; each connection's credentials checked ([`Access`]); one
//! request read and handed to the daemon's loop ([`Call`]), which does the work and answers.

use std::{
    future::Future,
    io,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{Semaphore, mpsc, oneshot, watch},
};

use crate::control::{
    Access, ErrorKind, Group, Peer, ReplyError, Request,
    peer::supplementary_groups,
    protocol::{self, MAX_REQUEST_BYTES},
};

/// A client that has not sent its request by then is disconnected.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 32;
/// `sun_path` holds 108 bytes with the terminating NUL.
const MAX_PATH: usize = 107;

/// One request from an allowed peer, for the daemon's loop to answer.
#[derive(Debug)]
pub(super) struct Call {
    pub request: Request,
    pub peer: Peer,
    pub reply: oneshot::Sender<Result<Value, ReplyError>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("another LibraFlux daemon answers on {0}; stop it first (one daemon per node)")]
    InUse(PathBuf),
    #[error("the control socket path {0} is longer than {MAX_PATH} bytes")]
    TooLong(PathBuf),
    #[error("setting up the control socket: {operation} {path}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The bound socket, before it serves.
#[derive(Debug)]
pub(super) struct Socket {
    listener: UnixListener,
    file: SocketFile,
}

/// The socket's file: removed when the daemon stops, unless another one has replaced it since.
#[derive(Debug)]
pub(super) struct SocketFile {
    path: PathBuf,
    inode: (u64, u64),
}

impl Socket {
    /// Binds `path` under a temporary name, sets its mode and group, and renames it into place,
    /// so that it is never reachable with other permissions. A socket file nobody answers on (a
    /// daemon that died) is replaced; one a daemon answers on is an error.
    pub fn bind(path: &Path, group: Option<&Group>) -> Result<Self, ControlError> {
        fn io(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ControlError {
            let path = path.to_owned();
            move |source| ControlError::Io { operation, path, source }
        }
        let name = path.file_name().ok_or_else(|| ControlError::TooLong(path.to_owned()))?;
        let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let temp = dir.join(format!(".{}.{}", name.to_string_lossy(), std::process::id()));
        if temp.as_os_str().len() > MAX_PATH {
            return Err(ControlError::TooLong(path.to_owned()));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse(path.to_owned()));
        }
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let _ = std::fs::remove_file(&temp);
        let std_listener = std::os::unix::net::UnixListener::bind(&temp).map_err(io("binding", &temp))?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o660))
            .map_err(io("chmod", &temp))?;
        give_to(&temp, group);
        std::fs::rename(&temp, path).map_err(io("renaming into", path))?;
        let meta = std::fs::metadata(path).map_err(io("reading", path))?;
        std_listener.set_nonblocking(true).map_err(io("configuring", path))?;
        let listener = UnixListener::from_std(std_listener).map_err(io("registering", path))?;
        let file = SocketFile { path: path.to_owned(), inode: (meta.dev(), meta.ino()) };
        Ok(Self { listener, file })
    }

    /// Serves until [`Served::stop`]; the calls come out of the returned channel.
    pub fn spawn(self, access: watch::Receiver<Access>) -> (Served, mpsc::Receiver<Call>) {
        let (calls, received) = mpsc::channel(MAX_CONNECTIONS);
        let (stop, mut stopped) = watch::channel(false);
        let shutdown = async move { drop(stopped.wait_for(|stop| *stop).await) };
        (Served { stop, task: tokio::spawn(self.serve(access, calls, shutdown)) }, received)
    }

    async fn serve(
        self,
        access: watch::Receiver<Access>,
        calls: mpsc::Sender<Call>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let slot = tokio::select! {
                () = &mut shutdown => break,
                slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let stream = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        tracing::warn!(path = %self.file.path.display(), "control socket: accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (access, calls) = (access.borrow().clone(), calls.clone());
            tokio::spawn(async move {
                connection(stream, &access, &calls).await;
                drop(slot);
            });
        }
        drop(self.file);
    }
}

/// The socket being served.
#[derive(Debug)]
pub(super) struct Served {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Stops accepting and removes the socket file; requests in flight are dropped.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        if tokio::time::timeout(Duration::from_secs(10), self.task).await.is_err() {
            tracing::warn!("the control socket did not stop within 10 s");
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::metadata(&self.path).is_ok_and(|meta| (meta.dev(), meta.ino()) == self.inode);
        if ours && let Err(err) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), "cannot remove the control socket: {err}");
        }
    }
}

/// Gives the socket file to `group` (none: the daemon's own group), at start and when a reload
/// changes `control.group`. Not fatal when it fails: root can still connect, and the log says
/// what to change.
pub(super) fn give_to(path: &Path, group: Option<&Group>) {
    // SAFETY: getegid has no preconditions and cannot fail.
    let gid = group.map_or_else(|| unsafe { libc::getegid() }, |group| group.gid);
    if let Err(err) = std::os::unix::fs::chown(path, None, Some(gid)) {
        let name = group.map_or("the daemon's own group", |group| group.name.as_str());
        tracing::error!(
            path = %path.display(),
            "cannot give the control socket to {name} (gid {gid}): {err}; its members cannot connect. The \
             daemon must be a member of the group (systemd: SupplementaryGroups=) or hold CAP_CHOWN"
        );
    }
}

/// The peer's credentials as the kernel recorded them when it connected.
fn peer_of(stream: &UnixStream) -> io::Result<Peer> {
    let cred = stream.peer_cred()?;
    Ok(Peer { uid: cred.uid(), gid: cred.gid(), pid: cred.pid(), groups: supplementary_groups(stream)? })
}

/// Reads one request, answers it, closes.
async fn connection(stream: UnixStream, access: &Access, calls: &mpsc::Sender<Call>) {
    let peer = match peer_of(&stream) {
        Ok(peer) => peer,
        Err(err) => {
            tracing::warn!("control socket: cannot read the peer's credentials, closing: {err}");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
    match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => return tracing::debug!(uid = peer.uid, "control socket: reading a request: {err}"),
        Err(_) => {
            return tracing::debug!(uid = peer.uid, "control socket: no request within {READ_TIMEOUT:?}");
        }
    }
    let reply = answer(&line, peer, access, calls).await;
    let mut text = protocol::encode_reply(&reply);
    text.push('\n');
    if let Err(err) = write.write_all(text.as_bytes()).await {
        tracing::debug!("control socket: the client left before the answer: {err}");
    }
    let _ = write.shutdown().await;
}

async fn answer(
    line: &str,
    peer: Peer,
    access: &Access,
    calls: &mpsc::Sender<Call>,
) -> Result<Value, ReplyError> {
    if let Err(refused) = access.check(&peer) {
        tracing::warn!(uid = peer.uid, gid = peer.gid, pid = ?peer.pid, "control socket: refused: {refused}");
        return Err(ReplyError::new(ErrorKind::PermissionDenied, refused.to_string()));
    }
    if !line.ends_with('\n') {
        let why = format!("a request is one line of at most {MAX_REQUEST_BYTES} bytes, ended by a newline");
        return Err(ReplyError::new(ErrorKind::BadRequest, why));
    }
    let request = protocol::decode_request(line.trim_end()).map_err(|err| ReplyError::from(&err))?;
    let (reply, answered) = oneshot::channel();
    let stopping = || ReplyError::new(ErrorKind::Stopping, "the daemon is stopping; nothing was done");
    calls.send(Call { request, peer, reply }).await.map_err(|_| stopping())?;
    answered.await.unwrap_or_else(|_| Err(stopping()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{Client, ClientError, protocol::Ping};

    fn socket_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("libraflux-control-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("control.sock")
    }

    fn served(path: &Path) -> (Served, mpsc::Receiver<Call>) {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let access = Access { daemon_uid: unsafe { libc::geteuid() }, group: None };
        Socket::bind(path, None).expect("bind").spawn(watch::channel(access).1)
    }

    async fn ping(path: &Path) -> Result<Ping, ClientError> {
        let client = Client::new(path).with_timeout(Duration::from_secs(5));
        tokio::task::spawn_blocking(move || client.call::<Ping>(&Request::Ping)).await.expect("join")
    }

    fn assert_stopping(answer: Result<Ping, ClientError>) {
        let err = answer.expect_err("a stopping daemon does not answer");
        assert!(matches!(&err, ClientError::Daemon(reply) if reply.kind == ErrorKind::Stopping), "{err:?}");
        assert!(err.daemon_is_away(), "{err:?}");
    }

    /// The daemon's loop has stopped taking calls (SIGTERM): a client is told so, in a way that
    /// `drain --wait` waits through rather than ends on.
    #[tokio::test]
    async fn a_call_to_a_daemon_that_is_stopping_is_answered_stopping() {
        let path = socket_path("closed");
        let (served, mut calls) = served(&path);
        calls.close();
        assert_stopping(ping(&path).await);
        served.stop().await;
        assert!(!path.exists(), "the socket file is removed when the daemon stops");
        let gone = ping(&path).await.expect_err("nobody listens");
        assert!(matches!(gone, ClientError::NoDaemon { .. }) && gone.daemon_is_away(), "{gone:?}");
    }

    /// A call taken by the loop but dropped unanswered (the daemon left mid-way) is `stopping` too.
    #[tokio::test]
    async fn a_call_dropped_unanswered_is_answered_stopping() {
        let path = socket_path("dropped");
        let (served, mut calls) = served(&path);
        let asked = tokio::spawn({
            let path = path.clone();
            async move { ping(&path).await }
        });
        let call = calls.recv().await.expect("the call reaches the loop");
        assert!(matches!(call.request, Request::Ping));
        drop(call);
        assert_stopping(asked.await.expect("join"));
        served.stop().await;
    }
}
