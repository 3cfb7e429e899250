//! Conversions between the wire messages and the model (`model::Service`, `model::Destination`)
//! plus the read-side statuses. What the kernel would refuse for being malformed is refused
//! here, before sending, with a reason.

use std::net::IpAddr;

use crate::{
    ipvs::{DestinationStatus, Op, ServiceStatus, Stats64},
    model::{DestKey, Destination, Family, Forwarding, Protocol, Service, ServiceKey},
};

use super::{
    constants::*,
    dest::DestAttr,
    message::{IpvsAttr, IpvsCmd, IpvsMessage},
    service::{ServiceAttr, ServiceFlags},
    stats::StatsAttr,
    value::InetAddr,
};

/// The wire message that carries out `op`.
pub fn request_for(op: &Op) -> Result<IpvsMessage, String> {
    let (cmd, attrs) = match op {
        Op::AddService(service) => (IpvsCmd::NewService, vec![IpvsAttr::Service(service_attrs(service)?)]),
        Op::UpdateService(service) => (IpvsCmd::SetService, vec![IpvsAttr::Service(service_attrs(service)?)]),
        Op::DeleteService(key) => (IpvsCmd::DelService, vec![IpvsAttr::Service(service_identity(key))]),
        Op::AddDest(key, dest) => (IpvsCmd::NewDest, service_and_dest(key, dest_attrs(dest))),
        Op::UpdateDest(key, dest) => (IpvsCmd::SetDest, service_and_dest(key, dest_attrs(dest))),
        Op::DeleteDest(key, dest) => (IpvsCmd::DelDest, service_and_dest(key, dest_identity(dest))),
    };
    Ok(IpvsMessage::new(cmd, attrs))
}

fn service_and_dest(key: &ServiceKey, dest: Vec<DestAttr>) -> Vec<IpvsAttr> {
    vec![IpvsAttr::Service(service_identity(key)), IpvsAttr::Dest(dest)]
}

/// The attributes that identify a service: what DEL_SERVICE and the DEST commands need.
pub fn service_identity(key: &ServiceKey) -> Vec<ServiceAttr> {
    match *key {
        ServiceKey::Addr { protocol, addr, port } => vec![
            ServiceAttr::Af(af_of_addr(addr)),
            ServiceAttr::Protocol(u16::from(protocol.number())),
            ServiceAttr::Addr(InetAddr::from_ip(addr)),
            ServiceAttr::Port(port),
        ],
        ServiceKey::Fwmark { mark, family } => {
            vec![ServiceAttr::Af(af_of(family)), ServiceAttr::Fwmark(mark)]
        }
    }
}

/// A full service specification, in the order ipvsadm sends it. Only the persistence flag is
/// in the mask, so flags this model does not manage (one-packet, scheduler flags) are kept.
fn service_attrs(service: &Service) -> Result<Vec<ServiceAttr>, String> {
    check_scheduler(&service.scheduler)?;
    let family = family_of_key(&service.key);
    let persistent = if service.persistence.is_some() { IP_VS_SVC_F_PERSISTENT } else { 0 };
    let mut attrs = service_identity(&service.key);
    attrs.extend([
        ServiceAttr::SchedName(service.scheduler.clone()),
        ServiceAttr::Flags(ServiceFlags { flags: persistent, mask: IP_VS_SVC_F_PERSISTENT }),
        ServiceAttr::Timeout(service.persistence.unwrap_or(0)),
        ServiceAttr::Netmask(netmask_bytes(family, service.persistence_netmask)?),
    ]);
    Ok(attrs)
}

fn check_scheduler(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() >= IP_VS_SCHEDNAME_MAXLEN || name.contains('\0') {
        return Err(format!(
            "scheduler name {name:?} must be 1 to {} bytes without NUL",
            IP_VS_SCHEDNAME_MAXLEN - 1
        ));
    }
    Ok(())
}

/// IPv4: the mask itself in network order; IPv6: the prefix length as a host-order u32
/// (see `ip_vs_add_service`, which checks `1 <= plen <= 128` on the raw value).
fn netmask_bytes(family: Family, prefix: Option<u8>) -> Result<[u8; 4], String> {
    match (family, prefix) {
        (Family::V4, prefix) => {
            let prefix = prefix.unwrap_or(32);
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            if prefix > 32 {
                return Err(format!("IPv4 persistence netmask /{prefix} is longer than 32"));
            }
            Ok(mask.to_be_bytes())
        }
        (Family::V6, prefix) => {
            let prefix = prefix.unwrap_or(128);
            if !(1..=128).contains(&prefix) {
                return Err(format!("IPv6 persistence netmask /{prefix} is not within 1..=128"));
            }
            Ok(u32::from(prefix).to_ne_bytes())
        }
    }
}

