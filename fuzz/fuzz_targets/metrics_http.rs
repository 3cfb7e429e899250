//! Arbitrary bytes as what a client sends the metrics endpoint (`/metrics`, `/healthz`,
//! `/status`): hyper's HTTP/1.1 server reads them from an in-memory connection and the
//! endpoint's routing answers, as for a real client. Serving must never panic nor hang, and
//! whatever it answers must be HTTP/1.x with a status the endpoint (or hyper, for a request it
//! cannot read) gives.
//!
//! Run with `cargo xtask fuzz metrics_http` (seeds: requests as Prometheus, curl and a browser
//! send them, in `fuzz/seeds/metrics_http/`).

#![no_main]

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use libfuzzer_sys::fuzz_target;
use libraflux::metrics::{
    Metrics,
    http::{Endpoint, serve_http},
    web::Web,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    runtime::Runtime,
    sync::watch,
};

/// hyper's timers need a runtime with time enabled; one serves every input.
static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
});

static ENDPOINT: LazyLock<Arc<Endpoint>> = LazyLock::new(|| {
    let (_, status) = watch::channel(serde_json::json!({ "node": "lb-fuzz", "services": [] }));
    let metrics = Arc::new(Metrics::new("lb-fuzz", 1_000));
    Arc::new(Endpoint::new(metrics, status, Duration::from_secs(86_400)))
});

/// What the endpoint answers (200, 404, 405; 503 from a stale `/healthz`) and what hyper answers
/// a request it cannot take (400, 414 URI too long, 431 headers too large, 501 an unknown
/// transfer coding, 505 another HTTP version).
const STATUSES: [u16; 9] = [200, 404, 405, 503, 400, 414, 431, 501, 505];

fuzz_target!(|data: &[u8]| {
    let answer = RUNTIME.block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let send = async {
            // The server may close first (a request it refuses); the rest is not its concern.
            let _ = to_server.write_all(data).await;
            let _ = to_server.shutdown().await;
        };
        let mut answer = Vec::new();
        let receive = from_server.read_to_end(&mut answer);
        let serve = serve_http(Arc::clone(&ENDPOINT), Arc::new(Web::open()), server);
        let ((), _, received) = tokio::join!(send, serve, receive);
        received.expect("reading from an in-memory connection");
        answer
    });
    if answer.is_empty() {
        return;
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let status = response.parse(&answer);
    assert!(
        matches!(status, Ok(httparse::Status::Complete(_))),
        "not an HTTP response head: {status:?} {:?}",
        String::from_utf8_lossy(&answer)
    );
    // hyper answers an HTTP/1.0 request in kind.
    assert!(matches!(response.version, Some(0 | 1)), "{:?}", String::from_utf8_lossy(&answer));
    let code = response.code.expect("a complete head has a status");
    assert!(STATUSES.contains(&code), "status {code}: {:?}", String::from_utf8_lossy(&answer));
});
