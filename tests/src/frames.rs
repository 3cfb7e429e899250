//! Ethernet frames built byte by byte, for running the eBPF program on exact input with
//! `FlowCounter::test_run` (BPF_PROG_TEST_RUN). Checksums are left zero: the program does not
//! read them.

use std::net::IpAddr;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;
/// ICMP destination unreachable and its codes (RFC 792); ICMPv6's (RFC 4443).
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_HOST_UNREACH: u8 = 1;
pub const ICMP_PORT_UNREACH: u8 = 3;
pub const ICMPV6_DEST_UNREACH: u8 = 1;
pub const ICMPV6_PORT_UNREACH: u8 = 4;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// IPv4 header fields the tests vary; `Default` is a plain first fragment without options.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ipv4Shape {
    /// Option bytes (a multiple of 4, at most 40): NOPs.
    pub options: usize,
    /// Fragment offset in 8-byte units; non-zero makes a non-first fragment.
    pub fragment_offset: u16,
}

/// An Ethernet frame carrying `l4` (an L4 header and payload) from `src` to `dst`.
pub fn frame(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
    frame_with(src, dst, proto, Ipv4Shape::default(), l4)
}

/// [`frame`] with IPv4 options or fragmentation (ignored for IPv6).
pub fn frame_with(src: IpAddr, dst: IpAddr, proto: u8, shape: Ipv4Shape, l4: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            assert!(
                shape.options.is_multiple_of(4) && shape.options <= 40,
                "IPv4 options: {}",
                shape.options
            );
            let header_len = 20 + shape.options;
            let total = u16::try_from(header_len + l4.len()).expect("fits an IPv4 packet");
            frame.extend_from_slice(&0x0800u16.to_be_bytes());
            frame.push(0x40 | u8::try_from(header_len / 4).expect("IHL"));
            frame.push(0);
            frame.extend_from_slice(&total.to_be_bytes());
            frame.extend_from_slice(&[0, 1]);
            frame.extend_from_slice(&(shape.fragment_offset & 0x1fff).to_be_bytes());
            frame.extend_from_slice(&[64, proto, 0, 0]);
            frame.extend_from_slice(&src.octets());
            frame.extend_from_slice(&dst.octets());
            frame.extend(std::iter::repeat_n(1u8, shape.options));
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            frame.extend_from_slice(&0x86DDu16.to_be_bytes());
            frame.extend_from_slice(&[0x60, 0, 0, 0]);
            frame.extend_from_slice(&u16::try_from(l4.len()).expect("fits").to_be_bytes());
            frame.extend_from_slice(&[proto, 64]);
            frame.extend_from_slice(&src.octets());
            frame.extend_from_slice(&dst.octets());
        }
        _ => panic!("one family per frame: {src} -> {dst}"),
    }
    frame.extend_from_slice(l4);
    frame
}

/// A UDP header and `payload`.
pub fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("fits a datagram");
    let mut datagram = Vec::new();
    for field in [src_port, dst_port, len, 0] {
        datagram.extend_from_slice(&field.to_be_bytes());
    }
    datagram.extend_from_slice(payload);
    datagram
}

/// A 20-byte TCP header with `flags` and sequence number 1.
pub fn tcp(src_port: u16, dst_port: u16, flags: u8) -> Vec<u8> {
    tcp_with_seq(src_port, dst_port, flags, 1)
}

/// A 20-byte TCP header with `flags` and sequence number `seq`.
pub fn tcp_with_seq(src_port: u16, dst_port: u16, flags: u8, seq: u32) -> Vec<u8> {
    let mut header = Vec::new();
    header.extend_from_slice(&src_port.to_be_bytes());
    header.extend_from_slice(&dst_port.to_be_bytes());
    header.extend_from_slice(&seq.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    header
}

/// The ICMP (ICMPv6 for IPv6) error `kind`/`code` that the receiver of `refused` (a frame) sends
/// back to its sender, quoting its IP packet, from the same IP header `shape` (IPv4).
pub fn icmp_error(refused: &[u8], kind: u8, code: u8, shape: Ipv4Shape) -> Vec<u8> {
    let packet = &refused[14..];
    let (sender, receiver, proto): (IpAddr, IpAddr, u8) = match packet[0] >> 4 {
        4 => {
            let addr = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&packet[at..at + 4]).unwrap());
            (addr(12), addr(16), IPPROTO_ICMP)
        }
        6 => {
            let addr = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&packet[at..at + 16]).unwrap());
            (addr(8), addr(24), IPPROTO_ICMPV6)
        }
        version => panic!("IP version {version}"),
    };
    let mut message = vec![kind, code, 0, 0, 0, 0, 0, 0];
    message.extend_from_slice(packet);
    frame_with(receiver, sender, proto, shape, &message)
}

/// An ARP request: not IP, so never counted.
pub fn arp() -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
    frame.extend_from_slice(&[0; 28]);
    frame
}

/// 802.1Q (customer) and 802.1ad (service) tag protocol identifiers.
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

/// `frame` with VLAN tags written into it after the MAC addresses, outermost first: each tag is
/// its TPID and VLAN id, and the frame's own ethertype follows the last one.
pub fn tagged(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    for &(tpid, vid) in tags {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    out.extend_from_slice(&frame[12..]);
    out
}

/// The one's complement sum of RFC 1071, folded, not yet inverted.
fn ones_complement_sum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// An IP packet (no link header) from `src` to `dst` carrying a UDP datagram with `payload`,
/// with every checksum right, so the receiving stack delivers it: what a tun device's far side
/// writes.
pub fn udp_packet(src: std::net::SocketAddr, dst: std::net::SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut datagram = udp(src.port(), dst.port(), payload);
    let len = u16::try_from(datagram.len()).expect("fits a datagram").to_be_bytes();
    let pseudo = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => [&s.octets()[..], &d.octets(), &[0, IPPROTO_UDP], &len].concat(),
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            [&s.octets()[..], &d.octets(), &[0, 0], &len, &[0, 0, 0, IPPROTO_UDP]].concat()
        }
        _ => panic!("one family per packet: {src} -> {dst}"),
    };
    let checksum = match !ones_complement_sum(&[&pseudo, &datagram]) {
        0 => 0xffff,
        sum => sum,
    };
    datagram[6..8].copy_from_slice(&checksum.to_be_bytes());
    let mut packet = frame(src.ip(), dst.ip(), IPPROTO_UDP, &datagram).split_off(14);
    if src.is_ipv4() {
        let header = !ones_complement_sum(&[&packet[..20]]);
        packet[10..12].copy_from_slice(&header.to_be_bytes());
    }
    packet
}
