//! The transport: one HTTP/1.1 connection per request (plain or TLS), endpoints tried in order
//! until one answers.

use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Request, StatusCode, Uri, body::Incoming, header};
use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, RootCertStore,
    crypto::ring,
    pki_types::{PrivateKeyDer, ServerName, pem::PemObject as _},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

use super::{
    EtcdError,
    wire::{Compare, Op, RangeResponse, TxnResponse, WatchEnvelope, WatchResponse, b64},
};

/// How long connecting (TCP and TLS) to one endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a unary call may take once connected.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of an answer read: etcd's own request limit is 1.5 MiB, a range of a prefix can be
/// larger, but a configuration is bounded by a bundle's 16 MiB.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The PEM files of `tls:`: the CA that signed etcd's certificate, and this client's certificate
/// and key when etcd asks for one (`--client-cert-auth`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Clone, Debug)]
struct Endpoint {
    /// As configured, for messages.
    url: String,
    host: String,
    port: u16,
    tls: bool,
}

/// An etcd v3 client over the JSON gateway.
#[derive(Clone)]
pub struct Client {
    endpoints: Vec<Endpoint>,
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.endpoints.iter().map(|endpoint| endpoint.url.as_str()).collect();
        f.debug_struct("Client").field("endpoints", &urls).field("tls", &self.tls.is_some()).finish()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Client {
    /// A client of `endpoints` (`https://host:port` or `http://host:port`); `tls` is needed for
    /// an https endpoint. Reads the TLS files now, so that a bad file fails here.
    pub fn new(endpoints: &[String], tls: Option<&TlsFiles>) -> Result<Self, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::NoEndpoint);
        }
        let endpoints = endpoints.iter().map(|url| endpoint(url)).collect::<Result<Vec<_>, _>>()?;
        if let (Some(https), None) = (endpoints.iter().find(|endpoint| endpoint.tls), tls) {
            let message =
                "an https endpoint needs tls: {ca} (and cert and key when etcd checks client certificates)";
            return Err(EtcdError::Endpoint { endpoint: https.url.clone(), message: message.to_owned() });
        }
        let tls = tls.map(connector).transpose()?;
        Ok(Self { endpoints, tls })
    }

    /// Every key in `[key, range_end)` (`range_end` empty: `key` alone), at the latest revision.
    pub async fn range(&self, key: &[u8], range_end: &[u8]) -> Result<RangeResponse, EtcdError> {
        let mut body = json!({ "key": b64(key) });
        if !range_end.is_empty() {
            body["range_end"] = b64(range_end).into();
        }
        let operation = format!("range of {:?}", String::from_utf8_lossy(key));
        self.call("/v3/kv/range", &body, &operation).await
    }

    /// One transaction: `success` when every compare holds, nothing otherwise. `what` names it
    /// in errors (the keys it is about).
    pub async fn txn(
        &self,
        compare: &[Compare],
        success: &[Op],
        what: &str,
    ) -> Result<TxnResponse, EtcdError> {
        let body = json!({
            "compare": compare.iter().map(Compare::json).collect::<Vec<_>>(),
            "success": success.iter().map(Op::json).collect::<Vec<_>>(),
        });
        self.call("/v3/kv/txn", &body, &format!("transaction on {what}")).await
    }

    /// Puts one key.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), EtcdError> {
        let body = json!({ "key": b64(key), "value": b64(value) });
        let operation = format!("put of {:?}", String::from_utf8_lossy(key));
        self.call::<Value>("/v3/kv/put", &body, &operation).await.map(drop)
    }

    /// Compacts etcd's history up to `revision`: an operator's tool (and the tests'), which
    /// LibraFlux itself never runs.
    pub async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let body = json!({ "revision": revision.to_string(), "physical": true });
        self.call::<Value>("/v3/kv/compaction", &body, &format!("compaction at {revision}")).await.map(drop)
    }

    /// Watches `[key, range_end)` from `start_revision` (0: from now).
    pub async fn watch(&self, key: &[u8], range_end: &[u8], start_revision: i64) -> Result<Watch, EtcdError> {
        let mut create = json!({ "key": b64(key), "range_end": b64(range_end) });
        if start_revision > 0 {
            create["start_revision"] = start_revision.to_string().into();
        }
        let operation = format!("watch of {:?}", String::from_utf8_lossy(key));
        let (endpoint, response) =
            self.send("/v3/watch", &json!({ "create_request": create }), &operation).await?;
        Ok(Watch { body: response, buf: Vec::new(), operation, endpoint })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        operation: &str,
    ) -> Result<T, EtcdError> {
        let (endpoint, response) = self.send(path, body, operation).await?;
        let transport = |message: String| EtcdError::Transport {
            operation: operation.to_owned(),
            endpoint: endpoint.clone(),
            message,
        };
        let read = tokio::time::timeout(CALL_TIMEOUT, Limited::new(response, MAX_ANSWER_BYTES).collect());
        let bytes = read
            .await
            .map_err(|_| transport(format!("no answer within {}s", CALL_TIMEOUT.as_secs())))?
            .map_err(|err| transport(format!("reading the answer: {err}")))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|err| EtcdError::Decode {
            operation: operation.to_owned(),
            endpoint: endpoint.clone(),
            message: err.to_string(),
        })
    }

    /// Sends to the first endpoint that answers with 200; a refusal by etcd (another status) is
    /// final, a connection failure tries the next endpoint.
    async fn send(&self, path: &str, body: &Value, operation: &str) -> Result<(String, Incoming), EtcdError> {
        let mut failure = None;
        for endpoint in &self.endpoints {
            match self.send_to(endpoint, path, body, operation).await {
                Ok(response) => return Ok((endpoint.url.clone(), response)),
                Err(err @ EtcdError::Transport { .. }) => failure = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(failure.expect("at least one endpoint"))
    }

    async fn send_to(
        &self,
        endpoint: &Endpoint,
        path: &str,
        body: &Value,
        operation: &str,
    ) -> Result<Incoming, EtcdError> {
        let transport = |message: String| EtcdError::Transport {
            operation: operation.to_owned(),
            endpoint: endpoint.url.clone(),
            message,
        };
        let io = tokio::time::timeout(CONNECT_TIMEOUT, self.connect(endpoint))
            .await
            .map_err(|_| transport(format!("no connection within {}s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(transport)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|err| transport(format!("HTTP handshake: {err}")))?;
        tokio::spawn(async move {
            // Its failure reaches the request's caller as the request's failure.
            let _ = connection.await;
        });
        let request = Request::post(path)
            .header(header::HOST, format!("{}:{}", endpoint.host, endpoint.port))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a valid request");
        let response = tokio::time::timeout(CALL_TIMEOUT, sender.send_request(request))
            .await
            .map_err(|_| transport(format!("no answer within {}s", CALL_TIMEOUT.as_secs())))?
            .map_err(|err| transport(format!("sending the request: {err}")))?;
        let status = response.status();
        if status == StatusCode::OK {
            return Ok(response.into_body());
        }
        let text = Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|body| String::from_utf8_lossy(&body.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        Err(EtcdError::Status {
            operation: operation.to_owned(),
            endpoint: endpoint.url.clone(),
            status: status.as_u16(),
            message: text,
        })
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<Box<dyn Io>, String> {
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|err| format!("connecting: {err}"))?;
        let _ = tcp.set_nodelay(true);
        if !endpoint.tls {
            return Ok(Box::new(tcp));
        }
        let connector = self.tls.as_ref().expect("checked by new: an https endpoint has tls");
        let name =
            ServerName::try_from(endpoint.host.clone()).map_err(|err| format!("server name: {err}"))?;
        let tls = connector.connect(name, tcp).await.map_err(|err| format!("TLS handshake: {err}"))?;
        Ok(Box::new(tls))
    }
}

/// A watch stream: [`Watch::next`] gives its messages that carry events.
pub struct Watch {
    body: Incoming,
    buf: Vec<u8>,
    operation: String,
    endpoint: String,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("operation", &self.operation).field("endpoint", &self.endpoint).finish()
    }
}

impl Watch {
    /// The next message with events; `None` when etcd ended the stream.
    pub async fn next(&mut self) -> Result<Option<WatchResponse>, EtcdError> {
        loop {
            while let Some(response) = self.parsed()? {
                if response.canceled && response.compact_revision > 0 {
                    return Err(EtcdError::Compacted {
                        operation: self.operation.clone(),
                        endpoint: self.endpoint.clone(),
                        revision: response.compact_revision,
                    });
                }
                if response.canceled {
                    return Err(EtcdError::WatchCanceled {
                        operation: self.operation.clone(),
                        endpoint: self.endpoint.clone(),
                        reason: format!(
                            "{} (compacted at {})",
                            response.cancel_reason, response.compact_revision
                        ),
                    });
                }
                if !response.events.is_empty() {
                    return Ok(Some(response));
                }
            }
            let Some(frame) = self.body.frame().await else { return Ok(None) };
            let frame = frame.map_err(|err| EtcdError::Transport {
                operation: self.operation.clone(),
                endpoint: self.endpoint.clone(),
                message: format!("reading the watch stream: {err}"),
            })?;
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    /// The first whole message in the buffer, taken out of it.
    fn parsed(&mut self) -> Result<Option<WatchResponse>, EtcdError> {
        let decode = |message: String| EtcdError::Decode {
            operation: self.operation.clone(),
            endpoint: self.endpoint.clone(),
            message,
        };
        let mut stream = serde_json::Deserializer::from_slice(&self.buf).into_iter::<WatchEnvelope>();
        let envelope = match stream.next() {
            None => return Ok(None),
            Some(Err(err)) if err.is_eof() => return Ok(None),
            Some(Err(err)) => return Err(decode(err.to_string())),
            Some(Ok(envelope)) => envelope,
        };
        let used = stream.byte_offset();
        self.buf.drain(..used);
        match envelope {
            WatchEnvelope { error: Some(error), .. } => Err(decode(format!("the stream failed: {error}"))),
            WatchEnvelope { result: Some(result), .. } => Ok(Some(result)),
            WatchEnvelope { .. } => Err(decode("a message with neither result nor error".to_owned())),
        }
    }
}

/// Whether `url` is an endpoint [`Client::new`] accepts; why not.
pub fn check_endpoint(url: &str) -> Result<(), String> {
    match endpoint(url) {
        Ok(_) => Ok(()),
        Err(EtcdError::Endpoint { message, .. }) => Err(message),
        Err(err) => Err(err.to_string()),
    }
}

fn endpoint(url: &str) -> Result<Endpoint, EtcdError> {
    let error = |message: &str| EtcdError::Endpoint { endpoint: url.to_owned(), message: message.to_owned() };
    let uri: Uri = url.parse().map_err(|_| error("not a URL like https://192.0.2.1:2379"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(error("the scheme must be https or http")),
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(error("an endpoint is scheme://host:port, with no path"));
    }
    let host = uri.host().ok_or_else(|| error("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(2379);
    Ok(Endpoint { url: url.to_owned(), host, port, tls })
}

fn connector(files: &TlsFiles) -> Result<TlsConnector, EtcdError> {
    let error = |path: &PathBuf, message: String| EtcdError::Tls { path: path.clone(), message };
    let mut roots = RootCertStore::empty();
    for cert in
        crate::metrics::web::pem_certificates(&files.ca).map_err(|message| error(&files.ca, message))?
    {
        roots.add(cert).map_err(|err| error(&files.ca, format!("not a usable CA certificate: {err}")))?;
    }
    // ring, as for the metrics endpoint (metrics/web.rs says why).
    #[allow(deprecated)]
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| error(&files.ca, format!("TLS settings: {err}")))?
        .with_root_certificates(roots);
    let config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain =
                crate::metrics::web::pem_certificates(cert).map_err(|message| error(cert, message))?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|err| error(key, format!("no PEM private key: {err}")))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|err| error(cert, format!("certificate and key {}: {err}", key.display())))?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(path), None) | (None, Some(path)) => {
            return Err(error(path, "cert and key go together".to_owned()));
        }
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_scheme_host_port() {
        let parsed = endpoint("https://[::1]:23790").unwrap();
        assert_eq!((parsed.host.as_str(), parsed.port, parsed.tls), ("::1", 23790, true));
        assert_eq!(endpoint("http://etcd-1").unwrap().port, 2379);
        for bad in ["etcd-1:2379", "ftp://etcd:1", "https://etcd:1/v3"] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
        let err = Client::new(&["https://127.0.0.1:2379".to_owned()], None).err().unwrap();
        assert!(err.to_string().contains("needs tls"), "{err}");
    }
}
