//! Who writes to the IPVS table: the fentry programs of `libraflux-ebpf/src/writes.rs`,
//! attached where the kernel takes requests (generic netlink, and IPv4 socket options for
//! netfilter), count the requests that change the table, by this process and by every other. The
//! daemon uses it to skip reading a table nobody else changed (docs/observer.md).

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::PerCpuArray,
    programs::{FEntry, ProgramError},
};

use super::{
    ObserveError,
    ebpf::{EBPF_OBJECT, map_error, missing_map},
};

const MAP: &str = "IPVS_WRITES";
const WATCHER_TGID: &str = "WATCHER_TGID";
const IPVS_FAMILY: &str = "IPVS_FAMILY";
/// Where the kernel takes changes to the table, and the program attached to each: generic
/// netlink requests to the IPVS family, then the older setsockopt interface (ipvsadm built
/// against it, keepalived's older versions). Both functions are in the kernel proper, so the
/// watch needs no module's BTF; the programs pick out IPVS's requests themselves.
pub const WRITE_FUNCTIONS: [(&str, &str); 2] =
    [("genl_rcv_msg", "libraflux_ipvs_genl_write"), ("nf_setsockopt", "libraflux_ipvs_sockopt_write")];

/// Requests that change the table since the watch started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Writes {
    /// By any other process.
    pub others: u64,
    /// By this process.
    pub ours: u64,
}

/// The programs, loaded and attached; detached when dropped.
#[derive(Debug)]
pub struct WriteWatch {
    ebpf: Ebpf,
}

impl WriteWatch {
    /// Loads the programs for this process (its pid as the initial pid namespace sees it: in a
    /// pid namespace of its own, every write counts as another's) and for the IPVS generic
    /// netlink family `ipvs_family` (`IpvsClient::family_id`), and attaches them.
    pub fn start(ipvs_family: u16) -> Result<Self, ObserveError> {
        let tgid = std::process::id();
        let btf = Btf::from_sys_fs().map_err(ObserveError::KernelBtf)?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global(WATCHER_TGID, &tgid, true)
            .override_global(IPVS_FAMILY, &ipvs_family, true)
            .load(EBPF_OBJECT)
            .map_err(ObserveError::Load)?;
        for (function, name) in WRITE_FUNCTIONS {
            let program: &mut FEntry = ebpf
                .program_mut(name)
                .ok_or(ObserveError::Missing { kind: "program", name })?
                .try_into()
                .map_err(|_| ObserveError::Missing { kind: "fentry program", name })?;
            program.load(function, &btf).map_err(|source| probe_error(function, source))?;
            program.attach().map_err(|source| probe_error(function, source))?;
        }
        Ok(Self { ebpf })
    }

    /// The requests counted so far, summed over CPUs.
    pub fn writes(&self) -> Result<Writes, ObserveError> {
        let map = self.ebpf.map(MAP).ok_or(missing_map(MAP))?;
        let map = PerCpuArray::<_, u64>::try_from(map).map_err(|source| map_error("opening", MAP, source))?;
        let slot = |index: u32| -> Result<u64, ObserveError> {
            let values = map.get(&index, 0).map_err(|source| map_error("reading", MAP, source))?;
            Ok(values.iter().sum())
        };
        Ok(Writes { others: slot(0)?, ours: slot(1)? })
    }
}

fn probe_error(function: &'static str, source: ProgramError) -> ObserveError {
    // A function that is not there is the likeliest failure: a kernel renamed or inlined it.
    let present = std::fs::read_to_string("/proc/kallsyms")
        .is_ok_and(|symbols| symbols.lines().any(|line| line.split_whitespace().nth(2) == Some(function)));
    ObserveError::Probe { function, present, source }
}
