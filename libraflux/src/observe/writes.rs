//! Who writes to the IPVS table: the kprobe of `libraflux-ebpf/src/writes.rs`, attached to the
//! kernel's two entry points for changes to the table, counts calls by this process and by every
//! other. The daemon uses it to skip reading a table nobody else changed (docs/observer.md).

use aya::{
    Ebpf, EbpfLoader,
    maps::PerCpuArray,
    programs::{KProbe, ProgramError},
};

use super::{
    ObserveError,
    ebpf::{EBPF_OBJECT, map_error, missing_map},
};

const PROGRAM: &str = "libraflux_ipvs_write";
const MAP: &str = "IPVS_WRITES";
const WATCHER_TGID: &str = "WATCHER_TGID";
/// Where the kernel takes changes to the table: generic netlink, then setsockopt (ipvsadm built
/// against the old interface, keepalived's older versions). Both are in the `ip_vs` module, which
/// must be loaded when the watch starts.
pub const WRITE_FUNCTIONS: [&str; 2] = ["ip_vs_genl_set_cmd", "do_ip_vs_set_ctl"];

/// Calls into [`WRITE_FUNCTIONS`] since the watch started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Writes {
    /// By any other process.
    pub others: u64,
    /// By this process.
    pub ours: u64,
}

/// The kprobe, loaded and attached to both functions; detached when dropped.
#[derive(Debug)]
pub struct WriteWatch {
    ebpf: Ebpf,
}

impl WriteWatch {
    /// Loads the probe for this process (its pid as the initial pid namespace sees it: in a pid
    /// namespace of its own, every write counts as another's) and attaches it.
    pub fn start() -> Result<Self, ObserveError> {
        let tgid = std::process::id();
        let mut ebpf = EbpfLoader::new()
            .override_global(WATCHER_TGID, &tgid, true)
            .load(EBPF_OBJECT)
            .map_err(ObserveError::Load)?;
        let program: &mut KProbe = ebpf
            .program_mut(PROGRAM)
            .ok_or(ObserveError::Missing { kind: "program", name: PROGRAM })?
            .try_into()
            .map_err(|_| ObserveError::Missing { kind: "kprobe", name: PROGRAM })?;
        program.load().map_err(|source| ObserveError::LoadProgram { name: PROGRAM, source })?;
        for function in WRITE_FUNCTIONS {
            program.attach(function, 0).map_err(|source| probe_error(function, source))?;
        }
        Ok(Self { ebpf })
    }

    /// The calls counted so far, summed over CPUs.
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
    // A function that is not there is the likeliest failure: the module is not loaded, or a
    // kernel renamed or inlined it.
    let present = std::fs::read_to_string("/proc/kallsyms")
        .is_ok_and(|symbols| symbols.lines().any(|line| line.split_whitespace().nth(2) == Some(function)));
    ObserveError::Probe { function, present, source }
}
