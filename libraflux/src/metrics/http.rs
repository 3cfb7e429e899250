//! The HTTP endpoint: `GET /metrics`, `GET /healthz`, `GET /status`.
//!
//! hyper 1.x with hyper-util rather than axum: three fixed routes need no router, extractors or
//! tower middleware, and hyper is what axum itself runs on, so this is the smaller dependency
//! set for the same server. Connections are HTTP/1.1 only (Prometheus scrapes over HTTP/1.1),
//! over TLS and behind basic authentication when `metrics.web_config` asks for it ([`super::web`]).

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    sync::{Arc, LazyLock},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulConnection, GracefulShutdown, Watcher},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use super::web::{Web, WebError, WebSource};
use super::{Format, Metrics};

/// How long shutdown waits for requests in flight before dropping their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A client that has not finished its TLS handshake, or sent its request headers, by then is
/// disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot listen for metrics on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("metrics.web_config: {0}")]
    Web(#[from] WebError),
}

/// What the endpoint serves.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub metrics: Arc<Metrics>,
    /// The daemon's latest status document, served as is on `/status`.
    pub status: watch::Receiver<serde_json::Value>,
    /// `/healthz` fails once the last reconcile is older than this.
    pub staleness: Duration,
    /// TLS and authentication (`metrics.web_config`); `None`: plain HTTP, open to all.
    pub web: watch::Receiver<Option<Arc<WebSource>>>,
}

impl Endpoint {
    /// An endpoint without `metrics.web_config` (see [`Endpoint::web`]).
    pub fn new(
        metrics: Arc<Metrics>,
        status: watch::Receiver<serde_json::Value>,
        staleness: Duration,
    ) -> Self {
        Self { metrics, status, staleness, web: watch::channel(None).1 }
    }
}

/// What a connection gets without `metrics.web_config`.
static OPEN: LazyLock<Arc<Web>> = LazyLock::new(|| Arc::new(Web::open()));

/// A bound listener, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    endpoint: Arc<Endpoint>,
}

impl Server {
    pub async fn bind(addr: SocketAddr, endpoint: Endpoint) -> Result<Self, EndpointError> {
        let bind_error = |source| EndpointError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(Self { listener, local_addr, endpoint: Arc::new(endpoint) })
    }

    /// The address actually bound (port 0 picks one).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting and gives requests in flight
    /// [`SHUTDOWN_GRACE`] to finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!("metrics endpoint on {}: accept failed: {err}", self.local_addr);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            tokio::spawn(connection(stream, Arc::clone(&self.endpoint), graceful.watcher()));
        }
        drop(self.listener);
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
            tracing::warn!("metrics endpoint: requests still running after {SHUTDOWN_GRACE:?}, dropped");
        }
    }
}

/// One connection: the TLS handshake when configured, then HTTP/1.1 until the client leaves.
async fn connection(stream: TcpStream, endpoint: Arc<Endpoint>, watcher: Watcher) {
    let web = endpoint.web.borrow().as_ref().map_or_else(|| Arc::clone(&OPEN), |source| source.current());
    let Some(acceptor) = web.tls() else { return http(stream, endpoint, web, watcher).await };
    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => http(stream, endpoint, web, watcher).await,
        Ok(Err(err)) => tracing::debug!("metrics endpoint: TLS handshake failed: {err}"),
        Err(_) => tracing::debug!("metrics endpoint: no TLS handshake within {HEADER_READ_TIMEOUT:?}"),
    }
}

async fn http<S>(stream: S, endpoint: Arc<Endpoint>, web: Arc<Web>, watcher: Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Err(err) = watcher.watch(serve_http(endpoint, web, stream)).await {
        tracing::debug!("metrics endpoint connection: {err}");
    }
}