/// The inverse of [`netmask_bytes`]; the default (/32, /128) reads back as `None`.
fn netmask_prefix(family: Family, raw: [u8; 4]) -> Result<Option<u8>, String> {
    let prefix = match family {
        Family::V4 => {
            let mask = u32::from_be_bytes(raw);
            let prefix = mask.leading_ones();
            if mask.checked_shl(prefix).unwrap_or(0) != 0 {
                return Err(format!("IPv4 netmask {mask:#010x} is not a prefix"));
            }
            prefix
        }
        Family::V6 => u32::from_ne_bytes(raw),
    };
    match (family, prefix) {
        (Family::V4, 32) | (Family::V6, 128) => Ok(None),
        (_, prefix) => u8::try_from(prefix)
            .ok()
            .filter(|prefix| *prefix <= 128)
            .map(Some)
            .ok_or_else(|| format!("netmask prefix {prefix} is out of range")),
    }
}

/// A full destination, in the order ipvsadm sends it (tunnel attributes left out: the
/// kernel defaults them to IPIP, which is what the model's `Tunnel` means).
fn dest_attrs(dest: &Destination) -> Vec<DestAttr> {
    vec![
        DestAttr::Addr(InetAddr::from_ip(dest.key.addr)),
        DestAttr::Port(dest.key.port),
        DestAttr::FwdMethod(forwarding_flag(dest.forwarding)),
        DestAttr::Weight(dest.weight),
        DestAttr::UThresh(dest.upper_threshold),
        DestAttr::LThresh(dest.lower_threshold),
        DestAttr::AddrFamily(af_of_addr(dest.key.addr)),
    ]
}

fn dest_identity(key: &DestKey) -> Vec<DestAttr> {
    vec![
        DestAttr::Addr(InetAddr::from_ip(key.addr)),
        DestAttr::Port(key.port),
        DestAttr::AddrFamily(af_of_addr(key.addr)),
    ]
}

fn forwarding_flag(forwarding: Forwarding) -> u32 {
    match forwarding {
        Forwarding::Nat => IP_VS_CONN_F_MASQ,
        Forwarding::Local => IP_VS_CONN_F_LOCALNODE,
        Forwarding::Tunnel => IP_VS_CONN_F_TUNNEL,
        Forwarding::Dr => IP_VS_CONN_F_DROUTE,
    }
}

fn forwarding_of(flag: u32) -> Result<Forwarding, String> {
    match flag & IP_VS_CONN_F_FWD_MASK {
        IP_VS_CONN_F_MASQ => Ok(Forwarding::Nat),
        IP_VS_CONN_F_LOCALNODE => Ok(Forwarding::Local),
        IP_VS_CONN_F_TUNNEL => Ok(Forwarding::Tunnel),
        IP_VS_CONN_F_DROUTE => Ok(Forwarding::Dr),
        other => Err(format!("unknown forwarding method {other}")),
    }
}

fn af_of(family: Family) -> u16 {
    match family {
        Family::V4 => AF_INET,
        Family::V6 => AF_INET6,
    }
}

fn af_of_addr(addr: IpAddr) -> u16 {
    af_of(family_of_addr(addr))
}

fn family_of_addr(addr: IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

fn family_of_key(key: &ServiceKey) -> Family {
    match *key {
        ServiceKey::Addr { addr, .. } => family_of_addr(addr),
        ServiceKey::Fwmark { family, .. } => family,
    }
}

fn family_of_af(af: u16) -> Result<Family, String> {
    match af {
        AF_INET => Ok(Family::V4),
        AF_INET6 => Ok(Family::V6),
        other => Err(format!("unknown address family {other}")),
    }
}

fn ip_of(family: Family, addr: InetAddr) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(addr.to_ipv4()),
        Family::V6 => IpAddr::V6(addr.to_ipv6()),
    }
}

/// Reads a service from the attributes of a NEW_SERVICE message (a GET_SERVICE reply).
pub fn service_from_attrs(attrs: &[ServiceAttr]) -> Result<ServiceStatus, String> {
    let wire = WireService::collect(attrs);
    let family = family_of_af(wire.af.ok_or("service without IPVS_SVC_ATTR_AF")?)?;
    let key = wire.key(family)?;
    let persistent = wire.flags.flags & IP_VS_SVC_F_PERSISTENT != 0;
    let service = Service {
        key,
        scheduler: wire.scheduler.ok_or_else(|| format!("service {key} without a scheduler"))?,
        persistence: persistent.then_some(wire.timeout),
        persistence_netmask: netmask_prefix(family, wire.netmask)
            .map_err(|reason| format!("service {key}: {reason}"))?,
        destinations: Default::default(),
    };
    Ok(ServiceStatus {
        service,
        flags: wire.flags.flags,
        persistence_engine: wire.pe_name,
        stats: wire.stats,
        destinations: Default::default(),
    })
}

