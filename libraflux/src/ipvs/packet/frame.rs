//! Whole netlink messages: encoding a request, cutting a receive buffer into messages and
//! decoding each. One netlink datagram can carry many messages (a batch of acks, a dump).

use netlink_packet_core::{DecodeError, NLMSG_ALIGNTO, NetlinkMessage};
use netlink_packet_generic::GenlMessage;

use super::message::IpvsMessage;

/// The decoded form of one IPVS netlink message (or an ack, error or end of dump).
pub type IpvsNetlinkMessage = NetlinkMessage<GenlMessage<IpvsMessage>>;

const NLMSG_HDRLEN: usize = 16;

/// Serialises `message` as one request to the family `family_id` (resolved at run time).
pub fn encode_request(family_id: u16, sequence: u32, flags: u16, message: IpvsMessage) -> Vec<u8> {
    let mut genl = GenlMessage::from_payload(message);
    genl.set_resolved_family_id(family_id);
    let mut packet = NetlinkMessage::from(genl);
    packet.header.flags = flags;
    packet.header.sequence_number = sequence;
    packet.finalize();
    let mut buffer = vec![0; packet.buffer_len()];
    packet.serialize(&mut buffer);
    buffer
}

/// Decodes one netlink message holding an IPVS payload, an ack/error, or NLMSG_DONE.
pub fn decode_message(frame: &[u8]) -> Result<IpvsNetlinkMessage, DecodeError> {
    IpvsNetlinkMessage::deserialize(frame)
}

/// Cuts a received datagram into its netlink messages, each as long as its own header says.
/// A truncated or inconsistent length ends the iteration with an error.
pub fn split_messages(datagram: &[u8]) -> Frames<'_> {
    Frames { rest: datagram }
}

#[derive(Debug)]
pub struct Frames<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<&'a [u8], DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let frame = next_frame(self.rest);
        match frame {
            Ok((frame, rest)) => {
                self.rest = rest;
                Some(Ok(frame))
            }
            Err(err) => {
                self.rest = &[];
                Some(Err(err))
            }
        }
    }
}

fn next_frame(buffer: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let header: [u8; 4] = buffer.get(..4).and_then(|bytes| bytes.try_into().ok()).ok_or_else(|| {
        DecodeError::from(format!("netlink message of {} bytes has no header", buffer.len()))
    })?;
    let length = usize::try_from(u32::from_ne_bytes(header)).unwrap_or(usize::MAX);
    if length < NLMSG_HDRLEN || length > buffer.len() {
        return Err(DecodeError::from(format!(
            "netlink message says it is {length} bytes, {} remain",
            buffer.len()
        )));
    }
    let aligned = length.next_multiple_of(usize::from(NLMSG_ALIGNTO)).min(buffer.len());
    let (frame, _) = buffer.split_at(length);
    let (_, rest) = buffer.split_at(aligned);
    Ok((frame, rest))
}

/// Decodes every message of a datagram; what the fuzz target drives.
pub fn decode_datagram(datagram: &[u8]) -> Result<Vec<IpvsNetlinkMessage>, DecodeError> {
    split_messages(datagram).map(|frame| frame.and_then(decode_message)).collect()
}
