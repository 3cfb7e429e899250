//! What an interface's packets look like at its TC hooks, from its link type (`ARPHRD_*`, the
//! kernel's `dev->type`): the counter attaches the program instance that parses that framing,
//! and refuses link types it cannot parse rather than miscount them.

use std::{fmt, os::fd::AsRawFd as _};

/// `ARPHRD_*` values (linux/if_arp.h) that the counter reads or names.
mod arphrd {
    pub(super) const ETHER: u16 = 1;
    pub(super) const INFINIBAND: u16 = 32;
    pub(super) const SLIP: u16 = 256;
    pub(super) const PPP: u16 = 512;
    pub(super) const RAWIP: u16 = 519;
    pub(super) const TUNNEL: u16 = 768;
    pub(super) const TUNNEL6: u16 = 769;
    pub(super) const LOOPBACK: u16 = 772;
    pub(super) const SIT: u16 = 776;
    pub(super) const IPGRE: u16 = 778;
    pub(super) const IEEE80211_RADIOTAP: u16 = 803;
    pub(super) const IP6GRE: u16 = 823;
    pub(super) const NETLINK: u16 = 824;
    pub(super) const CAN: u16 = 280;
    pub(super) const NONE: u16 = 65534;
}

/// How the packets at an interface's TC hooks begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// A 14-byte Ethernet header, then the IP header or up to two VLAN tags (802.1Q, 802.1ad)
    /// and then the IP header. Ethernet devices of every kind (physical NICs, veth, bridges,
    /// bonds, VLAN and macvlan devices, VXLAN, tap) and loopback (`ARPHRD_ETHER`,
    /// `ARPHRD_LOOPBACK`).
    Ethernet,
    /// Nothing before the IP header: tun devices in L3 mode and WireGuard (`ARPHRD_NONE`), ipip
    /// (`ARPHRD_TUNNEL`) and ip6tnl (`ARPHRD_TUNNEL6`) tunnels.
    L3,
}

/// An interface's link type (`ARPHRD_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkType(pub u16);

impl LinkType {
    /// The link type of `interface` in the calling thread's network namespace.
    ///
    /// Asked with `SIOCGIFHWADDR` on a socket, which answers for the namespace the socket was
    /// made in: `/sys/class/net/IF/type` shows the namespace sysfs was mounted in, which is not
    /// the thread's after `setns` (as in a thread that entered a namespace).
    pub fn of(interface: &str) -> std::io::Result<Self> {
        let mut request = IfReq { name: [0; libc::IFNAMSIZ], hwaddr_family: 0, _rest: [0; 22] };
        if interface.is_empty() || interface.len() >= libc::IFNAMSIZ || interface.contains('\0') {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        request.name[..interface.len()].copy_from_slice(interface.as_bytes());
        // SAFETY: plain socket call; the descriptor is owned right after.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor just returned to us and owned nowhere else.
        let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: a valid socket and a properly sized, initialised ifreq that outlives the call.
        if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFHWADDR, &raw mut request) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self(request.hwaddr_family))
    }

    /// How packets of this link type begin at the TC hooks; `None` for link types the counter
    /// cannot parse.
    pub const fn framing(self) -> Option<Framing> {
        match self.0 {
            arphrd::ETHER | arphrd::LOOPBACK => Some(Framing::Ethernet),
            arphrd::NONE | arphrd::TUNNEL | arphrd::TUNNEL6 => Some(Framing::L3),
            _ => None,
        }
    }

    /// The link type's name, for messages; `unknown` for a type not listed here.
    pub const fn name(self) -> &'static str {
        match self.0 {
            arphrd::ETHER => "Ethernet",
            arphrd::INFINIBAND => "InfiniBand",
            arphrd::SLIP => "SLIP",
            arphrd::PPP => "PPP",
            arphrd::RAWIP => "raw IP",
            arphrd::TUNNEL => "IPIP tunnel",
            arphrd::TUNNEL6 => "IPv6 tunnel",
            arphrd::LOOPBACK => "loopback",
            arphrd::SIT => "SIT (IPv6 in IPv4)",
            arphrd::IPGRE => "GRE",
            arphrd::IEEE80211_RADIOTAP => "802.11 radiotap",
            arphrd::IP6GRE => "IPv6 GRE",
            arphrd::NETLINK => "netlink",
            arphrd::CAN => "CAN",
            arphrd::NONE => "none (tun, WireGuard)",
            _ => "unknown",
        }
    }
}

impl fmt::Display for LinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (ARPHRD {})", self.name(), self.0)
    }
}

/// `struct ifreq` with the address family of its `ifr_hwaddr`, the link type.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    hwaddr_family: u16,
    _rest: [u8; 22],
}

const _: () = assert!(size_of::<IfReq>() == 40);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethernet_and_loopback_have_a_link_header_l3_links_none_and_the_rest_are_refused() {
        for (link_type, framing) in [
            (1, Some(Framing::Ethernet)),
            (772, Some(Framing::Ethernet)),
            (65534, Some(Framing::L3)),
            (768, Some(Framing::L3)),
            (769, Some(Framing::L3)),
            (512, None),
            (776, None),
            (778, None),
            (823, None),
            (519, None),
            (32, None),
            (4242, None),
        ] {
            assert_eq!(LinkType(link_type).framing(), framing, "{}", LinkType(link_type));
        }
    }

    #[test]
    fn names_say_the_type_and_its_number() {
        assert_eq!(LinkType(512).to_string(), "PPP (ARPHRD 512)");
        assert_eq!(LinkType(65534).to_string(), "none (tun, WireGuard) (ARPHRD 65534)");
        assert_eq!(LinkType(4242).to_string(), "unknown (ARPHRD 4242)");
    }

    #[test]
    fn loopback_is_read_as_loopback() {
        assert_eq!(LinkType::of("lo").expect("every namespace has lo"), LinkType(772));
        let missing = LinkType::of("lf-no-such-if").expect_err("no such interface");
        assert_eq!(missing.raw_os_error(), Some(libc::ENODEV), "{missing}");
        assert_eq!(LinkType::of("").expect_err("empty").kind(), std::io::ErrorKind::InvalidInput);
    }
}
