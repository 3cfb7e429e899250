//! LibraFlux TC programs: count packets, bytes and new flows per watched destination, and when
//! the last packet was seen.
//!
//! Userspace writes a zeroed `DestEntry`, with its key, into an array slot for every destination it
//! wants counted (`slots.rs`); the program only counts in slots that hold the packet's
//! destination, so the maps stay bounded by configuration, never by traffic. UDP flows of watched destinations are remembered in LRU maps sized by the loader.
//! Entry points are thin wrappers over `try_*` functions; a packet that cannot be parsed is passed
//! on untouched and counted in `PARSE_ERRORS`, never dropped. Packets the node sends itself (no
//! ingress interface) are not counted: they are not client traffic.
//!
//! Two entry points share the maps, one per way a link frames its packets at the TC hooks; the
//! loader attaches the one that fits the interface's link type, and refuses other link types:
//! - `libraflux_count`, Ethernet (and loopback): a 14-byte header whose ethertype is IP, or a
//!   VLAN tag (802.1Q or 802.1ad) followed by IP or by one more tag. At ingress the kernel has
//!   already taken the outer tag out of the packet into the skb's metadata; tags that remain in
//!   the packet (QinQ's inner one, or those of a VLAN device with `reorder_hdr off`) are read
//!   past. More than two are not (a parse error).
//! - `libraflux_l3`, links without a link header (tun, WireGuard, ipip, ip6tnl): the IP header
//!   first, its version saying which.
//!
//! Both are the same code instantiated with the IP header's offset as a constant, so every
//! header read stays at a constant offset the verifier can check; an untagged Ethernet frame
//! costs one more read than before tags were parsed (its ethertype, from the packet).
//!
//! The same programs count how connection attempts to NAT backends end (`connect.rs`): replies
//! that answer or refuse them, ICMP unreachable about them, SYNs retransmitted for want of an
//! answer. Only backends userspace lists in the connect maps are counted.
//!
//! One kind of packet is dropped: an ICMP port unreachable the node itself sends about a packet
//! to a VIP that userspace shielded (`SHIELD_V4`/`SHIELD_V6`) for the moment its service's
//! scheduler is changed in place. IPVS refuses a connection that arrives while the service has no
//! scheduler; without the refusal the client retransmits its SYN and connects. It can only happen
//! where the refusal leaves the node: at the egress of the client-facing interface.
//!
//! Every packet on the interface runs this program, so its cost is kept down (docs/benchmarks.md
//! measures it): header fields are read straight from the packet when they are in the linear
//! area, a watched destination's entry is found in one of two array slots its hash picks, with
//! no lookup by key (each family has its own maps, so an IPv4 key is 8 bytes), the time
//! comes from the kernel's coarse clock and is read once per tick, a UDP datagram from the
//! same source as the last one needs no flow lookup, and an untagged IPv4 UDP datagram on an
//! Ethernet link is counted by a short straight-line path (`fast.rs`) ahead of the general one.
//!
//! One more program is not a TC program: a kprobe that counts who writes to the IPVS table
//! (`writes.rs`), so that the daemon reads the table only when someone else changed it.
#![no_std]
#![no_main]

mod connect;
mod count;
mod fast;
mod headers;
mod icmp;
mod shield;
mod slots;
mod writes;

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::{classifier, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::TcContext,
};
use aya_log_ebpf::debug;
use libraflux_common::{
    ConnectCounters, Dest4, Dest6, Flow4, Flow6, RECENT_FLOW_SLOTS, SHIELD_CAPACITY, Shield, Slot4, Slot6,
    SlotParams, SynSeen, UdpFlowSeen,
};

use crate::headers::{Headers, IPV4_HLEN, read};

/// Default capacities; the loader sets the real ones from the configuration.
#[map(name = "COUNTERS_V4")]
static COUNTERS_V4: PerCpuArray<Slot4> = PerCpuArray::with_max_entries(1024, 0);
#[map(name = "COUNTERS_V6")]
static COUNTERS_V6: PerCpuArray<Slot6> = PerCpuArray::with_max_entries(1024, 0);
/// Where each family's destinations sit in those arrays (slots.rs).
#[map(name = "SLOT_PARAMS")]
static SLOT_PARAMS: Array<SlotParams> = Array::with_max_entries(2, 0);

/// UDP 5-tuples already seen (shared by all CPUs, so a flow is new once, whichever CPU sees it).
/// Default capacities; the loader sets the real ones.
#[map(name = "UDP_FLOWS_V4")]
static UDP_FLOWS_V4: LruHashMap<Flow4, UdpFlowSeen> = LruHashMap::with_max_entries(4096, 0);
#[map(name = "UDP_FLOWS_V6")]
static UDP_FLOWS_V6: LruHashMap<Flow6, UdpFlowSeen> = LruHashMap::with_max_entries(4096, 0);

