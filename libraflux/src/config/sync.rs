//! The `sync:` section: the kernel's IPVS connection sync daemon that LibraFlux runs, so that the
//! standby of an HA pair knows the active node's connections (docs/configuration.md).

use std::net::IpAddr;

use super::{
    decode::{Diagnostics, Field},
    keys::{Default, Key, Section, Shape},
    schema::{INTERFACE_NAME, clean, is_interface_name},
};
use crate::ipvs::{
    SyncDaemon, SyncState,
    sync::{DEFAULT_GROUP, DEFAULT_PORT, DEFAULT_TTL},
};

/// `sync:` of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    /// The interface the sync messages go out on (master) and are received on (backup).
    pub interface: String,
    /// Both nodes of a pair use the same.
    pub sync_id: u8,
    /// A multicast group, IPv4 or IPv6.
    pub group: IpAddr,
    pub port: u16,
    pub ttl: u8,
    /// UDP payload size of the sync messages; `None`: the kernel's, from the interface's MTU.
    pub max_len: Option<u16>,
    /// The role to start in when the kernel runs no sync daemon with these parameters.
    pub start_as: SyncState,
}

impl SyncConfig {
    /// The daemon these parameters describe, in `state`.
    pub fn daemon(&self, state: SyncState) -> SyncDaemon {
        SyncDaemon {
            state,
            interface: self.interface.clone(),
            sync_id: self.sync_id,
            group: Some(self.group),
            port: Some(self.port),
            ttl: Some(self.ttl),
            max_len: self.max_len,
        }
    }
}

/// `sync:` with only `interface` and sync id 1, for tests.
#[cfg(test)]
pub(crate) fn example(interface: &str, start_as: SyncState) -> SyncConfig {
    SyncConfig {
        interface: interface.to_owned(),
        sync_id: 1,
        group: IpAddr::V4(DEFAULT_GROUP),
        port: DEFAULT_PORT,
        ttl: DEFAULT_TTL,
        max_len: None,
        start_as,
    }
}

pub(super) const SYNC: Section = Section {
    context: "sync",
    doc: "The kernel's IPVS connection sync daemon that LibraFlux runs for an HA pair.",
    keys: &[&INTERFACE, &SYNC_ID, &GROUP, &PORT, &TTL, &MAX_LEN, &START_AS],
};

const INTERFACE: Key = Key::required(
    "interface",
    Shape::Text(INTERFACE_NAME),
    "The interface the master sends sync messages on and the backup receives them on.",
);
const SYNC_ID: Key = Key::defaults_to(
    "sync_id",
    Shape::Integer { min: 0, max: 255 },
    Default::Integer(0),
    "Both nodes of a pair use the same; a backup with 0 takes every sync id.",
);
const GROUP: Key = Key::defaults_to(
    "group",
    Shape::MulticastIp,
    Default::Ip(IpAddr::V4(DEFAULT_GROUP)),
    "The multicast group, IPv4 (224.0.0.0/4) or IPv6 (ff00::/8).",
);
const PORT: Key = Key::defaults_to(
    "port",
    Shape::Integer { min: 1, max: 65535 },
    Default::Integer(DEFAULT_PORT as u64),
    "The UDP port of the group.",
);
const TTL: Key = Key::defaults_to(
    "ttl",
    Shape::Integer { min: 1, max: 255 },
    Default::Integer(DEFAULT_TTL as u64),
    "The multicast TTL.",
);
/// The smallest `max_len` the kernel keeps as given for both roles (it raises a backup's to
/// 1024); the largest fits a UDP datagram over IPv4 (over IPv6: 20 bytes less, checked apart).
const MAX_LEN: Key = Key::optional(
    "max_len",
    Shape::Integer { min: 1024, max: 65535 - IPV4_HEADERS },
    "UDP payload size of a sync message (at most 65487 with an IPv6 group); default: the kernel's.",
);
const START_AS: Key = Key::defaults_to(
    "start_as",
    Shape::Choice(&[SyncState::Backup.as_str(), SyncState::Master.as_str()]),
    Default::Word(SyncState::Backup.as_str()),
    "The role to start in when the kernel runs no sync daemon with these parameters.",
);

const IPV4_HEADERS: u64 = 20 + 8;
const IPV6_HEADERS: u64 = 40 + 8;

