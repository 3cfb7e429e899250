//! `type: http`: an HTTP/1.1 `GET path` answered with the expected status.
//!
//! Why not hyper: a health check sends one fixed request and needs only the status code. A hyper
//! client (with hyper-util for the connection) would bring connection pooling, body streaming and
//! a second I/O abstraction we would have to switch off or bound. The request is one formatted
//! line plus three headers; the response head is parsed by `httparse` (the parser under hyper),
//! and everything we read is bounded by [`MAX_HEAD`] bytes. The body is never read.

use std::{net::SocketAddr, time::Duration};

use futures_util::future::BoxFuture;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
    time::Instant,
};

use super::checker::{CheckFailure, Checker, Step};
use crate::model::DestKey;

/// At most this many bytes of the response are read: the status line and the headers.
pub const MAX_HEAD: usize = 8 * 1024;
/// At most this many response headers are accepted.
const MAX_HEADERS: usize = 64;

#[derive(Clone, Debug)]
pub struct HttpCheck {
    /// Validated by the config: starts with `/`, holds no whitespace (so no CR or LF).
    path: String,
    expect_status: u16,
}

impl HttpCheck {
    pub fn new(path: &str, expect_status: u16) -> Self {
        Self { path: path.to_owned(), expect_status }
    }

    /// The request: `Host` names the backend itself (there is no virtual host setting), and
    /// `Connection: close` lets the server end the exchange as soon as it has answered.
    fn request(&self, target: SocketAddr) -> String {
        let host = DestKey::new(target.ip(), target.port());
        format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: libraflux-health/{}\r\nAccept: */*\r\n\
             Connection: close\r\n\r\n",
            self.path,
            env!("CARGO_PKG_VERSION"),
        )
    }
}

impl Checker for HttpCheck {
    fn probe(&self, target: SocketAddr) -> BoxFuture<'_, Result<Duration, CheckFailure>> {
        Box::pin(async move {
            let started = Instant::now();
            let mut stream =
                TcpStream::connect(target).await.map_err(|err| CheckFailure::io(Step::Connect, &err))?;
            exchange(&mut stream, self.request(target).as_bytes(), self.expect_status).await?;
            Ok(started.elapsed())
        })
    }
}

/// Sends `request` and reads the response head (never more than [`MAX_HEAD`] bytes). Public for
/// the fuzz target (`fuzz/fuzz_targets/health_http.rs`).
#[doc(hidden)]
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
    expect_status: u16,
) -> Result<(), CheckFailure> {
    stream.write_all(request).await.map_err(|err| CheckFailure::io(Step::SendRequest, &err))?;
    let mut head = vec![0; MAX_HEAD];
    let mut received = 0;
    loop {
        if received == MAX_HEAD {
            return Err(CheckFailure::HttpHeadTooLong { limit: MAX_HEAD });
        }
        let read = stream
            .read(&mut head[received..])
            .await
            .map_err(|err| CheckFailure::io(Step::ReadResponse, &err))?;
        if read == 0 {
            return Err(CheckFailure::HttpClosed { received });
        }
        received += read;
        if let Some(status) = status_of(&head[..received])? {
            if status != expect_status {
                return Err(CheckFailure::HttpStatus { got: status, expected: expect_status });
            }
            return Ok(());
        }
    }
}

/// The status code once `head` holds a complete response head; `None` while it needs more bytes.
fn status_of(head: &[u8]) -> Result<Option<u16>, CheckFailure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head).map_err(CheckFailure::HttpMalformed)? {
        // httparse sets the code of every complete head.
        httparse::Status::Complete(_) => Ok(response.code),
        httparse::Status::Partial => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;

    const OK_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

    /// Runs the exchange against a peer that answers `response` in `chunks`-byte writes, and
    /// returns the result and the request the peer received.
    async fn against(response: Vec<u8>, chunk: usize, expect: u16) -> (Result<(), CheckFailure>, String) {
        let (mut client, mut server) = duplex(64 * 1024);
        let peer = tokio::spawn(async move {
            let mut request = vec![0; 1024];
            let read = server.read(&mut request).await.unwrap();
            for part in response.chunks(chunk.max(1)) {
                // The client stops reading once it has the head; a failed write is its hang-up.
                if server.write_all(part).await.is_err() {
                    break;
                }
            }
            String::from_utf8(request[..read].to_vec()).unwrap()
        });
        let check = HttpCheck::new("/healthz", expect);
        let request = check.request("192.0.2.7:8080".parse().unwrap());
        let result = exchange(&mut client, request.as_bytes(), expect).await;
        drop(client);
        (result, peer.await.unwrap())
    }

    #[tokio::test]
    async fn sends_a_get_with_host_and_connection_close() {
        let (result, request) = against(OK_HEAD.to_vec(), 1024, 200).await;
        assert_eq!(result, Ok(()));
        assert!(request.starts_with("GET /healthz HTTP/1.1\r\nHost: 192.0.2.7:8080\r\n"), "{request}");
        assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
        assert!(request.ends_with("\r\n\r\n"), "{request}");
    }

    #[test]
    fn the_host_header_brackets_ipv6() {
        let request = HttpCheck::new("/", 200).request("[2001:db8::5]:80".parse().unwrap());
        assert!(request.contains("\r\nHost: [2001:db8::5]:80\r\n"), "{request}");
    }

    #[tokio::test]
    async fn a_head_split_over_many_reads_is_reassembled() {
        let (result, _) = against(OK_HEAD.to_vec(), 3, 200).await;
        assert_eq!(result, Ok(()));
    }

    #[tokio::test]
    async fn another_status_fails_naming_both() {
        let (result, _) = against(b"HTTP/1.1 503 Service Unavailable\r\n\r\n".to_vec(), 1024, 200).await;
        assert_eq!(result, Err(CheckFailure::HttpStatus { got: 503, expected: 200 }));
        let (result, _) = against(b"HTTP/1.0 204 No Content\r\n\r\n".to_vec(), 1024, 204).await;
        assert_eq!(result, Ok(()));
    }

    #[tokio::test]
    async fn a_close_before_the_head_ends_fails() {
        let (result, _) = against(b"HTTP/1.1 200 OK\r\nServer: x".to_vec(), 1024, 200).await;
        assert_eq!(result, Err(CheckFailure::HttpClosed { received: 26 }));
    }

    #[tokio::test]
    async fn a_head_longer_than_the_bound_fails_without_reading_more() {
        let mut response = b"HTTP/1.1 200 OK\r\nX-Filler: ".to_vec();
        response.resize(4 * MAX_HEAD, b'a');
        let (result, _) = against(response, 1000, 200).await;
        assert_eq!(result, Err(CheckFailure::HttpHeadTooLong { limit: MAX_HEAD }));
    }

    #[tokio::test]
    async fn something_that_is_not_http_fails() {
        let (result, _) = against(b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec(), 1024, 200).await;
        assert!(matches!(result, Err(CheckFailure::HttpMalformed(_))), "{result:?}");
        assert_eq!(result.unwrap_err().outcome(), "bad_response");
    }

    #[test]
    fn status_of_waits_for_the_end_of_the_head() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Ok(None));
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n\r\n"), Ok(Some(200)));
    }
}
