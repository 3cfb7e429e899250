//! Measurement-only programs for docs/benchmarks.md ("Issue 22 item 2: the counter's own
//! share"): each does a part of what the counter does for an IPv4 UDP datagram on Ethernet, so
//! that the share of each part over the do-nothing reference can be measured. Not part of the
//! product: removed again by the commit after the one that adds them.

use aya_ebpf::{macros::classifier, maps::PerCpuArray, programs::TcContext};
use libraflux_common::{Dest4, DestEntry, IPPROTO_UDP};

use crate::{
    COUNTERS_V4, ETH_HLEN, ETH_P_IP, ETH_TYPE, PARSE_ERRORS, VERDICT,
    headers::{
        Headers, IPV4_DST, IPV4_FRAG, IPV4_FRAG_OFFSET_MASK, IPV4_HLEN, IPV4_PROTO, IPV4_SRC, L4_DST_PORT,
        L4_PORTS_LEN, L4_SRC_PORT, read,
    },
};

#[aya_ebpf::macros::map(name = "MEASURE_ONE")]
static MEASURE_ONE: PerCpuArray<DestEntry> = PerCpuArray::with_max_entries(1, 0);

/// What the counter reads of a received IPv4 UDP datagram: the destination, the source and the
/// length. `None` for anything else.
#[inline(always)]
fn parse(ctx: &TcContext) -> Result<Option<(Dest4, [u8; 4], u16)>, i64> {
    let ethertype = u16::from_be(read(ctx, ETH_TYPE)?);
    // SAFETY: the context is the kernel's __sk_buff for this run.
    if ethertype != ETH_P_IP || unsafe { (*ctx.skb.skb).ingress_ifindex } == 0 {
        return Ok(None);
    }
    let headers = Headers::check(ctx, ETH_HLEN + IPV4_HLEN + L4_PORTS_LEN);
    let version_ihl: u8 = headers.read(ctx, ETH_HLEN)?;
    let frag = u16::from_be(headers.read(ctx, ETH_HLEN + IPV4_FRAG)?);
    let proto: u8 = headers.read(ctx, ETH_HLEN + IPV4_PROTO)?;
    if version_ihl != 0x45 || frag & IPV4_FRAG_OFFSET_MASK != 0 || proto != IPPROTO_UDP {
        return Ok(None);
    }
    let l4 = ETH_HLEN + IPV4_HLEN;
    let dest = Dest4 {
        addr: headers.read(ctx, ETH_HLEN + IPV4_DST)?,
        port: u16::from_be(headers.read(ctx, l4 + L4_DST_PORT)?),
        proto,
        _pad: 0,
    };
    let src_addr: [u8; 4] = headers.read(ctx, ETH_HLEN + IPV4_SRC)?;
    let src_port = u16::from_be(headers.read(ctx, l4 + L4_SRC_PORT)?);
    Ok(Some((dest, src_addr, src_port)))
}

/// Parses and keeps every field it read live (a mix of them is compared with a value no
/// datagram of the bench has), and counts nothing.
#[classifier]
pub fn measure_parse(ctx: TcContext) -> i32 {
    if let Ok(Some((dest, src_addr, src_port))) = parse(&ctx) {
        let mix = u32::from_ne_bytes(dest.addr)
            ^ u32::from(dest.port)
            ^ u32::from_ne_bytes(src_addr)
            ^ u32::from(src_port) << 16
            ^ ctx.len();
        if mix == 0x5a5a_5a5a
            && let Some(slot) = PARSE_ERRORS.get_ptr_mut(0)
        {
            // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
            unsafe { *slot += 1 };
        }
    }
    VERDICT
}

/// Parses and counts every IPv4 UDP datagram in one per-CPU array slot (no lookup by
/// destination): the least a counter at this hook can do.
#[classifier]
pub fn measure_array(ctx: TcContext) -> i32 {
    if let Ok(Some((dest, src_addr, src_port))) = parse(&ctx)
        && let Some(entry) = MEASURE_ONE.get_ptr_mut(0)
    {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        let entry = unsafe { &mut *entry };
        entry.counters.packets += 1;
        entry.counters.bytes += u64::from(ctx.len());
        entry.last_src_port = src_port ^ dest.port;
        entry.last_src_addr[..4].copy_from_slice(&src_addr);
    }
    VERDICT
}

/// Parses and counts in the destination's entry of the counter's own map, found with the same
/// per-CPU hash lookup; no clock, no flow tracking.
#[classifier]
pub fn measure_hash(ctx: TcContext) -> i32 {
    if let Ok(Some((dest, src_addr, src_port))) = parse(&ctx)
        && let Some(entry) = COUNTERS_V4.get_ptr_mut(dest)
    {
        // SAFETY: a per-CPU map value, only this CPU uses it while the program runs.
        let entry = unsafe { &mut *entry };
        entry.counters.packets += 1;
        entry.counters.bytes += u64::from(ctx.len());
        entry.last_src_port = src_port;
        entry.last_src_addr[..4].copy_from_slice(&src_addr);
    }
    VERDICT
}