/// Per-CPU caches in front of the UDP flow maps: slot `recent_flow_slot(flow)` holds the last
/// flow this CPU looked up in the LRU map there. A datagram whose flow is in its slot is not
/// new, and skips the LRU lookup: hashing and comparing in the shared map are most of the cost
/// of new-flow counting, and a busy UDP flow sends many datagrams through one CPU. A zeroed slot
/// never matches: a watched destination's address is not zero.
#[map(name = "UDP_RECENT_V4")]
static UDP_RECENT_V4: PerCpuArray<Flow4> = PerCpuArray::with_max_entries(RECENT_FLOW_SLOTS, 0);
#[map(name = "UDP_RECENT_V6")]
static UDP_RECENT_V6: PerCpuArray<Flow6> = PerCpuArray::with_max_entries(RECENT_FLOW_SLOTS, 0);

/// NAT backends whose replies are counted (answered, refused, unreachable), keyed by the
/// backend's address, protocol and port; written by userspace, updated in place by the program.
/// Default capacities; the loader sets the real ones.
#[map(name = "CONNECT_REPLIES_V4")]
static CONNECT_REPLIES_V4: PerCpuHashMap<Dest4, ConnectCounters> = PerCpuHashMap::with_max_entries(1024, 0);
#[map(name = "CONNECT_REPLIES_V6")]
static CONNECT_REPLIES_V6: PerCpuHashMap<Dest6, ConnectCounters> = PerCpuHashMap::with_max_entries(1024, 0);

/// NAT backends whose SYN timeouts are counted (with `DestEntry::track_syn_timeouts` set in
/// their counters entry).
#[map(name = "CONNECT_ATTEMPTS_V4")]
static CONNECT_ATTEMPTS_V4: PerCpuHashMap<Dest4, ConnectCounters> = PerCpuHashMap::with_max_entries(1024, 0);
#[map(name = "CONNECT_ATTEMPTS_V6")]
static CONNECT_ATTEMPTS_V6: PerCpuHashMap<Dest6, ConnectCounters> = PerCpuHashMap::with_max_entries(1024, 0);

/// The last SYN of each flow to a backend that tracks SYN timeouts (shared by all CPUs: a
/// client's retransmission may arrive on another CPU than its first SYN).
#[map(name = "SYN_PENDING_V4")]
static SYN_PENDING_V4: LruHashMap<Flow4, SynSeen> = LruHashMap::with_max_entries(4096, 0);
#[map(name = "SYN_PENDING_V6")]
static SYN_PENDING_V6: LruHashMap<Flow6, SynSeen> = LruHashMap::with_max_entries(4096, 0);

/// Packets whose headers could not be read (truncated or malformed, or behind more than two
/// VLAN tags), slot 0.
#[map(name = "PARSE_ERRORS")]
static PARSE_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// VIPs (address, protocol, port) whose refusals are dropped until `Shield::until_ns`; written by
/// userspace only.
#[map(name = "SHIELD_V4")]
static SHIELD_V4: HashMap<Dest4, Shield> = HashMap::with_max_entries(SHIELD_CAPACITY, 0);
#[map(name = "SHIELD_V6")]
static SHIELD_V6: HashMap<Dest6, Shield> = HashMap::with_max_entries(SHIELD_CAPACITY, 0);

/// Refusals dropped for a shielded VIP, slot 0.
#[map(name = "SHIELDED")]
static SHIELDED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
/// Where the Ethernet header's ethertype is.
const ETH_TYPE: usize = 12;
/// A VLAN tag: its TCI, then the ethertype of what follows (the tag's own TPID is the ethertype
/// before it).
const VLAN_HLEN: usize = 4;
const VLAN_ETHERTYPE: usize = 2;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// The error logged and counted for a packet with more VLAN tags in it than the program reads
/// (`EPROTO`, as the helpers report errors).
const TOO_MANY_TAGS: i64 = -71;

/// An observer must not decide the packet's fate: `TC_ACT_UNSPEC` lets the next filter (netlink
/// clsact) or program (tcx: `TCX_NEXT`) run, and the packet continues if none decides.
const VERDICT: i32 = TC_ACT_UNSPEC;
/// The one exception, a refusal of a shielded VIP: dropped (`TC_ACT_SHOT` is also `TCX_DROP`).
const DROP: i32 = TC_ACT_SHOT;

