//! The snapshot document. Fields serialise in the order the structs declare them, services and
//! destinations by key, so two snapshots of the same table differ only in `created_at`. The
//! `checksum` is the SHA-256 of the canonical content: the compact JSON of everything except
//! `created_at` and `checksum`, so it is the same for the same table whenever it was taken.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{
    ipvs::Timeouts,
    model::{Destination, Service, ServiceKey},
};

/// The version of the document layout; a reader refuses any other.
pub const SCHEMA_VERSION: u32 = 1;

/// A snapshot as written to and read from a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub schema_version: u32,
    /// The node it was taken on (`node.name`, default the host name).
    pub node: String,
    /// RFC 3339, UTC, whole seconds: `2026-11-25T22:15:00Z`.
    pub created_at: String,
    pub timeouts: SnapshotTimeouts,
    /// Ordered by service key.
    pub services: Vec<SnapshotService>,
    /// `sha256:` and the lowercase hex SHA-256 of [`Snapshot::canonical_content`].
    pub checksum: String,
}

/// The kernel's connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotTimeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

impl From<Timeouts> for SnapshotTimeouts {
    fn from(t: Timeouts) -> Self {
        Self { tcp: t.tcp, tcp_fin: t.tcp_fin, udp: t.udp }
    }
}

impl From<SnapshotTimeouts> for Timeouts {
    fn from(t: SnapshotTimeouts) -> Self {
        Self { tcp: t.tcp, tcp_fin: t.tcp_fin, udp: t.udp }
    }
}

/// A service with its destinations as a list ordered by key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotService {
    pub key: ServiceKey,
    pub scheduler: String,
    pub persistence: Option<u32>,
    pub persistence_netmask: Option<u8>,
    /// Ordered by destination key.
    pub destinations: Vec<Destination>,
}

/// The part the checksum covers, in the document's field order.
#[derive(Serialize)]
struct Content<'a> {
    schema_version: u32,
    node: &'a str,
    timeouts: SnapshotTimeouts,
    services: &'a [SnapshotService],
}

/// Why a snapshot document was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not JSON, or not this document; serde_json's message names line and column.
    #[error("parse error: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("schema version {found} is not supported (this libraflux reads version {SCHEMA_VERSION})")]
    Version { found: u32 },
    #[error("checksum mismatch (the file says {recorded}, its content hashes to {computed})")]
    Checksum { recorded: String, computed: String },
    #[error("{0}")]
    Invalid(String),
}

impl Snapshot {
    /// A snapshot of `services` (the whole table, by key) and `timeouts`, with its checksum.
    pub fn new(
        node: &str,
        created_at: String,
        timeouts: Timeouts,
        services: &BTreeMap<ServiceKey, Service>,
    ) -> Self {
        let services = services
            .values()
            .map(|service| SnapshotService {
                key: service.key,
                scheduler: service.scheduler.clone(),
                persistence: service.persistence,
                persistence_netmask: service.persistence_netmask,
                destinations: service.destinations.values().copied().collect(),
            })
            .collect();
        let mut snapshot = Self {
            schema_version: SCHEMA_VERSION,
            node: node.to_owned(),
            created_at,
            timeouts: timeouts.into(),
            services,
            checksum: String::new(),
        };
        snapshot.checksum = snapshot.computed_checksum();
        snapshot
    }

    /// The bytes the checksum covers: compact JSON of everything but `created_at` and `checksum`.
    pub fn canonical_content(&self) -> Vec<u8> {
        let content = Content {
            schema_version: self.schema_version,
            node: &self.node,
            timeouts: self.timeouts,
            services: &self.services,
        };
        serde_json::to_vec(&content).expect("snapshot content serialises")
    }

    pub fn computed_checksum(&self) -> String {
        let digest = Sha256::digest(self.canonical_content());
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        format!("sha256:{hex}")
    }

