//! The control socket's wire format (operators: docs/control.md). One request per connection:
//! the client writes one JSON object on one line, the daemon answers with one JSON object on one
//! line and closes. Both carry `version`; a request is refused whole when its version, its
//! `request` name or any of its fields is unknown, so the daemon never acts on half of a request.
//! Replies may gain fields within a version; clients ignore the ones they do not know.

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

use crate::{
    canary::CanaryEntry,
    drain::{DrainEntry, Rules},
    ipvs::{ServiceStatus, SyncDaemon, SyncState},
    model::{DestKey, Forwarding, ServiceKey},
};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// A request longer than this is refused unread: none needs more than a few hundred bytes.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// A reply longer than this is not the daemon's: the status of a 10,000-service table is ~5 MB.
pub const MAX_REPLY_BYTES: u64 = 256 << 20;

/// What a client asks the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Is a daemon there, and which configuration does it run?
    Ping,
    /// The daemon's record (health, drains, last reconcile, eBPF view) and the IPVS table.
    Status,
    /// Drain a backend: recorded, reconciled, and answered with the weight IPVS then shows.
    Drain(DrainRequest),
    /// Undo the drains of a backend (in one service, or all).
    Undrain {
        backend: DestKey,
        #[serde(default)]
        service: Option<ServiceKey>,
    },
    /// Every drain with what IPVS shows of its backend now (`drain --wait` polls it).
    Drains,
    /// The state of config replication: role, generation, peer, last success and error.
    Replication,
    /// Reload the daemon's own configuration, as SIGHUP does, and answer with the outcome.
    /// `config` lists the files the client validated; the daemon refuses when its own
    /// configuration is made of other files.
    Reload {
        config: Vec<PathBuf>,
        /// Accept the configuration even over its change limits (`apply --force`).
        #[serde(default)]
        force: bool,
    },
    /// Give the node the connection sync role `role` (`libraflux sync master|backup`, run by
    /// keepalived's notify scripts): the daemon of the other state is stopped and this one runs
    /// with `sync:`'s parameters. Answered with what the kernel shows afterwards.
    SyncRole { role: SyncState },
    /// The connection sync daemons the kernel runs.
    SyncStatus,
    /// Start, promote or abort a canary backend's rollout; answered with its state and the
    /// weights IPVS then shows.
    Canary(CanaryRequest),
    /// Every canary and where its rollout stands.
    Canaries,
}

/// What `libraflux canary` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryAction {
    /// Roll the backend in from its first step (again, after an abort).
    Start,
    /// Give it its configured weight now.
    Promote,
    /// Weight 0, then the service's drain rules.
    Abort,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryRequest {
    pub action: CanaryAction,
    pub backend: DestKey,
    /// Needed when the backend is in several services.
    #[serde(default)]
    pub service: Option<ServiceKey>,
    /// `start` only: the steps in percent; default the configuration's `canary:` or 5, 25, 50, 100.
    #[serde(default)]
    pub steps: Option<Vec<u8>>,
    /// `start` only: how long each step is held.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<std::time::Duration>,
}

/// One canary as the daemon holds it, with its service's weights in IPVS now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CanaryView {
    #[serde(flatten)]
    pub canary: CanaryEntry,
    /// The share of new connections its step asks for, in percent; absent unless running.
    #[serde(default)]
    pub target_percent: Option<u8>,
    /// The share the weights give it, 0 to 1; absent when no weight was computed.
    #[serde(default)]
    pub weighted_share: Option<f64>,
    /// The canary's weight in IPVS; absent when IPVS does not hold it.
    #[serde(default)]
    pub weight: Option<u32>,
    /// The weights of the service's backends in IPVS, by backend.
    #[serde(default)]
    pub service_weights: BTreeMap<DestKey, u32>,
}

/// The answer to `canary` and `canaries`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CanaryReply {
    pub canaries: Vec<CanaryView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    pub backend: DestKey,
    /// Only in this service; default every configured service that has the backend.
    #[serde(default)]
    pub service: Option<ServiceKey>,
    /// Overrides of the service's `drain` settings.
    #[serde(default, with = "humantime_serde")]
    pub grace: Option<std::time::Duration>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<std::time::Duration>,
    #[serde(default, with = "humantime_serde")]
    pub quiet: Option<std::time::Duration>,
    #[serde(default)]
    pub include_inactive: bool,
    /// Delete the backend from IPVS once drained.
    #[serde(default)]
    pub remove: bool,
    /// Drain even the last backend serving a service.
    #[serde(default)]
    pub force: bool,
}

