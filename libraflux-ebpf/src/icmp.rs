//! ICMP and ICMPv6 errors: where the packet they quote was addressed. Rare packets, so every
//! field past the fixed headers goes through the helper, at offsets computed from the IHLs.

use aya_ebpf::programs::TcContext;
use libraflux_common::{Dest4, Dest6};

use crate::headers::{IPV4_DST, IPV4_PROTO, IPV6_DST, IPV6_HLEN, IPV6_NEXT_HEADER, L4_DST_PORT};

/// "Destination unreachable" (RFC 792, RFC 4443) and its port-unreachable codes. Both ICMP
/// headers are 8 bytes, followed by the quoted packet.
pub(crate) const ICMP_DEST_UNREACH: u8 = 3;
pub(crate) const ICMP_PORT_UNREACH: u8 = 3;
pub(crate) const ICMPV6_DEST_UNREACH: u8 = 1;
pub(crate) const ICMPV6_PORT_UNREACH: u8 = 4;
const ICMP_HLEN: usize = 8;

/// The destination (address, protocol, port) of the IPv4 packet quoted by the ICMP message that
/// starts `icmp` bytes into the packet; its port is found from the quoted header's own IHL.
#[inline(always)]
pub(crate) fn quoted_dest_v4(ctx: &TcContext, icmp: usize) -> Result<Dest4, i64> {
    let quoted = icmp + ICMP_HLEN;
    let quoted_ihl: u8 = ctx.load(quoted)?;
    let port: u16 = ctx.load(quoted + usize::from(quoted_ihl & 0x0f) * 4 + L4_DST_PORT)?;
    Ok(Dest4 {
        addr: ctx.load(quoted + IPV4_DST)?,
        port: u16::from_be(port),
        proto: ctx.load(quoted + IPV4_PROTO)?,
        _pad: 0,
    })
}

/// [`quoted_dest_v4`] for ICMPv6: the quoted packet may not have extension headers.
#[inline(always)]
pub(crate) fn quoted_dest_v6(ctx: &TcContext, icmp: usize) -> Result<Dest6, i64> {
    let quoted = icmp + ICMP_HLEN;
    let port: u16 = ctx.load(quoted + IPV6_HLEN + L4_DST_PORT)?;
    Ok(Dest6 {
        addr: ctx.load(quoted + IPV6_DST)?,
        port: u16::from_be(port),
        proto: ctx.load(quoted + IPV6_NEXT_HEADER)?,
        _pad: 0,
    })
}
