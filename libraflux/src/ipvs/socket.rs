//! The netlink socket under [`super::client::IpvsClient`]: opening it, growing its buffers, and
//! reading every queued datagram with one `recvmmsg`.

use std::{io, os::fd::RawFd};

use netlink_sys::{AsyncSocket, SocketAddr, TokioSocket, protocols::NETLINK_GENERIC};

use super::client::SOCKET_BUFFER;

/// Reads the datagrams already queued on `fd` (without waiting) into `slots`, one per slot, and
/// returns their lengths; `WouldBlock` when none is queued.
pub(super) fn receive_queued(fd: RawFd, slots: &mut [Vec<u8>]) -> io::Result<Vec<usize>> {
    let mut iovecs: Vec<libc::iovec> = slots
        .iter_mut()
        .map(|slot| libc::iovec { iov_base: slot.as_mut_ptr().cast(), iov_len: slot.len() })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .map(|iovec| {
            // SAFETY: msghdr is a plain C struct for which all-zero is a valid value.
            let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
            header.msg_iov = iovec;
            header.msg_iovlen = 1;
            libc::mmsghdr { msg_hdr: header, msg_len: 0 }
        })
        .collect();
    let count = libc::c_uint::try_from(headers.len()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: `headers` holds `count` initialised mmsghdrs whose single iovec points into a
    // slot of `slots`, with that slot's length; both outlive the call, which writes only there.
    let received =
        unsafe { libc::recvmmsg(fd, headers.as_mut_ptr(), count, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
    let received = usize::try_from(received).map_err(|_| io::Error::last_os_error())?;
    headers[..received]
        .iter()
        .map(|header| {
            if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                return Err(io::Error::other("a netlink datagram was larger than the receive buffer"));
            }
            Ok(header.msg_len as usize)
        })
        .collect()
}

pub(super) fn open_socket() -> io::Result<TokioSocket> {
    let mut socket = TokioSocket::new(NETLINK_GENERIC)?;
    let inner = socket.socket_mut();
    inner.bind_auto()?;
    inner.connect(&SocketAddr::new(0, 0))?;
    // Errors then echo only the request's header, not all of it: smaller acks, bigger batches.
    inner.set_cap_ack(true)?;
    Ok(socket)
}

/// Asks for SOCKET_BUFFER bytes, forcibly if allowed (CAP_NET_ADMIN), and returns what the
/// kernel granted (its doubled value, which is what its limits compare against).
pub(super) fn grow_buffer(fd: RawFd, force: libc::c_int, plain: libc::c_int) -> usize {
    let wanted = libc::c_int::try_from(SOCKET_BUFFER).unwrap_or(libc::c_int::MAX);
    if set_int_option(fd, force, wanted).is_err() {
        // Without the capability the plain option still works, capped at net.core.[rw]mem_max.
        let _ = set_int_option(fd, plain, wanted);
    }
    get_int_option(fd, plain).map_or(0, |value| usize::try_from(value).unwrap_or(0))
}

fn set_int_option(fd: RawFd, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    let length = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: `fd` is our open socket; `value` outlives the call and `length` is its size.
    let result = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, option, (&raw const value).cast(), length) };
    if result == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn get_int_option(fd: RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut length = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: `fd` is our open socket; `value` and `length` are valid for writes of their size.
    let result =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, option, (&raw mut value).cast(), &raw mut length) };
    if result == 0 { Ok(value) } else { Err(io::Error::last_os_error()) }
}
