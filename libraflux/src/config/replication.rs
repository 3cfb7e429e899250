//! The `replication:` section: this node's part in a pair that replicates `config.d` from a
//! primary to a secondary by content-addressed bundles (docs/ha.md).

use std::{net::SocketAddr, path::PathBuf};

use super::{
    decode::{Diagnostics, Field},
    keys::{CREDENTIAL_PATH, Key, Section, Shape},
    schema::clean,
};

/// `replication:` of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replication {
    pub role: Role,
    /// Where this node accepts its peer's connections: announcements on a secondary, bundle
    /// fetches on a primary.
    pub listen: SocketAddr,
    /// The other node's `listen`.
    pub peer: SocketAddr,
    /// One or two shared keys (raw bytes, 32 to 64 per file): the first signs, any verifies, so
    /// that a key can be rotated one node at a time. A relative path names a systemd credential
    /// (`LoadCredential=`), read from `$CREDENTIALS_DIRECTORY`.
    pub key_files: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Makes a bundle of its `config.d` after each successful reload and announces it.
    Primary,
    /// Runs its own `config.yaml` with the primary's `config.d`, in place of its own.
    Secondary,
}

impl Role {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Secondary => "secondary",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

const ADDRESS: &str = "an address:port like 192.0.2.1:9470 ([2001:db8::1]:9470 for IPv6)";

pub(super) const REPLICATION: Section = Section {
    context: "replication",
    doc: "This node's part in a pair that replicates config.d from a primary to a secondary (docs/ha.md).",
    keys: &[&ROLE, &LISTEN, &PEER, &KEY_FILES],
};

const ROLE: Key = Key::required(
    "role",
    Shape::Choice(&[Role::Primary.name(), Role::Secondary.name()]),
    "primary: bundles its config.d and announces it; secondary: runs the primary's config.d.",
);
const LISTEN: Key = Key::required(
    "listen",
    Shape::SocketAddr,
    "address:port where this node accepts its peer's connections.",
);
const PEER: Key = Key::required("peer", Shape::SocketAddr, "The other node's listen address.");
/// One or two paths: absolute, or a bare file name (see [`key_files`]).
const KEY_FILES: Key = Key::required(
    "key_files",
    Shape::List { item: &Shape::Text(CREDENTIAL_PATH), min: 1, max: Some(2) },
    "One shared key file, or two while a key is rotated: an absolute path, or the bare name of a systemd credential.",
);

pub(super) fn replication(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<Replication> {
    let map = d.section(field.value, field.position(), &REPLICATION)?;
    clean(d, |d| {
        let role = ROLE.field(d, &map).and_then(|field| ROLE.choice(d, field));
        let listen = LISTEN.field(d, &map).and_then(|field| d.parsed::<SocketAddr>(field, ADDRESS));
        let peer = PEER.field(d, &map).and_then(|field| d.parsed::<SocketAddr>(field, ADDRESS));
        if let (Some(listen), Some(peer), Some(field)) = (listen, peer, map.get(PEER.name))
            && listen == peer
        {
            d.error(field.position(), "replication.peer: is this node's own listen address");
        }
        let key_files = KEY_FILES.field(d, &map).map(|field| key_files(d, field)).unwrap_or_default();
        Replication {
            role: if role == Some(Role::Secondary.name()) { Role::Secondary } else { Role::Primary },
            listen: listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            peer: peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            key_files,
        }
    })
}

/// One or two paths: absolute, or a bare file name (a systemd credential).
fn key_files(d: &mut Diagnostics<'_>, field: Field<'_>) -> Vec<PathBuf> {
    let items = d.sequence(field).unwrap_or_default();
    let Shape::List { min, max, .. } = KEY_FILES.shape else { unreachable!("key_files is a list") };
    if !(min..=max.unwrap_or(u64::MAX)).contains(&(items.len() as u64)) {
        let message = "replication.key_files: expected one key file, or two while a key is rotated";
        d.error(field.position(), message);
    }
    let mut paths = Vec::new();
    for item in items {
        let item = field.item(item);
        let Some(path) = d.credential_path(item) else { continue };
        if paths.iter().any(|known: &PathBuf| known.as_os_str() == path) {
            d.error(item.position(), format!("replication.key_files: {path:?} is listed twice"));
        } else {
            paths.push(PathBuf::from(path));
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::control::tests::load;

    #[test]
    fn a_full_section_decodes() {
        let config = load(
            "replication:\n  role: secondary\n  listen: 10.0.0.2:9470\n  peer: \"[2001:db8::1]:9470\"\n  key_files: [/etc/libraflux/replication.key, old.key]\n",
        )
        .unwrap();
        let replication = config.replication.expect("a replication section");
        assert_eq!(replication.role, Role::Secondary);
        assert_eq!(replication.listen, "10.0.0.2:9470".parse().unwrap());
        assert_eq!(replication.peer, "[2001:db8::1]:9470".parse().unwrap());
        assert_eq!(
            replication.key_files,
            [PathBuf::from("/etc/libraflux/replication.key"), "old.key".into()]
        );
        assert_eq!(load("services: []\n").unwrap().replication, None);
    }

    #[test]
    fn each_mistake_is_an_error_at_its_position() {
        let errors = load("replication:\n  role: leader\n  listen: 10.0.0.1\n  peer: 10.0.0.1:1\n  key_files: [a/b, x, x]\n  tls: on\n")
            .unwrap_err();
        for expected in [
            ":2:9: replication.role: unknown value \"leader\"",
            ":3:11: replication.listen: \"10.0.0.1\" is not an address:port",
            ":5:15: replication.key_files: \"a/b\" must be an absolute path",
            ":5:23: replication.key_files: \"x\" is listed twice",
            ":6:3: unknown key \"tls\" in replication",
        ] {
            assert!(errors.contains(expected), "{expected} in {errors}");
        }
        let errors = load("replication:\n  role: primary\n  listen: 10.0.0.1:1\n  peer: 10.0.0.1:1\n  key_files: [a, b, c]\n")
            .unwrap_err();
        assert!(errors.contains(":4:9: replication.peer: is this node's own listen address"), "{errors}");
        assert!(errors.contains(":5:14: replication.key_files: expected one key file, or two"), "{errors}");
        let errors = load("replication:\n  role: primary\n").unwrap_err();
        assert!(errors.contains(":2:3: missing required key \"listen\" in replication"), "{errors}");
    }
}
