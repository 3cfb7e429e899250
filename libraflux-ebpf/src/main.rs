//! LibraFlux TC programs: count packets, bytes and new flows per watched destination, and when
//! the last packet was seen.
//!
//! Userspace inserts a zeroed [`DestEntry`] for every destination it wants counted; the
//! program only updates entries that exist, so the maps stay bounded by configuration, never by
//! traffic. UDP flows of watched destinations are remembered in LRU maps sized by the loader.
//! Entry points are thin wrappers over `try_*` functions; a packet that cannot be parsed is passed
//! on untouched and counted in `PARSE_ERRORS`, never dropped. Packets the node sends itself (no
//! ingress interface) are not counted: they are not client traffic.
//!
//! One kind of packet is dropped: an ICMP port unreachable the node itself sends about a packet
//! to a VIP that userspace shielded (`SHIELD_V4`/`SHIELD_V6`) for the moment its service's
//! scheduler is changed in place. IPVS refuses a connection that arrives while the service has no
//! scheduler; without the refusal the client retransmits its SYN and connects. It can only happen
//! where the refusal leaves the node: at the egress of the client-facing interface.
//!
//! Every packet on the interface runs this program, so its cost is kept down (docs/benchmarks.md
//! measures it): header fields are read straight from the packet when they are in the linear
//! area, each family has its own maps so an IPv4 lookup hashes an 8- or 12-byte key, the time
//! comes from the kernel's coarse clock and is read once per tick, and a UDP datagram from the
//! same source as the last one needs no flow lookup.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::{classifier, map},
    maps::{HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::TcContext,
};
use aya_log_ebpf::debug;
use libraflux_common::{
    Dest4, Dest6, DestEntry, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, RECENT_FLOW_SLOTS,
    SHIELD_CAPACITY, Shield, UdpFlow4, UdpFlow6, UdpFlowSeen, ipv4_bytes, recent_flow_slot,
};

/// Default capacities; the loader sets the real ones from the configuration.
#[map(name = "COUNTERS_V4")]
static COUNTERS_V4: PerCpuHashMap<Dest4, DestEntry> = PerCpuHashMap::with_max_entries(1024, 0);
#[map(name = "COUNTERS_V6")]
static COUNTERS_V6: PerCpuHashMap<Dest6, DestEntry> = PerCpuHashMap::with_max_entries(1024, 0);

/// UDP 5-tuples already seen (shared by all CPUs, so a flow is new once, whichever CPU sees it).
/// Default capacities; the loader sets the real ones.
#[map(name = "UDP_FLOWS_V4")]
static UDP_FLOWS_V4: LruHashMap<UdpFlow4, UdpFlowSeen> = LruHashMap::with_max_entries(4096, 0);
#[map(name = "UDP_FLOWS_V6")]
static UDP_FLOWS_V6: LruHashMap<UdpFlow6, UdpFlowSeen> = LruHashMap::with_max_entries(4096, 0);

/// Per-CPU caches in front of the UDP flow maps: slot `recent_flow_slot(flow)` holds the last
/// flow this CPU looked up in the LRU map there. A datagram whose flow is in its slot is not
/// new, and skips the LRU lookup: hashing and comparing in the shared map are most of the cost
/// of new-flow counting, and a busy UDP flow sends many datagrams through one CPU. A zeroed slot
/// never matches: a watched destination's address is not zero.
#[map(name = "UDP_RECENT_V4")]
static UDP_RECENT_V4: PerCpuArray<UdpFlow4> = PerCpuArray::with_max_entries(RECENT_FLOW_SLOTS, 0);
#[map(name = "UDP_RECENT_V6")]
static UDP_RECENT_V6: PerCpuArray<UdpFlow6> = PerCpuArray::with_max_entries(RECENT_FLOW_SLOTS, 0);

/// Packets whose headers could not be read (truncated or malformed), slot 0.
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
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const IPV4_FRAG_OFFSET: usize = ETH_HLEN + 6;
const IPV4_PROTO_OFFSET: usize = ETH_HLEN + 9;
const IPV4_SRC_OFFSET: usize = ETH_HLEN + 12;
const IPV4_DST_OFFSET: usize = ETH_HLEN + 16;
const IPV6_NEXT_HEADER_OFFSET: usize = ETH_HLEN + 6;
const IPV6_SRC_OFFSET: usize = ETH_HLEN + 8;
const IPV6_DST_OFFSET: usize = ETH_HLEN + 24;
/// IPv4 flags+fragment offset field: the offset bits; non-zero means a non-first fragment.
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;
/// TCP and UDP both start with the source port, then the destination port.
const L4_SRC_PORT: usize = 0;
const L4_DST_PORT: usize = 2;
const L4_PORTS_LEN: usize = 4;
/// Offset of the flags byte in the TCP header, and the two flags that mark a connection attempt.
const TCP_FLAGS_OFFSET: usize = 13;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// ICMP "destination unreachable, port unreachable" (RFC 792) and its ICMPv6 twin (RFC 4443):
/// what `ip_vs_leave` sends. Both ICMP headers are 8 bytes, followed by the quoted packet.
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PORT_UNREACH: u8 = 4;
const ICMP_HLEN: usize = 8;
/// In an IPv4 header: protocol and destination; in an IPv6 header: next header and destination.
const IPV4_PROTO: usize = 9;
const IPV4_DST: usize = 16;
const IPV6_NEXT_HEADER: usize = 6;
const IPV6_DST: usize = 24;

