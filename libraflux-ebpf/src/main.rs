//! LibraFlux TC programs: count packets and bytes per watched destination.
//!
//! Userspace inserts a zeroed [`FlowCounters`] entry for every destination it wants counted; the
//! program only updates entries that exist, so the map stays bounded by configuration, never by
//! traffic. Entry points are thin wrappers over `try_*` functions; a packet that cannot be parsed
//! is passed on untouched and counted in `PARSE_ERRORS`, never dropped.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::TC_ACT_OK,
    macros::{classifier, map},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::TcContext,
};
use aya_log_ebpf::debug;
use libraflux_common::{DestKey, FlowCounters, IPPROTO_TCP, IPPROTO_UDP};

/// Default capacity; the loader sets the real one from the configuration.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuHashMap<DestKey, FlowCounters> = PerCpuHashMap::with_max_entries(1024, 0);

/// Packets whose headers could not be read (truncated or malformed), slot 0.
#[map(name = "PARSE_ERRORS")]
static PARSE_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPV6_HLEN: usize = 40;
/// IPv4 flags+fragment offset field: the offset bits; non-zero means a non-first fragment.
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;

#[classifier]
pub fn count_dest(ctx: TcContext) -> i32 {
    if let Err(err) = try_count_dest(&ctx) {
        if let Some(slot) = PARSE_ERRORS.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
            unsafe { *slot += 1 };
        }
        debug!(&ctx, "count_dest: header read failed: {}", err);
    }
    TC_ACT_OK
}

fn try_count_dest(ctx: &TcContext) -> Result<(), i64> {
    // skb->protocol holds the ethertype in network byte order.
    let ethertype = u16::from_be(ctx.skb.protocol() as u16);
    let key = match ethertype {
        ETH_P_IP => ipv4_dest(ctx)?,
        ETH_P_IPV6 => ipv6_dest(ctx)?,
        _ => return Ok(()),
    };
    let Some(key) = key else { return Ok(()) };
    if let Some(counters) = COUNTERS.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe {
            (*counters).packets += 1;
            (*counters).bytes += u64::from(ctx.len());
        }
    }
    Ok(())
}

/// The destination of an IPv4 TCP or UDP packet; `None` for other protocols and for non-first
/// fragments, which carry no L4 header.
fn ipv4_dest(ctx: &TcContext) -> Result<Option<DestKey>, i64> {
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
    let addr: [u8; 4] = ctx.load(ETH_HLEN + 16)?;
    let port = dest_port(ctx, ETH_HLEN + header_len)?;
    Ok(Some(DestKey::ipv4(addr, port, proto)))
}

/// The destination of an IPv6 TCP or UDP packet without extension headers.
fn ipv6_dest(ctx: &TcContext) -> Result<Option<DestKey>, i64> {
    let next_header: u8 = ctx.load(ETH_HLEN + 6)?;
    if next_header != IPPROTO_TCP && next_header != IPPROTO_UDP {
        return Ok(None);
    }
    let addr: [u8; 16] = ctx.load(ETH_HLEN + 24)?;
    let port = dest_port(ctx, ETH_HLEN + IPV6_HLEN)?;
    Ok(Some(DestKey::ipv6(addr, port, next_header)))
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
