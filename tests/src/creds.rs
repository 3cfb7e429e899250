//! Running a program as another user: the daemon as systemd's `DynamicUser=` runs it (its own
//! uid, with only CAP_NET_ADMIN, CAP_BPF and CAP_PERFMON), or the CLI as an operator who is not
//! root, in or out of a group. Set between fork and exec with raw system calls, so the test
//! process itself keeps running as root.

use std::{io, os::unix::process::CommandExt as _, process::Command};

pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// Who a child process runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups; none unless given.
    pub groups: Vec<u32>,
    /// Capabilities the process keeps (permitted, effective and ambient, so they survive exec).
    pub capabilities: Vec<u32>,
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`, two of which hold capabilities 0..64.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// prctl(2) through syscall(2), so that every argument is a full `unsigned long` (the variadic
/// libc wrapper would read garbage above a 32-bit `int`).
unsafe fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> libc::c_long {
    let option = libc::c_ulong::try_from(option).expect("prctl options are positive");
    // SAFETY: the caller passes an option whose arguments are plain integers.
    unsafe { libc::syscall(libc::SYS_prctl, option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) }
}

fn check(rc: libc::c_long) -> io::Result<()> {
    if rc == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

impl Credentials {
    /// `uid`:`gid` without supplementary groups or capabilities.
    pub fn user(uid: u32, gid: u32) -> Self {
        Self { uid, gid, groups: Vec::new(), capabilities: Vec::new() }
    }

    #[must_use]
    pub fn with_groups(mut self, groups: &[u32]) -> Self {
        self.groups = groups.to_vec();
        self
    }

    /// The daemon's capabilities in the systemd unit.
    #[must_use]
    pub fn with_daemon_capabilities(mut self) -> Self {
        self.capabilities = vec![CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON];
        self
    }

    /// Makes `command` run with these credentials.
    pub fn apply(&self, command: &mut Command) {
        let credentials = self.clone();
        // SAFETY: the closure runs in the forked child before exec and only makes system calls
        // (no allocation, no locks): async-signal-safe.
        unsafe { command.pre_exec(move || credentials.assume()) };
    }

    /// Raw system calls, which change only this (the child's single) thread; glibc's wrappers
    /// would try to signal the parent's other threads.
    fn assume(&self) -> io::Result<()> {
        // SAFETY (all below): plain system calls with valid arguments and pointers to live data.
        unsafe {
            if !self.capabilities.is_empty() {
                check(prctl(libc::PR_SET_KEEPCAPS, 1, 0))?;
            }
            check(libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr()))?;
            let (uid, gid) = (libc::c_ulong::from(self.uid), libc::c_ulong::from(self.gid));
            check(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
            check(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
            if self.capabilities.is_empty() {
                return Ok(());
            }
            let mut data = [CapData::default(); 2];
            for &cap in &self.capabilities {
                let slot = &mut data[(cap / 32) as usize];
                let bit = 1 << (cap % 32);
                slot.effective |= bit;
                slot.permitted |= bit;
                slot.inheritable |= bit;
            }
            let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
            check(libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()))?;
            for &cap in &self.capabilities {
                check(prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong, cap.into()))?;
            }
        }
        Ok(())
    }
}