    /// The file's bytes: pretty JSON (one field per line), ending in a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("snapshot serialises");
        bytes.push(b'\n');
        bytes
    }

    /// Parses and verifies a document: the schema version, the checksum, and the key order
    /// (a hand-edited file whose checksum was fixed up must still be well formed).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let snapshot: Self = serde_json::from_slice(bytes)?;
        if snapshot.schema_version != SCHEMA_VERSION {
            return Err(SnapshotError::Version { found: snapshot.schema_version });
        }
        let computed = snapshot.computed_checksum();
        if computed != snapshot.checksum {
            return Err(SnapshotError::Checksum { recorded: snapshot.checksum, computed });
        }
        for pair in snapshot.services.windows(2) {
            if pair[0].key >= pair[1].key {
                return Err(SnapshotError::Invalid(format!(
                    "services are not in key order: {} before {}",
                    pair[0].key, pair[1].key
                )));
            }
        }
        for service in &snapshot.services {
            for pair in service.destinations.windows(2) {
                if pair[0].key >= pair[1].key {
                    return Err(SnapshotError::Invalid(format!(
                        "service {}: destinations are not in key order: {} before {}",
                        service.key, pair[0].key, pair[1].key
                    )));
                }
            }
        }
        Ok(snapshot)
    }

    /// The services as the planner's desired state.
    pub fn desired(&self) -> BTreeMap<ServiceKey, Service> {
        self.services
            .iter()
            .map(|service| {
                let destinations = service.destinations.iter().map(|dest| (dest.key, *dest)).collect();
                let model = Service {
                    key: service.key,
                    scheduler: service.scheduler.clone(),
                    persistence: service.persistence,
                    persistence_netmask: service.persistence_netmask,
                    destinations,
                };
                (service.key, model)
            })
            .collect()
    }

    pub fn destination_count(&self) -> usize {
        self.services.iter().map(|service| service.destinations.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DestKey, Forwarding};

    fn table() -> BTreeMap<ServiceKey, Service> {
        let mut services = BTreeMap::new();
        for (key, scheduler, persistence) in
            [("udp:10.0.0.1:53", "rr", None), ("tcp:10.0.0.1:80", "wrr", Some(300))]
        {
            let key: ServiceKey = key.parse().unwrap();
            let mut destinations = BTreeMap::new();
            for (dest, weight) in [("10.0.1.2:8080", 50), ("10.0.1.1:8080", 100)] {
                let dest: DestKey = dest.parse().unwrap();
                destinations.insert(
                    dest,
                    Destination {
                        key: dest,
                        weight,
                        forwarding: Forwarding::Nat,
                        upper_threshold: 0,
                        lower_threshold: 0,
                    },
                );
            }
            let persistence_netmask = persistence.map(|_| 32);
            let scheduler = scheduler.to_owned();
            services.insert(key, Service { key, scheduler, persistence, persistence_netmask, destinations });
        }
        services
    }

    fn timeouts() -> Timeouts {
        Timeouts { tcp: 900, tcp_fin: 120, udp: 300 }
    }

    const PINNED: &str = r#"{
  "schema_version": 1,
  "node": "lb-a",
  "created_at": "2026-11-25T22:15:00Z",
  "timeouts": {
    "tcp": 900,
    "tcp_fin": 120,
    "udp": 300
  },
  "services": [
    {
      "key": "tcp:10.0.0.1:80",
      "scheduler": "wrr",
      "persistence": 300,
      "persistence_netmask": 32,
      "destinations": [
        {
          "key": "10.0.1.1:8080",
          "weight": 100,
          "forwarding": "nat",
          "upper_threshold": 0,
          "lower_threshold": 0
        },
        {
          "key": "10.0.1.2:8080",
          "weight": 50,
          "forwarding": "nat",
          "upper_threshold": 0,
          "lower_threshold": 0
        }
      ]
    },
    {
      "key": "udp:10.0.0.1:53",
      "scheduler": "rr",
      "persistence": null,
      "persistence_netmask": null,
      "destinations": [
        {
          "key": "10.0.1.1:8080",
          "weight": 100,
          "forwarding": "nat",
          "upper_threshold": 0,
          "lower_threshold": 0
        },
        {
          "key": "10.0.1.2:8080",
          "weight": 50,
          "forwarding": "nat",
          "upper_threshold": 0,
          "lower_threshold": 0
        }
      ]
    }
  ],
  "checksum": "CHECKSUM"
}
"#;

    #[test]
    fn the_document_is_pinned_byte_for_byte() {
        let snapshot = Snapshot::new("lb-a", "2026-11-25T22:15:00Z".into(), timeouts(), &table());
        let expected = PINNED.replace("CHECKSUM", &snapshot.computed_checksum());
        assert_eq!(String::from_utf8(snapshot.to_bytes()).unwrap(), expected);
        assert_eq!(
            String::from_utf8(snapshot.canonical_content()).unwrap(),
            r#"{"schema_version":1,"node":"lb-a","timeouts":{"tcp":900,"tcp_fin":120,"udp":300},"services":[{"key":"tcp:10.0.0.1:80","scheduler":"wrr","persistence":300,"persistence_netmask":32,"destinations":[{"key":"10.0.1.1:8080","weight":100,"forwarding":"nat","upper_threshold":0,"lower_threshold":0},{"key":"10.0.1.2:8080","weight":50,"forwarding":"nat","upper_threshold":0,"lower_threshold":0}]},{"key":"udp:10.0.0.1:53","scheduler":"rr","persistence":null,"persistence_netmask":null,"destinations":[{"key":"10.0.1.1:8080","weight":100,"forwarding":"nat","upper_threshold":0,"lower_threshold":0},{"key":"10.0.1.2:8080","weight":50,"forwarding":"nat","upper_threshold":0,"lower_threshold":0}]}]}"#
        );
        assert!(snapshot.checksum.starts_with("sha256:") && snapshot.checksum.len() == 7 + 64);
    }

    #[test]
    fn the_checksum_ignores_the_time_and_round_trips() {
        let a = Snapshot::new("lb-a", "2026-11-25T22:15:00Z".into(), timeouts(), &table());
        let b = Snapshot::new("lb-a", "2027-01-01T00:00:00Z".into(), timeouts(), &table());
        assert_eq!(a.checksum, b.checksum);
        let read = Snapshot::from_bytes(&a.to_bytes()).unwrap();
        assert_eq!(read, a);
        assert_eq!(read.desired(), table());
    }

    #[test]
    fn a_tampered_document_is_refused() {
        let snapshot = Snapshot::new("lb-a", "2026-11-25T22:15:00Z".into(), timeouts(), &table());
        let text = String::from_utf8(snapshot.to_bytes()).unwrap();
        let tampered = text.replacen("\"weight\": 50", "\"weight\": 51", 1);
        let err = Snapshot::from_bytes(tampered.as_bytes()).unwrap_err();
        assert!(matches!(err, SnapshotError::Checksum { .. }), "{err}");
        assert!(err.to_string().starts_with("checksum mismatch"), "{err}");

        // Changing the time alone keeps it valid: the time is not covered.
        let retimed = text.replace("2026-11-25T22:15:00Z", "2026-11-25T22:16:00Z");
        Snapshot::from_bytes(retimed.as_bytes()).unwrap();

        let err = Snapshot::from_bytes(&text.as_bytes()[..40]).unwrap_err();
        assert_eq!(err.to_string(), "parse error: EOF while parsing a string at line 3 column 15");

        let unknown = text.replacen("\"node\"", "\"extra\": 1,\n  \"node\"", 1);
        let err = Snapshot::from_bytes(unknown.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
    }
}
