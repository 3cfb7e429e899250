//! The IPVS generic-netlink message: a command and its first-level attributes.

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLA_F_NESTED, Nla, NlaBuffer, Parseable, ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use super::{
    constants::*,
    daemon::DaemonAttr,
    dest::DestAttr,
    service::ServiceAttr,
    value::{parse_nlas, u32_ne},
};

/// `IPVS_CMD_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpvsCmd {
    NewService,
    SetService,
    DelService,
    GetService,
    NewDest,
    SetDest,
    DelDest,
    GetDest,
    NewDaemon,
    DelDaemon,
    GetDaemon,
    SetConfig,
    GetConfig,
    /// Only the kernel sends it: the reply to `GetInfo`.
    SetInfo,
    GetInfo,
    Zero,
    Flush,
}

impl From<IpvsCmd> for u8 {
    fn from(cmd: IpvsCmd) -> u8 {
        match cmd {
            IpvsCmd::NewService => IPVS_CMD_NEW_SERVICE,
            IpvsCmd::SetService => IPVS_CMD_SET_SERVICE,
            IpvsCmd::DelService => IPVS_CMD_DEL_SERVICE,
            IpvsCmd::GetService => IPVS_CMD_GET_SERVICE,
            IpvsCmd::NewDest => IPVS_CMD_NEW_DEST,
            IpvsCmd::SetDest => IPVS_CMD_SET_DEST,
            IpvsCmd::DelDest => IPVS_CMD_DEL_DEST,
            IpvsCmd::GetDest => IPVS_CMD_GET_DEST,
            IpvsCmd::NewDaemon => IPVS_CMD_NEW_DAEMON,
            IpvsCmd::DelDaemon => IPVS_CMD_DEL_DAEMON,
            IpvsCmd::GetDaemon => IPVS_CMD_GET_DAEMON,
            IpvsCmd::SetConfig => IPVS_CMD_SET_CONFIG,
            IpvsCmd::GetConfig => IPVS_CMD_GET_CONFIG,
            IpvsCmd::SetInfo => IPVS_CMD_SET_INFO,
            IpvsCmd::GetInfo => IPVS_CMD_GET_INFO,
            IpvsCmd::Zero => IPVS_CMD_ZERO,
            IpvsCmd::Flush => IPVS_CMD_FLUSH,
        }
    }
}

impl TryFrom<u8> for IpvsCmd {
    type Error = DecodeError;

    fn try_from(value: u8) -> Result<Self, DecodeError> {
        Ok(match value {
            IPVS_CMD_NEW_SERVICE => Self::NewService,
            IPVS_CMD_SET_SERVICE => Self::SetService,
            IPVS_CMD_DEL_SERVICE => Self::DelService,
            IPVS_CMD_GET_SERVICE => Self::GetService,
            IPVS_CMD_NEW_DEST => Self::NewDest,
            IPVS_CMD_SET_DEST => Self::SetDest,
            IPVS_CMD_DEL_DEST => Self::DelDest,
            IPVS_CMD_GET_DEST => Self::GetDest,
            IPVS_CMD_NEW_DAEMON => Self::NewDaemon,
            IPVS_CMD_DEL_DAEMON => Self::DelDaemon,
            IPVS_CMD_GET_DAEMON => Self::GetDaemon,
            IPVS_CMD_SET_CONFIG => Self::SetConfig,
            IPVS_CMD_GET_CONFIG => Self::GetConfig,
            IPVS_CMD_SET_INFO => Self::SetInfo,
            IPVS_CMD_GET_INFO => Self::GetInfo,
            IPVS_CMD_ZERO => Self::Zero,
            IPVS_CMD_FLUSH => Self::Flush,
            other => return Err(DecodeError::from(format!("unknown IPVS command {other}"))),
        })
    }
}

impl IpvsCmd {
    /// The GET_INFO exchange reuses numbers 1 and 2 for `IPVS_INFO_ATTR_*`.
    fn carries_info(self) -> bool {
        matches!(self, Self::SetInfo | Self::GetInfo)
    }
}

