//! Dropping the node's refusals of a shielded VIP: an ICMP (ICMPv6) port unreachable whose
//! quoted packet is addressed to a VIP in `SHIELD_V4`/`SHIELD_V6` whose bound has not passed.
//! Rare packets, so every field past the fixed header goes through the helper.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use libraflux_common::{IPPROTO_ICMP, IPPROTO_ICMPV6, Shield};

use crate::{
    DROP, SHIELD_V4, SHIELD_V6, SHIELDED, VERDICT,
    headers::{Headers, IPV4_HLEN, IPV4_PROTO, IPV6_HLEN, IPV6_NEXT_HEADER, read},
    icmp::{
        ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, ICMPV6_DEST_UNREACH, ICMPV6_PORT_UNREACH, quoted_dest_v4,
        quoted_dest_v6,
    },
};

/// [`DROP`] for an ICMP port unreachable (IP header `L2` bytes into the packet) about a packet to
/// a VIP shielded now (`SHIELD_V4`), else [`VERDICT`]. The VIP is the quoted packet's
/// destination address, protocol and port; ICMP's "port unreachable" is what `ip_vs_leave`
/// sends.
#[inline(always)]
pub(crate) fn ipv4<const L2: usize>(ctx: &TcContext) -> Result<i32, i64> {
    let headers = Headers::check(ctx, L2 + IPV4_HLEN);
    if headers.read::<u8>(ctx, L2 + IPV4_PROTO)? != IPPROTO_ICMP {
        return Ok(VERDICT);
    }
    let version_ihl: u8 = headers.read(ctx, L2)?;
    let icmp = L2 + usize::from(version_ihl & 0x0f) * 4;
    let [kind, code]: [u8; 2] = ctx.load(icmp)?;
    if kind != ICMP_DEST_UNREACH || code != ICMP_PORT_UNREACH {
        return Ok(VERDICT);
    }
    Ok(verdict(SHIELD_V4.get_ptr(quoted_dest_v4(ctx, icmp)?)))
}

/// [`ipv4`] for ICMPv6 (`SHIELD_V6`). Neither the refusal nor the packet it quotes may have
/// extension headers (IPVS's never do; others pass).
#[inline(always)]
pub(crate) fn ipv6<const L2: usize>(ctx: &TcContext) -> Result<i32, i64> {
    let icmp = L2 + IPV6_HLEN;
    if read::<u8>(ctx, L2 + IPV6_NEXT_HEADER)? != IPPROTO_ICMPV6 {
        return Ok(VERDICT);
    }
    let [kind, code]: [u8; 2] = read(ctx, icmp)?;
    if kind != ICMPV6_DEST_UNREACH || code != ICMPV6_PORT_UNREACH {
        return Ok(VERDICT);
    }
    Ok(verdict(SHIELD_V6.get_ptr(quoted_dest_v6(ctx, icmp)?)))
}

/// [`DROP`] (counted in `SHIELDED`) if `shield`, the refused VIP's entry, exists and has not
/// reached its bound; else [`VERDICT`]. Takes the lookup's pointer rather than the VIP: an enum
/// of the two key types made the compiler store an uninitialised register, which the verifier
/// refuses.
#[inline(always)]
fn verdict(shield: Option<*const Shield>) -> i32 {
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
