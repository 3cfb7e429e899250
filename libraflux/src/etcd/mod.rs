//! An etcd v3 client over etcd's JSON gRPC gateway (`POST /v3/kv/range`, `/v3/kv/txn`,
//! `/v3/watch`), HTTP/1.1 through hyper, TLS with client certificates through rustls.
//!
//! Why not gRPC (tonic, etcd-client): the gateway is etcd's documented JSON API, served on the
//! same client port as gRPC since etcd 3.3 under `/v3/` (Debian bookworm ships 3.4); speaking it
//! needs no protoc, no generated code and no HTTP/2 stack, only the HTTP client and TLS this
//! crate already has. Keys and values travel base64-encoded, revisions as decimal strings.
//!
//! - [`Client`]: endpoints tried in order, one connection per request.
//! - [`Client::range`], [`Client::txn`], [`Client::watch`]: the calls LibraFlux needs.
//! - [`fleet`]: the replicated configuration (`config.d`) under a prefix, one key per file:
//!   read, compare with local files, and push in one compare-and-swap transaction.
//! - [`node`]: what a node makes of the prefix (checks, validation with its own files, what the
//!   daemon starts on); [`follow`]: the task that reads and watches it for the daemon;
//!   [`last_good`]: the last configuration put in force from etcd, on disk.

mod client;
mod error;
pub mod fleet;
pub mod follow;
pub mod last_good;
pub mod node;
mod wire;

pub use client::{Client, TlsFiles, Watch, check_endpoint};
pub use error::EtcdError;
pub use wire::{
    Compare, Event, EventKind, KeyValue, Op, RangeResponse, TxnResponse, WatchResponse, prefix_end,
};
