//! What can go wrong talking to etcd; every variant names the operation (with its key) and the
//! endpoint.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("{operation} on {endpoint}: {message}")]
    Transport { operation: String, endpoint: String, message: String },
    #[error("{operation} on {endpoint}: etcd answered HTTP {status}: {message}")]
    Status { operation: String, endpoint: String, status: u16, message: String },
    #[error("{operation} on {endpoint}: not an answer of etcd's v3 gateway: {message}")]
    Decode { operation: String, endpoint: String, message: String },
    /// The watch started at a revision etcd has compacted away: read the prefix again whole.
    #[error("{operation} on {endpoint}: etcd compacted its history up to revision {revision}")]
    Compacted { operation: String, endpoint: String, revision: i64 },
    #[error("{operation} on {endpoint}: the watch was canceled by etcd: {reason}")]
    WatchCanceled { operation: String, endpoint: String, reason: String },
    #[error("etcd endpoint {endpoint:?}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("etcd TLS: {}: {message}", path.display())]
    Tls { path: PathBuf, message: String },
    #[error("no etcd endpoint is configured")]
    NoEndpoint,
}
