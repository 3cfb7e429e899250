//! Attributes nested in `IPVS_SVC_ATTR_STATS{,64}` and `IPVS_DEST_ATTR_STATS{,64}`.
//!
//! Widths (ip_vs_ctl.c, `ip_vs_genl_fill_stats{,64}`): in STATS the byte counters are u64 and
//! the rest u32; in STATS64 every counter is u64. Host byte order. Each value remembers its
//! width so that what is parsed emits back byte for byte.

use netlink_packet_core::{DecodeError, DefaultNla, Nla, NlaBuffer, Parseable};

use super::{
    constants::*,
    value::{array, parse_nlas},
};

/// A counter as it travels: 4 or 8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    U32(u32),
    U64(u64),
}

impl Counter {
    pub fn get(self) -> u64 {
        match self {
            Self::U32(value) => u64::from(value),
            Self::U64(value) => value,
        }
    }

    fn len(self) -> usize {
        match self {
            Self::U32(_) => 4,
            Self::U64(_) => 8,
        }
    }

    fn emit(self, buffer: &mut [u8]) {
        match self {
            Self::U32(value) => buffer.copy_from_slice(&value.to_ne_bytes()),
            Self::U64(value) => buffer.copy_from_slice(&value.to_ne_bytes()),
        }
    }

    fn parse(what: &str, value: &[u8]) -> Result<Self, DecodeError> {
        match value.len() {
            4 => Ok(Self::U32(u32::from_ne_bytes(array(what, value)?))),
            _ => Ok(Self::U64(u64::from_ne_bytes(array(what, value)?))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatsAttr {
    Conns(Counter),
    InPkts(Counter),
    OutPkts(Counter),
    InBytes(Counter),
    OutBytes(Counter),
    Cps(Counter),
    InPps(Counter),
    OutPps(Counter),
    InBps(Counter),
    OutBps(Counter),
    Other(DefaultNla),
}

impl StatsAttr {
    fn counter(&self) -> Option<(u16, Counter)> {
        let pair = match *self {
            Self::Conns(c) => (IPVS_STATS_ATTR_CONNS, c),
            Self::InPkts(c) => (IPVS_STATS_ATTR_INPKTS, c),
            Self::OutPkts(c) => (IPVS_STATS_ATTR_OUTPKTS, c),
            Self::InBytes(c) => (IPVS_STATS_ATTR_INBYTES, c),
            Self::OutBytes(c) => (IPVS_STATS_ATTR_OUTBYTES, c),
            Self::Cps(c) => (IPVS_STATS_ATTR_CPS, c),
            Self::InPps(c) => (IPVS_STATS_ATTR_INPPS, c),
            Self::OutPps(c) => (IPVS_STATS_ATTR_OUTPPS, c),
            Self::InBps(c) => (IPVS_STATS_ATTR_INBPS, c),
            Self::OutBps(c) => (IPVS_STATS_ATTR_OUTBPS, c),
            Self::Other(_) => return None,
        };
        Some(pair)
    }

    pub(super) fn parse_all(value: &[u8]) -> Result<Vec<Self>, DecodeError> {
        parse_nlas(value, |nla| Self::parse(nla))
    }
}

impl Nla for StatsAttr {
    fn value_len(&self) -> usize {
        match (self, self.counter()) {
            (Self::Other(nla), _) => nla.value_len(),
            (_, Some((_, counter))) => counter.len(),
            (_, None) => 0,
        }
    }

    fn kind(&self) -> u16 {
        match (self, self.counter()) {
            (Self::Other(nla), _) => nla.kind(),
            (_, Some((kind, _))) => kind,
            (_, None) => 0,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match (self, self.counter()) {
            (Self::Other(nla), _) => nla.emit_value(buffer),
            (_, Some((_, counter))) => counter.emit(buffer),
            (_, None) => {}
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for StatsAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let value = buf.value();
        let counter = |what| Counter::parse(what, value);
        Ok(match buf.kind() {
            IPVS_STATS_ATTR_CONNS => Self::Conns(counter("IPVS_STATS_ATTR_CONNS")?),
            IPVS_STATS_ATTR_INPKTS => Self::InPkts(counter("IPVS_STATS_ATTR_INPKTS")?),
            IPVS_STATS_ATTR_OUTPKTS => Self::OutPkts(counter("IPVS_STATS_ATTR_OUTPKTS")?),
            IPVS_STATS_ATTR_INBYTES => Self::InBytes(counter("IPVS_STATS_ATTR_INBYTES")?),
            IPVS_STATS_ATTR_OUTBYTES => Self::OutBytes(counter("IPVS_STATS_ATTR_OUTBYTES")?),
            IPVS_STATS_ATTR_CPS => Self::Cps(counter("IPVS_STATS_ATTR_CPS")?),
            IPVS_STATS_ATTR_INPPS => Self::InPps(counter("IPVS_STATS_ATTR_INPPS")?),
            IPVS_STATS_ATTR_OUTPPS => Self::OutPps(counter("IPVS_STATS_ATTR_OUTPPS")?),
            IPVS_STATS_ATTR_INBPS => Self::InBps(counter("IPVS_STATS_ATTR_INBPS")?),
            IPVS_STATS_ATTR_OUTBPS => Self::OutBps(counter("IPVS_STATS_ATTR_OUTBPS")?),
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}