/// An observer must not decide the packet's fate: `TC_ACT_UNSPEC` lets the next filter (netlink
/// clsact) or program (tcx: `TCX_NEXT`) run, and the packet continues if none decides.
const VERDICT: i32 = TC_ACT_UNSPEC;
/// The one exception, a refusal of a shielded VIP: dropped (`TC_ACT_SHOT` is also `TCX_DROP`).
const DROP: i32 = TC_ACT_SHOT;

#[classifier]
pub fn libraflux_count(ctx: TcContext) -> i32 {
    match try_count(&ctx) {
        Ok(verdict) => verdict,
        Err(err) => {
            if let Some(slot) = PARSE_ERRORS.get_ptr_mut(0) {
                // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
                unsafe { *slot += 1 };
            }
            debug!(&ctx, "libraflux_count: header read failed: {}", err);
            VERDICT
        }
    }
}

/// The benchmarks' reference (`REFERENCE_PROGRAM`): attached like the counter, it does nothing,
/// so it costs what any TC program costs at that hook.
#[classifier]
pub fn libraflux_noop(_ctx: TcContext) -> i32 {
    VERDICT
}

fn try_count(ctx: &TcContext) -> Result<i32, i64> {
    // skb->protocol holds the ethertype in network byte order.
    let ethertype = u16::from_be(ctx.skb.protocol() as u16);
    // SAFETY: the context is the kernel's __sk_buff for this run; the verifier checks the access.
    if unsafe { (*ctx.skb.skb).ingress_ifindex } == 0 {
        // Sent by this node itself (at egress; every received packet has its ingress interface
        // set before the TC hooks run): health checks and other local traffic to a backend are
        // not client traffic, and must not look like it to drain. Only the node's refusals are
        // looked at.
        return match ethertype {
            ETH_P_IP => shield_ipv4(ctx),
            ETH_P_IPV6 => shield_ipv6(ctx),
            _ => Ok(VERDICT),
        };
    }
    match ethertype {
        ETH_P_IP => count_ipv4(ctx)?,
        ETH_P_IPV6 => count_ipv6(ctx)?,
        _ => {}
    }
    Ok(VERDICT)
}

/// Counts an IPv4 TCP or UDP packet to a watched destination. Other protocols and non-first
/// fragments (which carry no L4 header) are not counted.
fn count_ipv4(ctx: &TcContext) -> Result<(), i64> {
    let headers = Headers::check(ctx, ETH_HLEN + IPV4_HLEN + L4_PORTS_LEN);
    let version_ihl: u8 = headers.read(ctx, ETH_HLEN)?;
    let frag: u16 = u16::from_be(headers.read(ctx, IPV4_FRAG_OFFSET)?);
    if frag & IPV4_FRAG_OFFSET_MASK != 0 {
        return Ok(());
    }
    let proto: u8 = headers.read(ctx, IPV4_PROTO_OFFSET)?;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Ok(());
    }
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    let l4 = if header_len == IPV4_HLEN {
        L4::Fixed(headers, ETH_HLEN + IPV4_HLEN)
    } else {
        L4::At(ETH_HLEN + header_len)
    };
    let dest =
        Dest4 { addr: headers.read(ctx, IPV4_DST_OFFSET)?, port: l4.port(ctx, L4_DST_PORT)?, proto, _pad: 0 };
    let Some(entry) = COUNTERS_V4.get_ptr_mut(dest) else { return Ok(()) };
    // SAFETY: a per-CPU map value: only this CPU uses it while the program runs, and nothing
    // else here borrows it.
    let entry = unsafe { &mut *entry };
    let now = packet_time(entry);
    let new_flow = if proto == IPPROTO_TCP {
        is_connection_attempt(ctx, l4)?
    } else {
        // Read only here: most packets are not to a watched UDP destination.
        let src_addr: [u8; 4] = headers.read(ctx, IPV4_SRC_OFFSET)?;
        let src_port = l4.port(ctx, L4_SRC_PORT)?;
        let [a, b, c, d, ..] = entry.last_src_addr;
        if entry.last_src_valid == 1 && [a, b, c, d] == src_addr && entry.last_src_port == src_port {
            false
        } else {
            let flow = UdpFlow4 { src_addr, dst_addr: dest.addr, src_port, dst_port: dest.port };
            let slot = recent_flow_slot(flow.src_addr, flow.src_port);
            let new = first_sighting(&UDP_RECENT_V4, &UDP_FLOWS_V4, slot, &flow, now);
            remember_source(entry, ipv4_bytes(src_addr), src_port);
            new
        }
    };
    record(ctx, entry, new_flow);
    Ok(())
}

