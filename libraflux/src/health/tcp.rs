//! `type: tcp`: the backend accepts a TCP connection within the timeout.

use std::{net::SocketAddr, time::Duration};

use futures_util::future::BoxFuture;
use tokio::{net::TcpStream, time::Instant};

use super::checker::{CheckFailure, Checker, Step};

/// Connects, then closes at once with a FIN (no data is sent): the backend's accept queue sees a
/// short-lived connection, which most servers log at most at debug level.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpCheck;

impl Checker for TcpCheck {
    fn probe(&self, target: SocketAddr) -> BoxFuture<'_, Result<Duration, CheckFailure>> {
        Box::pin(async move {
            let started = Instant::now();
            let stream =
                TcpStream::connect(target).await.map_err(|err| CheckFailure::io(Step::Connect, &err))?;
            let latency = started.elapsed();
            drop(stream);
            Ok(latency)
        })
    }
}