/// Why the daemon did not do what was asked. Clients map each kind to an exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Not JSON, an unknown request or field.
    BadRequest,
    /// The request's `version` is not one the daemon speaks.
    UnsupportedVersion,
    /// The peer is not root, the daemon's user, or a member of `control.group`.
    PermissionDenied,
    /// The backend, service or drain named does not exist.
    NotFound,
    /// Refused on purpose, nothing changed: a change limit, the last serving backend, another
    /// configuration file than the daemon's.
    Refused,
    /// The configuration to reload does not validate.
    InvalidConfig,
    /// Tried and failed (the kernel refused, a state file could not be written).
    Failed,
    /// The daemon is stopping and did nothing; a daemon started after it may be asked again.
    Stopping,
}

/// An error reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ReplyError {
    pub kind: ErrorKind,
    pub message: String,
    /// One line each: limit violations, `file:line:col: message` config errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl ReplyError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), details: Vec::new() }
    }

    #[must_use]
    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }
}

/// A request or reply line that cannot be taken in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("no \"version\" field")]
    NoVersion,
    #[error("protocol version {0} is not spoken here (this build speaks version {VERSION})")]
    UnsupportedVersion(u64),
    #[error("{0}")]
    Malformed(String),
}

impl From<&ProtocolError> for ReplyError {
    fn from(err: &ProtocolError) -> Self {
        let kind = match err {
            ProtocolError::UnsupportedVersion(_) => ErrorKind::UnsupportedVersion,
            _ => ErrorKind::BadRequest,
        };
        Self::new(kind, err.to_string())
    }
}

/// Splits a line into its object, after checking its `version`.
fn versioned(line: &str) -> Result<Map<String, Value>, ProtocolError> {
    let value: Value = serde_json::from_str(line).map_err(|err| ProtocolError::NotJson(err.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(ProtocolError::NotJson("a JSON value that is not an object".to_owned()));
    };
    match object.remove("version").as_ref().map(Value::as_u64) {
        None => Err(ProtocolError::NoVersion),
        Some(Some(version)) if version == u64::from(VERSION) => Ok(object),
        Some(Some(version)) => Err(ProtocolError::UnsupportedVersion(version)),
        Some(None) => Err(ProtocolError::Malformed("\"version\" must be a number".to_owned())),
    }
}

fn with_version(value: Value) -> String {
    let mut object = match value {
        Value::Object(object) => object,
        other => unreachable!("requests and replies serialise as objects, not {other}"),
    };
    object.insert("version".to_owned(), VERSION.into());
    Value::Object(object).to_string()
}

/// One request line, without the newline.
pub fn encode_request(request: &Request) -> String {
    with_version(serde_json::to_value(request).expect("requests serialise"))
}

pub fn decode_request(line: &str) -> Result<Request, ProtocolError> {
    let object = versioned(line)?;
    let request: Request = serde_json::from_value(Value::Object(object.clone()))
        .map_err(|err| ProtocolError::Malformed(err.to_string()))?;
    // serde lets extra fields through on requests without fields (`ping`): every field given
    // must be one the request has, which its own serialisation lists.
    let Value::Object(known) = serde_json::to_value(&request).expect("requests serialise") else {
        unreachable!("requests serialise as objects")
    };
    match object.keys().find(|key| !known.contains_key(*key)) {
        Some(unknown) => Err(ProtocolError::Malformed(format!("unknown field `{unknown}` in this request"))),
        None => Ok(request),
    }
}

/// The reply line to a request: `{"version":1,"ok":true,"result":...}` or
/// `{"version":1,"ok":false,"error":{"kind":...,"message":...}}`.
pub fn encode_reply(reply: &Result<Value, ReplyError>) -> String {
    let value = match reply {
        Ok(result) => serde_json::json!({ "ok": true, "result": result }),
        Err(error) => serde_json::json!({ "ok": false, "error": error }),
    };
    with_version(value)
}

/// The daemon's answer: its result or its error reply.
pub fn decode_reply(line: &str) -> Result<Result<Value, ReplyError>, ProtocolError> {
    let mut object = versioned(line)?;
    let malformed = |what: &str| ProtocolError::Malformed(format!("a reply {what}"));
    match object.get("ok").and_then(Value::as_bool) {
        Some(true) => Ok(Ok(object.remove("result").unwrap_or(Value::Null))),
        Some(false) => {
            let error = object.remove("error").ok_or_else(|| malformed("with ok false but no error"))?;
            let error = serde_json::from_value(error).map_err(|err| malformed(&format!("error: {err}")))?;
            Ok(Err(error))
        }
        None => Err(malformed("without \"ok\"")),
    }
}

/// A result of the type its request answers with.
pub fn result<T: DeserializeOwned>(value: Value) -> Result<T, ProtocolError> {
    serde_json::from_value(value).map_err(|err| ProtocolError::Malformed(format!("a reply's result: {err}")))
}

/// The answer to `ping`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub pid: u32,
    /// The daemon's user.
    pub uid: u32,
    /// The files its configuration is made of, in load order.
    pub config: Vec<PathBuf>,
}