/// Counts an IPv6 TCP or UDP packet (without extension headers) to a watched destination.
///
/// The same steps as [`count_ipv4`] with the IPv6 types, written out twice on purpose: a version
/// generic over the family took the IPv6 path from 43 to 52 ns per packet (`ebpf-bench run`).
fn count_ipv6(ctx: &TcContext) -> Result<(), i64> {
    let headers = Headers::check(ctx, ETH_HLEN + IPV6_HLEN + L4_PORTS_LEN);
    let proto: u8 = headers.read(ctx, IPV6_NEXT_HEADER_OFFSET)?;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Ok(());
    }
    let l4 = L4::Fixed(headers, ETH_HLEN + IPV6_HLEN);
    let dest =
        Dest6 { addr: headers.read(ctx, IPV6_DST_OFFSET)?, port: l4.port(ctx, L4_DST_PORT)?, proto, _pad: 0 };
    let Some(entry) = COUNTERS_V6.get_ptr_mut(dest) else { return Ok(()) };
    // SAFETY: as for IPv4.
    let entry = unsafe { &mut *entry };
    let now = packet_time(entry);
    let new_flow = if proto == IPPROTO_TCP {
        is_connection_attempt(ctx, l4)?
    } else {
        let src_addr: [u8; 16] = headers.read(ctx, IPV6_SRC_OFFSET)?;
        let src_port = l4.port(ctx, L4_SRC_PORT)?;
        if entry.last_src_valid == 1 && entry.last_src_addr == src_addr && entry.last_src_port == src_port {
            false
        } else {
            let flow = UdpFlow6 { src_addr, dst_addr: dest.addr, src_port, dst_port: dest.port };
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

/// [`DROP`] for an ICMP port unreachable the node sends about a packet to a VIP shielded now
/// (`SHIELD_V4`), else [`VERDICT`]. The VIP is the quoted packet's destination address, protocol
/// and port. Rare packets, so every field past the fixed header goes through the helper, which
/// takes the offsets computed from the two IHLs.
fn shield_ipv4(ctx: &TcContext) -> Result<i32, i64> {
    let headers = Headers::check(ctx, ETH_HLEN + IPV4_HLEN);
    if headers.read::<u8>(ctx, IPV4_PROTO_OFFSET)? != IPPROTO_ICMP {
        return Ok(VERDICT);
    }
    let version_ihl: u8 = headers.read(ctx, ETH_HLEN)?;
    let icmp = ETH_HLEN + usize::from(version_ihl & 0x0f) * 4;
    let [kind, code]: [u8; 2] = ctx.load(icmp)?;
    if kind != ICMP_DEST_UNREACH || code != ICMP_PORT_UNREACH {
        return Ok(VERDICT);
    }
    let quoted = icmp + ICMP_HLEN;
    let quoted_ihl: u8 = ctx.load(quoted)?;
    let port: u16 = ctx.load(quoted + usize::from(quoted_ihl & 0x0f) * 4 + L4_DST_PORT)?;
    let vip = Dest4 {
        addr: ctx.load(quoted + IPV4_DST)?,
        port: u16::from_be(port),
        proto: ctx.load(quoted + IPV4_PROTO)?,
        _pad: 0,
    };
    Ok(shield_verdict(SHIELD_V4.get_ptr(vip)))
}

/// [`shield_ipv4`] for ICMPv6 (`SHIELD_V6`). Neither the refusal nor the packet it quotes may
/// have extension headers (IPVS's never do; others pass).
fn shield_ipv6(ctx: &TcContext) -> Result<i32, i64> {
    const ICMP: usize = ETH_HLEN + IPV6_HLEN;
    const QUOTED: usize = ICMP + ICMP_HLEN;
    if read::<u8>(ctx, IPV6_NEXT_HEADER_OFFSET)? != IPPROTO_ICMPV6 {
        return Ok(VERDICT);
    }
    let [kind, code]: [u8; 2] = read(ctx, ICMP)?;
    if kind != ICMPV6_DEST_UNREACH || code != ICMPV6_PORT_UNREACH {
        return Ok(VERDICT);
    }
    let port: u16 = ctx.load(QUOTED + IPV6_HLEN + L4_DST_PORT)?;
    let vip = Dest6 {
        addr: ctx.load(QUOTED + IPV6_DST)?,
        port: u16::from_be(port),
        proto: ctx.load(QUOTED + IPV6_NEXT_HEADER)?,
        _pad: 0,
    };
    Ok(shield_verdict(SHIELD_V6.get_ptr(vip)))
}

/// [`DROP`] (counted in `SHIELDED`) if `shield`, the refused VIP's entry, exists and has not
/// reached its bound; else [`VERDICT`]. Takes the lookup's pointer rather than the VIP: an enum
/// of the two key types made the compiler store an uninitialised register, which the verifier
/// refuses.
#[inline(always)]
fn shield_verdict(shield: Option<*const Shield>) -> i32 {
    let Some(shield) = shield else { return VERDICT };
    // SAFETY: a value the map lookup just returned: memory valid for this run. An update
    // from userspace at the same moment may reuse the (preallocated) element; an aligned
    // u64 load then reads one shield's value or another's, for this one packet.
    let until_ns = unsafe { (*shield).until_ns };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    if unsafe { bpf_ktime_get_ns() } >= until_ns {
        return VERDICT;
    }
    if let Some(slot) = SHIELDED.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
    DROP
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
/// [`packet_time`]).
#[inline(always)]
fn record(ctx: &TcContext, entry: &mut DestEntry, new_flow: bool) {
    entry.counters.packets += 1;
    entry.counters.bytes += u64::from(ctx.len());
    entry.counters.new_flows += u64::from(new_flow);
}

/// A TCP segment with SYN and without ACK: a client's connection attempt (retransmitted SYNs
/// count again).
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

/// Where the L4 header starts. Its ports are read like the IP header when the header has its
/// usual size; the verifier cannot prove the bounds of a direct read at an offset computed from
/// the IHL, so IPv4 with options reads them through the helper.
#[derive(Clone, Copy)]
enum L4 {
    /// At a constant offset, inside the length `Headers` checked.
    Fixed(Headers, usize),
    At(usize),
}

impl L4 {
    /// The port at `field` (0: source, 2: destination), in host byte order.
    #[inline(always)]
    fn port(self, ctx: &TcContext, field: usize) -> Result<u16, i64> {
        let port: u16 = match self {
            Self::Fixed(headers, offset) => headers.read(ctx, offset + field)?,
            Self::At(offset) => ctx.load(offset + field)?,
        };
        Ok(u16::from_be(port))
    }

    /// The TCP flags byte: past the checked length, so read with its own check.
    #[inline(always)]
    fn tcp_flags(self, ctx: &TcContext) -> Result<u8, i64> {
        match self {
            Self::Fixed(_, offset) => read(ctx, offset + TCP_FLAGS_OFFSET),
            Self::At(offset) => ctx.load(offset + TCP_FLAGS_OFFSET),
        }
    }
}

/// How the fixed header fields are read: straight from the skb's linear data when one bounds
/// check showed it holds all of them (the usual case: no helper calls, one check per packet),
/// else through `bpf_skb_load_bytes`, which also reads paged data.
#[derive(Clone, Copy)]
enum Headers {
    /// `data`, whose first `len` bytes (as checked) are in the linear area.
    Linear(usize),
    Helper,
}

impl Headers {
    #[inline(always)]
    fn check(ctx: &TcContext, len: usize) -> Self {
        let start = ctx.data();
        if start + len <= ctx.data_end() { Self::Linear(start) } else { Self::Helper }
    }

    /// Reads `T` at `offset`, a constant with `offset + size_of::<T>()` within the length given
    /// to [`Headers::check`]: the verifier refuses to load the program otherwise.
    #[inline(always)]
    fn read<T: Copy>(self, ctx: &TcContext, offset: usize) -> Result<T, i64> {
        match self {
            // SAFETY: inside the checked linear data (above); the verifier proves it again.
            Self::Linear(start) => Ok(unsafe { ((start + offset) as *const T).read_unaligned() }),
            Self::Helper => ctx.load(offset),
        }
    }
}

/// Reads one field with its own bounds check, straight from the packet when the linear area
/// holds it, else through `bpf_skb_load_bytes`. `offset` must be a constant after inlining.
#[inline(always)]
fn read<T: Copy>(ctx: &TcContext, offset: usize) -> Result<T, i64> {
    Headers::check(ctx, offset + size_of::<T>()).read(ctx, offset)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
