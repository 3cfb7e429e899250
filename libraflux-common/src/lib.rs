//! Types shared by the eBPF programs (kernel side) and the loader (user side).
//!
//! Every type here is `#[repr(C)]` with explicit padding and no `bool`, `Option` or Rust enums,
//! so the kernel and userspace agree on the layout byte for byte. The size asserts below fail the
//! build on both sides if a field is added without updating the other.
#![no_std]

use core::net::IpAddr;

mod slots;
pub use slots::{
    SLOT_PARAMS_MAP, SLOT_PARAMS_V4, SLOT_PARAMS_V6, Slot4, Slot6, SlotParams, candidate_slots, dest4_hash,
    dest6_hash,
};

/// Address family values used in [`DestKey::family`].
pub const FAMILY_INET: u8 = 4;
pub const FAMILY_INET6: u8 = 6;

/// IP protocol numbers used in [`DestKey::proto`] (as in `netinet/in.h`).
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

/// Names of the per-CPU arrays of [`Slot4`] and [`Slot6`]: a watched destination's counters,
/// in one of the two slots its hash picks (see the `slots` module). One array per family keeps
/// the IPv4 key at 8 bytes.
///
/// The programs only count in slots that hold the packet's destination: userspace writes a
/// zeroed entry with its key into a slot for each destination it wants counted. That keeps the
/// arrays bounded by configuration, not by traffic.
pub const COUNTERS_V4_MAP: &str = "COUNTERS_V4";
pub const COUNTERS_V6_MAP: &str = "COUNTERS_V6";

/// Names of the LRU hash maps of [`Flow4`] / [`Flow6`] -> [`UdpFlowSeen`]: the UDP
/// 5-tuples already seen, so that only the first datagram of each counts as a new flow. Sized by
/// the loader; when one is full the least recently used flow is forgotten (and counts as new
/// again if it comes back).
pub const UDP_FLOWS_V4_MAP: &str = "UDP_FLOWS_V4";
pub const UDP_FLOWS_V6_MAP: &str = "UDP_FLOWS_V6";

/// Names of the per-CPU arrays of [`Flow4`] / [`Flow6`] in front of the UDP flow maps:
/// slot [`recent_flow_slot`] of a CPU holds the last flow that CPU looked up there, so a busy
/// flow skips the shared LRU map. [`RECENT_FLOW_SLOTS`] slots per CPU and family.
pub const UDP_RECENT_V4_MAP: &str = "UDP_RECENT_V4";
pub const UDP_RECENT_V6_MAP: &str = "UDP_RECENT_V6";
pub const RECENT_FLOW_SLOTS: u32 = 1024;

/// The recent-flow slot of a UDP flow: a multiplicative hash of its source address (IPv6: the
/// last 4 bytes) and port, reduced to [`RECENT_FLOW_SLOTS`]. The destination is left out: few
/// are watched.
pub const fn recent_flow_slot(src_addr: [u8; 4], src_port: u16) -> u32 {
    let port = src_port as u32;
    let mixed = (u32::from_ne_bytes(src_addr) ^ (port << 16 | port)).wrapping_mul(0x9e37_79b1);
    mixed >> (32 - RECENT_FLOW_SLOTS.trailing_zeros())
}

const _: () = assert!(RECENT_FLOW_SLOTS.is_power_of_two());

/// Names of the hash maps of shielded VIPs, [`Dest4`] / [`Dest6`] -> [`Shield`]: while a VIP is
/// in its family's map and its [`Shield::until_ns`] has not passed, the program drops every ICMP
/// port unreachable the node itself sends about a packet to that VIP (the quoted header's
/// destination address, protocol and port). IPVS sends one when a service has no scheduler for a
/// moment (a scheduler change in place); dropped, the client retries instead of giving up.
/// Userspace inserts and removes the entries; the program only reads them.
pub const SHIELD_V4_MAP: &str = "SHIELD_V4";
pub const SHIELD_V6_MAP: &str = "SHIELD_V6";
/// How many VIPs of each family can be shielded at once.
pub const SHIELD_CAPACITY: u32 = 256;
/// Name of the per-CPU array (one slot) counting the refusals the program dropped.
pub const SHIELDED_MAP: &str = "SHIELDED";

