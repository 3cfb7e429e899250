//! Attributes nested in `IPVS_CMD_ATTR_DAEMON`, and the sync daemon requests.
//!
//! Byte orders, from `ip_vs_genl_new_daemon` / `ip_vs_genl_fill_daemon` (ip_vs_ctl.c) and
//! ipvsadm's libipvs: STATE and SYNC_ID are host-order u32; SYNC_MAXLEN and MCAST_PORT are
//! host-order u16 (`nla_get_u16` / `nla_put_u16`: unlike the service and destination ports, the
//! kernel keeps this port in host order and converts it when it binds); MCAST_TTL is a u8;
//! MCAST_GROUP is an IPv4 address in network order (`nla_get_in_addr`), MCAST_GROUP6 the 16 bytes
//! of an `in6_addr`; MCAST_IFN is a NUL-terminated name of at most 15 bytes. The dump always sends
//! STATE, MCAST_IFN, SYNC_ID, SYNC_MAXLEN, MCAST_PORT and MCAST_TTL, and the group of its family.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{DecodeError, DefaultNla, Nla, NlaBuffer, Parseable};

use super::{
    constants::*,
    message::{IpvsAttr, IpvsCmd, IpvsMessage},
    value::{array, emit_nul_string, nul_string, nul_string_len, parse_nlas, u8_value, u16_ne, u32_ne},
};
use crate::ipvs::{SyncDaemon, SyncState};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonAttr {
    /// `IP_VS_STATE_MASTER` (1) or `IP_VS_STATE_BACKUP` (2).
    State(u32),
    /// The interface the sync messages go out on (master) or come in on (backup).
    McastIfn(String),
    /// 0..=255 in practice: the sync messages carry it in one byte.
    SyncId(u32),
    /// UDP payload size of the sync messages.
    SyncMaxlen(u16),
    McastGroup(Ipv4Addr),
    McastGroup6(Ipv6Addr),
    /// Host order on the wire too.
    McastPort(u16),
    McastTtl(u8),
    Other(DefaultNla),
}

impl DaemonAttr {
    pub(super) fn parse_all(value: &[u8]) -> Result<Vec<Self>, DecodeError> {
        parse_nlas(value, |nla| Self::parse(nla))
    }
}

