//! What can go wrong loading, attaching and reading the counter program.

use aya::{
    maps::MapError,
    programs::{ProgramError, tc},
};

use super::{Direction, LinkType};

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("loading the eBPF object (verifier or missing CAP_BPF/CAP_PERFMON)")]
    Load(#[source] aya::EbpfError),
    #[error("the eBPF object has no {kind} named {name}")]
    Missing { kind: &'static str, name: &'static str },
    #[error("loading program {name} into the kernel")]
    LoadProgram { name: &'static str, source: ProgramError },
    #[error("reading the kernel's information on program {name}")]
    ProgramInfo { name: &'static str, source: ProgramError },
    #[error("reading the link type of {interface} (SIOCGIFHWADDR)")]
    LinkType { interface: String, source: std::io::Error },
    #[error(
        "cannot count on {interface}: its link type is {link_type}, whose packets the counter cannot \
         parse (it reads Ethernet and loopback links, and links without a link header: tun, WireGuard, \
         ipip, ip6tnl)"
    )]
    UnsupportedLink { interface: String, link_type: LinkType },
    #[error("adding the clsact qdisc to {interface}")]
    Clsact { interface: String, source: tc::TcError },
    #[error("removing stale LibraFlux filters from {interface} ({direction:?})")]
    RemoveStale { interface: String, direction: Direction, source: tc::TcError },
    #[error("attaching {program} to {interface} ({direction:?})")]
    Attach { interface: String, direction: Direction, program: &'static str, source: ProgramError },
    #[error("detaching {program} from {interface} ({direction:?})")]
    Detach { interface: String, direction: Direction, program: &'static str, source: ProgramError },
    #[error("opening or entering the network namespace of a netlink filter")]
    Netns(#[source] std::io::Error),
    #[error("{operation} in map {map}")]
    Map { operation: &'static str, map: &'static str, source: MapError },
    #[error(
        "cannot watch one more destination in {map}: it holds at most {capacity} (the counter's \
         limit of watched destinations per address family, set when it was loaded)"
    )]
    SlotsFull { map: &'static str, capacity: u32 },
    #[error("building per-CPU map values")]
    PerCpuValues(#[source] std::io::Error),
    #[error("counting possible CPUs ({path})")]
    Cpus { path: &'static str, source: std::io::Error },
    #[error("enabling the kernel's run-time statistics for eBPF programs")]
    EnableStats(#[source] aya::sys::SyscallError),
    #[error(
        "attaching a kprobe to {function}{}",
        if *present { "" } else { " (the kernel has no such function: is the ip_vs module loaded?)" }
    )]
    Probe { function: &'static str, present: bool, source: ProgramError },
    #[error("test-running program {name} (BPF_PROG_TEST_RUN)")]
    TestRun { name: &'static str, source: std::io::Error },
}