/// HTTP/1.1 on one connection (inside TLS when configured): requests read from `io`, checked
/// against `web`'s users and answered by [`route`]. Public for the fuzz target
/// (`fuzz/fuzz_targets/metrics_http.rs`), which feeds it raw bytes.
#[doc(hidden)]
pub fn serve_http<I>(
    endpoint: Arc<Endpoint>,
    web: Arc<Web>,
    io: I,
) -> impl GracefulConnection<Error = hyper::Error> + Send
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let endpoint = Arc::clone(&endpoint);
        let web = Arc::clone(&web);
        async move {
            let mut response = if web.authorized(request.headers().get(header::AUTHORIZATION)).await {
                respond(&endpoint, &request)
            } else {
                let mut refused = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
                let challenge = HeaderValue::from_static("Basic realm=\"libraflux\"");
                refused.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
                refused
            };
            for (name, value) in web.headers() {
                response.headers_mut().insert(name.clone(), value.clone());
            }
            Ok::<_, Infallible>(response)
        }
    });
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
}

fn respond(endpoint: &Endpoint, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let accept = request.headers().get(header::ACCEPT).and_then(|value| value.to_str().ok());
    route(endpoint, request.method(), request.uri().path(), accept)
}

/// The whole routing table; pure apart from reading the shared state.
fn route(endpoint: &Endpoint, method: &Method, path: &str, accept: Option<&str>) -> Response<Full<Bytes>> {
    if !matches!(path, "/metrics" | "/healthz" | "/status") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if method != Method::GET {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    match path {
        "/metrics" => {
            let format = Format::from_accept(accept);
            with_type(StatusCode::OK, format.content_type(), endpoint.metrics.encode(format).into())
        }
        "/healthz" if endpoint.metrics.is_alive(endpoint.staleness) => text(StatusCode::OK, "ok\n"),
        "/healthz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("stale: no reconcile finished in the last {:?}\n", endpoint.staleness),
        ),
        _ => {
            let mut document = serde_json::to_vec_pretty(&*endpoint.status.borrow())
                .expect("a serde_json::Value always serialises");
            document.push(b'\n');
            with_type(StatusCode::OK, "application/json", document.into())
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", Bytes::copy_from_slice(body.as_bytes()))
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use hyper::{Method, StatusCode, header};
    use tokio::sync::watch;

    use super::{Endpoint, route};
    use crate::metrics::Metrics;

    fn endpoint(staleness: Duration) -> Endpoint {
        let (_, status) = watch::channel(serde_json::json!({"services": []}));
        Endpoint::new(Arc::new(Metrics::new("lb-a", 100)), status, staleness)
    }

    #[test]
    fn routes_by_path_then_method() {
        let endpoint = endpoint(Duration::from_secs(60));
        let cases = [
            (Method::GET, "/metrics", StatusCode::OK),
            (Method::GET, "/healthz", StatusCode::OK),
            (Method::GET, "/status", StatusCode::OK),
            (Method::GET, "/", StatusCode::NOT_FOUND),
            (Method::GET, "/metrics/x", StatusCode::NOT_FOUND),
            (Method::POST, "/nope", StatusCode::NOT_FOUND),
            (Method::POST, "/metrics", StatusCode::METHOD_NOT_ALLOWED),
            (Method::HEAD, "/healthz", StatusCode::METHOD_NOT_ALLOWED),
        ];
        for (method, path, expected) in cases {
            let response = route(&endpoint, &method, path, None);
            assert_eq!(response.status(), expected, "{method} {path}");
        }
        let refused = route(&endpoint, &Method::DELETE, "/status", None);
        assert_eq!(refused.headers()[header::ALLOW], "GET");
    }

    #[test]
    fn metrics_content_type_follows_accept() {
        let endpoint = endpoint(Duration::from_secs(60));
        let plain = route(&endpoint, &Method::GET, "/metrics", Some("*/*"));
        assert_eq!(plain.headers()[header::CONTENT_TYPE], "text/plain; version=0.0.4; charset=utf-8");
        let prometheus =
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let open = route(&endpoint, &Method::GET, "/metrics", Some(prometheus));
        assert_eq!(
            open.headers()[header::CONTENT_TYPE],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
    }

    #[test]
    fn healthz_fails_once_reconcile_is_stale() {
        let endpoint = endpoint(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        let response = route(&endpoint, &Method::GET, "/healthz", None);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
