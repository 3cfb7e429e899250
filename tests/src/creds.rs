//! Running a program as another user: the daemon as the systemd unit runs it
//! ([`Credentials::of_unit`]: its dynamic uid, its capabilities and bounding set, no new
//! privileges, its limits), or the CLI as an operator who is not root, in or out of a group. Set
//! between fork and exec with raw system calls, so the test process itself keeps running as root.

use std::{fmt, io, os::unix::process::CommandExt as _, process::Command};

use crate::unit::{Rlimit, Unit};

/// Capability names and numbers, as in `include/uapi/linux/capability.h`.
const CAPABILITIES: [(&str, u32); 41] = [
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_DAC_READ_SEARCH", 2),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_LINUX_IMMUTABLE", 9),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_BROADCAST", 11),
    ("CAP_NET_ADMIN", 12),
    ("CAP_NET_RAW", 13),
    ("CAP_IPC_LOCK", 14),
    ("CAP_IPC_OWNER", 15),
    ("CAP_SYS_MODULE", 16),
    ("CAP_SYS_RAWIO", 17),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_SYS_PACCT", 20),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_SYS_BOOT", 22),
    ("CAP_SYS_NICE", 23),
    ("CAP_SYS_RESOURCE", 24),
    ("CAP_SYS_TIME", 25),
    ("CAP_SYS_TTY_CONFIG", 26),
    ("CAP_MKNOD", 27),
    ("CAP_LEASE", 28),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_AUDIT_CONTROL", 30),
    ("CAP_SETFCAP", 31),
    ("CAP_MAC_OVERRIDE", 32),
    ("CAP_MAC_ADMIN", 33),
    ("CAP_SYSLOG", 34),
    ("CAP_WAKE_ALARM", 35),
    ("CAP_BLOCK_SUSPEND", 36),
    ("CAP_AUDIT_READ", 37),
    ("CAP_PERFMON", 38),
    ("CAP_BPF", 39),
    ("CAP_CHECKPOINT_RESTORE", 40),
];

/// A set of capabilities, as the kernel prints them in `/proc/PID/status` (`CapEff:` ...): bit
/// N is capability N.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapabilitySet(u64);

impl CapabilitySet {
    pub const EMPTY: Self = Self(0);
    /// Every capability, known or not: a bounding set that drops nothing.
    pub const ALL: Self = Self(u64::MAX);

    /// `CAP_NET_ADMIN` (or `cap_net_admin`, as systemd also accepts) by name; `None` when the
    /// name is not in the table.
    pub fn number(name: &str) -> Option<u32> {
        CAPABILITIES.iter().find(|(known, _)| known.eq_ignore_ascii_case(name)).map(|&(_, number)| number)
    }

    pub fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    pub fn bits(self) -> u64 {
        self.0
    }

    pub fn insert(&mut self, capability: u32) {
        self.0 |= 1 << capability;
    }

    pub fn contains(self, capability: u32) -> bool {
        capability < 64 && self.0 & (1 << capability) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    pub fn complement(self) -> Self {
        Self(!self.0)
    }

    pub fn is_subset(self, of: Self) -> bool {
        self.0 & !of.0 == 0
    }

    /// The capabilities in the set, lowest first. Allocates nothing (used between fork and exec).
    pub fn iter(self) -> impl Iterator<Item = u32> {
        (0..64).filter(move |&capability| self.contains(capability))
    }
}

impl fmt::Display for CapabilitySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut separator = "";
        for capability in self.iter() {
            match CAPABILITIES.iter().find(|&&(_, number)| number == capability) {
                Some((name, _)) => write!(f, "{separator}{name}")?,
                None => write!(f, "{separator}capability {capability}")?,
            }
            separator = " ";
        }
        Ok(())
    }
}

/// Who a child process runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups; none unless given.
    pub groups: Vec<u32>,
    /// Capabilities the process keeps (permitted, effective, inheritable and ambient, so they
    /// survive exec as systemd's `AmbientCapabilities=` makes them).
    pub capabilities: CapabilitySet,
    /// The bounding set: every capability outside it is dropped. `None` leaves it as it is.
    pub bounding: Option<CapabilitySet>,
    /// `PR_SET_NO_NEW_PRIVS`: exec can never grant more (setuid bits, file capabilities).
    pub no_new_privileges: bool,
    /// `RLIMIT_MEMLOCK`; `None` leaves the inherited one.
    pub memlock: Option<Rlimit>,
    /// The file mode creation mask; `None` leaves the inherited one.
    pub umask: Option<u32>,
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

