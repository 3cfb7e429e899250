//! Types shared by the eBPF programs (kernel side) and the loader (user side).
//!
//! Every type here is `#[repr(C)]` with explicit padding and no `bool`, `Option` or Rust enums,
//! so the kernel and userspace agree on the layout byte for byte. The size asserts below fail the
//! build on both sides if a field is added without updating the other.
#![no_std]

/// Address family values used in [`DestKey::family`].
pub const FAMILY_INET: u8 = 4;
pub const FAMILY_INET6: u8 = 6;

/// IP protocol numbers used in [`DestKey::proto`] (as in `netinet/in.h`).
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Name of the per-CPU hash map of [`DestKey`] -> [`FlowCounters`].
///
/// The programs only update entries that already exist: userspace inserts a zeroed entry for each
/// destination it wants counted. That keeps the map bounded by configuration, not by traffic.
pub const COUNTERS_MAP: &str = "COUNTERS";

/// Name of the TC classifier program that counts packets per destination.
pub const COUNT_PROGRAM: &str = "count_dest";

/// One destination: address, port and protocol, as seen in the packet's headers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestKey {
    /// IPv4: the 4 address bytes (network order) followed by 12 zero bytes. IPv6: all 16 bytes.
    pub addr: [u8; 16],
    /// Destination port in host byte order.
    pub port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    /// [`FAMILY_INET`] or [`FAMILY_INET6`].
    pub family: u8,
}

/// Counters of one destination on one CPU; userspace sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    pub packets: u64,
    /// Sum of `skb->len`: at TC this includes the 14-byte Ethernet header.
    pub bytes: u64,
}

const _: () = assert!(size_of::<DestKey>() == 20);
const _: () = assert!(align_of::<DestKey>() == 2);
const _: () = assert!(size_of::<FlowCounters>() == 16);

impl DestKey {
    pub const fn ipv4(addr: [u8; 4], port: u16, proto: u8) -> Self {
        let mut bytes = [0u8; 16];
        bytes[0] = addr[0];
        bytes[1] = addr[1];
        bytes[2] = addr[2];
        bytes[3] = addr[3];
        Self { addr: bytes, port, proto, family: FAMILY_INET }
    }

    pub const fn ipv6(addr: [u8; 16], port: u16, proto: u8) -> Self {
        Self { addr, port, proto, family: FAMILY_INET6 }
    }
}

impl FlowCounters {
    /// Adds another CPU's counters to these.
    pub const fn add(self, other: Self) -> Self {
        Self {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both types are repr(C), contain only integers, and have no padding bytes
    // (asserted above: 16 + 2 + 1 + 1 = 20, and 8 + 8 = 16).
    unsafe impl aya::Pod for super::DestKey {}
    unsafe impl aya::Pod for super::FlowCounters {}
}