/// The service attributes, gathered; later duplicates win, as in the kernel's nla_parse.
#[derive(Default)]
struct WireService {
    af: Option<u16>,
    protocol: Option<u16>,
    addr: Option<InetAddr>,
    port: Option<u16>,
    fwmark: u32,
    scheduler: Option<String>,
    flags: ServiceFlags,
    timeout: u32,
    netmask: [u8; 4],
    pe_name: Option<String>,
    stats: Stats64,
}

impl WireService {
    fn collect(attrs: &[ServiceAttr]) -> Self {
        let mut wire = Self { netmask: [0xff; 4], ..Self::default() };
        let mut stats64 = None;
        for attr in attrs {
            match attr {
                ServiceAttr::Af(af) => wire.af = Some(*af),
                ServiceAttr::Protocol(protocol) => wire.protocol = Some(*protocol),
                ServiceAttr::Addr(addr) => wire.addr = Some(*addr),
                ServiceAttr::Port(port) => wire.port = Some(*port),
                ServiceAttr::Fwmark(mark) => wire.fwmark = *mark,
                ServiceAttr::SchedName(name) => wire.scheduler = Some(name.clone()),
                ServiceAttr::Flags(flags) => wire.flags = *flags,
                ServiceAttr::Timeout(timeout) => wire.timeout = *timeout,
                ServiceAttr::Netmask(raw) => wire.netmask = *raw,
                ServiceAttr::PeName(name) => wire.pe_name = Some(name.clone()),
                ServiceAttr::Stats(stats) if stats64.is_none() => wire.stats = stats_from(stats),
                ServiceAttr::Stats64(stats) => stats64 = Some(stats_from(stats)),
                ServiceAttr::Stats(_) | ServiceAttr::Other(_) => {}
            }
        }
        wire.stats = stats64.unwrap_or(wire.stats);
        wire
    }

    fn key(&self, family: Family) -> Result<ServiceKey, String> {
        if self.fwmark != 0 {
            return Ok(ServiceKey::Fwmark { mark: self.fwmark, family });
        }
        let (Some(protocol), Some(addr), Some(port)) = (self.protocol, self.addr, self.port) else {
            return Err("service with neither a firewall mark nor protocol, address and port".into());
        };
        let protocol = u8::try_from(protocol)
            .ok()
            .and_then(Protocol::from_number)
            .ok_or_else(|| format!("service with unsupported IP protocol {protocol}"))?;
        Ok(ServiceKey::Addr { protocol, addr: ip_of(family, addr), port })
    }
}

/// Reads a destination from the attributes of a NEW_DEST message (a GET_DEST reply). Old
/// kernels send no IPVS_DEST_ATTR_ADDR_FAMILY: the service's family applies then.
pub fn dest_from_attrs(attrs: &[DestAttr], service_family: Family) -> Result<DestinationStatus, String> {
    let mut wire = WireDest::default();
    for attr in attrs {
        wire.take(attr);
    }
    let family = wire.af.map(family_of_af).transpose()?.unwrap_or(service_family);
    let addr = ip_of(family, wire.addr.ok_or("destination without IPVS_DEST_ATTR_ADDR")?);
    let key = DestKey::new(addr, wire.port.ok_or("destination without IPVS_DEST_ATTR_PORT")?);
    let forwarding = wire.fwd.ok_or_else(|| format!("destination {key} without a forwarding method"))?;
    let destination = Destination {
        key,
        weight: wire.weight,
        forwarding: forwarding_of(forwarding).map_err(|reason| format!("destination {key}: {reason}"))?,
        upper_threshold: wire.u_thresh,
        lower_threshold: wire.l_thresh,
    };
    Ok(DestinationStatus {
        destination,
        active_connections: wire.active,
        inactive_connections: wire.inactive,
        persistent_connections: wire.persistent,
        stats: wire.stats64.unwrap_or(wire.stats),
    })
}

#[derive(Default)]
struct WireDest {
    addr: Option<InetAddr>,
    port: Option<u16>,
    af: Option<u16>,
    fwd: Option<u32>,
    weight: u32,
    u_thresh: u32,
    l_thresh: u32,
    active: u32,
    inactive: u32,
    persistent: u32,
    stats: Stats64,
    stats64: Option<Stats64>,
}

