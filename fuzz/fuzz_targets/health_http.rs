//! Arbitrary bytes as what an HTTP backend answers a health check: reading the response head must
//! never panic nor read past its bound, and its verdict must not depend on how the bytes were cut
//! into reads (TCP keeps no message boundaries). The first byte sets the size of each read
//! (1 to 256 bytes); the rest is the response, also delivered in one read to compare.
//!
//! Run with `cargo xtask fuzz health_http` (seeds: response heads of nginx captured in
//! `fuzz/seeds/health_http/`, see its README).

#![no_main]

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use libfuzzer_sys::fuzz_target;
use libraflux::health::{CheckFailure, http};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A backend that has already sent `response` and hands it out `chunk` bytes per read, then EOF.
struct Backend<'d> {
    response: &'d [u8],
    chunk: usize,
    read: usize,
}

impl AsyncRead for Backend<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let take = self.chunk.min(buf.remaining()).min(self.response.len());
        let (now, rest) = self.response.split_at(take);
        buf.put_slice(now);
        self.response = rest;
        self.read += take;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Backend<'_> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The check's verdict on `response` read `chunk` bytes at a time, and how much it read.
fn verdict(response: &[u8], chunk: usize) -> (Result<(), CheckFailure>, usize) {
    let mut backend = Backend { response, chunk, read: 0 };
    let request = b"GET /healthz HTTP/1.1\r\nHost: 192.0.2.2:80\r\n\r\n";
    let result = {
        let exchange = std::pin::pin!(http::exchange(&mut backend, request, 200));
        // The backend never blocks, so the exchange finishes in one poll.
        let Poll::Ready(result) = exchange.poll(&mut Context::from_waker(Waker::noop())) else {
            panic!("the exchange waited on a backend that never blocks")
        };
        result
    };
    (result, backend.read)
}

fuzz_target!(|data: &[u8]| {
    let Some((chunk, response)) = data.split_first() else { return };
    let (piecewise, read) = verdict(response, usize::from(*chunk) + 1);
    assert!(read <= http::MAX_HEAD, "read {read} bytes of a head bounded to {}", http::MAX_HEAD);
    let (whole, _) = verdict(response, usize::MAX);
    assert_eq!(piecewise, whole, "the verdict changed with the size of the reads");
});
