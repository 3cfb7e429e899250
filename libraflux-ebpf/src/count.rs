//! Counting a TCP or UDP packet to a watched destination, once its IP header has been found
//! `L2` bytes into the packet.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    maps::{LruHashMap, PerCpuArray},
    programs::TcContext,
};
use libraflux_common::{
    Dest4, Dest6, DestEntry, Flow4, Flow6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
    UdpFlowSeen, ipv4_bytes, recent_flow_slot,
};

use crate::{
    UDP_FLOWS_V4, UDP_FLOWS_V6, UDP_RECENT_V4, UDP_RECENT_V6, connect,
    headers::{
        Headers, IPV4_DST, IPV4_FRAG, IPV4_FRAG_OFFSET_MASK, IPV4_HLEN, IPV4_PROTO, IPV4_SRC, IPV6_DST,
        IPV6_HLEN, IPV6_NEXT_HEADER, IPV6_SRC, L4, L4_DST_PORT, L4_PORTS_LEN, L4_SRC_PORT, TCP_ACK, TCP_SYN,
    },
    slots,
};

/// Counts an IPv4 TCP or UDP packet to a watched destination. Other protocols and non-first
/// fragments (which carry no L4 header) are not counted. A TCP segment to any other destination
/// and an ICMP message may be a backend's reply: [`connect`] looks at them; a SYN to a
/// destination that tracks SYN timeouts too.
#[inline(always)]
pub(crate) fn ipv4<const L2: usize>(ctx: &TcContext) -> Result<(), i64> {
    let headers = Headers::check(ctx, L2 + IPV4_HLEN + L4_PORTS_LEN);
    let version_ihl: u8 = headers.read(ctx, L2)?;
    let frag: u16 = u16::from_be(headers.read(ctx, L2 + IPV4_FRAG)?);
    if frag & IPV4_FRAG_OFFSET_MASK != 0 {
        return Ok(());
    }
    let proto: u8 = headers.read(ctx, L2 + IPV4_PROTO)?;
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    let l4 =
        if header_len == IPV4_HLEN { L4::Fixed(headers, L2 + IPV4_HLEN) } else { L4::At(L2 + header_len) };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return if proto == IPPROTO_ICMP { connect::icmp_v4(ctx, l4) } else { Ok(()) };
    }
    let dest =
        Dest4 { addr: headers.read(ctx, L2 + IPV4_DST)?, port: l4.port(ctx, L4_DST_PORT)?, proto, _pad: 0 };
    let Some(entry) = slots::entry_v4(dest) else {
        return if proto == IPPROTO_TCP { connect::tcp_reply_v4::<L2>(ctx, headers, l4) } else { Ok(()) };
    };
    // SAFETY: a per-CPU map value: only this CPU uses it while the program runs, and nothing
    // else here borrows it.
    let entry = unsafe { &mut *entry };
    if proto == IPPROTO_UDP {
        // Read only here: most packets are not to a watched UDP destination.
        let src_addr: [u8; 4] = headers.read(ctx, L2 + IPV4_SRC)?;
        udp_v4(ctx, entry, dest, src_addr, l4.port(ctx, L4_SRC_PORT)?);
        return Ok(());
    }
    packet_time(entry);
    let attempt = is_connection_attempt(ctx, l4)?;
    if attempt && entry.track_syn_timeouts == 1 {
        connect::syn_v4(ctx, L2, l4.offset(), dest)?;
    }
    record(ctx, entry, attempt);
    Ok(())
}

/// Counts an IPv4 UDP datagram from `src_addr:src_port` to the watched destination `dest`,
/// whose entry on this CPU is `entry`. A new flow unless it comes from the entry's last source
/// or the flow tables know it.
#[inline(always)]
pub(crate) fn udp_v4(ctx: &TcContext, entry: &mut DestEntry, dest: Dest4, src_addr: [u8; 4], src_port: u16) {
    let now = packet_time(entry);
    let [a, b, c, d, ..] = entry.last_src_addr;
    let new_flow = if entry.last_src_valid == 1 && [a, b, c, d] == src_addr && entry.last_src_port == src_port
    {
        false
    } else {
        let flow = Flow4 { src_addr, dst_addr: dest.addr, src_port, dst_port: dest.port };
        let slot = recent_flow_slot(flow.src_addr, flow.src_port);
        let new = first_sighting(&UDP_RECENT_V4, &UDP_FLOWS_V4, slot, &flow, now);
        remember_source(entry, ipv4_bytes(src_addr), src_port);
        new
    };
    record(ctx, entry, new_flow);
}

