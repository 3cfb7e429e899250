//! Attributes nested in `IPVS_CMD_ATTR_SERVICE`.
//!
//! Byte orders, from `ip_vs_genl_parse_service` / `ip_vs_genl_fill_service` (ip_vs_ctl.c) and
//! ipvsadm's libipvs: AF, PROTOCOL (u16), FWMARK, TIMEOUT (u32) and FLAGS (two u32) are in host
//! order; PORT is network order (`nla_get_be16`); ADDR is a 16-byte `union nf_inet_addr`;
//! NETMASK is read with `nla_get_be32` into a `__be32`, so it is raw bytes whose meaning
//! depends on the family: an IPv4 mask in network order (`255.255.255.0` = `ff ff ff 00`), but
//! for IPv6 a prefix length 1..=128 that the kernel compares as a host-order integer.

use netlink_packet_core::{DecodeError, DefaultNla, Emitable, NLA_F_NESTED, Nla, NlaBuffer, Parseable};

use super::{
    constants::*,
    stats::StatsAttr,
    value::{
        InetAddr, array, emit_nul_string, nul_string, nul_string_len, parse_nlas, u16_be, u16_ne, u32_ne,
    },
};

/// `struct ip_vs_flags`: the kernel applies `(old & !mask) | (flags & mask)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceFlags {
    pub flags: u32,
    pub mask: u32,
}

impl ServiceFlags {
    const LEN: usize = 8;

    fn emit(self, buffer: &mut [u8]) {
        let (flags, mask) = buffer.split_at_mut(4);
        flags.copy_from_slice(&self.flags.to_ne_bytes());
        mask.copy_from_slice(&self.mask.to_ne_bytes());
    }

    fn parse(value: &[u8]) -> Result<Self, DecodeError> {
        let bytes: [u8; Self::LEN] = array("IPVS_SVC_ATTR_FLAGS", value)?;
        let [f0, f1, f2, f3, m0, m1, m2, m3] = bytes;
        Ok(Self { flags: u32::from_ne_bytes([f0, f1, f2, f3]), mask: u32::from_ne_bytes([m0, m1, m2, m3]) })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceAttr {
    /// `AF_INET` or `AF_INET6`.
    Af(u16),
    /// `IPPROTO_*`.
    Protocol(u16),
    Addr(InetAddr),
    /// Host-order value; network order on the wire.
    Port(u16),
    Fwmark(u32),
    SchedName(String),
    Flags(ServiceFlags),
    /// Persistence timeout in seconds.
    Timeout(u32),
    /// Raw `__be32`; see the module documentation for its two meanings.
    Netmask([u8; 4]),
    Stats(Vec<StatsAttr>),
    PeName(String),
    Stats64(Vec<StatsAttr>),
    Other(DefaultNla),
}

impl Nla for ServiceAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::Af(_) | Self::Protocol(_) | Self::Port(_) => 2,
            Self::Fwmark(_) | Self::Timeout(_) | Self::Netmask(_) => 4,
            Self::Addr(_) => INET_ADDR_LEN,
            Self::SchedName(text) | Self::PeName(text) => nul_string_len(text),
            Self::Flags(_) => ServiceFlags::LEN,
            Self::Stats(stats) | Self::Stats64(stats) => stats.as_slice().buffer_len(),
            Self::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Af(_) => IPVS_SVC_ATTR_AF,
            Self::Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            Self::Addr(_) => IPVS_SVC_ATTR_ADDR,
            Self::Port(_) => IPVS_SVC_ATTR_PORT,
            Self::Fwmark(_) => IPVS_SVC_ATTR_FWMARK,
            Self::SchedName(_) => IPVS_SVC_ATTR_SCHED_NAME,
            Self::Flags(_) => IPVS_SVC_ATTR_FLAGS,
            Self::Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            Self::Netmask(_) => IPVS_SVC_ATTR_NETMASK,
            Self::Stats(_) => IPVS_SVC_ATTR_STATS | NLA_F_NESTED,
            Self::PeName(_) => IPVS_SVC_ATTR_PE_NAME,
            Self::Stats64(_) => IPVS_SVC_ATTR_STATS64 | NLA_F_NESTED,
            Self::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Af(value) | Self::Protocol(value) => buffer.copy_from_slice(&value.to_ne_bytes()),
            Self::Port(port) => buffer.copy_from_slice(&port.to_be_bytes()),
            Self::Fwmark(value) | Self::Timeout(value) => buffer.copy_from_slice(&value.to_ne_bytes()),
            Self::Netmask(raw) => buffer.copy_from_slice(raw),
            Self::Addr(addr) => buffer.copy_from_slice(&addr.0),
            Self::SchedName(text) | Self::PeName(text) => emit_nul_string(text, buffer),
            Self::Flags(flags) => flags.emit(buffer),
            Self::Stats(stats) | Self::Stats64(stats) => stats.as_slice().emit(buffer),
            Self::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl ServiceAttr {
    pub(super) fn parse_all(value: &[u8]) -> Result<Vec<Self>, DecodeError> {
        parse_nlas(value, |nla| Self::parse(nla))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for ServiceAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let value = buf.value();
        Ok(match buf.kind() {
            IPVS_SVC_ATTR_AF => Self::Af(u16_ne("IPVS_SVC_ATTR_AF", value)?),
            IPVS_SVC_ATTR_PROTOCOL => Self::Protocol(u16_ne("IPVS_SVC_ATTR_PROTOCOL", value)?),
            IPVS_SVC_ATTR_ADDR => Self::Addr(InetAddr::parse("IPVS_SVC_ATTR_ADDR", value)?),
            IPVS_SVC_ATTR_PORT => Self::Port(u16_be("IPVS_SVC_ATTR_PORT", value)?),
            IPVS_SVC_ATTR_FWMARK => Self::Fwmark(u32_ne("IPVS_SVC_ATTR_FWMARK", value)?),
            IPVS_SVC_ATTR_SCHED_NAME => Self::SchedName(nul_string("IPVS_SVC_ATTR_SCHED_NAME", value)?),
            IPVS_SVC_ATTR_FLAGS => Self::Flags(ServiceFlags::parse(value)?),
            IPVS_SVC_ATTR_TIMEOUT => Self::Timeout(u32_ne("IPVS_SVC_ATTR_TIMEOUT", value)?),
            IPVS_SVC_ATTR_NETMASK => Self::Netmask(array("IPVS_SVC_ATTR_NETMASK", value)?),
            IPVS_SVC_ATTR_STATS => Self::Stats(StatsAttr::parse_all(value)?),
            IPVS_SVC_ATTR_PE_NAME => Self::PeName(nul_string("IPVS_SVC_ATTR_PE_NAME", value)?),
            IPVS_SVC_ATTR_STATS64 => Self::Stats64(StatsAttr::parse_all(value)?),
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}