/// Names of the per-CPU hash maps of NAT backends, [`Dest4`] / [`Dest6`] -> [`ConnectCounters`],
/// whose replies are counted: a SYN-ACK from the backend (`answered`), a RST answering a SYN
/// (`refused`), an ICMP destination unreachable quoting a packet to it (`unreachable`). Replies
/// arrive at ingress: the daemon fills these in its ingress counter. The key is the backend's
/// address, protocol and port, read from the reply's source (from the quoted packet's
/// destination for ICMP). Userspace inserts zeroed entries; the program only updates them.
pub const CONNECT_REPLIES_V4_MAP: &str = "CONNECT_REPLIES_V4";
pub const CONNECT_REPLIES_V6_MAP: &str = "CONNECT_REPLIES_V6";

/// Names of the per-CPU hash maps of NAT backends, [`Dest4`] / [`Dest6`] ->
/// [`ConnectCounters`], whose unanswered SYNs are counted (`syn_timeouts`). SYNs to backends
/// leave at egress: the daemon fills these in its egress counter, together with
/// [`DestEntry::track_syn_timeouts`] on the same backends.
pub const CONNECT_ATTEMPTS_V4_MAP: &str = "CONNECT_ATTEMPTS_V4";
pub const CONNECT_ATTEMPTS_V6_MAP: &str = "CONNECT_ATTEMPTS_V6";

/// Names of the LRU hash maps of [`Flow4`] / [`Flow6`] -> [`SynSeen`]: the last SYNs sent to
/// backends tracked for SYN timeouts, shared by all CPUs. A SYN whose flow is there with the same
/// sequence number is a retransmission: the client got no SYN-ACK within its retransmission
/// timeout. Sized by the loader; an attempt evicted before its retransmission is not counted.
pub const SYN_PENDING_V4_MAP: &str = "SYN_PENDING_V4";
pub const SYN_PENDING_V6_MAP: &str = "SYN_PENDING_V6";

/// Name of the TC classifier program that counts packets per destination on Ethernet links
/// (and loopback). It is also the name of the TC filter (`tc filter show`), by which the loader
/// finds and removes filters a previous LibraFlux process left behind; so it names LibraFlux,
/// and fits the kernel's 15-byte limit.
pub const COUNT_PROGRAM: &str = "libraflux_count";

/// Name of the same counter for links without a link header (tun, WireGuard, ipip, ip6tnl):
/// the IP header is the first byte it sees. It shares [`COUNT_PROGRAM`]'s maps.
pub const COUNT_L3_PROGRAM: &str = "libraflux_l3";

/// Name of a TC classifier that does nothing: the reference the benchmarks attach to measure
/// what any TC program costs at a hook. The daemon never loads it.
pub const REFERENCE_PROGRAM: &str = "libraflux_noop";

/// One destination: address, port and protocol, as seen in the packet's headers. Userspace's
/// family-independent form; the maps hold [`Dest4`] or [`Dest6`] ([`DestKey::map_key`]).
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

/// An IPv4 destination: the key a [`Slot4`] of [`COUNTERS_V4_MAP`] holds, and the key of the
/// IPv4 connect and shield maps. The program zeroes `_pad`.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Dest4 {
    /// Network byte order.
    pub addr: [u8; 4],
    /// Host byte order.
    pub port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    pub _pad: u8,
}

/// An IPv6 destination: the key a [`Slot6`] of [`COUNTERS_V6_MAP`] holds, and the key of the
/// IPv6 connect and shield maps. The program zeroes `_pad`.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Dest6 {
    pub addr: [u8; 16],
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// A destination as the maps key it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKey {
    V4(Dest4),
    V6(Dest6),
}

/// Counters of one destination on one CPU; userspace combines the CPUs with [`FlowCounters::add`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    pub packets: u64,
    /// Sum of `skb->len`: the packet as the TC hook sees it. On Ethernet links that includes the
    /// 14-byte Ethernet header and 4 bytes per VLAN tag carried in the packet; on L3 links
    /// nothing precedes the IP header.
    pub bytes: u64,
    /// TCP: segments with SYN set and ACK clear. UDP: datagrams whose 5-tuple was not in
    /// [`UDP_FLOWS_V4_MAP`] / [`UDP_FLOWS_V6_MAP`].
    pub new_flows: u64,
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC_COARSE: CLOCK_MONOTONIC as of a recent
    /// kernel tick, see [`DestEntry::clock_jiffies`]; up to two ticks, 2-20 ms, behind) of the
    /// last packet on this CPU; 0 = none yet.
    pub last_seen_ns: u64,
}