/// systemd's `UMask=` when a unit sets none.
pub const SYSTEMD_DEFAULT_UMASK: u32 = 0o022;

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
        Self {
            uid,
            gid,
            groups: Vec::new(),
            capabilities: CapabilitySet::EMPTY,
            bounding: None,
            no_new_privileges: false,
            memlock: None,
            umask: None,
        }
    }

    /// What systemd gives the service of `unit`: its `DynamicUser=` uid and gid (no supplementary
    /// groups), `AmbientCapabilities=`, `CapabilityBoundingSet=`, `NoNewPrivileges=`,
    /// `LimitMEMLOCK=` and `UMask=` (systemd's 0022 when unset).
    pub fn of_unit(unit: &Unit) -> Self {
        assert!(
            unit.dynamic_user,
            "the unit has no DynamicUser=yes: tests/src/creds.rs models only a dynamic user; teach it the \
             unit's User=/Group="
        );
        let bounding = unit.capability_bounding_set;
        assert!(
            unit.ambient_capabilities.is_subset(bounding),
            "AmbientCapabilities={} is not within CapabilityBoundingSet={bounding}",
            unit.ambient_capabilities
        );
        let uid = unit.dynamic_uid();
        Self {
            uid,
            gid: uid,
            groups: Vec::new(),
            capabilities: unit.ambient_capabilities,
            bounding: Some(bounding),
            no_new_privileges: unit.no_new_privileges,
            memlock: unit.limit_memlock,
            umask: Some(unit.umask.unwrap_or(SYSTEMD_DEFAULT_UMASK)),
        }
    }

    #[must_use]
    pub fn with_groups(mut self, groups: &[u32]) -> Self {
        self.groups = groups.to_vec();
        self
    }

    /// Makes `command` run with these credentials.
    pub fn apply(&self, command: &mut Command) {
        let credentials = self.clone();
        // SAFETY: the closure runs in the forked child before exec and only makes system calls
        // on data allocated before the fork (no allocation, no locks): async-signal-safe.
        unsafe { command.pre_exec(move || credentials.assume()) };
    }

    /// Raw system calls, which change only this (the child's single) thread; glibc's wrappers
    /// would try to signal the parent's other threads. What needs privilege (the limit, the
    /// bounding set) comes before the uid changes.
    fn assume(&self) -> io::Result<()> {
        // SAFETY (all below): plain system calls with valid arguments and pointers to live data.
        unsafe {
            if let Some(mask) = self.umask {
                libc::umask(mask);
            }
            if let Some(limit) = self.memlock {
                let limit = libc::rlimit { rlim_cur: limit.soft, rlim_max: limit.hard };
                check(libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const limit).into())?;
            }
            if let Some(bounding) = self.bounding {
                drop_bounding_set_but(bounding)?;
            }
            if !self.capabilities.is_empty() {
                check(prctl(libc::PR_SET_KEEPCAPS, 1, 0))?;
            }
            check(libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr()))?;
            let (uid, gid) = (libc::c_ulong::from(self.uid), libc::c_ulong::from(self.gid));
            check(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
            check(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
            if !self.capabilities.is_empty() {
                keep_only(self.capabilities)?;
            }
            if self.no_new_privileges {
                check(prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0))?;
            }
        }
        Ok(())
    }
}

/// Drops every capability but `kept` from the bounding set (needs CAP_SETPCAP: before setuid).
/// The kernel's last capability is where PR_CAPBSET_READ starts to answer EINVAL.
fn drop_bounding_set_but(kept: CapabilitySet) -> io::Result<()> {
    for capability in 0..64u32 {
        // SAFETY: plain integer arguments.
        let present = unsafe { prctl(libc::PR_CAPBSET_READ, capability.into(), 0) };
        if present == -1 {
            let err = io::Error::last_os_error();
            return if capability > 0 && err.raw_os_error() == Some(libc::EINVAL) {
                Ok(())
            } else {
                Err(err)
            };
        }
        if present == 1 && !kept.contains(capability) {
            // SAFETY: plain integer arguments.
            check(unsafe { prctl(libc::PR_CAPBSET_DROP, capability.into(), 0) })?;
        }
    }
    Ok(())
}

/// Makes `capabilities` the permitted, effective, inheritable and ambient sets (after setuid
/// with PR_SET_KEEPCAPS, which kept the permitted set).
fn keep_only(capabilities: CapabilitySet) -> io::Result<()> {
    let mut data = [CapData::default(); 2];
    for capability in capabilities.iter() {
        let slot = &mut data[(capability / 32) as usize];
        let bit = 1 << (capability % 32);
        slot.effective |= bit;
        slot.permitted |= bit;
        slot.inheritable |= bit;
    }
    let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    // SAFETY: a valid header and two data structs, as capset(2) with version 3 reads.
    check(unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) })?;
    for capability in capabilities.iter() {
        let raise = libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong;
        // SAFETY: plain integer arguments.
        check(unsafe { prctl(libc::PR_CAP_AMBIENT, raise, capability.into()) })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_shows_and_counts_as_proc_status_does() {
        let mut set = CapabilitySet::EMPTY;
        for name in ["CAP_NET_ADMIN", "cap_bpf", "CAP_PERFMON"] {
            set.insert(CapabilitySet::number(name).unwrap());
        }
        // /proc/PID/status of a process with exactly these three.
        assert_eq!(set.bits(), 0x0000_00c0_0000_1000);
        assert_eq!(set.to_string(), "CAP_NET_ADMIN CAP_PERFMON CAP_BPF");
        assert_eq!(set.iter().collect::<Vec<_>>(), [12, 38, 39]);
        assert!(set.is_subset(CapabilitySet::from_bits(u64::MAX)));
        assert!(!CapabilitySet::from_bits(1).is_subset(set));
        assert_eq!(CapabilitySet::number("CAP_NET_ADMINX"), None);
    }

    #[test]
    fn the_table_is_numbered_in_order() {
        for (index, (_, number)) in CAPABILITIES.iter().enumerate() {
            assert_eq!(*number as usize, index);
        }
    }
}
