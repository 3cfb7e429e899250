//! The `announce:` section: the VIPs this node announces over BGP through BIRD 2, and where
//! LibraFlux finds BIRD (docs/fleet.md). Node-local: it names this node's files and socket.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use super::{
    decode::{Diagnostics, Field},
    error::Position,
    keys::{Default, Key, Section, Shape, Text},
    schema::clean,
};

/// `announce:` of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    /// BIRD's control socket.
    pub socket: PathBuf,
    /// The file LibraFlux owns and BIRD's configuration includes: the routes of the VIPs announced.
    pub include: PathBuf,
    /// The least time between two changes of one VIP; a withdraw never waits (docs/fleet.md).
    pub hold_down: Duration,
    /// How long BIRD may take to answer `configure`.
    pub timeout: Duration,
    /// The VIPs to announce while their services serve, in key order, each once.
    pub vips: Vec<VipPolicy>,
}

/// One VIP of `announce.vips`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipPolicy {
    pub address: IpAddr,
    pub require: Require,
}

/// Which of a VIP's services must serve for it to be announced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Require {
    /// At least one service on the VIP has a serving backend.
    #[default]
    Any,
    /// Every service on the VIP has one.
    All,
}

impl Require {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::All => "all",
        }
    }
}

pub const DEFAULT_SOCKET: &str = "/run/bird/bird.ctl";
pub const DEFAULT_INCLUDE: &str = "/run/libraflux/bird-announce.conf";
pub const DEFAULT_HOLD_DOWN: Duration = Duration::from_secs(10);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What one file declares under `announce:`, with where each VIP was written: a VIP that no
/// service of the whole configuration has is an error at its place ([`super::validate`]).
#[derive(Clone, Debug)]
pub(super) struct AnnounceDecl {
    pub announce: Announce,
    pub vip_positions: Vec<(IpAddr, Option<Position>)>,
}

pub(super) const ANNOUNCE: Section = Section {
    context: "announce",
    doc: "VIPs this node announces over BGP through BIRD 2 while their services have serving backends \
          (docs/fleet.md).",
    keys: &[&DAEMON, &SOCKET, &INCLUDE, &HOLD_DOWN, &TIMEOUT, &VIPS],
};

const ABSOLUTE_PATH: Text = Text::matching("^/");

const DAEMON: Key = Key::defaults_to(
    "daemon",
    Shape::Choice(&["bird"]),
    Default::Word("bird"),
    "The routing daemon that speaks BGP: bird (BIRD 2, Debian's bird2).",
);
const SOCKET: Key = Key::defaults_to(
    "socket",
    Shape::Text(ABSOLUTE_PATH),
    Default::Word(DEFAULT_SOCKET),
    "BIRD's control socket; the daemon's user needs to be in its group (bird).",
);
const INCLUDE: Key = Key::defaults_to(
    "include",
    Shape::Text(ABSOLUTE_PATH),
    Default::Word(DEFAULT_INCLUDE),
    "The file LibraFlux owns and rewrites (atomically), included by BIRD's configuration: the static \
     protocols libraflux4 and libraflux6 with a route per announced VIP.",
);
const HOLD_DOWN: Key = Key::defaults_to(
    "hold_down",
    Shape::Duration,
    Default::Duration(DEFAULT_HOLD_DOWN),
    "The least time between two changes of one VIP: a withdrawn VIP is announced again this long \
     after its withdraw at the earliest. A withdraw never waits.",
);
const TIMEOUT: Key = Key::defaults_to(
    "timeout",
    Shape::Duration,
    Default::Duration(DEFAULT_TIMEOUT),
    "How long BIRD may take to answer a reconfigure; longer than 0s.",
);
const VIPS: Key = Key::required(
    "vips",
    Shape::List { item: &Shape::Mapping(&VIP), min: 1, max: None },
    "The VIPs to announce; each must be the VIP of a configured service.",
);

const VIP: Section = Section {
    context: "announce.vips",
    doc: "One VIP to announce while its services serve.",
    keys: &[&ADDRESS, &REQUIRE],
};

const ADDRESS: Key = Key::required("address", Shape::Ip, "The VIP, IPv4 or IPv6.");
const REQUIRE: Key = Key::defaults_to(
    "require",
    Shape::Choice(&["any", "all"]),
    Default::Word("any"),
    "any: announced while at least one of the VIP's services has a serving backend; all: while every one has.",
);

pub(super) fn announce(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<AnnounceDecl> {
    let map = d.section(field.value, field.position(), &ANNOUNCE)?;
    let vips = VIPS.field(d, &map);
    clean(d, |d| {
        DAEMON.choice_or_default(d, &map);
        let path = |d: &mut Diagnostics<'_>, key: &Key| -> PathBuf {
            let Some(field) = map.get(key.name) else { return key.default_word().into() };
            let text = d.string(field).unwrap_or_default();
            if !text.starts_with('/') {
                d.error(field.position(), format!("{}: {text:?} must be an absolute path", field.label()));
            }
            text.into()
        };
        let socket = path(d, &SOCKET);
        let include = path(d, &INCLUDE);
        let hold_down = HOLD_DOWN.duration_or_default(d, &map).unwrap_or_default();
        let timeout = TIMEOUT.duration_or_default(d, &map).unwrap_or_default();
        if timeout.is_zero() {
            let at = map.get(TIMEOUT.name).and_then(|field| field.position());
            d.error(at, "announce.timeout: must be longer than 0s");
        }
        let vip_positions = vips.map(|field| vip_list(d, field)).unwrap_or_default();
        let mut policies: Vec<VipPolicy> = vip_positions.iter().map(|(policy, _)| *policy).collect();
        policies.sort_by_key(|policy| policy.address);
        AnnounceDecl {
            announce: Announce { socket, include, hold_down, timeout, vips: policies },
            vip_positions: vip_positions.into_iter().map(|(policy, at)| (policy.address, at)).collect(),
        }
    })
}