/// One CPU's entry for a watched destination, in its slot of the counters arrays: the counters
/// userspace reads, and what the program keeps to skip work on the next packet. Userspace
/// writes it zeroed and reads only `counters`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestEntry {
    pub counters: FlowCounters,
    /// `bpf_jiffies64()` when `counters.last_seen_ns` was taken. The coarse clock only moves
    /// at a tick, as jiffies does, so while jiffies is unchanged the program does not read it.
    pub clock_jiffies: u64,
    /// UDP: the source of the last datagram this CPU counted for this destination, once the
    /// flow tables know it. The same source again is the same 5-tuple, so not a new flow, and
    /// needs no lookup. IPv4 uses the first 4 bytes.
    pub last_src_addr: [u8; 16],
    /// Host byte order.
    pub last_src_port: u16,
    /// 1 once `last_src_addr` and `last_src_port` hold a source.
    pub last_src_valid: u8,
    /// Set by userspace when it inserts the entry (the program only reads it): 1 if SYNs to
    /// this destination are remembered in [`SYN_PENDING_V4_MAP`] / [`SYN_PENDING_V6_MAP`] so
    /// that a retransmitted one counts as [`ConnectCounters::syn_timeouts`]. Set for NAT
    /// backends in the counter at egress; SYNs to other destinations pay nothing for it.
    pub track_syn_timeouts: u8,
    pub _pad: [u8; 4],
}

/// An IPv4 flow: source and destination address and port, the protocol implied by the map
/// that holds it. The key of [`UDP_FLOWS_V4_MAP`] (UDP) and [`SYN_PENDING_V4_MAP`] (TCP).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flow4 {
    /// Network byte order.
    pub src_addr: [u8; 4],
    pub dst_addr: [u8; 4],
    /// Host byte order.
    pub src_port: u16,
    pub dst_port: u16,
}

/// An IPv6 flow, the key of [`UDP_FLOWS_V6_MAP`] and [`SYN_PENDING_V6_MAP`].
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flow6 {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
}

/// The value of the UDP flow maps: when the flow's first datagram was seen (see
/// [`FlowCounters::last_seen_ns`] for the clock).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpFlowSeen {
    pub first_seen_ns: u64,
}

/// How a backend's connection attempts ended, on one CPU: the value of the connect maps
/// ([`CONNECT_REPLIES_V4_MAP`], [`CONNECT_ATTEMPTS_V4_MAP`] and their IPv6 twins). Each map's
/// program updates only its own fields (replies: the first three; attempts: `syn_timeouts`);
/// userspace adds CPUs and maps with [`ConnectCounters::add`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectCounters {
    /// TCP segments from the backend with SYN and ACK set (and RST clear).
    pub answered: u64,
    /// TCP segments from the backend with RST and ACK set and sequence number 0: how Linux (and
    /// RFC 9293) answers a segment without ACK, such as a SYN, on a port nobody listens on.
    pub refused: u64,
    /// ICMP destination unreachable (any code) and ICMPv6 destination unreachable quoting a
    /// packet to the backend (address, protocol, port).
    pub unreachable: u64,
    /// SYNs to the backend retransmitted with the same flow and sequence number: once per
    /// attempt, however often it is retransmitted.
    pub syn_timeouts: u64,
}

/// The value of the pending-SYN maps: the sequence number of the last SYN of the flow, and
/// whether its retransmission was counted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynSeen {
    /// As in the packet (network byte order): only compared. A new connection on the same flow
    /// starts with another one.
    pub isn: u32,
    /// 1 once a retransmission of this attempt was counted.
    pub counted: u32,
}

/// The value of the shield maps: until when the VIP is shielded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shield {
    /// CLOCK_MONOTONIC (`bpf_ktime_get_ns`) in nanoseconds. A bound on every shield: an entry
    /// that a crashed process left behind stops dropping anything by itself.
    pub until_ns: u64,
}