/// The answer to `status`: the daemon's record as `/status` serves it, and the table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub daemon: Value,
    /// The IPVS table as the daemon read it for this answer; `None` when it could not.
    pub services: Option<Vec<TableService>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipvs_error: Option<String>,
}

/// One service of the IPVS table, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableService {
    pub service: ServiceKey,
    pub scheduler: String,
    pub persistence: Option<u32>,
    pub backends: Vec<TableBackend>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableBackend {
    pub backend: DestKey,
    pub weight: u32,
    pub forwarding: Forwarding,
    pub active_connections: u32,
    pub inactive_connections: u32,
    pub connections_total: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
}

/// The table in key order, as `status` shows it.
pub fn table(statuses: &[ServiceStatus]) -> Vec<TableService> {
    let mut services: Vec<TableService> = statuses
        .iter()
        .map(|status| TableService {
            service: status.service.key,
            scheduler: status.service.scheduler.clone(),
            persistence: status.service.persistence,
            backends: status
                .destinations
                .values()
                .map(|dest| TableBackend {
                    backend: dest.destination.key,
                    weight: dest.destination.weight,
                    forwarding: dest.destination.forwarding,
                    active_connections: dest.active_connections,
                    inactive_connections: dest.inactive_connections,
                    connections_total: dest.stats.connections,
                    packets_in: dest.stats.packets_in,
                    bytes_in: dest.stats.bytes_in,
                })
                .collect(),
        })
        .collect();
    services.sort_by_key(|service| service.service);
    services
}

/// One drain the daemon recorded, with the weight IPVS showed once it had reconciled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drained {
    pub service: ServiceKey,
    pub backend: DestKey,
    /// `None`: the backend is not in IPVS (removed, or its service is).
    pub weight: Option<u32>,
    pub rules: Rules,
    pub remove: bool,
    /// Identifies this drain among later ones of the same backend.
    pub started_unix_ms: u64,
}

/// The answer to `drain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReply {
    pub drains: Vec<Drained>,
}

/// One backend's weight in IPVS after an undrain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undrained {
    pub service: ServiceKey,
    pub backend: DestKey,
    pub weight: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndrainReply {
    pub undrained: Vec<Undrained>,
}

/// What IPVS shows of a draining backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendNow {
    pub weight: u32,
    pub active_connections: u32,
    pub inactive_connections: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainView {
    #[serde(flatten)]
    pub drain: DrainEntry,
    /// `None`: the backend is not in IPVS.
    pub ipvs: Option<BackendNow>,
}

/// The answer to `drains`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainsReply {
    pub drains: Vec<DrainView>,
}

/// The answer to `reload`: the configuration was accepted and reconciled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    pub services: usize,
    /// `no_changes`, `applied` or `failed` (the kernel refused an operation).
    pub reconcile: String,
    /// The operations the reconcile carried out, as plans print them.
    pub operations: Vec<String>,
    /// What the kernel refused.
    pub errors: Vec<String>,
    /// Backends that left the configuration and are draining before they are deleted.
    pub leaving: usize,
}

