//! `type: tcp`: the backend accepts a TCP connection within the timeout.
//!
//! A probe connects without blocking, waits until the socket is writable, and then asks the kernel
//! for the connection's state: only an established connection passes. It then resets the
//! connection by disconnecting the socket (`connect` to `AF_UNSPEC`, which sends a reset as closing
//! with `SO_LINGER` 0 does) and keeps the socket for the next probe, so that a probe of a healthy
//! backend costs four system calls (connect, the state, the disconnect, and reading the error the
//! disconnect leaves) where a fresh socket costs seven (socket, connect, two epoll registrations,
//! the error, the linger option, close). A socket whose probe failed or was cut short (timeout,
//! reload) is closed, never reused.

use std::{
    future::poll_fn,
    io,
    net::SocketAddr,
    os::fd::AsRawFd as _,
    sync::{Arc, Mutex, PoisonError},
    task::Poll,
    time::Duration,
};

use futures_util::future::BoxFuture;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::{
    io::{Interest, unix::AsyncFd},
    time::Instant,
};

use super::checker::{CheckFailure, Checker, Step};

/// Sockets kept for reuse at most, per address family. Probes in flight at once need one each;
/// more than this many at once is the rare burst, and those sockets are closed afterwards.
const IDLE_MAX: usize = 64;

/// Connects, then resets the connection (no data sent), as HAProxy's TCP checks do: a graceful
/// close would leave one socket in TIME_WAIT per probe on this node for a minute (300,000 at 5,000
/// probes a second, beyond the kernel's default `tcp_max_tw_buckets`) and cost two more segments
/// each way. The backend's accept queue sees a connection reset by its peer, which most servers
/// log at most at debug level.
#[derive(Clone, Debug, Default)]
pub struct TcpCheck {
    idle: Arc<IdleSockets>,
}

impl TcpCheck {
    /// A check that takes its sockets from `idle` and puts them back there: the scheduler shares
    /// one set between all its TCP checks.
    pub const fn new(idle: Arc<IdleSockets>) -> Self {
        Self { idle }
    }
}

/// Disconnected TCP sockets, registered with the runtime, ready for the next probe.
#[derive(Debug, Default)]
pub struct IdleSockets {
    v4: Mutex<Vec<AsyncFd<Socket>>>,
    v6: Mutex<Vec<AsyncFd<Socket>>>,
}

impl IdleSockets {
    /// Sockets kept now, both families.
    #[cfg(test)]
    fn len(&self) -> usize {
        [&self.v4, &self.v6]
            .iter()
            .map(|idle| idle.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    fn family(&self, target: SocketAddr) -> &Mutex<Vec<AsyncFd<Socket>>> {
        if target.is_ipv4() { &self.v4 } else { &self.v6 }
    }

    /// A kept socket of `target`'s family, or a new one.
    fn take(&self, target: SocketAddr) -> io::Result<AsyncFd<Socket>> {
        if let Some(socket) = self.family(target).lock().unwrap_or_else(PoisonError::into_inner).pop() {
            return Ok(socket);
        }
        let socket =
            Socket::new(Domain::for_address(target), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
        // Closing a socket that could not be disconnected resets its connection too.
        socket.set_linger(Some(Duration::ZERO))?;
        // SAFETY: the socket owns its fd and keeps it open until it is dropped, which only happens
        // together with the AsyncFd.
        unsafe { AsyncFd::register_with_interest(socket, Interest::WRITABLE) }.map_err(io::Error::from)
    }

    fn keep(&self, target: SocketAddr, socket: AsyncFd<Socket>) {
        let mut idle = self.family(target).lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_MAX {
            idle.push(socket);
        }
    }
}

impl Checker for TcpCheck {
    fn probe(&self, target: SocketAddr) -> BoxFuture<'_, Result<Duration, CheckFailure>> {
        Box::pin(async move {
            let started = Instant::now();
            let failed = |err: io::Error| CheckFailure::io(Step::Connect, &err);
            let socket = self.idle.take(target).map_err(failed)?;
            forget_readiness(&socket).await;
            match socket.get_ref().connect(&SockAddr::from(target)) {
                Ok(()) => {}
                Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(err) => return Err(failed(err)),
            }
            loop {
                let mut ready = socket.writable().await.map_err(failed)?;
                match state(socket.get_ref()).map_err(failed)? {
                    State::Connecting => ready.clear_ready(),
                    State::Connected => break,
                    State::Closed => {
                        let err = socket.get_ref().take_error().map_err(failed)?;
                        return Err(failed(err.unwrap_or_else(|| io::ErrorKind::ConnectionAborted.into())));
                    }
                }
            }
            let latency = started.elapsed();
            if disconnect(socket.get_ref()).is_ok() {
                self.idle.keep(target, socket);
            }
            Ok(latency)
        })
    }
}

/// Drops whatever writability the runtime still holds from the socket's previous connection, so
/// that the next wakeup is about this one. The state is read after every wakeup anyway: a late
/// event of the old connection can cost a wakeup, never a verdict.
async fn forget_readiness(socket: &AsyncFd<Socket>) {
    poll_fn(|cx| {
        if let Poll::Ready(Ok(mut ready)) = socket.poll_write_ready(cx) {
            ready.clear_ready();
        }
        Poll::Ready(())
    })
    .await;
}

/// Where a connecting socket is, by the kernel's TCP state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The handshake has not finished.
    Connecting,
    /// The handshake finished (the backend may have closed since: it accepted).
    Connected,
    /// The connection failed; the socket's error says why.
    Closed,
}

/// The connection's state: the first byte of `TCP_INFO` (`tcpi_state`), which is all that is
/// copied out.
fn state(socket: &Socket) -> io::Result<State> {
    let mut tcp_state = 0u8;
    let mut len = 1 as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` (1) bytes to the pointer, and `len` back.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut tcp_state).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // include/net/tcp_states.h
    const SYN_SENT: u8 = 2;
    const SYN_RECV: u8 = 3;
    const CLOSE: u8 = 7;
    Ok(match tcp_state {
        SYN_SENT | SYN_RECV => State::Connecting,
        CLOSE => State::Closed,
        // ESTABLISHED (1), or a later state the backend's close led to.
        _ => State::Connected,
    })
}

/// Resets the connection and leaves the socket unconnected and unbound, ready to connect again:
/// `connect` to an `AF_UNSPEC` address. The kernel leaves the reset it sent as the socket's
/// pending error, which is read (and so cleared) here.
fn disconnect(socket: &Socket) -> io::Result<()> {
    let unspecified = libc::sockaddr { sa_family: libc::AF_UNSPEC as libc::sa_family_t, sa_data: [0; 14] };
    // SAFETY: the address is a valid `sockaddr` of the length given, read only during the call.
    let rc = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            &raw const unspecified,
            size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    socket.take_error()?;
    Ok(())
}

#[cfg(test)]
mod tests;
