//! Where the header fields are, and how they are read: straight from the packet when the
//! linear area holds them, else through `bpf_skb_load_bytes`.
//!
//! Offsets inside the IP and L4 headers are relative to the header; the program adds the
//! length of what precedes the IP header (`L2`, a constant of each instance).

use aya_ebpf::programs::TcContext;

pub(crate) const IPV4_HLEN: usize = 20;
pub(crate) const IPV6_HLEN: usize = 40;
/// In an IPv4 header: flags and fragment offset, protocol, source, destination.
pub(crate) const IPV4_FRAG: usize = 6;
pub(crate) const IPV4_PROTO: usize = 9;
pub(crate) const IPV4_SRC: usize = 12;
pub(crate) const IPV4_DST: usize = 16;
/// In an IPv6 header: next header, source, destination.
pub(crate) const IPV6_NEXT_HEADER: usize = 6;
pub(crate) const IPV6_SRC: usize = 8;
pub(crate) const IPV6_DST: usize = 24;
/// IPv4 flags+fragment offset field: the offset bits; non-zero means a non-first fragment.
pub(crate) const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;
/// TCP and UDP both start with the source port, then the destination port.
pub(crate) const L4_SRC_PORT: usize = 0;
pub(crate) const L4_DST_PORT: usize = 2;
pub(crate) const L4_PORTS_LEN: usize = 4;
/// TCP flags.
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_ACK: u8 = 0x10;
/// Offsets of the sequence number and the flags byte in the TCP header.
pub(crate) const TCP_SEQ: usize = 4;
const TCP_FLAGS_OFFSET: usize = 13;

/// Where the L4 header starts. Its ports are read like the IP header when the header has its
/// usual size; the verifier cannot prove the bounds of a direct read at an offset computed from
/// the IHL, so IPv4 with options reads them through the helper.
#[derive(Clone, Copy)]
pub(crate) enum L4 {
    /// At a constant offset, inside the length `Headers` checked.
    Fixed(Headers, usize),
    At(usize),
}

impl L4 {
    /// The port at `field` (0: source, 2: destination), in host byte order.
    #[inline(always)]
    pub(crate) fn port(self, ctx: &TcContext, field: usize) -> Result<u16, i64> {
        let port: u16 = match self {
            Self::Fixed(headers, offset) => headers.read(ctx, offset + field)?,
            Self::At(offset) => ctx.load(offset + field)?,
        };
        Ok(u16::from_be(port))
    }

    /// The TCP flags byte: past the checked length, so read with its own check.
    #[inline(always)]
    pub(crate) fn tcp_flags(self, ctx: &TcContext) -> Result<u8, i64> {
        match self {
            Self::Fixed(_, offset) => read(ctx, offset + TCP_FLAGS_OFFSET),
            Self::At(offset) => ctx.load(offset + TCP_FLAGS_OFFSET),
        }
    }

    /// An ICMP (ICMPv6) header's type and code: its first two bytes, where TCP and UDP have the
    /// source port, so inside the checked length.
    #[inline(always)]
    pub(crate) fn icmp_type_code(self, ctx: &TcContext) -> Result<[u8; 2], i64> {
        match self {
            Self::Fixed(headers, offset) => headers.read(ctx, offset),
            Self::At(offset) => ctx.load(offset),
        }
    }

    /// Where the L4 header starts in the packet.
    #[inline(always)]
    pub(crate) const fn offset(self) -> usize {
        match self {
            Self::Fixed(_, offset) | Self::At(offset) => offset,
        }
    }
}

/// How the fixed header fields are read: straight from the skb's linear data when one bounds
/// check showed it holds all of them (the usual case: no helper calls, one check per packet),
/// else through `bpf_skb_load_bytes`, which also reads paged data.
#[derive(Clone, Copy)]
pub(crate) enum Headers {
    /// `data`, whose first `len` bytes (as checked) are in the linear area.
    Linear(usize),
    Helper,
}

impl Headers {
    #[inline(always)]
    pub(crate) fn check(ctx: &TcContext, len: usize) -> Self {
        let start = ctx.data();
        if start + len <= ctx.data_end() { Self::Linear(start) } else { Self::Helper }
    }

    /// Reads `T` at `offset`, a constant with `offset + size_of::<T>()` within the length given
    /// to [`Headers::check`]: the verifier refuses to load the program otherwise.
    #[inline(always)]
    pub(crate) fn read<T: Copy>(self, ctx: &TcContext, offset: usize) -> Result<T, i64> {
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
pub(crate) fn read<T: Copy>(ctx: &TcContext, offset: usize) -> Result<T, i64> {
    Headers::check(ctx, offset + size_of::<T>()).read(ctx, offset)
}
