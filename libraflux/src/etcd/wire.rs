//! The JSON of etcd's v3 gateway: bytes as base64, 64-bit integers as decimal strings (accepted
//! as numbers too), fields at their default value left out of answers.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

/// The end of the range of every key that starts with `prefix`: the prefix with its last byte
/// that is not 0xff incremented (and what follows it dropped); `\0` (every key) when there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub(super) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn base64_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(deserializer)?;
    STANDARD.decode(text).map_err(serde::de::Error::custom)
}

fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Number(number) => number.as_i64().ok_or_else(|| serde::de::Error::custom("not an int64")),
        Value::String(text) => text.parse().map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!("expected an int64, found {other}"))),
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Header {
    #[serde(default, deserialize_with = "int64")]
    pub revision: i64,
}

/// A key as etcd stores it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct KeyValue {
    #[serde(deserialize_with = "base64_bytes")]
    pub key: Vec<u8>,
    #[serde(default, deserialize_with = "base64_bytes")]
    pub value: Vec<u8>,
    #[serde(default, deserialize_with = "int64")]
    pub create_revision: i64,
    /// The revision of the last write of this key.
    #[serde(default, deserialize_with = "int64")]
    pub mod_revision: i64,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct RangeResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
    #[serde(default)]
    pub more: bool,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct TxnResponse {
    #[serde(default)]
    pub header: Header,
    /// Whether every compare held, so that the success operations ran.
    #[serde(default)]
    pub succeeded: bool,
}

/// A condition of a transaction on the last write of a key, or of every key in a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key was last written at exactly this revision (0: it does not exist).
    ModRevisionIs { key: Vec<u8>, revision: i64 },
    /// No key in `[key, range_end)` was written after `revision`.
    NotWrittenAfter { key: Vec<u8>, range_end: Vec<u8>, revision: i64 },
}

impl Compare {
    pub(super) fn json(&self) -> Value {
        match self {
            Self::ModRevisionIs { key, revision } => json!({
                "key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": revision.to_string(),
            }),
            Self::NotWrittenAfter { key, range_end, revision } => json!({
                "key": b64(key), "range_end": b64(range_end), "target": "MOD", "result": "LESS",
                "mod_revision": (revision + 1).to_string(),
            }),
        }
    }
}

/// An operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

impl Op {
    pub(super) fn json(&self) -> Value {
        match self {
            Self::Put { key, value } => json!({ "request_put": { "key": b64(key), "value": b64(value) } }),
            Self::Delete { key } => json!({ "request_delete_range": { "key": b64(key) } }),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum EventKind {
    /// The gateway leaves PUT (0, the default) out.
    #[default]
    #[serde(rename = "PUT")]
    Put,
    #[serde(rename = "DELETE")]
    Delete,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Event {
    #[serde(default, rename = "type")]
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// One message of a watch stream.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct WatchResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub canceled: bool,
    #[serde(default)]
    pub cancel_reason: String,
    #[serde(default, deserialize_with = "int64")]
    pub compact_revision: i64,
    #[serde(default)]
    pub events: Vec<Event>,
}

/// A watch stream's messages are `{"result": ...}`, or `{"error": ...}` when the stream fails.
#[derive(Debug, Deserialize)]
pub(super) struct WatchEnvelope {
    pub result: Option<WatchResponse>,
    pub error: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn answers_decode_with_strings_numbers_and_left_out_defaults() {
        let answer = r#"{"header":{"cluster_id":"1","revision":"7"},"kvs":[{"key":"L2Ev","mod_revision":5,"value":"eA=="}],"count":"1"}"#;
        let range: RangeResponse = serde_json::from_str(answer).unwrap();
        assert_eq!(range.header.revision, 7);
        assert_eq!(range.kvs[0].key, b"/a/");
        assert_eq!(range.kvs[0].value, b"x");
        assert_eq!(range.kvs[0].mod_revision, 5);
        let txn: TxnResponse = serde_json::from_str(r#"{"header":{"revision":"9"}}"#).unwrap();
        assert!(!txn.succeeded);
        let event: Event = serde_json::from_str(r#"{"kv":{"key":"YQ=="}}"#).unwrap();
        assert_eq!(event.kind, EventKind::Put);
    }

    #[test]
    fn compares_and_ops_are_the_gateways_json() {
        let compare =
            Compare::NotWrittenAfter { key: b"/a/".to_vec(), range_end: b"/a0".to_vec(), revision: 4 };
        assert_eq!(
            compare.json(),
            json!({"key": "L2Ev", "range_end": "L2Ew", "target": "MOD", "result": "LESS", "mod_revision": "5"})
        );
        let put = Op::Put { key: b"k".to_vec(), value: b"v".to_vec() };
        assert_eq!(put.json(), json!({"request_put": {"key": "aw==", "value": "dg=="}}));
    }
}