/// `vips:`: at least one, each address once.
fn vip_list(d: &mut Diagnostics<'_>, field: Field<'_>) -> Vec<(VipPolicy, Option<Position>)> {
    let items = d.sequence(field).unwrap_or_default();
    if items.is_empty() {
        d.error(field.position(), "announce.vips: the list is empty; name at least one VIP");
    }
    let mut found: Vec<(VipPolicy, Option<Position>)> = Vec::new();
    for item in items {
        let item = field.item(item);
        let Some(map) = d.section(item.value, item.position(), &VIP) else { continue };
        let Some(address_field) = ADDRESS.field(d, &map) else { continue };
        let Some(address) = d.ip(address_field) else { continue };
        let require = match REQUIRE.choice_or_default(d, &map) {
            Some("all") => Require::All,
            _ => Require::Any,
        };
        let at = address_field.position();
        if found.iter().any(|(known, _)| known.address == address) {
            d.error(at, format!("announce.vips: {address} is listed twice"));
            continue;
        }
        found.push((VipPolicy { address, require }, at));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::control::tests::load;

    const SERVICES: &str = "services:
  - name: web
    protocol: tcp
    vip: 192.0.2.10
    port: 80
    scheduler: wrr
    backends: [{ address: 10.0.0.1 }]
  - name: web6
    protocol: tcp
    vip: 2001:db8::10
    port: 80
    scheduler: wrr
    backends: [{ address: 2001:db8:1::1 }]
";

    #[test]
    fn defaults_fill_everything_but_the_vips() {
        let config = load(&format!("announce:\n  vips:\n    - address: 192.0.2.10\n{SERVICES}")).unwrap();
        assert_eq!(
            config.announce,
            Some(Announce {
                socket: DEFAULT_SOCKET.into(),
                include: DEFAULT_INCLUDE.into(),
                hold_down: DEFAULT_HOLD_DOWN,
                timeout: DEFAULT_TIMEOUT,
                vips: vec![VipPolicy { address: "192.0.2.10".parse().unwrap(), require: Require::Any }],
            })
        );
        assert_eq!(load(SERVICES).unwrap().announce, None, "no section, nothing announced");
        let full = format!(
            "announce:\n  daemon: bird\n  socket: /run/b.ctl\n  include: /etc/bird/lf.conf\n  hold_down: 2s\n  \
             timeout: 3s\n  vips:\n    - address: 2001:db8::10\n      require: all\n    - address: 192.0.2.10\n{SERVICES}"
        );
        let announce = load(&full).unwrap().announce.unwrap();
        assert_eq!(
            (announce.socket.to_str(), announce.include.to_str()),
            (Some("/run/b.ctl"), Some("/etc/bird/lf.conf"))
        );
        assert_eq!((announce.hold_down, announce.timeout), (Duration::from_secs(2), Duration::from_secs(3)));
        let vips: Vec<(String, Require)> =
            announce.vips.iter().map(|vip| (vip.address.to_string(), vip.require)).collect();
        assert_eq!(
            vips,
            [("192.0.2.10".to_owned(), Require::Any), ("2001:db8::10".to_owned(), Require::All)]
        );
    }

    #[test]
    fn every_bad_value_is_an_error_at_its_position() {
        let text = format!(
            "announce:\n  daemon: frr\n  socket: bird.ctl\n  timeout: 0s\n  hold_down: soon\n  vips:\n    \
             - address: 192.0.2.10\n    - address: 192.0.2.10\n    - address: nowhere\n    \
             - address: 2001:db8::10\n      require: most\n  peer: x\n{SERVICES}"
        );
        let errors = load(&text).unwrap_err();
        let expected = [
            "config.yaml:2:11: announce.daemon: unknown value \"frr\"; expected one of: bird",
            "config.yaml:3:11: announce.socket: \"bird.ctl\" must be an absolute path",
            "config.yaml:4:12: announce.timeout: must be longer than 0s",
            "config.yaml:5:14: announce.hold_down: \"soon\" is not a duration",
            "config.yaml:8:16: announce.vips: 192.0.2.10 is listed twice",
            "config.yaml:9:16: announce.vips.address: \"nowhere\" is not an IPv4 or IPv6 address",
            "config.yaml:11:16: announce.vips.require: unknown value \"most\"; expected one of: any, all",
            "config.yaml:12:3: unknown key \"peer\" in announce;",
        ];
        for line in expected {
            assert!(errors.contains(line), "{line}\nnot in:\n{errors}");
        }
        // Checked across files, once the section itself is clean: a VIP of a service in config.d counts.
        let errors = load(&format!("announce:\n  vips:\n    - address: 192.0.2.99\n{SERVICES}")).unwrap_err();
        assert!(
            errors.contains(":3:16: announce.vips: 192.0.2.99 is the VIP of no configured service"),
            "{errors}"
        );
        let errors = load(&format!("announce:\n  vips: []\n{SERVICES}")).unwrap_err();
        assert!(errors.contains(":2:9: announce.vips: the list is empty"), "{errors}");
        let errors = load(&format!("announce: {{}}\n{SERVICES}")).unwrap_err();
        assert!(errors.contains("missing required key \"vips\" in announce"), "{errors}");
    }
}
