//! The kernel-neutral model of what IPVS holds: services and their destinations (backends),
//! named by the identity keys every listing, plan and snapshot is ordered by.
//!
//! Service key: `{protocol}:{address}:{port}` (`tcp:192.168.94.250:443`, IPv6 in brackets:
//! `tcp:[2001:db8::1]:443`) or `fwmark:{mark}` (`fwmark:{mark}:v6` for an IPv6 fwmark service).
//! Destination key: `{address}:{port}`.

use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Serialize};

/// Transport protocol of an address-based service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub const ALL: [Self; 3] = [Self::Tcp, Self::Udp, Self::Sctp];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }

    /// The IP protocol number (`IPPROTO_*`).
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }

    pub const fn from_number(number: u8) -> Option<Self> {
        match number {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            132 => Some(Self::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "sctp" => Ok(Self::Sctp),
            _ => Err(KeyError(format!("unknown protocol {s:?} (expected tcp, udp or sctp)"))),
        }
    }
}

/// Address family of a firewall-mark service (address-based services carry it in the address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

/// The identity of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceKey {
    Addr { protocol: Protocol, addr: IpAddr, port: u16 },
    Fwmark { mark: u32, family: Family },
}

impl ServiceKey {
    /// The VIP of an address service; a firewall-mark service has none.
    pub const fn vip(&self) -> Option<IpAddr> {
        match self {
            Self::Addr { addr, .. } => Some(*addr),
            Self::Fwmark { .. } => None,
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr { protocol, addr, port } => write!(f, "{protocol}:{}", DestKey::new(*addr, *port)),
            Self::Fwmark { mark, family: Family::V4 } => write!(f, "fwmark:{mark}"),
            Self::Fwmark { mark, family: Family::V6 } => write!(f, "fwmark:{mark}:v6"),
        }
    }
}

impl FromStr for ServiceKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (head, rest) = s.split_once(':').ok_or_else(|| {
            KeyError(format!("{s:?} is not a service key (like tcp:10.0.0.1:80 or fwmark:17)"))
        })?;
        if head == "fwmark" {
            let (mark, family) = match rest.strip_suffix(":v6") {
                Some(mark) => (mark, Family::V6),
                None => (rest, Family::V4),
            };
            let mark = mark
                .parse()
                .map_err(|_| KeyError(format!("{s:?}: firewall mark {mark:?} is not a number")))?;
            return Ok(Self::Fwmark { mark, family });
        }
        let protocol = head.parse()?;
        let DestKey { addr, port } = rest.parse()?;
        Ok(Self::Addr { protocol, addr, port })
    }
}

impl Serialize for ServiceKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ServiceKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The identity of a destination (backend) within a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DestKey {
    pub addr: IpAddr,
    pub port: u16,
}

impl DestKey {
    pub const fn new(addr: IpAddr, port: u16) -> Self {
        Self { addr, port }
    }
}

impl fmt::Display for DestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(addr) => write!(f, "{addr}:{}", self.port),
            IpAddr::V6(addr) => write!(f, "[{addr}]:{}", self.port),
        }
    }
}

impl FromStr for DestKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let socket: std::net::SocketAddr =
            s.parse().map_err(|_| KeyError(format!("{s:?} is not an address:port (IPv6 as [addr]:port)")))?;
        Ok(Self::new(socket.ip(), socket.port()))
    }
}

impl Serialize for DestKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DestKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How IPVS forwards packets to a destination (`IP_VS_CONN_F_FWD_MASK` values in ip_vs.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// Masquerading (`IP_VS_CONN_F_MASQ`): the director rewrites the destination.
    Nat,
    /// Direct routing (`IP_VS_CONN_F_DROUTE`): the backend holds the VIP and replies directly.
    Dr,
    /// IP-in-IP tunnelling (`IP_VS_CONN_F_TUNNEL`).
    Tunnel,
    /// Local node (`IP_VS_CONN_F_LOCALNODE`): only ever read from the kernel, never configured.
    Local,
}

impl Forwarding {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Nat => "nat",
            Self::Dr => "dr",
            Self::Tunnel => "tunnel",
            Self::Local => "local",
        }
    }
}

impl fmt::Display for Forwarding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A virtual service as IPVS holds it, with its destinations ordered by key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Service {
    pub key: ServiceKey,
    /// Scheduler name as the kernel knows it (`rr`, `wrr`, `mh`, ...).
    pub scheduler: String,
    /// Persistence timeout in seconds (`IP_VS_SVC_F_PERSISTENT`); `None` when not persistent.
    pub persistence: Option<u32>,
    /// Persistence netmask (IPv4 dotted mask as a prefix length, IPv6 prefix length).
    pub persistence_netmask: Option<u8>,
    pub destinations: std::collections::BTreeMap<DestKey, Destination>,
}

/// A destination (backend) of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Destination {
    pub key: DestKey,
    pub weight: u32,
    pub forwarding: Forwarding,
    /// Connection thresholds; 0 means none.
    pub upper_threshold: u32,
    pub lower_threshold: u32,
}

impl Service {
    /// A service without persistence or destinations.
    pub fn new(key: ServiceKey, scheduler: &str) -> Self {
        Self {
            key,
            scheduler: scheduler.to_owned(),
            persistence: None,
            persistence_netmask: None,
            destinations: std::collections::BTreeMap::new(),
        }
    }

    /// This service with `destinations` added (by key).
    #[must_use]
    pub fn with_destinations(mut self, destinations: impl IntoIterator<Item = Destination>) -> Self {
        self.destinations.extend(destinations.into_iter().map(|dest| (dest.key, dest)));
        self
    }
}

impl Destination {
    /// A destination without connection thresholds.
    pub const fn new(key: DestKey, weight: u32, forwarding: Forwarding) -> Self {
        Self { key, weight, forwarding, upper_threshold: 0, lower_threshold: 0 }
    }
}

/// A key that does not parse; the message says what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_keys_print_and_parse_back() {
        for text in ["tcp:192.168.94.250:443", "udp:[2001:db8::1]:53", "fwmark:17", "fwmark:17:v6"] {
            let key: ServiceKey = text.parse().unwrap();
            assert_eq!(key.to_string(), text);
        }
    }

    #[test]
    fn service_keys_order_numerically_by_protocol_address_port() {
        let mut keys: Vec<ServiceKey> =
            ["tcp:10.0.0.10:80", "udp:10.0.0.1:53", "tcp:10.0.0.9:80", "tcp:10.0.0.9:443"]
                .iter()
                .map(|text| text.parse().unwrap())
                .collect();
        keys.sort();
        let printed: Vec<String> = keys.iter().map(ToString::to_string).collect();
        assert_eq!(printed, ["tcp:10.0.0.9:80", "tcp:10.0.0.9:443", "tcp:10.0.0.10:80", "udp:10.0.0.1:53"]);
    }

    #[test]
    fn bad_keys_say_what_was_expected() {
        let err = "http:10.0.0.1:80".parse::<ServiceKey>().unwrap_err();
        assert!(err.to_string().contains("unknown protocol \"http\""), "{err}");
        let err = "tcp:10.0.0.1".parse::<ServiceKey>().unwrap_err();
        assert!(err.to_string().contains("is not an address:port"), "{err}");
    }
}