/// For Ethernet links (and loopback, which frames its packets the same way).
///
/// `#[classifier]` wraps this body in the exported entry point as an inner function, which LLVM
/// inlines only while it is small; once the body outgrew its threshold every packet paid a
/// BPF-to-BPF call (about 10 ns in `ebpf-bench run`, docs/benchmarks.md). Hence
/// `inline(always)`, which the macro keeps on the inner function.
///
/// The commonest packet takes the straight-line path first ([`fast::ethernet_ipv4_udp`]); any
/// other costs that path's bounds check and first few loads (docs/benchmarks.md).
#[classifier]
#[inline(always)]
pub fn libraflux_count(ctx: TcContext) -> i32 {
    if fast::ethernet_ipv4_udp(&ctx) {
        return VERDICT;
    }
    verdict(&ctx, try_ethernet(&ctx))
}

/// For links without a link header: the IP header is the first byte the hook sees.
#[classifier]
#[inline(always)]
pub fn libraflux_l3(ctx: TcContext) -> i32 {
    verdict(&ctx, try_l3(&ctx))
}

/// The benchmarks' reference (`REFERENCE_PROGRAM`): attached like the counter, it does nothing,
/// so it costs what any TC program costs at that hook.
#[classifier]
pub fn libraflux_noop(_ctx: TcContext) -> i32 {
    VERDICT
}

/// The verdict of a run: a parse error is counted (and logged) and the packet passes.
#[inline(always)]
fn verdict(ctx: &TcContext, result: Result<i32, i64>) -> i32 {
    match result {
        Ok(verdict) => verdict,
        Err(err) => {
            if let Some(slot) = PARSE_ERRORS.get_ptr_mut(0) {
                // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
                unsafe { *slot += 1 };
            }
            debug!(ctx, "libraflux: header read failed: {}", err);
            VERDICT
        }
    }
}

/// An Ethernet frame: IP right after the header, or behind one or two VLAN tags in the packet.
///
/// The ethertypes are read from the packet, not from `skb->protocol`: a VLAN device with
/// `reorder_hdr off` gets its packets with the tag written back into them, while
/// `skb->protocol` names what follows the tag (`vlan_do_receive`).
#[inline(always)]
fn try_ethernet(ctx: &TcContext) -> Result<i32, i64> {
    let outer = u16::from_be(read(ctx, ETH_TYPE)?);
    if !is_vlan(outer) {
        return at::<ETH_HLEN>(ctx, outer);
    }
    let inner = u16::from_be(read(ctx, ETH_HLEN + VLAN_ETHERTYPE)?);
    if !is_vlan(inner) {
        return at::<{ ETH_HLEN + VLAN_HLEN }>(ctx, inner);
    }
    let innermost = u16::from_be(read(ctx, ETH_HLEN + VLAN_HLEN + VLAN_ETHERTYPE)?);
    if !is_vlan(innermost) {
        return at::<{ ETH_HLEN + 2 * VLAN_HLEN }>(ctx, innermost);
    }
    Err(TOO_MANY_TAGS)
}

/// An IP packet with nothing before it; its version says which.
#[inline(always)]
fn try_l3(ctx: &TcContext) -> Result<i32, i64> {
    // Checked for a whole IPv4 header, not for the one byte read: a one-byte bound did not pass
    // the verifier ("invalid access to packet, off=0 size=1 ... r=0" on 6.18).
    let version_ihl: u8 = Headers::check(ctx, IPV4_HLEN).read(ctx, 0)?;
    match version_ihl >> 4 {
        4 => at::<0>(ctx, ETH_P_IP),
        6 => at::<0>(ctx, ETH_P_IPV6),
        _ => Ok(VERDICT),
    }
}

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

/// A packet whose IP header (of `ethertype`) starts `L2` bytes in: counted if received, looked
/// at for the shield if the node sent it (no ingress interface: every received packet has its
/// ingress interface set before the TC hooks run). The node's own packets are not client
/// traffic: health checks to a backend must not look like traffic to drain.
#[inline(always)]
fn at<const L2: usize>(ctx: &TcContext, ethertype: u16) -> Result<i32, i64> {
    // SAFETY: the context is the kernel's __sk_buff for this run; the verifier checks the access.
    if unsafe { (*ctx.skb.skb).ingress_ifindex } == 0 {
        return match ethertype {
            ETH_P_IP => shield::ipv4::<L2>(ctx),
            ETH_P_IPV6 => shield::ipv6::<L2>(ctx),
            _ => Ok(VERDICT),
        };
    }
    match ethertype {
        ETH_P_IP => count::ipv4::<L2>(ctx)?,
        ETH_P_IPV6 => count::ipv6::<L2>(ctx)?,
        _ => {}
    }
    Ok(VERDICT)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
