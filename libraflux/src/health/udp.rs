//! What every UDP check shares: a connected socket, one request, and a wait for the reply that
//! answers it.
//!
//! The socket is connected to the backend, so the kernel drops datagrams from any other address
//! or port (a reply from the wrong source is never seen, and the check times out), and an ICMP
//! port unreachable surfaces as `ECONNREFUSED` on the next receive: the check fails at once with
//! [`CheckFailure::PortUnreachable`] rather than after its timeout.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
};

use tokio::net::UdpSocket;

use super::checker::{CheckFailure, Step};

/// The largest reply read: a UDP datagram can be no longer.
const MAX_DATAGRAM: usize = 65_535;
/// At most this many datagrams that do not answer the request (stale replies, other ids) are
/// skipped before the probe gives up; the timeout bounds the wait as well.
pub const MAX_UNRELATED: usize = 16;

/// What a check makes of one datagram from the backend.
#[derive(Debug)]
pub enum Verdict {
    /// The reply to our request, and it is healthy.
    Healthy,
    /// Not a reply to our request (another id, another call): keep waiting.
    Unrelated,
}

/// Sends `request` on `socket` (from [`connected`]), then judges each datagram with `judge` until
/// one answers the request. A failed judgement fails the probe.
pub async fn exchange(
    socket: &UdpSocket,
    request: &[u8],
    mut judge: impl FnMut(&[u8]) -> Result<Verdict, CheckFailure>,
) -> Result<(), CheckFailure> {
    socket.send(request).await.map_err(|err| failure(Step::SendRequest, &err))?;
    let mut reply = vec![0; MAX_DATAGRAM];
    for _ in 0..=MAX_UNRELATED {
        let read = socket.recv(&mut reply).await.map_err(|err| failure(Step::ReadResponse, &err))?;
        match judge(&reply[..read])? {
            Verdict::Healthy => return Ok(()),
            Verdict::Unrelated => {}
        }
    }
    Err(CheckFailure::Malformed(format!("{} datagrams that do not answer the request", MAX_UNRELATED + 1)))
}

/// A UDP socket on an ephemeral port, connected to `target`.
pub async fn connected(target: SocketAddr) -> Result<UdpSocket, CheckFailure> {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(|err| failure(Step::Connect, &err))?;
    socket.connect(target).await.map_err(|err| failure(Step::Connect, &err))?;
    Ok(socket)
}

/// On a connected UDP socket `ECONNREFUSED` is the kernel reporting an ICMP port unreachable.
fn failure(step: Step, err: &io::Error) -> CheckFailure {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => CheckFailure::PortUnreachable,
        _ => CheckFailure::io(step, err),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn loopback() -> UdpSocket {
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap()
    }

    #[tokio::test]
    async fn unrelated_datagrams_are_skipped_until_the_answer() {
        let server = loopback().await;
        let target = server.local_addr().unwrap();
        let peer = tokio::spawn(async move {
            let mut buf = [0; 64];
            let (read, from) = server.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..read], b"ping");
            for reply in [&b"stale"[..], b"other", b"pong"] {
                server.send_to(reply, from).await.unwrap();
            }
        });
        let mut seen = Vec::new();
        let result = exchange(&connected(target).await.unwrap(), b"ping", |reply| {
            seen.push(reply.to_vec());
            Ok(if reply == b"pong" { Verdict::Healthy } else { Verdict::Unrelated })
        })
        .await;
        peer.await.unwrap();
        assert_eq!(result, Ok(()));
        assert_eq!(seen.len(), 3);
    }

    #[tokio::test]
    async fn a_flood_of_unrelated_datagrams_is_bounded() {
        let server = loopback().await;
        let target = server.local_addr().unwrap();
        let peer = tokio::spawn(async move {
            let mut buf = [0; 64];
            let (_, from) = server.recv_from(&mut buf).await.unwrap();
            for _ in 0..=MAX_UNRELATED {
                server.send_to(b"noise", from).await.unwrap();
            }
        });
        let result = exchange(&connected(target).await.unwrap(), b"ping", |_| Ok(Verdict::Unrelated)).await;
        peer.await.unwrap();
        assert_eq!(
            result,
            Err(CheckFailure::Malformed("17 datagrams that do not answer the request".into()))
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_at_once() {
        // Bind then drop: the port is free, so the kernel answers with ICMP port unreachable.
        let target = loopback().await.local_addr().unwrap();
        let socket = connected(target).await.unwrap();
        let result = tokio::time::timeout(
            Duration::from_secs(2),
            exchange(&socket, b"ping", |_| Ok(Verdict::Healthy)),
        )
        .await
        .expect("fails before the timeout");
        assert_eq!(result, Err(CheckFailure::PortUnreachable));
        assert_eq!(CheckFailure::PortUnreachable.to_string(), "port unreachable");
    }
}
