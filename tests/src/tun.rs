//! A tun device in L3 mode (`IFF_TUN`): the node sees IP packets with no link header on it, and
//! the far side of the device is this process. What the test writes to it, the node receives on
//! the device; what the node sends out of it, the test reads.

use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Write as _},
    os::fd::AsRawFd as _,
    time::Duration,
};

use crate::NetNs;

/// `_IOW('T', 202, int)` and `_IOW('T', 205, int)` (linux/if_tun.h).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETLINK: libc::c_ulong = 0x4004_54cd;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` with the flags member of its union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _rest: [u8; 22],
}

/// A tun device, deleted when dropped (it is not persistent: its one file descriptor is this).
#[derive(Debug)]
pub struct Tun {
    file: File,
}

impl Tun {
    /// Creates the tun device `name` in `netns`, down and without addresses.
    pub fn new(netns: &NetNs, name: &'static str) -> Self {
        let file = netns.enter(move || {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .unwrap_or_else(|err| panic!("open /dev/net/tun (is the tun module loaded?): {err}"));
            let mut request = IfReq { name: [0; libc::IFNAMSIZ], flags: IFF_TUN | IFF_NO_PI, _rest: [0; 22] };
            request.name[..name.len()].copy_from_slice(name.as_bytes());
            // SAFETY: a valid tun fd and a properly sized ifreq that outlives the call.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &raw mut request) };
            assert_eq!(rc, 0, "TUNSETIFF {name}: {}", std::io::Error::last_os_error());
            file
        });
        Self { file }
    }

    /// Gives the device another link type (`ARPHRD_*`); it must be down.
    pub fn set_link_type(&self, link_type: u16) {
        // SAFETY: TUNSETLINK takes its argument by value.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), TUNSETLINK, libc::c_ulong::from(link_type)) };
        assert_eq!(rc, 0, "TUNSETLINK {link_type}: {}", std::io::Error::last_os_error());
    }

    /// Hands `packet` (an IP packet) to the node: it arrives on the device.
    pub fn send(&self, packet: &[u8]) {
        let written = (&self.file).write(packet).expect("write to the tun device");
        assert_eq!(written, packet.len(), "a packet is written whole");
    }

    /// The next packet the node sent out of the device, if one comes within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let mut poll = libc::pollfd { fd: self.file.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&raw mut poll, 1, millis) };
        assert!(ready >= 0, "poll the tun device: {}", std::io::Error::last_os_error());
        if ready == 0 {
            return None;
        }
        let mut buffer = vec![0; 65_536];
        let len = (&self.file).read(&mut buffer).expect("read from the tun device");
        buffer.truncate(len);
        Some(buffer)
    }
}