pub(super) fn sync(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<SyncConfig> {
    let map = d.section(field.value, field.position(), &SYNC)?;
    let interface = INTERFACE.field(d, &map);
    clean(d, |d| {
        let interface = interface.and_then(|field| {
            let name = d.string(field)?;
            if !is_interface_name(name) {
                d.error(field.position(), format!("sync.interface: {name:?} is not an interface name"));
            }
            Some(name.to_owned())
        });
        let sync_id = SYNC_ID.integer_or_default(d, &map);
        let group = map.get(GROUP.name).map_or(Some(IpAddr::V4(DEFAULT_GROUP)), |field| {
            let group = d.ip(field)?;
            if !group.is_multicast() {
                d.error(
                    field.position(),
                    format!("sync.group: {group} is not a multicast address (224.0.0.0/4 or ff00::/8)"),
                );
            }
            Some(group)
        });
        let port = PORT.integer_or_default(d, &map);
        let ttl = TTL.integer_or_default(d, &map);
        // The kernel clamps a length to what fits a UDP datagram over the group's family: one it
        // would change could never be seen running as configured.
        let headers = if group.is_some_and(|group| group.is_ipv6()) { IPV6_HEADERS } else { IPV4_HEADERS };
        let Shape::Integer { min, .. } = MAX_LEN.shape else { unreachable!("max_len is an integer") };
        let max_len = map.get(MAX_LEN.name).map(|field| d.integer(field, min, 65535 - headers));
        let start_as = START_AS.choice_or_default(d, &map);
        SyncConfig {
            interface: interface.unwrap_or_default(),
            sync_id: sync_id.unwrap_or_default(),
            group: group.unwrap_or(IpAddr::V4(DEFAULT_GROUP)),
            port: port.unwrap_or(DEFAULT_PORT),
            ttl: ttl.unwrap_or(DEFAULT_TTL),
            max_len: max_len.flatten(),
            start_as: if start_as == Some(SyncState::Master.as_str()) {
                SyncState::Master
            } else {
                SyncState::Backup
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Source, validate};

    fn load(text: &str) -> Result<Option<SyncConfig>, String> {
        validate(&[Source::new("/etc/libraflux/config.yaml", text)], "lb-a")
            .map(|config| config.sync)
            .map_err(|errors| errors.to_string())
    }

    #[test]
    fn only_the_interface_is_required() {
        let sync = load("sync:\n  interface: eth1\n").unwrap().expect("a sync section");
        assert_eq!(
            sync,
            SyncConfig {
                interface: "eth1".to_owned(),
                sync_id: 0,
                group: "224.0.0.81".parse().unwrap(),
                port: 8848,
                ttl: 1,
                max_len: None,
                start_as: SyncState::Backup,
            }
        );
        assert_eq!(load("services: []\n").unwrap(), None, "no section, no sync");
        let full = "sync:\n  interface: eth1\n  sync_id: 7\n  group: ff02::81\n  port: 8850\n  ttl: 3\n  \
                    max_len: 1400\n  start_as: master\n";
        let sync = load(full).unwrap().unwrap();
        assert_eq!((sync.sync_id, sync.port, sync.ttl, sync.max_len), (7, 8850, 3, Some(1400)));
        assert_eq!(sync.start_as, SyncState::Master);
        assert_eq!(sync.daemon(SyncState::Backup).group, Some("ff02::81".parse().unwrap()));
    }

    #[test]
    fn every_bad_value_is_an_error_at_its_position() {
        let errors = load(
            "sync:\n  sync_id: 256\n  group: 10.0.0.1\n  port: 0\n  ttl: 0\n  max_len: 100\n  \
             start_as: primary\n  mode: active\n",
        )
        .unwrap_err();
        let expected = [
            "config.yaml:2:3: missing required key \"interface\" in sync",
            "config.yaml:2:12: sync.sync_id: expected an integer from 0 to 255, found \"256\"",
            "config.yaml:3:10: sync.group: 10.0.0.1 is not a multicast address (224.0.0.0/4 or ff00::/8)",
            "config.yaml:4:9: sync.port: expected an integer from 1 to 65535, found \"0\"",
            "config.yaml:5:8: sync.ttl: expected an integer from 1 to 255, found \"0\"",
            "config.yaml:6:12: sync.max_len: expected an integer from 1024 to 65507, found \"100\"",
            "config.yaml:7:13: sync.start_as: unknown value \"primary\"; expected one of: backup, master",
            "config.yaml:8:3: unknown key \"mode\" in sync;",
        ];
        for line in expected {
            assert!(errors.contains(line), "{line}\nnot in:\n{errors}");
        }
        let errors = load("sync:\n  interface: eth1/2\n  group: ff02::81\n  max_len: 65500\n").unwrap_err();
        assert!(errors.contains(":2:14: sync.interface: \"eth1/2\" is not an interface name"), "{errors}");
        assert!(errors.contains(":4:12: sync.max_len: expected an integer from 1024 to 65487"), "{errors}");
        assert!(load("sync: eth1\n").unwrap_err().contains(":1:7: sync: expected a mapping"));
    }
}
