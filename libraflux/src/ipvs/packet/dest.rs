//! Attributes nested in `IPVS_CMD_ATTR_DEST`.
//!
//! Byte orders, from `ip_vs_genl_parse_dest` / `ip_vs_genl_fill_dest` (ip_vs_ctl.c): ADDR is a
//! 16-byte `union nf_inet_addr`; PORT and TUN_PORT are network order (`nla_get_be16`); the
//! u32 attributes, ADDR_FAMILY and TUN_FLAGS (u16) and TUN_TYPE (u8) are host order.

use netlink_packet_core::{DecodeError, DefaultNla, Emitable, NLA_F_NESTED, Nla, NlaBuffer, Parseable};

use super::{
    constants::*,
    stats::StatsAttr,
    value::{InetAddr, parse_nlas, u8_value, u16_be, u16_ne, u32_ne},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DestAttr {
    Addr(InetAddr),
    /// Host-order value; network order on the wire.
    Port(u16),
    /// `IP_VS_CONN_F_*` forwarding method (the kernel masks it with `IP_VS_CONN_F_FWD_MASK`).
    FwdMethod(u32),
    Weight(u32),
    UThresh(u32),
    LThresh(u32),
    ActiveConns(u32),
    InactConns(u32),
    PersistConns(u32),
    Stats(Vec<StatsAttr>),
    AddrFamily(u16),
    Stats64(Vec<StatsAttr>),
    TunType(u8),
    /// Host-order value; network order on the wire.
    TunPort(u16),
    TunFlags(u16),
    Other(DefaultNla),
}

impl DestAttr {
    fn u32_value(&self) -> Option<(u16, u32)> {
        let pair = match *self {
            Self::FwdMethod(v) => (IPVS_DEST_ATTR_FWD_METHOD, v),
            Self::Weight(v) => (IPVS_DEST_ATTR_WEIGHT, v),
            Self::UThresh(v) => (IPVS_DEST_ATTR_U_THRESH, v),
            Self::LThresh(v) => (IPVS_DEST_ATTR_L_THRESH, v),
            Self::ActiveConns(v) => (IPVS_DEST_ATTR_ACTIVE_CONNS, v),
            Self::InactConns(v) => (IPVS_DEST_ATTR_INACT_CONNS, v),
            Self::PersistConns(v) => (IPVS_DEST_ATTR_PERSIST_CONNS, v),
            _ => return None,
        };
        Some(pair)
    }

    pub(super) fn parse_all(value: &[u8]) -> Result<Vec<Self>, DecodeError> {
        parse_nlas(value, |nla| Self::parse(nla))
    }
}

impl Nla for DestAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::Addr(_) => INET_ADDR_LEN,
            Self::Port(_) | Self::AddrFamily(_) | Self::TunPort(_) | Self::TunFlags(_) => 2,
            Self::TunType(_) => 1,
            Self::Stats(stats) | Self::Stats64(stats) => stats.as_slice().buffer_len(),
            Self::Other(nla) => nla.value_len(),
            _ => 4,
        }
    }

    fn kind(&self) -> u16 {
        if let Some((kind, _)) = self.u32_value() {
            return kind;
        }
        match self {
            Self::Addr(_) => IPVS_DEST_ATTR_ADDR,
            Self::Port(_) => IPVS_DEST_ATTR_PORT,
            Self::Stats(_) => IPVS_DEST_ATTR_STATS | NLA_F_NESTED,
            Self::AddrFamily(_) => IPVS_DEST_ATTR_ADDR_FAMILY,
            Self::Stats64(_) => IPVS_DEST_ATTR_STATS64 | NLA_F_NESTED,
            Self::TunType(_) => IPVS_DEST_ATTR_TUN_TYPE,
            Self::TunPort(_) => IPVS_DEST_ATTR_TUN_PORT,
            Self::TunFlags(_) => IPVS_DEST_ATTR_TUN_FLAGS,
            Self::Other(nla) => nla.kind(),
            _ => 0,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        if let Some((_, value)) = self.u32_value() {
            buffer.copy_from_slice(&value.to_ne_bytes());
            return;
        }
        match self {
            Self::Addr(addr) => buffer.copy_from_slice(&addr.0),
            Self::Port(port) | Self::TunPort(port) => buffer.copy_from_slice(&port.to_be_bytes()),
            Self::AddrFamily(value) | Self::TunFlags(value) => buffer.copy_from_slice(&value.to_ne_bytes()),
            Self::TunType(value) => buffer.copy_from_slice(&[*value]),
            Self::Stats(stats) | Self::Stats64(stats) => stats.as_slice().emit(buffer),
            Self::Other(nla) => nla.emit_value(buffer),
            _ => {}
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DestAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let value = buf.value();
        Ok(match buf.kind() {
            IPVS_DEST_ATTR_ADDR => Self::Addr(InetAddr::parse("IPVS_DEST_ATTR_ADDR", value)?),
            IPVS_DEST_ATTR_PORT => Self::Port(u16_be("IPVS_DEST_ATTR_PORT", value)?),
            IPVS_DEST_ATTR_FWD_METHOD => Self::FwdMethod(u32_ne("IPVS_DEST_ATTR_FWD_METHOD", value)?),
            IPVS_DEST_ATTR_WEIGHT => Self::Weight(u32_ne("IPVS_DEST_ATTR_WEIGHT", value)?),
            IPVS_DEST_ATTR_U_THRESH => Self::UThresh(u32_ne("IPVS_DEST_ATTR_U_THRESH", value)?),
            IPVS_DEST_ATTR_L_THRESH => Self::LThresh(u32_ne("IPVS_DEST_ATTR_L_THRESH", value)?),
            IPVS_DEST_ATTR_ACTIVE_CONNS => Self::ActiveConns(u32_ne("IPVS_DEST_ATTR_ACTIVE_CONNS", value)?),
            IPVS_DEST_ATTR_INACT_CONNS => Self::InactConns(u32_ne("IPVS_DEST_ATTR_INACT_CONNS", value)?),
            IPVS_DEST_ATTR_PERSIST_CONNS => {
                Self::PersistConns(u32_ne("IPVS_DEST_ATTR_PERSIST_CONNS", value)?)
            }
            IPVS_DEST_ATTR_STATS => Self::Stats(StatsAttr::parse_all(value)?),
            IPVS_DEST_ATTR_ADDR_FAMILY => Self::AddrFamily(u16_ne("IPVS_DEST_ATTR_ADDR_FAMILY", value)?),
            IPVS_DEST_ATTR_STATS64 => Self::Stats64(StatsAttr::parse_all(value)?),
            IPVS_DEST_ATTR_TUN_TYPE => Self::TunType(u8_value("IPVS_DEST_ATTR_TUN_TYPE", value)?),
            IPVS_DEST_ATTR_TUN_PORT => Self::TunPort(u16_be("IPVS_DEST_ATTR_TUN_PORT", value)?),
            IPVS_DEST_ATTR_TUN_FLAGS => Self::TunFlags(u16_ne("IPVS_DEST_ATTR_TUN_FLAGS", value)?),
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}