/// Counts an IPv6 TCP or UDP packet (without extension headers) to a watched destination.
///
/// The same steps as [`ipv4`] with the IPv6 types, written out twice on purpose: a version
/// generic over the family took the IPv6 path from 43 to 52 ns per packet (`ebpf-bench run`).
#[inline(always)]
pub(crate) fn ipv6<const L2: usize>(ctx: &TcContext) -> Result<(), i64> {
    let headers = Headers::check(ctx, L2 + IPV6_HLEN + L4_PORTS_LEN);
    let proto: u8 = headers.read(ctx, L2 + IPV6_NEXT_HEADER)?;
    let l4 = L4::Fixed(headers, L2 + IPV6_HLEN);
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return if proto == IPPROTO_ICMPV6 { connect::icmp_v6(ctx, l4) } else { Ok(()) };
    }
    let dest =
        Dest6 { addr: headers.read(ctx, L2 + IPV6_DST)?, port: l4.port(ctx, L4_DST_PORT)?, proto, _pad: 0 };
    let Some(entry) = slots::entry_v6(dest) else {
        return if proto == IPPROTO_TCP { connect::tcp_reply_v6::<L2>(ctx, headers, l4) } else { Ok(()) };
    };
    // SAFETY: as for IPv4.
    let entry = unsafe { &mut *entry };
    let now = packet_time(entry);
    let new_flow = if proto == IPPROTO_TCP {
        let attempt = is_connection_attempt(ctx, l4)?;
        if attempt && entry.track_syn_timeouts == 1 {
            connect::syn_v6(ctx, L2, l4.offset(), dest)?;
        }
        attempt
    } else {
        let src_addr: [u8; 16] = headers.read(ctx, L2 + IPV6_SRC)?;
        let src_port = l4.port(ctx, L4_SRC_PORT)?;
        if entry.last_src_valid == 1 && entry.last_src_addr == src_addr && entry.last_src_port == src_port {
            false
        } else {
            let flow = Flow6 { src_addr, dst_addr: dest.addr, src_port, dst_port: dest.port };
            let [.., a, b, c, d] = flow.src_addr;
            let slot = recent_flow_slot([a, b, c, d], flow.src_port);
            let new = first_sighting(&UDP_RECENT_V6, &UDP_FLOWS_V6, slot, &flow, now);
            remember_source(entry, src_addr, src_port);
            new
        }
    };
    record(ctx, entry, new_flow);
    Ok(())
}

/// The time of this packet from the coarse clock, read only when jiffies moved since the entry's
/// `last_seen_ns` was taken (the coarse clock advances with the tick, so it would read the same).
/// Stored in the entry as its new `last_seen_ns`.
#[inline(always)]
fn packet_time(entry: &mut DestEntry) -> u64 {
    // SAFETY: bpf_jiffies64 has no preconditions (the verifier inlines it as a load).
    let jiffies = unsafe { bpf_jiffies64() };
    if entry.clock_jiffies != jiffies || entry.counters.last_seen_ns == 0 {
        // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
        entry.counters.last_seen_ns = unsafe { bpf_ktime_get_coarse_ns() };
        entry.clock_jiffies = jiffies;
    }
    entry.counters.last_seen_ns
}

/// Remembers the source of a datagram whose flow the flow tables now know.
#[inline(always)]
fn remember_source(entry: &mut DestEntry, src_addr: [u8; 16], src_port: u16) {
    entry.last_src_addr = src_addr;
    entry.last_src_port = src_port;
    entry.last_src_valid = 1;
}

/// Adds one packet to a destination's counters on this CPU (`last_seen_ns` is set by
/// [`packet_time`]). `bytes` adds `skb->len`: the packet as the hook sees it, link header and
/// any VLAN tags in the packet included.
#[inline(always)]
fn record(ctx: &TcContext, entry: &mut DestEntry, new_flow: bool) {
    entry.counters.packets += 1;
    entry.counters.bytes += u64::from(ctx.len());
    entry.counters.new_flows += u64::from(new_flow);
}

/// A TCP segment with SYN and without ACK: a client's connection attempt (retransmitted SYNs
/// count again).
#[inline(always)]
fn is_connection_attempt(ctx: &TcContext, l4: L4) -> Result<bool, i64> {
    let flags = l4.tcp_flags(ctx)?;
    Ok(flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
}

/// Whether `flow` was not yet in `flows`; remembers it there if so. `recent` (this CPU's slot
/// `slot`) answers first for the flow this CPU saw last in that slot.
#[inline(always)]
fn first_sighting<K: Copy + PartialEq>(
    recent: &PerCpuArray<K>,
    flows: &LruHashMap<K, UdpFlowSeen>,
    slot: u32,
    flow: &K,
    now: u64,
) -> bool {
    let cached = recent.get_ptr_mut(slot);
    if let Some(cached) = cached {
        // SAFETY: a per-CPU map value, only this CPU touches it while the program runs.
        if unsafe { *cached } == *flow {
            return false;
        }
    }
    let new = flows.get_ptr(flow).is_none()
        // BPF_NOEXIST decides races between CPUs: only the insert that created the entry counts.
        // An LRU insert does not fail for lack of room (it evicts), so an error means "exists".
        && flows.insert(flow, UdpFlowSeen { first_seen_ns: now }, u64::from(BPF_NOEXIST)).is_ok();
    if let Some(cached) = cached {
        // SAFETY: as above.
        unsafe { *cached = *flow };
    }
    new
}
