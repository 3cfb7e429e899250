//! The IPVS generic-netlink family ("IPVS", version 1), defined the way rust-netlink defines
//! families: private constants named as in `include/uapi/linux/ip_vs.h`, a command enum, attribute
//! enums that keep unknown attributes (`Other(DefaultNla)`), and a message type implementing
//! `GenlFamily`, `Emitable` and `ParseableParametrized<[u8], GenlHeader>`.
//!
//! Decoding never panics on any input: lengths are checked before every read (see the fuzz
//! target `fuzz/fuzz_targets/ipvs_decode.rs`).

mod constants;
mod convert;
mod daemon;
mod dest;
mod family;
mod frame;
mod message;
mod service;
mod stats;
mod value;

#[cfg(test)]
mod daemon_tests;
#[cfg(test)]
mod tests;

pub(crate) use convert::service_family;
pub use convert::{dest_from_attrs, request_for, service_from_attrs, service_identity};
pub use daemon::{DaemonAttr, daemon_from_attrs, start_daemon_request, stop_daemon_request};
pub use dest::DestAttr;
pub use family::{FamilyNetlinkMessage, FamilyReply, encode_family_request, family_id_of};
pub use frame::{IpvsNetlinkMessage, decode_datagram, decode_message, encode_request, split_messages};
pub use message::{IpvsAttr, IpvsCmd, IpvsMessage};
pub use service::{ServiceAttr, ServiceFlags};
pub use stats::{Counter, StatsAttr};
pub use value::InetAddr;
