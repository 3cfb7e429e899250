//! `type: udp_echo`: send `payload`, expect exactly `expect` back.
//!
//! This proves only that something on the port answers with fixed bytes, not that the service
//! works; the config loader warns on every load and the protocol checks are preferred.
//! A connected socket still turns "nothing listens" into an immediate failure.

use std::{net::SocketAddr, time::Duration};

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::{
    checker::{CheckFailure, Checker},
    udp::{Verdict, connected, exchange},
};

#[derive(Clone, Debug)]
pub struct EchoCheck {
    payload: Vec<u8>,
    expect: Vec<u8>,
}

impl EchoCheck {
    pub fn new(payload: &str, expect: &str) -> Self {
        Self { payload: payload.as_bytes().to_vec(), expect: expect.as_bytes().to_vec() }
    }

    /// There is no id to match, so the first datagram is the answer.
    fn judge(&self, reply: &[u8]) -> Result<Verdict, CheckFailure> {
        if reply == self.expect {
            Ok(Verdict::Healthy)
        } else {
            Err(CheckFailure::EchoMismatch { received: reply.len() })
        }
    }
}

impl Checker for EchoCheck {
    fn probe(&self, target: SocketAddr) -> BoxFuture<'_, Result<Duration, CheckFailure>> {
        Box::pin(async move {
            let started = Instant::now();
            exchange(&connected(target).await?, &self.payload, |reply| self.judge(reply)).await?;
            Ok(started.elapsed())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_text_passes() {
        let check = EchoCheck::new("ping", "pong");
        assert!(matches!(check.judge(b"pong"), Ok(Verdict::Healthy)));
        assert_eq!(check.judge(b"ping").unwrap_err(), CheckFailure::EchoMismatch { received: 4 });
        assert_eq!(check.judge(b"pong\n").unwrap_err().outcome(), "bad_response");
    }
}