/// First-level attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpvsAttr {
    Service(Vec<ServiceAttr>),
    Dest(Vec<DestAttr>),
    /// A sync daemon (NEW_DAEMON, DEL_DAEMON, and each message of the GET_DAEMON dump).
    Daemon(Vec<DaemonAttr>),
    /// Seconds.
    TimeoutTcp(u32),
    TimeoutTcpFin(u32),
    TimeoutUdp(u32),
    /// `IPVS_INFO_ATTR_VERSION`, e.g. `0x010201` for 1.2.1 (only in SET_INFO / GET_INFO).
    InfoVersion(u32),
    /// `IPVS_INFO_ATTR_CONN_TAB_SIZE` (only in SET_INFO / GET_INFO).
    InfoConnTabSize(u32),
    Other(DefaultNla),
}

impl Nla for IpvsAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::Service(attrs) => attrs.as_slice().buffer_len(),
            Self::Dest(attrs) => attrs.as_slice().buffer_len(),
            Self::Daemon(attrs) => attrs.as_slice().buffer_len(),
            Self::Other(nla) => nla.value_len(),
            _ => 4,
        }
    }

    /// Nested attributes carry `NLA_F_NESTED`, as libnl (and so ipvsadm) sends them; the
    /// kernel's `nla_parse_nested_deprecated` accepts them with or without it.
    fn kind(&self) -> u16 {
        match self {
            Self::Service(_) => IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED,
            Self::Dest(_) => IPVS_CMD_ATTR_DEST | NLA_F_NESTED,
            Self::Daemon(_) => IPVS_CMD_ATTR_DAEMON | NLA_F_NESTED,
            Self::TimeoutTcp(_) => IPVS_CMD_ATTR_TIMEOUT_TCP,
            Self::TimeoutTcpFin(_) => IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
            Self::TimeoutUdp(_) => IPVS_CMD_ATTR_TIMEOUT_UDP,
            Self::InfoVersion(_) => IPVS_INFO_ATTR_VERSION,
            Self::InfoConnTabSize(_) => IPVS_INFO_ATTR_CONN_TAB_SIZE,
            Self::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Service(attrs) => attrs.as_slice().emit(buffer),
            Self::Dest(attrs) => attrs.as_slice().emit(buffer),
            Self::Daemon(attrs) => attrs.as_slice().emit(buffer),
            Self::TimeoutTcp(value)
            | Self::TimeoutTcpFin(value)
            | Self::TimeoutUdp(value)
            | Self::InfoVersion(value)
            | Self::InfoConnTabSize(value) => buffer.copy_from_slice(&value.to_ne_bytes()),
            Self::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl IpvsAttr {
    fn parse_in(cmd: IpvsCmd, buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError> {
        let value = buf.value();
        if cmd.carries_info() {
            return Ok(match buf.kind() {
                IPVS_INFO_ATTR_VERSION => Self::InfoVersion(u32_ne("IPVS_INFO_ATTR_VERSION", value)?),
                IPVS_INFO_ATTR_CONN_TAB_SIZE => {
                    Self::InfoConnTabSize(u32_ne("IPVS_INFO_ATTR_CONN_TAB_SIZE", value)?)
                }
                _ => Self::Other(DefaultNla::parse(buf)?),
            });
        }
        Ok(match buf.kind() {
            IPVS_CMD_ATTR_SERVICE => Self::Service(ServiceAttr::parse_all(value)?),
            IPVS_CMD_ATTR_DEST => Self::Dest(DestAttr::parse_all(value)?),
            IPVS_CMD_ATTR_DAEMON => Self::Daemon(DaemonAttr::parse_all(value)?),
            IPVS_CMD_ATTR_TIMEOUT_TCP => Self::TimeoutTcp(u32_ne("IPVS_CMD_ATTR_TIMEOUT_TCP", value)?),
            IPVS_CMD_ATTR_TIMEOUT_TCP_FIN => {
                Self::TimeoutTcpFin(u32_ne("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", value)?)
            }
            IPVS_CMD_ATTR_TIMEOUT_UDP => Self::TimeoutUdp(u32_ne("IPVS_CMD_ATTR_TIMEOUT_UDP", value)?),
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// One IPVS message: the payload of a `GenlMessage<IpvsMessage>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpvsMessage {
    pub cmd: IpvsCmd,
    pub attrs: Vec<IpvsAttr>,
}

impl IpvsMessage {
    pub fn new(cmd: IpvsCmd, attrs: Vec<IpvsAttr>) -> Self {
        Self { cmd, attrs }
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd.into()
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let cmd = IpvsCmd::try_from(header.cmd)?;
        let attrs = parse_nlas(buf, |nla| IpvsAttr::parse_in(cmd, nla))?;
        Ok(Self { cmd, attrs })
    }
}
