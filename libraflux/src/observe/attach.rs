//! Attaching a loaded program at an interface's TC hook, and detaching it.
//!
//! Attach modes: on Linux 6.6+ aya attaches a tcx link. A tcx link is a file descriptor of this
//! process, so the kernel detaches it when the process exits, however it exits: nothing is left
//! behind after a crash. Before 6.6 the program is a netlink `clsact` filter, which outlives the
//! process; so every LibraFlux filter sits at one fixed priority and handle, and attaching first
//! removes the filters of LibraFlux's programs that an earlier (crashed) process left, instead of
//! stacking a second one. One LibraFlux process per node is assumed: a second one would replace
//! the first one's filters.

use aya::{
    programs::{
        SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions, TcHandle},
    },
    util::KernelVersion,
};
use libraflux_common::{COUNT_L3_PROGRAM, COUNT_PROGRAM};

use super::{Framing, LinkType, ObserveError, netns::NetNs};

/// The netlink filter's fixed place: priority 0x4c46 ("LF") runs before filters that let the
/// kernel pick a priority (49152 and down); the handle is unique to LibraFlux at that priority.
const NETLINK_PRIORITY: u16 = 0x4c46;
const NETLINK_HANDLE: TcHandle = TcHandle::new(0, 0x4c46);

/// Which way through the interface the program sees packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn attach_type(self) -> TcAttachType {
        match self {
            Self::Ingress => TcAttachType::Ingress,
            Self::Egress => TcAttachType::Egress,
        }
    }
}

/// How the program is attached on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// tcx links (Linux 6.6+): owned by the process, gone when it exits.
    Tcx,
    /// netlink `clsact` filters: outlive the process; replaced on the next attach.
    NetlinkClsact,
}

impl AttachMode {
    /// The mode the running kernel supports; aya makes the same choice.
    pub fn current() -> Self {
        let tcx = KernelVersion::current().is_ok_and(|version| version >= KernelVersion::new(6, 6, 0));
        if tcx { Self::Tcx } else { Self::NetlinkClsact }
    }
}

/// How `interface` frames its packets, or why the counter cannot count there.
pub(super) fn framing_of(interface: &str) -> Result<Framing, ObserveError> {
    let link_type = LinkType::of(interface)
        .map_err(|source| ObserveError::LinkType { interface: interface.to_owned(), source })?;
    link_type
        .framing()
        .ok_or_else(|| ObserveError::UnsupportedLink { interface: interface.to_owned(), link_type })
}

/// One place a program is attached.
#[derive(Debug)]
pub(super) struct Attachment {
    pub(super) interface: String,
    pub(super) direction: Direction,
    /// The program attached there: detaching must go through the same one.
    pub(super) program: &'static str,
    link: SchedClassifierLinkId,
    /// netlink only: the namespace the filter was added in. Netlink removes a filter by
    /// interface index in the caller's namespace, so detaching from another thread (another
    /// namespace) must enter this one first. tcx links are fds and need nothing.
    netns: Option<NetNs>,
}

/// Attaches `program` (named `name`) to `interface` in `direction` ([`AttachMode::current`]),
/// replacing a filter an earlier process left there (netlink clsact).
pub(super) fn attach(
    program: &mut SchedClassifier,
    name: &'static str,
    interface: &str,
    direction: Direction,
) -> Result<Attachment, ObserveError> {
    let attach_error =
        |source| ObserveError::Attach { interface: interface.to_owned(), direction, program: name, source };
    let (link, netns) = match AttachMode::current() {
        AttachMode::Tcx => (program.attach(interface, direction.attach_type()).map_err(attach_error)?, None),
        AttachMode::NetlinkClsact => {
            add_clsact(interface)?;
            remove_stale_filters(interface, direction)?;
            let options =
                NlOptions { priority: NETLINK_PRIORITY, handle: NETLINK_HANDLE, ..Default::default() };
            let netns = NetNs::current().map_err(ObserveError::Netns)?;
            let link = program
                .attach_with_options(interface, direction.attach_type(), TcAttachOptions::Netlink(options))
                .map_err(attach_error)?;
            (link, Some(netns))
        }
    };
    Ok(Attachment { interface: interface.to_owned(), direction, program: name, link, netns })
}

/// Detaches what [`attach`] attached; `program` is the one named in `attachment`.
pub(super) fn detach(program: &mut SchedClassifier, attachment: Attachment) -> Result<(), ObserveError> {
    let Attachment { interface, direction, program: name, link, netns } = attachment;
    let detached = match &netns {
        None => program.detach(link),
        Some(netns) => netns.run(|| program.detach(link)).map_err(ObserveError::Netns)?,
    };
    detached.map_err(|source| ObserveError::Detach { interface, direction, program: name, source })
}

fn add_clsact(interface: &str) -> Result<(), ObserveError> {
    match tc::qdisc_add_clsact(interface) {
        Ok(()) => Ok(()),
        Err(tc::TcError::IoError(err)) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(tc::TcError::NetlinkError(err)) if err.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(source) => Err(ObserveError::Clsact { interface: interface.to_owned(), source }),
    }
}

/// Removes every netlink filter named [`COUNT_PROGRAM`] or [`COUNT_L3_PROGRAM`] at this hook:
/// left by a process that exited without detaching (crash, SIGKILL). Both names, whichever this
/// process attaches: a link's type can change while it is down (a tun device's can).
fn remove_stale_filters(interface: &str, direction: Direction) -> Result<(), ObserveError> {
    for name in [COUNT_PROGRAM, COUNT_L3_PROGRAM] {
        match tc::qdisc_detach_program(interface, direction.attach_type(), name) {
            Ok(()) => {
                tracing::info!(interface, ?direction, "removed {name} filters left by an earlier process");
            }
            Err(tc::TcError::IoError(err)) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ObserveError::RemoveStale { interface: interface.to_owned(), direction, source });
            }
        }
    }
    Ok(())
}
