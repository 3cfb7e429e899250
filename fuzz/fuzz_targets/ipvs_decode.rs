//! Arbitrary bytes as a datagram from the kernel: decoding it, and reading services and
//! destinations out of whatever decodes, must never panic.
//!
//! Run with `cargo +nightly fuzz run ipvs_decode -- -max_total_time=60` from the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use libraflux::{
    ipvs::packet::{self, FamilyNetlinkMessage, IpvsAttr},
    model::Family,
};
use netlink_packet_core::NetlinkPayload;

fuzz_target!(|data: &[u8]| {
    if let Ok(messages) = packet::decode_datagram(data) {
        for message in messages {
            if let NetlinkPayload::InnerMessage(genl) = message.payload {
                read_attributes(&genl.payload.attrs);
            }
        }
    }
    if let Ok(message) = FamilyNetlinkMessage::deserialize(data) {
        let _ = packet::family_id_of(&message);
    }
});

fn read_attributes(attrs: &[IpvsAttr]) {
    for attr in attrs {
        match attr {
            IpvsAttr::Service(service) => {
                let _ = packet::service_from_attrs(service);
            }
            IpvsAttr::Dest(dest) => {
                let _ = packet::dest_from_attrs(dest, Family::V4);
                let _ = packet::dest_from_attrs(dest, Family::V6);
            }
            _ => {}
        }
    }
}
