//! Loads the counting program embedded at build time, attaches it at TC and reads its maps.

use std::collections::BTreeMap;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapError, PerCpuArray, PerCpuHashMap, PerCpuValues},
    programs::{ProgramError, SchedClassifier, TcAttachType, tc},
    util::KernelVersion,
};
use libraflux_common::{COUNT_PROGRAM, COUNTERS_MAP, DestKey, FlowCounters};

/// The object built from `libraflux-ebpf` by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/libraflux"));

const PARSE_ERRORS_MAP: &str = "PARSE_ERRORS";
/// `BPF_NOEXIST`: insert only if the key is absent, so watching twice keeps the counts.
const BPF_NOEXIST: u64 = 1;

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

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("loading the eBPF object (verifier or missing CAP_BPF/CAP_PERFMON)")]
    Load(#[source] aya::EbpfError),
    #[error("the eBPF object has no {kind} named {name}")]
    Missing { kind: &'static str, name: &'static str },
    #[error("loading program {COUNT_PROGRAM} into the kernel")]
    LoadProgram(#[source] ProgramError),
    #[error("adding the clsact qdisc to {interface}")]
    Clsact { interface: String, source: tc::TcError },
    #[error("attaching {COUNT_PROGRAM} to {interface} ({direction:?})")]
    Attach { interface: String, direction: Direction, source: ProgramError },
    #[error("{operation} in map {map}")]
    Map { operation: &'static str, map: &'static str, source: MapError },
    #[error("building per-CPU map values")]
    PerCpuValues(#[source] std::io::Error),
    #[error("counting possible CPUs ({path})")]
    Cpus { path: &'static str, source: std::io::Error },
}

/// The per-destination counter program, loaded and possibly attached.
///
/// Dropping it detaches every attachment it made.
#[derive(Debug)]
pub struct FlowCounter {
    ebpf: Ebpf,
}

impl FlowCounter {
    /// Loads the programs and maps; `max_destinations` bounds how many destinations can be
    /// watched at once.
    pub fn load(max_destinations: u32) -> Result<Self, ObserveError> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(COUNTERS_MAP, max_destinations.max(1))
            .load(EBPF_OBJECT)
            .map_err(ObserveError::Load)?;
        let program = classifier(&mut ebpf)?;
        program.load().map_err(ObserveError::LoadProgram)?;
        // After the load: the loaded program holds its own reference to the log map, so the
        // logger may be dropped (no runtime) without breaking it.
        forward_ebpf_logs(&mut ebpf);
        Ok(Self { ebpf })
    }

    /// Attaches the counter to `interface`: tcx on kernels that have it (6.6+), a netlink clsact
    /// filter otherwise.
    pub fn attach(&mut self, interface: &str, direction: Direction) -> Result<(), ObserveError> {
        if !uses_tcx() {
            add_clsact(interface)?;
        }
        classifier(&mut self.ebpf)?
            .attach(interface, direction.attach_type())
            .map_err(|source| ObserveError::Attach { interface: interface.to_owned(), direction, source })?;
        Ok(())
    }

    /// Starts counting traffic to `key`. Watching an already watched key keeps its counts.
    pub fn watch(&mut self, key: DestKey) -> Result<(), ObserveError> {
        let cpus = aya::util::nr_cpus().map_err(|(path, source)| ObserveError::Cpus { path, source })?;
        let zeroes = PerCpuValues::try_from(vec![FlowCounters::default(); cpus])
            .map_err(ObserveError::PerCpuValues)?;
        match self.counters_map_mut()?.insert(key, zeroes, BPF_NOEXIST) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(err)) if err.io_error.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(())
            }
            Err(source) => Err(map_error("inserting a watched destination", source)),
        }
    }

    /// Stops counting traffic to `key` and forgets its counts.
    pub fn unwatch(&mut self, key: &DestKey) -> Result<(), ObserveError> {
        match self.counters_map_mut()?.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(map_error("removing a watched destination", source)),
        }
    }

    /// The counters of every watched destination, summed over CPUs, ordered by key.
    pub fn counters(&self) -> Result<BTreeMap<DestKey, FlowCounters>, ObserveError> {
        let map = self.ebpf.map(COUNTERS_MAP).ok_or(missing_map(COUNTERS_MAP))?;
        let map = PerCpuHashMap::<_, DestKey, FlowCounters>::try_from(map)
            .map_err(|source| map_error("opening", source))?;
        let mut out = BTreeMap::new();
        for entry in map.iter() {
            let (key, values) = entry.map_err(|source| map_error("reading", source))?;
            let total = values.iter().fold(FlowCounters::default(), |sum, cpu| sum.add(*cpu));
            out.insert(key, total);
        }
        Ok(out)
    }

    /// Packets the program could not parse (truncated or malformed headers), summed over CPUs.
    pub fn parse_errors(&self) -> Result<u64, ObserveError> {
        let map = self.ebpf.map(PARSE_ERRORS_MAP).ok_or(missing_map(PARSE_ERRORS_MAP))?;
        let map = PerCpuArray::<_, u64>::try_from(map).map_err(|source| ObserveError::Map {
            operation: "opening",
            map: PARSE_ERRORS_MAP,
            source,
        })?;
        let values = map.get(&0, 0).map_err(|source| ObserveError::Map {
            operation: "reading",
            map: PARSE_ERRORS_MAP,
            source,
        })?;
        Ok(values.iter().sum())
    }

    fn counters_map_mut(
        &mut self,
    ) -> Result<PerCpuHashMap<&mut aya::maps::MapData, DestKey, FlowCounters>, ObserveError> {
        let map = self.ebpf.map_mut(COUNTERS_MAP).ok_or(missing_map(COUNTERS_MAP))?;
        PerCpuHashMap::try_from(map).map_err(|source| map_error("opening", source))
    }
}