const _: () = assert!(size_of::<Dest4>() == 8);
const _: () = assert!(align_of::<Dest4>() == 4);
const _: () = assert!(size_of::<Dest6>() == 20);
const _: () = assert!(align_of::<Dest6>() == 4);
const _: () = assert!(size_of::<FlowCounters>() == 32);
const _: () = assert!(size_of::<DestEntry>() == 64);
const _: () = assert!(size_of::<Flow4>() == 12);
const _: () = assert!(align_of::<Flow4>() == 4);
const _: () = assert!(size_of::<Flow6>() == 36);
const _: () = assert!(align_of::<Flow6>() == 4);
const _: () = assert!(size_of::<UdpFlowSeen>() == 8);
const _: () = assert!(size_of::<Shield>() == 8);
const _: () = assert!(size_of::<ConnectCounters>() == 32);
const _: () = assert!(size_of::<SynSeen>() == 8);

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

    /// The key of this destination in its family's counters map.
    pub const fn map_key(&self) -> MapKey {
        if self.family == FAMILY_INET {
            let [a, b, c, d, ..] = self.addr;
            MapKey::V4(Dest4 { addr: [a, b, c, d], port: self.port, proto: self.proto, _pad: 0 })
        } else {
            MapKey::V6(Dest6 { addr: self.addr, port: self.port, proto: self.proto, _pad: 0 })
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

impl From<Dest4> for DestKey {
    fn from(key: Dest4) -> Self {
        Self::ipv4(key.addr, key.port, key.proto)
    }
}

impl From<Dest6> for DestKey {
    fn from(key: Dest6) -> Self {
        Self::ipv6(key.addr, key.port, key.proto)
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

impl ConnectCounters {
    /// Combines another CPU's (or map's) counts with these.
    pub const fn add(self, other: Self) -> Self {
        Self {
            answered: self.answered.wrapping_add(other.answered),
            refused: self.refused.wrapping_add(other.refused),
            unreachable: self.unreachable.wrapping_add(other.unreachable),
            syn_timeouts: self.syn_timeouts.wrapping_add(other.syn_timeouts),
        }
    }
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
    // SAFETY: all these types are repr(C), contain only integers and byte arrays, and have no
    // implicit padding (asserted above: 4 + 2 + 1 + 1 = 8; 16 + 2 + 1 + 1 = 20; 4 * 8 = 32;
    // 32 + 8 + 16 + 2 + 1 + 1 + 4 = 64; 4 + 4 + 2 + 2 = 12; 16 + 16 + 2 + 2 = 36; 8; 8;
    // 4 * 8 = 32; 4 + 4 = 8).
    unsafe impl aya::Pod for super::Dest4 {}
    unsafe impl aya::Pod for super::Dest6 {}
    unsafe impl aya::Pod for super::FlowCounters {}
    unsafe impl aya::Pod for super::DestEntry {}
    unsafe impl aya::Pod for super::Flow4 {}
    unsafe impl aya::Pod for super::Flow6 {}
    unsafe impl aya::Pod for super::UdpFlowSeen {}
    unsafe impl aya::Pod for super::Shield {}
    unsafe impl aya::Pod for super::ConnectCounters {}
    unsafe impl aya::Pod for super::SynSeen {}
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
    fn connect_counters_add_field_by_field() {
        let replies = ConnectCounters { answered: 5, refused: 2, unreachable: 1, syn_timeouts: 0 };
        let attempts = ConnectCounters { syn_timeouts: 3, ..ConnectCounters::default() };
        let sum = ConnectCounters { answered: 5, refused: 2, unreachable: 1, syn_timeouts: 3 };
        assert_eq!(replies.add(attempts), sum);
        assert_eq!(attempts.add(replies), sum);
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

    #[test]
    fn map_keys_round_trip_per_family() {
        let v4 = DestKey::new("192.0.2.7".parse().unwrap(), 53, IPPROTO_UDP);
        let MapKey::V4(key4) = v4.map_key() else { panic!("an IPv4 key: {v4:?}") };
        assert_eq!(key4, Dest4 { addr: [192, 0, 2, 7], port: 53, proto: IPPROTO_UDP, _pad: 0 });
        assert_eq!(DestKey::from(key4), v4);
        let v6 = DestKey::new("2001:db8::1".parse().unwrap(), 443, IPPROTO_TCP);
        let MapKey::V6(key6) = v6.map_key() else { panic!("an IPv6 key: {v6:?}") };
        assert_eq!((key6.addr, key6.port, key6.proto), (v6.addr, 443, IPPROTO_TCP));
        assert_eq!(DestKey::from(key6), v6);
    }
}
