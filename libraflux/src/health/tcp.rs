//! `type: tcp`: the backend accepts a TCP connection within the timeout.

use std::{net::SocketAddr, time::Duration};

use futures_util::future::BoxFuture;
use tokio::{net::TcpStream, time::Instant};

use super::checker::{CheckFailure, Checker, Step};

/// Connects, then closes at once with a reset (`SO_LINGER` 0, no data sent), as HAProxy's TCP
/// checks do: a graceful close would leave one socket in TIME_WAIT per probe on this node for a
/// minute (300,000 at 5,000 probes a second, beyond the kernel's default `tcp_max_tw_buckets`)
/// and cost two more segments each way. The backend's accept queue sees a connection reset by its
/// peer, which most servers log at most at debug level.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpCheck;

impl Checker for TcpCheck {
    fn probe(&self, target: SocketAddr) -> BoxFuture<'_, Result<Duration, CheckFailure>> {
        Box::pin(async move {
            let started = Instant::now();
            let stream =
                TcpStream::connect(target).await.map_err(|err| CheckFailure::io(Step::Connect, &err))?;
            let latency = started.elapsed();
            // Only the close's manner depends on this: a failure leaves the ordinary FIN.
            let _ = stream.set_zero_linger();
            drop(stream);
            Ok(latency)
        })
    }
}
