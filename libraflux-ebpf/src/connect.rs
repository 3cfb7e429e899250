//! How connection attempts to NAT backends end, counted per backend in `ConnectCounters`:
//! - replies, wherever the backend's packets arrive (the daemon's ingress counter, whose
//!   `CONNECT_REPLIES_*` hold the backends): a SYN-ACK (`answered`), a RST that answers a SYN
//!   (`refused`), an ICMP destination unreachable quoting a packet to the backend
//!   (`unreachable`);
//! - SYNs retransmitted to a backend whose entry has `track_syn_timeouts` (the daemon's egress
//!   counter, whose `CONNECT_ATTEMPTS_*` hold the backends): the client got no SYN-ACK within
//!   its retransmission timeout (`syn_timeouts`), counted once per attempt.
//!
//! Every packet to an unwatched destination passes here, so the common case costs one read:
//! the TCP flags of a segment (most replies are neither SYN nor RST), the type of an ICMP
//! message. A SYN-ACK or a RST (one per connection) is looked up inline, its source read
//! straight from the packet. The rarer work, a destination unreachable and a SYN to a tracked
//! backend, runs out of line (`#[inline(never)]`, a BPF subprogram) and reads its fields through
//! the helper at offsets given at run time: one copy per family rather than one per link-header
//! length, and none of it in the instructions every packet runs through.

use aya_ebpf::{maps::LruHashMap, programs::TcContext};
use libraflux_common::{ConnectCounters, Dest4, Dest6, Flow4, Flow6, IPPROTO_TCP, SynSeen};

use crate::{
    CONNECT_ATTEMPTS_V4, CONNECT_ATTEMPTS_V6, CONNECT_REPLIES_V4, CONNECT_REPLIES_V6, SYN_PENDING_V4,
    SYN_PENDING_V6,
    headers::{Headers, IPV4_SRC, IPV6_SRC, L4, L4_SRC_PORT, TCP_ACK, TCP_RST, TCP_SEQ, TCP_SYN},
    icmp::{ICMP_DEST_UNREACH, ICMPV6_DEST_UNREACH, quoted_dest_v4, quoted_dest_v6},
};

/// A TCP segment whose destination is not watched (IPv4 header `L2` bytes in): if it is a
/// SYN-ACK or a RST from a backend in `CONNECT_REPLIES_V4`, counted there. Inlined whole: a
/// SYN-ACK comes with every connection, and its source is read straight from the packet.
#[inline(always)]
pub(crate) fn tcp_reply_v4<const L2: usize>(ctx: &TcContext, headers: Headers, l4: L4) -> Result<(), i64> {
    let flags = l4.tcp_flags(ctx)?;
    if flags & (TCP_SYN | TCP_RST) == 0 {
        return Ok(());
    }
    let backend = Dest4 {
        addr: headers.read(ctx, L2 + IPV4_SRC)?,
        port: l4.port(ctx, L4_SRC_PORT)?,
        proto: IPPROTO_TCP,
        _pad: 0,
    };
    count_reply(ctx, l4.offset(), flags, CONNECT_REPLIES_V4.get_ptr_mut(backend))
}

/// [`tcp_reply_v4`] for IPv6 (`CONNECT_REPLIES_V6`).
#[inline(always)]
pub(crate) fn tcp_reply_v6<const L2: usize>(ctx: &TcContext, headers: Headers, l4: L4) -> Result<(), i64> {
    let flags = l4.tcp_flags(ctx)?;
    if flags & (TCP_SYN | TCP_RST) == 0 {
        return Ok(());
    }
    let backend = Dest6 {
        addr: headers.read(ctx, L2 + IPV6_SRC)?,
        port: l4.port(ctx, L4_SRC_PORT)?,
        proto: IPPROTO_TCP,
        _pad: 0,
    };
    count_reply(ctx, l4.offset(), flags, CONNECT_REPLIES_V6.get_ptr_mut(backend))
}

/// Counts a reply with `flags` (its TCP header at `l4`) in `counters`, the backend's entry (if
/// it has one). A RST answers a SYN when it has ACK set and sequence number 0: a segment
/// without ACK is answered with SEQ=0 and ACK set (RFC 9293 3.10.7.1; Linux's
/// `tcp_v4_send_reset`, `tcp_v6_send_reset`), while a RST inside a connection carries the
/// connection's sequence number.
#[inline(always)]
fn count_reply(
    ctx: &TcContext,
    l4: usize,
    flags: u8,
    counters: Option<*mut ConnectCounters>,
) -> Result<(), i64> {
    let Some(counters) = counters else { return Ok(()) };
    // SAFETY: a per-CPU map value: only this CPU uses it while the program runs.
    let counters = unsafe { &mut *counters };
    if flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN | TCP_ACK {
        counters.answered += 1;
    } else if flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_RST | TCP_ACK
        && ctx.load::<u32>(l4 + TCP_SEQ)? == 0
    {
        counters.refused += 1;
    }
    Ok(())
}

