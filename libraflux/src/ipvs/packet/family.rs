//! Resolving the IPVS family id through the generic-netlink controller (`CTRL_CMD_GETFAMILY`).

use netlink_packet_core::{DecodeError, NetlinkMessage, NetlinkPayload, ParseableParametrized};
use netlink_packet_generic::{
    GenlHeader, GenlMessage,
    ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs},
};

use super::{
    constants::IPVS_GENL_NAME,
    value::{parse_nlas, u16_ne},
};

/// `CTRL_ATTR_FAMILY_ID` in `include/uapi/linux/genetlink.h`.
const CTRL_ATTR_FAMILY_ID: u16 = 1;

/// The controller's reply, reduced to the one attribute we need. Parsed by hand rather than
/// with `GenlCtrl`, which rejects controller attributes newer than itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyReply {
    pub family_id: Option<u16>,
}

impl ParseableParametrized<[u8], GenlHeader> for FamilyReply {
    fn parse_with_param(buf: &[u8], _header: GenlHeader) -> Result<Self, DecodeError> {
        let ids = parse_nlas(buf, |nla| {
            (nla.kind() == CTRL_ATTR_FAMILY_ID)
                .then(|| u16_ne("CTRL_ATTR_FAMILY_ID", nla.value()))
                .transpose()
        })?;
        Ok(Self { family_id: ids.into_iter().flatten().next() })
    }
}

pub type FamilyNetlinkMessage = NetlinkMessage<GenlMessage<FamilyReply>>;

/// `CTRL_CMD_GETFAMILY` for "IPVS", with NLM_F_REQUEST | NLM_F_ACK.
pub fn encode_family_request(sequence: u32) -> Vec<u8> {
    let ctrl = GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(IPVS_GENL_NAME.to_owned())],
    };
    let mut packet = NetlinkMessage::from(GenlMessage::from_payload(ctrl));
    packet.header.flags = netlink_packet_core::NLM_F_REQUEST | netlink_packet_core::NLM_F_ACK;
    packet.header.sequence_number = sequence;
    packet.finalize();
    let mut buffer = vec![0; packet.buffer_len()];
    packet.serialize(&mut buffer);
    buffer
}

/// The family id in a decoded controller reply, if this message is one.
pub fn family_id_of(message: &FamilyNetlinkMessage) -> Option<u16> {
    match &message.payload {
        NetlinkPayload::InnerMessage(genl) => genl.payload.family_id,
        _ => None,
    }
}