impl Nla for DaemonAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::State(_) | Self::SyncId(_) | Self::McastGroup(_) => 4,
            Self::McastIfn(name) => nul_string_len(name),
            Self::SyncMaxlen(_) | Self::McastPort(_) => 2,
            Self::McastGroup6(_) => 16,
            Self::McastTtl(_) => 1,
            Self::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::State(_) => IPVS_DAEMON_ATTR_STATE,
            Self::McastIfn(_) => IPVS_DAEMON_ATTR_MCAST_IFN,
            Self::SyncId(_) => IPVS_DAEMON_ATTR_SYNC_ID,
            Self::SyncMaxlen(_) => IPVS_DAEMON_ATTR_SYNC_MAXLEN,
            Self::McastGroup(_) => IPVS_DAEMON_ATTR_MCAST_GROUP,
            Self::McastGroup6(_) => IPVS_DAEMON_ATTR_MCAST_GROUP6,
            Self::McastPort(_) => IPVS_DAEMON_ATTR_MCAST_PORT,
            Self::McastTtl(_) => IPVS_DAEMON_ATTR_MCAST_TTL,
            Self::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::State(value) | Self::SyncId(value) => buffer.copy_from_slice(&value.to_ne_bytes()),
            Self::McastIfn(name) => emit_nul_string(name, buffer),
            Self::SyncMaxlen(value) | Self::McastPort(value) => buffer.copy_from_slice(&value.to_ne_bytes()),
            Self::McastGroup(addr) => buffer.copy_from_slice(&addr.octets()),
            Self::McastGroup6(addr) => buffer.copy_from_slice(&addr.octets()),
            Self::McastTtl(value) => buffer.copy_from_slice(&[*value]),
            Self::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DaemonAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let value = buf.value();
        Ok(match buf.kind() {
            IPVS_DAEMON_ATTR_STATE => Self::State(u32_ne("IPVS_DAEMON_ATTR_STATE", value)?),
            IPVS_DAEMON_ATTR_MCAST_IFN => Self::McastIfn(nul_string("IPVS_DAEMON_ATTR_MCAST_IFN", value)?),
            IPVS_DAEMON_ATTR_SYNC_ID => Self::SyncId(u32_ne("IPVS_DAEMON_ATTR_SYNC_ID", value)?),
            IPVS_DAEMON_ATTR_SYNC_MAXLEN => Self::SyncMaxlen(u16_ne("IPVS_DAEMON_ATTR_SYNC_MAXLEN", value)?),
            IPVS_DAEMON_ATTR_MCAST_GROUP => {
                Self::McastGroup(Ipv4Addr::from(array::<4>("IPVS_DAEMON_ATTR_MCAST_GROUP", value)?))
            }
            IPVS_DAEMON_ATTR_MCAST_GROUP6 => {
                Self::McastGroup6(Ipv6Addr::from(array::<16>("IPVS_DAEMON_ATTR_MCAST_GROUP6", value)?))
            }
            IPVS_DAEMON_ATTR_MCAST_PORT => Self::McastPort(u16_ne("IPVS_DAEMON_ATTR_MCAST_PORT", value)?),
            IPVS_DAEMON_ATTR_MCAST_TTL => Self::McastTtl(u8_value("IPVS_DAEMON_ATTR_MCAST_TTL", value)?),
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}

fn state_number(state: SyncState) -> u32 {
    match state {
        SyncState::Master => IP_VS_STATE_MASTER,
        SyncState::Backup => IP_VS_STATE_BACKUP,
    }
}

/// NEW_DAEMON for `daemon`, its attributes in the order ipvsadm sends them; unset optional
/// fields are left out, so the kernel picks its defaults. Refused here: an interface name the
/// kernel's policy would refuse (empty, longer than 15 bytes, with a NUL).
pub fn start_daemon_request(daemon: &SyncDaemon) -> Result<IpvsMessage, String> {
    let name = &daemon.interface;
    if name.is_empty() || name.len() >= IP_VS_IFNAME_MAXLEN || name.contains('\0') {
        return Err(format!("{name:?} is not an interface name (1 to 15 bytes, no NUL)"));
    }
    let mut attrs = vec![
        DaemonAttr::State(state_number(daemon.state)),
        DaemonAttr::McastIfn(name.clone()),
        DaemonAttr::SyncId(u32::from(daemon.sync_id)),
    ];
    attrs.extend(daemon.max_len.map(DaemonAttr::SyncMaxlen));
    attrs.extend(daemon.port.map(DaemonAttr::McastPort));
    attrs.extend(daemon.ttl.map(DaemonAttr::McastTtl));
    attrs.extend(daemon.group.map(|group| match group {
        IpAddr::V4(v4) => DaemonAttr::McastGroup(v4),
        IpAddr::V6(v6) => DaemonAttr::McastGroup6(v6),
    }));
    Ok(IpvsMessage::new(IpvsCmd::NewDaemon, vec![IpvsAttr::Daemon(attrs)]))
}

/// DEL_DAEMON: the kernel reads only the state.
pub fn stop_daemon_request(state: SyncState) -> IpvsMessage {
    IpvsMessage::new(IpvsCmd::DelDaemon, vec![IpvsAttr::Daemon(vec![DaemonAttr::State(state_number(state))])])
}

/// A sync daemon as the GET_DAEMON dump describes it. A 0 maxlen, port or TTL (which a kernel
/// never reports for a running daemon) and a missing one (kernels before 4.3) read as `None`.
pub fn daemon_from_attrs(attrs: &[DaemonAttr]) -> Result<SyncDaemon, DecodeError> {
    let (mut state, mut interface, mut sync_id) = (None, None, None);
    let mut daemon = SyncDaemon {
        state: SyncState::Master,
        interface: String::new(),
        sync_id: 0,
        group: None,
        port: None,
        ttl: None,
        max_len: None,
    };
    for attr in attrs {
        match attr {
            DaemonAttr::State(value) => state = Some(*value),
            DaemonAttr::McastIfn(name) => interface = Some(name.clone()),
            DaemonAttr::SyncId(value) => sync_id = Some(*value),
            DaemonAttr::SyncMaxlen(value) => daemon.max_len = Some(*value).filter(|v| *v != 0),
            DaemonAttr::McastGroup(addr) => daemon.group = Some(IpAddr::V4(*addr)),
            DaemonAttr::McastGroup6(addr) => daemon.group = Some(IpAddr::V6(*addr)),
            DaemonAttr::McastPort(value) => daemon.port = Some(*value).filter(|v| *v != 0),
            DaemonAttr::McastTtl(value) => daemon.ttl = Some(*value).filter(|v| *v != 0),
            DaemonAttr::Other(_) => {}
        }
    }
    daemon.state = match state {
        Some(IP_VS_STATE_MASTER) => SyncState::Master,
        Some(IP_VS_STATE_BACKUP) => SyncState::Backup,
        Some(other) => {
            return Err(DecodeError::from(format!("IPVS_DAEMON_ATTR_STATE: unknown state {other}")));
        }
        None => return Err(DecodeError::from("a sync daemon without IPVS_DAEMON_ATTR_STATE")),
    };
    daemon.interface =
        interface.ok_or_else(|| DecodeError::from("a sync daemon without IPVS_DAEMON_ATTR_MCAST_IFN"))?;
    let sync_id =
        sync_id.ok_or_else(|| DecodeError::from("a sync daemon without IPVS_DAEMON_ATTR_SYNC_ID"))?;
    daemon.sync_id = u8::try_from(sync_id).map_err(|_| {
        DecodeError::from(format!(
            "IPVS_DAEMON_ATTR_SYNC_ID: {sync_id} does not fit the one byte sync messages carry"
        ))
    })?;
    Ok(daemon)
}
