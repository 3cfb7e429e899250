//! The TCP check against real sockets on loopback.

use std::{io::ErrorKind, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::AsyncReadExt as _,
    net::{TcpListener, TcpSocket},
};

use super::{IdleSockets, TcpCheck};
use crate::health::checker::{CheckFailure, Checker as _, probe_bounded};

fn check() -> (TcpCheck, Arc<IdleSockets>) {
    let idle = Arc::new(IdleSockets::default());
    (TcpCheck::new(Arc::clone(&idle)), idle)
}

/// Every probe is a connection the backend accepts, then sees reset, from a port of its own; one
/// socket serves them all.
async fn passes_and_reuses(listener: &TcpListener) {
    let target = listener.local_addr().unwrap();
    let (check, idle) = check();
    let mut ports = Vec::new();
    for round in 0..5 {
        check.probe(target).await.unwrap_or_else(|err| panic!("round {round}: {err}"));
        assert_eq!(idle.len(), 1, "round {round}: the socket is kept for the next probe");
        let (mut accepted, peer) = listener.accept().await.unwrap();
        let mut byte = [0u8; 1];
        let read = accepted.read(&mut byte).await;
        assert!(
            matches!(&read, Err(err) if err.kind() == ErrorKind::ConnectionReset),
            "round {round}: the backend should see a reset, got {read:?}"
        );
        ports.push(peer.port());
    }
    ports.dedup();
    assert_eq!(ports.len(), 5, "each probe connects from a fresh port: {ports:?}");
    let waiting = time_wait(target.port());
    assert!(waiting.is_empty(), "no side of a probe's connection waits in TIME_WAIT: {waiting:?}");
}

/// Lines of `/proc/net/tcp` and `tcp6` in TIME_WAIT (state 06) from or to `port`.
fn time_wait(port: u16) -> Vec<String> {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|path| {
            std::fs::read_to_string(path)
                .unwrap_or_else(|err| panic!("{path}: {err}"))
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3
                && fields[3] == "06"
                && (fields[1].ends_with(&port) || fields[2].ends_with(&port))
        })
        .collect()
}

#[tokio::test]
async fn a_listening_backend_passes_and_one_socket_serves_every_probe() {
    passes_and_reuses(&TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
    passes_and_reuses(&TcpListener::bind("[::1]:0").await.unwrap()).await;
}

#[tokio::test]
async fn a_kept_socket_reports_the_refusal_of_its_next_probe_not_its_last_success() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let (check, idle) = check();
    check.probe(target).await.unwrap();
    assert_eq!(idle.len(), 1);
    drop(listener);
    assert_eq!(check.probe(target).await, Err(CheckFailure::Refused));
    assert_eq!(idle.len(), 0, "a socket whose probe failed is closed");
    assert_eq!(check.probe(target).await, Err(CheckFailure::Refused));
    let listener = TcpListener::bind(target).await.unwrap();
    check.probe(target).await.unwrap();
    check.probe(target).await.unwrap();
    assert_eq!(idle.len(), 1);
    drop(listener);
}

#[tokio::test]
async fn a_backend_that_never_answers_times_out_and_its_socket_is_not_kept() {
    let (check, idle) = check();
    let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
    check.probe(open.local_addr().unwrap()).await.unwrap();
    assert_eq!(idle.len(), 1);
    // A listener with a backlog of 0 queues one connection; while it waits to be accepted,
    // further SYNs are dropped, so the probe's handshake never finishes.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(0).unwrap();
    let target: SocketAddr = full.local_addr().unwrap();
    let _queued = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5)).unwrap();
    let outcome = probe_bounded(&check, target, Duration::from_millis(300)).await;
    assert_eq!(outcome.result, Err(CheckFailure::TimedOut(Duration::from_millis(300))));
    assert_eq!(idle.len(), 0, "the socket of a probe cut short is closed, not kept");
}