/// The answer to `sync_role` and `sync_status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReply {
    /// What was changed, in order (`stopped the backup sync daemon`, `started the master sync
    /// daemon (...)`); empty when nothing had to change.
    pub actions: Vec<String>,
    /// The sync daemons the kernel runs afterwards, read back from it, master first.
    pub daemons: Vec<SyncDaemon>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn drain() -> Request {
        Request::Drain(DrainRequest {
            backend: "10.0.0.2:80".parse().unwrap(),
            service: Some("tcp:10.0.0.1:80".parse().unwrap()),
            grace: Some(Duration::from_secs(5)),
            timeout: None,
            quiet: None,
            include_inactive: false,
            remove: true,
            force: false,
        })
    }

    #[test]
    fn requests_round_trip_on_one_line_with_their_version() {
        let reload = Request::Reload { config: vec!["/etc/libraflux/config.yaml".into()], force: true };
        let undrain = Request::Undrain { backend: "[2001:db8::2]:53".parse().unwrap(), service: None };
        let sync = Request::SyncRole { role: SyncState::Master };
        let canary = Request::Canary(CanaryRequest {
            action: CanaryAction::Start,
            backend: "10.0.0.3:80".parse().unwrap(),
            service: None,
            steps: Some(vec![10, 100]),
            interval: Some(Duration::from_secs(30)),
        });
        for request in [
            canary,
            Request::Canaries,
            Request::Ping,
            Request::Status,
            Request::Drains,
            drain(),
            reload,
            undrain,
            sync,
            Request::SyncStatus,
        ] {
            let line = encode_request(&request);
            assert!(!line.contains('\n'), "{line}");
            assert!(line.contains("\"version\":1"), "{line}");
            assert_eq!(decode_request(&line), Ok(request));
        }
        let line = encode_request(&drain());
        assert!(line.contains(r#""request":"drain""#) && line.contains(r#""grace":"5s""#), "{line}");
        let line = encode_request(&Request::SyncRole { role: SyncState::Backup });
        assert!(line.contains(r#""request":"sync_role""#) && line.contains(r#""role":"backup""#), "{line}");
    }

    #[test]
    fn a_minimal_request_takes_the_defaults() {
        let request = decode_request(r#"{"version":1,"request":"drain","backend":"10.0.0.2:80"}"#).unwrap();
        let Request::Drain(drain) = request else { panic!("{request:?}") };
        assert_eq!((drain.service, drain.grace, drain.remove, drain.force), (None, None, false, false));
    }

    #[test]
    fn unknown_versions_requests_and_fields_are_refused_whole() {
        let cases = [
            ("[1]", "not a JSON object"),
            (r#"{"request":"ping"}"#, "no \"version\""),
            (r#"{"version":2,"request":"ping"}"#, "protocol version 2 is not spoken here"),
            (r#"{"version":"1","request":"ping"}"#, "must be a number"),
            (r#"{"version":1,"request":"flush"}"#, "unknown variant `flush`"),
            (
                r#"{"version":1,"request":"drain","backend":"10.0.0.2:80","gracee":"1s"}"#,
                "unknown field `gracee`",
            ),
            (r#"{"version":1,"request":"ping","force":true}"#, "unknown field `force`"),
            (r#"{"version":1,"request":"drain","backend":"10.0.0.2"}"#, "address:port"),
        ];
        for (line, expected) in cases {
            let err = decode_request(line).expect_err(line);
            assert!(err.to_string().contains(expected), "{line}: {err}");
        }
        let version = decode_request(r#"{"version":7,"request":"ping"}"#).unwrap_err();
        assert_eq!(ReplyError::from(&version).kind, ErrorKind::UnsupportedVersion);
        assert_eq!(ReplyError::from(&ProtocolError::NoVersion).kind, ErrorKind::BadRequest);
    }

    #[test]
    fn replies_round_trip_and_unknown_reply_fields_are_ignored() {
        let ok = encode_reply(&Ok(serde_json::json!({ "pid": 7, "uid": 0, "config": ["/c.yaml"] })));
        let ping: Ping = result(decode_reply(&ok).unwrap().unwrap()).unwrap();
        assert_eq!(ping, Ping { pid: 7, uid: 0, config: vec!["/c.yaml".into()] });
        let error = ReplyError::new(ErrorKind::Refused, "over a limit").with_details(vec!["a".into()]);
        let line = encode_reply(&Err(error.clone()));
        assert!(line.contains(r#""kind":"refused""#), "{line}");
        assert_eq!(decode_reply(&line).unwrap(), Err(error));
        let newer = r#"{"version":1,"ok":true,"result":{"pid":1,"uid":0,"config":[],"extra":1},"more":2}"#;
        let ping: Ping = result(decode_reply(newer).unwrap().unwrap()).unwrap();
        assert_eq!(ping.pid, 1);
        assert!(decode_reply(r#"{"version":1}"#).is_err());
        assert!(decode_reply(r#"{"version":1,"ok":false}"#).is_err());
    }
}
