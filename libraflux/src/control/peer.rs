//! Who may use the control socket. Two layers: the socket file is mode 0660, owned by the
//! daemon's user and `control.group` (so others cannot even connect), and each connection's
//! credentials are checked again here, because the file's mode is only as good as whoever last
//! set it and a process with CAP_DAC_OVERRIDE passes it anyway.
//!
//! Credentials come from the kernel, taken when the peer called connect(): SO_PEERCRED (uid, gid,
//! pid) and SO_PEERGROUPS (supplementary groups). Not `/proc/<pid>/status`, which is read later
//! (the peer may have changed its groups, or exited and had its pid reused, by then, and it is
//! hidden under `hidepid=`), and not getgrouplist(), which says what the group database lists for
//! the user, not which groups the process holds (a process that dropped its groups would still
//! pass).

use std::{fmt, os::fd::AsRawFd};

/// The connecting process, as the kernel saw it at connect().
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// The group whose members may use the socket (`control.group`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
}

/// Who may use the socket: root, the daemon's own user, and members of `group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub daemon_uid: u32,
    pub group: Option<Group>,
}

/// Why a peer was let in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowed {
    Root,
    DaemonUser,
    /// Its primary group is `control.group`.
    PrimaryGroup,
    /// `control.group` is one of its supplementary groups.
    SupplementaryGroup,
}

/// A peer that may not use the socket; displays as the reply it gets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Refused {
    pub peer: Peer,
    pub access: Access,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Peer { uid, gid, .. } = self.peer;
        write!(
            f,
            "uid {uid} (gid {gid}) may not use the control socket: it is open to root, the daemon's user \
             (uid {}) and ",
            self.access.daemon_uid
        )?;
        match &self.access.group {
            Some(Group { name, gid }) => write!(f, "members of group {name} (gid {gid})"),
            None => f.write_str("no group (set control.group in the configuration to add one)"),
        }
    }
}

impl Access {
    pub fn check(&self, peer: &Peer) -> Result<Allowed, Refused> {
        let group = self.group.as_ref().map(|group| group.gid);
        if peer.uid == 0 {
            Ok(Allowed::Root)
        } else if peer.uid == self.daemon_uid {
            Ok(Allowed::DaemonUser)
        } else if group == Some(peer.gid) {
            Ok(Allowed::PrimaryGroup)
        } else if group.is_some_and(|gid| peer.groups.contains(&gid)) {
            Ok(Allowed::SupplementaryGroup)
        } else {
            Err(Refused { peer: peer.clone(), access: self.clone() })
        }
    }
}

/// The peer's supplementary groups as the kernel recorded them at connect() (SO_PEERGROUPS,
/// Linux 4.13).
pub fn supplementary_groups(socket: &impl AsRawFd) -> std::io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len =
            libc::socklen_t::try_from(groups.len() * size_of::<libc::gid_t>()).expect("a small buffer");
        // SAFETY: `groups` is a writable buffer of `len` bytes; the kernel writes at most `len`
        // bytes and sets `len` to what it wrote (or needs, with ERANGE).
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        let count = usize::try_from(len).expect("socklen_t fits usize") / size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) || count <= groups.len() {
            return Err(err);
        }
        groups.resize(count, 0);
    }
}

/// The gid of the group named `name` in the group database (getgrnam_r); `None` if there is none.
pub fn group_id(name: &str) -> std::io::Result<Option<u32>> {
    let Ok(c_name) = std::ffi::CString::new(name) else { return Ok(None) };
    let mut buffer = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: all-zero is a valid `struct group` (null pointers and ids), filled in below.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; `buffer` outlives it and its length is passed.
        let rc = unsafe {
            libc::getgrnam_r(
                c_name.as_ptr(),
                &raw mut group,
                buffer.as_mut_ptr(),
                buffer.len(),
                &raw mut found,
            )
        };
        match rc {
            0 if found.is_null() => return Ok(None),
            0 => return Ok(Some(group.gr_gid)),
            libc::ERANGE if buffer.len() < 1 << 20 => buffer.resize(buffer.len() * 4, 0),
            // "Not found" comes back as one of these from some NSS modules.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            errno => return Err(std::io::Error::from_raw_os_error(errno)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer { uid, gid, pid: Some(42), groups: groups.to_vec() }
    }

    fn access(group: Option<u32>) -> Access {
        Access { daemon_uid: 61_000, group: group.map(|gid| Group { name: "lbops".to_owned(), gid }) }
    }

    #[test]
    fn root_and_the_daemons_user_are_always_allowed() {
        assert_eq!(access(None).check(&peer(0, 1234, &[])), Ok(Allowed::Root));
        assert_eq!(access(None).check(&peer(61_000, 61_000, &[])), Ok(Allowed::DaemonUser));
    }

    #[test]
    fn members_of_the_group_are_allowed_by_primary_or_supplementary_group() {
        let access = access(Some(500));
        assert_eq!(access.check(&peer(1000, 500, &[])), Ok(Allowed::PrimaryGroup));
        assert_eq!(access.check(&peer(1000, 1000, &[20, 500])), Ok(Allowed::SupplementaryGroup));
        let refused = access.check(&peer(1000, 1000, &[20])).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "uid 1000 (gid 1000) may not use the control socket: it is open to root, the daemon's user \
             (uid 61000) and members of group lbops (gid 500)"
        );
    }

    /// The socket's file mode lets the daemon's own group in (gid 0 for a daemon run as root);
    /// without `control.group`, that group is not a way in.
    #[test]
    fn without_a_group_only_root_and_the_daemons_user_are_allowed() {
        let refused = access(None).check(&peer(65_534, 0, &[0])).unwrap_err();
        assert!(
            refused.to_string().ends_with("and no group (set control.group in the configuration to add one)")
        );
    }

    #[test]
    fn group_names_resolve_through_the_group_database() {
        assert_eq!(group_id("root").unwrap(), Some(0));
        assert_eq!(group_id("no-such-group-libraflux").unwrap(), None);
        assert_eq!(group_id("nul\0byte").unwrap(), None);
    }

    #[test]
    fn supplementary_groups_of_a_socket_pair_are_this_process_groups() {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut mine = vec![0 as libc::gid_t; 256];
        // SAFETY: the buffer holds 256 gids, as passed.
        let count = unsafe { libc::getgroups(256, mine.as_mut_ptr()) };
        mine.truncate(usize::try_from(count).unwrap());
        let mut seen = supplementary_groups(&ours).unwrap();
        seen.sort_unstable();
        mine.sort_unstable();
        assert_eq!(seen, mine);
    }
}
