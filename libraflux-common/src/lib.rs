//! Types shared by the eBPF programs (kernel side) and the loader (user side).
//!
//! Every type here is `#[repr(C)]` with explicit padding and no `bool`, `Option` or Rust enums,
//! so the kernel and userspace agree on the layout byte for byte. The size asserts below fail the
//! build on both sides if a field is added without updating the other.
#![no_std]

use core::net::IpAddr;

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

/// Name of the LRU hash map of [`UdpFlowKey`] -> [`UdpFlowSeen`]: the UDP 5-tuples already seen,
/// so that only the first datagram of each counts as a new flow. Sized by the loader; when it is
/// full the least recently used flow is forgotten (and counts as new again if it comes back).
pub const UDP_FLOWS_MAP: &str = "UDP_FLOWS";

/// Name of the TC classifier program that counts packets per destination. It is also the name
/// of the TC filter (`tc filter show`), by which the loader finds and removes filters a previous
/// LibraFlux process left behind; so it names LibraFlux, and fits the kernel's 15-byte limit.
pub const COUNT_PROGRAM: &str = "libraflux_count";

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

/// Counters of one destination on one CPU; userspace combines the CPUs with [`FlowCounters::add`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    pub packets: u64,
    /// Sum of `skb->len`: at TC this includes the 14-byte Ethernet header.
    pub bytes: u64,
    /// TCP: segments with SYN set and ACK clear. UDP: datagrams whose 5-tuple was not in
    /// [`UDP_FLOWS_MAP`].
    pub new_flows: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last packet on this CPU; 0 = none yet.
    pub last_seen_ns: u64,
}

/// A UDP 5-tuple, the key of [`UDP_FLOWS_MAP`]. The program zeroes `_pad` (and the unused
/// address bytes of IPv4) so that equal flows hash equally.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UdpFlowKey {
    /// Laid out like [`DestKey::addr`].
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    /// Host byte order.
    pub src_port: u16,
    pub dst_port: u16,
    /// [`FAMILY_INET`] or [`FAMILY_INET6`].
    pub family: u8,
    pub _pad: [u8; 3],
}

/// The value of [`UDP_FLOWS_MAP`]: when the flow's first datagram was seen (`bpf_ktime_get_ns`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpFlowSeen {
    pub first_seen_ns: u64,
}

const _: () = assert!(size_of::<DestKey>() == 20);
const _: () = assert!(align_of::<DestKey>() == 2);
const _: () = assert!(size_of::<FlowCounters>() == 32);
const _: () = assert!(size_of::<UdpFlowKey>() == 40);
const _: () = assert!(align_of::<UdpFlowKey>() == 2);
const _: () = assert!(size_of::<UdpFlowSeen>() == 8);

impl DestKey {
    pub const fn ipv4(addr: [u8; 4], port: u16, proto: u8) -> Self {
        Self { addr: ipv4_bytes(addr), port, proto, family: FAMILY_INET }
    }

    pub const fn ipv6(addr: [u8; 16], port: u16, proto: u8) -> Self {
        Self { addr, port, proto, family: FAMILY_INET6 }
    }

    pub const fn new(addr: IpAddr, port: u16, proto: u8) -> Self {
        match addr {
            IpAddr::V4(v4) => Self::ipv4(v4.octets(), port, proto),
            IpAddr::V6(v6) => Self::ipv6(v6.octets(), port, proto),
        }
    }

    /// The address, read back according to [`DestKey::family`].
    pub const fn ip(&self) -> IpAddr {
        if self.family == FAMILY_INET {
            let [a, b, c, d, ..] = self.addr;
            IpAddr::V4(core::net::Ipv4Addr::new(a, b, c, d))
        } else {
            IpAddr::V6(core::net::Ipv6Addr::from_octets(self.addr))
        }
    }
}

/// An IPv4 address in the 16-byte layout of [`DestKey::addr`].
pub const fn ipv4_bytes(addr: [u8; 4]) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[0] = addr[0];
    bytes[1] = addr[1];
    bytes[2] = addr[2];
    bytes[3] = addr[3];
    bytes
}

impl FlowCounters {
    /// Combines another CPU's counters with these: sums, and the later `last_seen_ns`.
    pub const fn add(self, other: Self) -> Self {
        Self {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
            new_flows: self.new_flows.wrapping_add(other.new_flows),
            last_seen_ns: if other.last_seen_ns > self.last_seen_ns {
                other.last_seen_ns
            } else {
                self.last_seen_ns
            },
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all four types are repr(C), contain only integers and byte arrays, and have no
    // implicit padding (asserted above: 16 + 2 + 1 + 1 = 20; 4 * 8 = 32;
    // 16 + 16 + 2 + 2 + 1 + 3 = 40; 8).
    unsafe impl aya::Pod for super::DestKey {}
    unsafe impl aya::Pod for super::FlowCounters {}
    unsafe impl aya::Pod for super::UdpFlowKey {}
    unsafe impl aya::Pod for super::UdpFlowSeen {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_sums_counts_and_keeps_the_latest_last_seen() {
        let a = FlowCounters { packets: 1, bytes: 100, new_flows: 1, last_seen_ns: 50 };
        let b = FlowCounters { packets: 2, bytes: 10, new_flows: 0, last_seen_ns: 40 };
        let sum = FlowCounters { packets: 3, bytes: 110, new_flows: 1, last_seen_ns: 50 };
        assert_eq!(a.add(b), sum);
        assert_eq!(b.add(a), sum);
        assert_eq!(FlowCounters::default().add(a), a);
    }

    #[test]
    fn dest_key_round_trips_its_address() {
        for text in ["192.0.2.7", "2001:db8::1"] {
            let addr: IpAddr = text.parse().unwrap();
            let key = DestKey::new(addr, 53, IPPROTO_UDP);
            assert_eq!(key.ip(), addr);
        }
        assert_eq!(DestKey::new("192.0.2.7".parse().unwrap(), 1, IPPROTO_TCP).addr[4..], [0; 12]);
    }
}