/// tcx links exist from Linux 6.6; aya picks them itself there.
fn uses_tcx() -> bool {
    KernelVersion::current().is_ok_and(|version| version >= KernelVersion::new(6, 6, 0))
}

fn add_clsact(interface: &str) -> Result<(), ObserveError> {
    match tc::qdisc_add_clsact(interface) {
        Ok(()) => Ok(()),
        Err(tc::TcError::IoError(err)) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(ObserveError::Clsact { interface: interface.to_owned(), source }),
    }
}

fn classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, ObserveError> {
    let missing = ObserveError::Missing { kind: "program", name: COUNT_PROGRAM };
    let program = ebpf.program_mut(COUNT_PROGRAM).ok_or(missing)?;
    program.try_into().map_err(|_| ObserveError::Missing { kind: "TC classifier", name: COUNT_PROGRAM })
}

fn missing_map(name: &'static str) -> ObserveError {
    ObserveError::Missing { kind: "map", name }
}

fn map_error(operation: &'static str, source: MapError) -> ObserveError {
    ObserveError::Map { operation, map: COUNTERS_MAP, source }
}

/// Forwards the programs' aya-log records to `log` (and so to tracing) from a tokio task.
/// Without a runtime, or if the object has no log map, the records are not read; that is logged.
fn forward_ebpf_logs(ebpf: &mut Ebpf) {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(err) => {
            tracing::warn!(error = %err, "eBPF log records will not be forwarded");
            return;
        }
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::debug!("no tokio runtime: eBPF log records will not be forwarded");
        return;
    };
    runtime.spawn(async move {
        // SAFETY: the logger owns its ring buffer fd and keeps it open until it is dropped,
        // which only happens together with the AsyncFd.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
        };
        let mut logger = match registered {
            Ok(fd) => fd,
            Err(err) => {
                tracing::warn!(error = %err, "cannot poll the eBPF log ring buffer");
                return;
            }
        };
        loop {
            let Ok(mut guard) = logger.readable_mut().await else { return };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
