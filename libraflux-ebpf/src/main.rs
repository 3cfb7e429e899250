//! LibraFlux TC programs: count packets, bytes and new flows per watched destination, and when
//! the last packet was seen.
//!
//! Userspace inserts a zeroed [`FlowCounters`] entry for every destination it wants counted; the
//! program only updates entries that exist, so the map stays bounded by configuration, never by
//! traffic. UDP flows of watched destinations are remembered in an LRU map sized by the loader.
//! Entry points are thin wrappers over `try_*` functions; a packet that cannot be parsed is passed
//! on untouched and counted in `PARSE_ERRORS`, never dropped.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_UNSPEC},
    helpers::bpf_ktime_get_ns,
    macros::{classifier, map},
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::TcContext,
};
use aya_log_ebpf::debug;
use libraflux_common::{
    DestKey, FAMILY_INET, FAMILY_INET6, FlowCounters, IPPROTO_TCP, IPPROTO_UDP, UdpFlowKey, UdpFlowSeen,
    ipv4_bytes,
};

/// Default capacity; the loader sets the real one from the configuration.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuHashMap<DestKey, FlowCounters> = PerCpuHashMap::with_max_entries(1024, 0);

/// UDP 5-tuples already seen (shared by all CPUs, so a flow is new once, whichever CPU sees it).
/// Default capacity; the loader sets the real one.
#[map(name = "UDP_FLOWS")]
static UDP_FLOWS: LruHashMap<UdpFlowKey, UdpFlowSeen> = LruHashMap::with_max_entries(4096, 0);

/// Packets whose headers could not be read (truncated or malformed), slot 0.
#[map(name = "PARSE_ERRORS")]
static PARSE_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPV6_HLEN: usize = 40;
const IPV4_SRC_OFFSET: usize = ETH_HLEN + 12;
const IPV6_SRC_OFFSET: usize = ETH_HLEN + 8;
/// IPv4 flags+fragment offset field: the offset bits; non-zero means a non-first fragment.
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;
/// Offset of the flags byte in the TCP header, and the two flags that mark a connection attempt.
const TCP_FLAGS_OFFSET: usize = 13;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// An observer must not decide the packet's fate: `TC_ACT_UNSPEC` lets the next filter (netlink
/// clsact) or program (tcx: `TCX_NEXT`) run, and the packet continues if none decides.
const VERDICT: i32 = TC_ACT_UNSPEC;

#[classifier]
pub fn libraflux_count(ctx: TcContext) -> i32 {
    if let Err(err) = try_count(&ctx) {
        if let Some(slot) = PARSE_ERRORS.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
            unsafe { *slot += 1 };
        }
        debug!(&ctx, "libraflux_count: header read failed: {}", err);
    }
    VERDICT
}

/// A TCP or UDP packet: its destination and where its L4 header starts.
struct Packet {
    dest: DestKey,
    l4_offset: usize,
}

fn try_count(ctx: &TcContext) -> Result<(), i64> {
    // skb->protocol holds the ethertype in network byte order.
    let ethertype = u16::from_be(ctx.skb.protocol() as u16);
    let packet = match ethertype {
        ETH_P_IP => ipv4_packet(ctx)?,
        ETH_P_IPV6 => ipv6_packet(ctx)?,
        _ => return Ok(()),
    };
    let Some(packet) = packet else { return Ok(()) };
    let Some(counters) = COUNTERS.get_ptr_mut(packet.dest) else { return Ok(()) };
    let new_flow = match packet.dest.proto {
        IPPROTO_TCP => is_connection_attempt(ctx, packet.l4_offset)?,
        _ => is_new_udp_flow(ctx, &packet)?,
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: per-CPU value, only this CPU writes it while the program runs.
    unsafe {
        (*counters).packets += 1;
        (*counters).bytes += u64::from(ctx.len());
        (*counters).new_flows += u64::from(new_flow);
        (*counters).last_seen_ns = now;
    }
    Ok(())
}

/// A TCP segment with SYN and without ACK: a client's connection attempt (retransmitted SYNs
/// count again).
fn is_connection_attempt(ctx: &TcContext, l4_offset: usize) -> Result<bool, i64> {
    let flags: u8 = ctx.load(l4_offset + TCP_FLAGS_OFFSET)?;
    Ok(flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
}

/// Whether this datagram's 5-tuple was not yet in `UDP_FLOWS`; remembers it if so.
fn is_new_udp_flow(ctx: &TcContext, packet: &Packet) -> Result<bool, i64> {
    // Read only here: most packets are not to a watched UDP destination.
    let src_addr = if packet.dest.family == FAMILY_INET {
        ipv4_bytes(ctx.load(IPV4_SRC_OFFSET)?)
    } else {
        ctx.load(IPV6_SRC_OFFSET)?
    };
    let src_port: u16 = u16::from_be(ctx.load(packet.l4_offset)?);
    let flow = UdpFlowKey {
        src_addr,
        dst_addr: packet.dest.addr,
        src_port,
        dst_port: packet.dest.port,
        family: packet.dest.family,
        _pad: [0; 3],
    };
    if UDP_FLOWS.get_ptr(flow).is_some() {
        return Ok(false);
    }
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let seen = UdpFlowSeen { first_seen_ns: unsafe { bpf_ktime_get_ns() } };
    // BPF_NOEXIST decides races between CPUs: only the insert that created the entry counts.
    // An LRU insert does not fail for lack of room (it evicts), so an error means "exists".
    Ok(UDP_FLOWS.insert(flow, seen, u64::from(BPF_NOEXIST)).is_ok())
}

/// An IPv4 TCP or UDP packet; `None` for other protocols and for non-first fragments, which
/// carry no L4 header.
fn ipv4_packet(ctx: &TcContext) -> Result<Option<Packet>, i64> {
    let version_ihl: u8 = ctx.load(ETH_HLEN)?;
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    let frag: u16 = u16::from_be(ctx.load(ETH_HLEN + 6)?);
    if frag & IPV4_FRAG_OFFSET_MASK != 0 {
        return Ok(None);
    }
    let proto: u8 = ctx.load(ETH_HLEN + 9)?;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Ok(None);
    }
    let dst: [u8; 4] = ctx.load(ETH_HLEN + 16)?;
    let l4_offset = ETH_HLEN + header_len;
    let port = dest_port(ctx, l4_offset)?;
    let dest = DestKey { addr: ipv4_bytes(dst), port, proto, family: FAMILY_INET };
    Ok(Some(Packet { dest, l4_offset }))
}

/// An IPv6 TCP or UDP packet without extension headers.
fn ipv6_packet(ctx: &TcContext) -> Result<Option<Packet>, i64> {
    let next_header: u8 = ctx.load(ETH_HLEN + 6)?;
    if next_header != IPPROTO_TCP && next_header != IPPROTO_UDP {
        return Ok(None);
    }
    let dst: [u8; 16] = ctx.load(ETH_HLEN + 24)?;
    let l4_offset = ETH_HLEN + IPV6_HLEN;
    let port = dest_port(ctx, l4_offset)?;
    let dest = DestKey { addr: dst, port, proto: next_header, family: FAMILY_INET6 };
    Ok(Some(Packet { dest, l4_offset }))
}

/// TCP and UDP both keep the destination port at offset 2 of their header.
fn dest_port(ctx: &TcContext, l4_offset: usize) -> Result<u16, i64> {
    let port: u16 = ctx.load(l4_offset + 2)?;
    Ok(u16::from_be(port))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