impl WireDest {
    fn take(&mut self, attr: &DestAttr) {
        match attr {
            DestAttr::Addr(addr) => self.addr = Some(*addr),
            DestAttr::Port(port) => self.port = Some(*port),
            DestAttr::AddrFamily(af) => self.af = Some(*af),
            DestAttr::FwdMethod(fwd) => self.fwd = Some(*fwd),
            DestAttr::Weight(weight) => self.weight = *weight,
            DestAttr::UThresh(value) => self.u_thresh = *value,
            DestAttr::LThresh(value) => self.l_thresh = *value,
            DestAttr::ActiveConns(value) => self.active = *value,
            DestAttr::InactConns(value) => self.inactive = *value,
            DestAttr::PersistConns(value) => self.persistent = *value,
            DestAttr::Stats(stats) => self.stats = stats_from(stats),
            DestAttr::Stats64(stats) => self.stats64 = Some(stats_from(stats)),
            DestAttr::TunType(_) | DestAttr::TunPort(_) | DestAttr::TunFlags(_) | DestAttr::Other(_) => {}
        }
    }
}

fn stats_from(attrs: &[StatsAttr]) -> Stats64 {
    let mut stats = Stats64::default();
    for attr in attrs {
        let (slot, value) = match attr {
            StatsAttr::Conns(c) => (&mut stats.connections, c),
            StatsAttr::InPkts(c) => (&mut stats.packets_in, c),
            StatsAttr::OutPkts(c) => (&mut stats.packets_out, c),
            StatsAttr::InBytes(c) => (&mut stats.bytes_in, c),
            StatsAttr::OutBytes(c) => (&mut stats.bytes_out, c),
            StatsAttr::Cps(c) => (&mut stats.connections_per_second, c),
            StatsAttr::InPps(c) => (&mut stats.packets_in_per_second, c),
            StatsAttr::OutPps(c) => (&mut stats.packets_out_per_second, c),
            StatsAttr::InBps(c) => (&mut stats.bytes_in_per_second, c),
            StatsAttr::OutBps(c) => (&mut stats.bytes_out_per_second, c),
            StatsAttr::Other(_) => continue,
        };
        *slot = value.get();
    }
    stats
}

/// The family a service's destinations default to.
pub(crate) fn service_family(key: &ServiceKey) -> Family {
    family_of_key(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_netmasks_travel_as_network_order_masks() {
        assert_eq!(netmask_bytes(Family::V4, None).unwrap(), [255, 255, 255, 255]);
        assert_eq!(netmask_bytes(Family::V4, Some(24)).unwrap(), [255, 255, 255, 0]);
        assert_eq!(netmask_bytes(Family::V4, Some(0)).unwrap(), [0, 0, 0, 0]);
        assert!(netmask_bytes(Family::V4, Some(33)).is_err());
        assert_eq!(netmask_prefix(Family::V4, [255, 255, 255, 0]).unwrap(), Some(24));
        assert_eq!(netmask_prefix(Family::V4, [255, 255, 255, 255]).unwrap(), None);
        assert_eq!(netmask_prefix(Family::V4, [0, 0, 0, 0]).unwrap(), Some(0));
        assert!(netmask_prefix(Family::V4, [255, 0, 255, 0]).is_err());
    }

    #[test]
    fn ipv6_netmasks_travel_as_host_order_prefix_lengths() {
        assert_eq!(netmask_bytes(Family::V6, None).unwrap(), 128u32.to_ne_bytes());
        assert_eq!(netmask_bytes(Family::V6, Some(64)).unwrap(), 64u32.to_ne_bytes());
        assert!(netmask_bytes(Family::V6, Some(0)).is_err());
        assert_eq!(netmask_prefix(Family::V6, 64u32.to_ne_bytes()).unwrap(), Some(64));
        assert_eq!(netmask_prefix(Family::V6, 128u32.to_ne_bytes()).unwrap(), None);
        assert!(netmask_prefix(Family::V6, 129u32.to_ne_bytes()).is_err());
    }

    #[test]
    fn every_forwarding_method_maps_back() {
        for forwarding in [Forwarding::Nat, Forwarding::Dr, Forwarding::Tunnel, Forwarding::Local] {
            assert_eq!(forwarding_of(forwarding_flag(forwarding)).unwrap(), forwarding);
        }
        assert!(forwarding_of(4).is_err());
    }

    #[test]
    fn scheduler_names_must_fit_the_kernel_buffer() {
        assert!(check_scheduler("wrr").is_ok());
        assert!(check_scheduler("").is_err());
        assert!(check_scheduler("a-very-long-name").is_err());
        assert!(check_scheduler("w\0r").is_err());
    }
}