/// An ICMP message (at `l4`): a destination unreachable quoting a packet to a backend in
/// `CONNECT_REPLIES_V4` is counted there, whatever its code and whoever sent it (the backend
/// itself, or a router on the way).
#[inline(always)]
pub(crate) fn icmp_v4(ctx: &TcContext, l4: L4) -> Result<(), i64> {
    let [kind, _code] = l4.icmp_type_code(ctx)?;
    if kind != ICMP_DEST_UNREACH {
        return Ok(());
    }
    unreachable_v4(ctx, l4.offset())
}

/// [`icmp_v4`] for ICMPv6 (`CONNECT_REPLIES_V6`). Most ICMPv6 messages are neighbour discovery,
/// which stops at the type.
#[inline(always)]
pub(crate) fn icmp_v6(ctx: &TcContext, l4: L4) -> Result<(), i64> {
    let [kind, _code] = l4.icmp_type_code(ctx)?;
    if kind != ICMPV6_DEST_UNREACH {
        return Ok(());
    }
    unreachable_v6(ctx, l4.offset())
}

#[inline(never)]
fn unreachable_v4(ctx: &TcContext, icmp: usize) -> Result<(), i64> {
    count_unreachable(CONNECT_REPLIES_V4.get_ptr_mut(quoted_dest_v4(ctx, icmp)?));
    Ok(())
}

#[inline(never)]
fn unreachable_v6(ctx: &TcContext, icmp: usize) -> Result<(), i64> {
    count_unreachable(CONNECT_REPLIES_V6.get_ptr_mut(quoted_dest_v6(ctx, icmp)?));
    Ok(())
}

#[inline(always)]
fn count_unreachable(counters: Option<*mut ConnectCounters>) {
    if let Some(counters) = counters {
        // SAFETY: a per-CPU map value: only this CPU uses it while the program runs.
        unsafe { (*counters).unreachable += 1 };
    }
}

/// A SYN to `backend` (IPv4 header at `ip`, TCP header at `l4`), whose entry tracks SYN
/// timeouts: a retransmission of an attempt seen before counts once in `CONNECT_ATTEMPTS_V4`.
#[inline(never)]
pub(crate) fn syn_v4(ctx: &TcContext, ip: usize, l4: usize, backend: Dest4) -> Result<(), i64> {
    let src_port: u16 = ctx.load(l4 + L4_SRC_PORT)?;
    let flow = Flow4 {
        src_addr: ctx.load(ip + IPV4_SRC)?,
        dst_addr: backend.addr,
        src_port: u16::from_be(src_port),
        dst_port: backend.port,
    };
    if first_retransmission(&SYN_PENDING_V4, &flow, ctx.load(l4 + TCP_SEQ)?) {
        count_syn_timeout(CONNECT_ATTEMPTS_V4.get_ptr_mut(backend));
    }
    Ok(())
}

/// [`syn_v4`] for IPv6 (`SYN_PENDING_V6`, `CONNECT_ATTEMPTS_V6`).
#[inline(never)]
pub(crate) fn syn_v6(ctx: &TcContext, ip: usize, l4: usize, backend: Dest6) -> Result<(), i64> {
    let src_port: u16 = ctx.load(l4 + L4_SRC_PORT)?;
    let flow = Flow6 {
        src_addr: ctx.load(ip + IPV6_SRC)?,
        dst_addr: backend.addr,
        src_port: u16::from_be(src_port),
        dst_port: backend.port,
    };
    if first_retransmission(&SYN_PENDING_V6, &flow, ctx.load(l4 + TCP_SEQ)?) {
        count_syn_timeout(CONNECT_ATTEMPTS_V6.get_ptr_mut(backend));
    }
    Ok(())
}

/// Whether a SYN with sequence number `isn` (as in the packet: only compared) on `flow` is the
/// first retransmission of an attempt `pending` remembers: same flow, same sequence number, not
/// counted yet. Otherwise it is a new
/// attempt (a new connection on the same flow starts with another sequence number) and is
/// remembered.
#[inline(always)]
fn first_retransmission<K>(pending: &LruHashMap<K, SynSeen>, flow: &K, isn: u32) -> bool {
    if let Some(seen) = pending.get_ptr_mut(flow) {
        // SAFETY: a value the lookup just returned, valid for this run. Shared by all CPUs, but
        // an attempt's SYNs come a second or more apart: two CPUs do not update it at once.
        let seen = unsafe { &mut *seen };
        if seen.isn == isn {
            let first = seen.counted == 0;
            seen.counted = 1;
            return first;
        }
        *seen = SynSeen { isn, counted: 0 };
        return false;
    }
    // An LRU insert evicts rather than fail for room; should it fail anyway, this attempt is
    // forgotten and its retransmission looks like a first SYN (not counted). It is not a parse
    // error, so it is not reported as one.
    let _ = pending.insert(flow, SynSeen { isn, counted: 0 }, 0);
    false
}

#[inline(always)]
fn count_syn_timeout(counters: Option<*mut ConnectCounters>) {
    if let Some(counters) = counters {
        // SAFETY: a per-CPU map value: only this CPU uses it while the program runs.
        unsafe { (*counters).syn_timeouts += 1 };
    }
}
