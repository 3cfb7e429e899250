//! Loads the counting program embedded at build time, attaches it at TC and reads its maps.
//!
//! The object holds one program per way links frame their packets (see [`Framing`]); they share
//! the maps, so one counter counts the same destinations on Ethernet and L3 links alike. Each
//! attachment uses the program for its interface's link type (see attach.rs for the modes).

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::OwnedFd,
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues},
    programs::SchedClassifier,
};
use libraflux_common::{
    CONNECT_ATTEMPTS_V4_MAP, CONNECT_ATTEMPTS_V6_MAP, CONNECT_REPLIES_V4_MAP, CONNECT_REPLIES_V6_MAP,
    COUNT_L3_PROGRAM, COUNT_PROGRAM, COUNTERS_V4_MAP, COUNTERS_V6_MAP, DestKey, REFERENCE_PROGRAM,
    SYN_PENDING_V4_MAP, SYN_PENDING_V6_MAP, UDP_FLOWS_V4_MAP, UDP_FLOWS_V6_MAP,
};

use super::{
    Direction, Framing, ObserveError,
    attach::{self, Attachment, framing_of},
    counters::Slots,
    shield::RefusalShield,
    source::{Change, ConnectSide, FlowSnapshot, FlowSource, SyncReport, monotonic_now_ns},
};

/// The object built from `libraflux-ebpf` by build.rs.
pub(super) static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/libraflux"));

const PARSE_ERRORS_MAP: &str = "PARSE_ERRORS";
/// `BPF_NOEXIST`: insert only if the key is absent, so watching twice keeps the counts.
const BPF_NOEXIST: u64 = 1;

/// Sizes of the kernel maps, fixed at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How many destinations of each family (IPv4, IPv6) can be watched at once.
    pub max_destinations: u32,
    /// How many UDP 5-tuples of each family are remembered for new-flow counting; beyond it the
    /// least recently used is forgotten and counts as new if it comes back. The LRU maps are
    /// preallocated, about 100 bytes per entry.
    pub max_udp_flows: u32,
    /// How many SYNs to backends tracked for SYN timeouts are remembered per family, so that
    /// their retransmission is recognised; beyond it the least recently used is forgotten (and
    /// its retransmission not counted). Preallocated like the UDP flow tables. A counter that
    /// tracks no attempts ([`super::ConnectSide::Attempts`]) needs 1.
    pub max_pending_syns: u32,
}

impl Limits {
    pub const DEFAULT_UDP_FLOWS: u32 = 65_536;
    pub const DEFAULT_PENDING_SYNS: u32 = 65_536;

    /// `max_destinations` with the default UDP flow and pending SYN tables.
    pub const fn destinations(max_destinations: u32) -> Self {
        Self {
            max_destinations,
            max_udp_flows: Self::DEFAULT_UDP_FLOWS,
            max_pending_syns: Self::DEFAULT_PENDING_SYNS,
        }
    }
}

/// How long the kernel spent in the program and how often it ran, counted only while run-time
/// statistics are enabled (see [`enable_run_time_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub run_time: Duration,
    pub run_count: u64,
}

/// Turns on the kernel's per-program run-time accounting (`BPF_ENABLE_STATS`) until the returned
/// descriptor is closed. It adds two clock reads per program run, so benchmarks use it for their
/// attributed cost only, never the daemon.
pub fn enable_run_time_stats() -> Result<OwnedFd, ObserveError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(ObserveError::EnableStats)
}

/// The programs a counter attaches, by framing.
#[derive(Clone, Copy, Debug)]
pub(super) struct Programs {
    pub(super) ethernet: &'static str,
    pub(super) l3: &'static str,
}

impl Programs {
    const COUNTER: Self = Self { ethernet: COUNT_PROGRAM, l3: COUNT_L3_PROGRAM };
    /// The benchmarks' do-nothing program, whatever the framing.
    const REFERENCE: Self = Self { ethernet: REFERENCE_PROGRAM, l3: REFERENCE_PROGRAM };

    const fn for_framing(self, framing: Framing) -> &'static str {
        match framing {
            Framing::Ethernet => self.ethernet,
            Framing::L3 => self.l3,
        }
    }
}

/// The per-destination counter program, loaded and possibly attached.
///
/// Dropping it detaches every attachment it made (failures are logged).
#[derive(Debug)]
pub struct FlowCounter {
    pub(super) ebpf: Ebpf,
    attachments: Vec<Attachment>,
    pub(super) programs: Programs,
    /// The shield maps, taken out of `ebpf`.
    shield: RefusalShield,
    /// Where each watched destination's counters sit in the counters arrays (and how many of
    /// each family fit: [`Limits::max_destinations`]).
    pub(super) slots: Box<Slots>,
}

impl FlowCounter {
    /// Loads the programs and maps, sized by `limits`.
    pub fn load(limits: Limits) -> Result<Self, ObserveError> {
        Self::load_programs(limits, Programs::COUNTER)
    }

    /// Loads [`REFERENCE_PROGRAM`] in place of the counter: attached the same way, it does
    /// nothing, so it costs what any TC program costs at that hook. For benchmarks (tcx hosts):
    /// the counter's own cost is the difference.
    pub fn load_reference() -> Result<Self, ObserveError> {
        Self::load_programs(Limits { max_pending_syns: 1, ..Limits::destinations(1) }, Programs::REFERENCE)
    }

    fn load_programs(limits: Limits, programs: Programs) -> Result<Self, ObserveError> {
        let destinations = limits.max_destinations.max(1);
        let mut loader = EbpfLoader::new();
        for name in [COUNTERS_V4_MAP, COUNTERS_V6_MAP] {
            loader.map_max_entries(name, Slots::array_len(destinations));
        }
        for name in
            [CONNECT_REPLIES_V4_MAP, CONNECT_REPLIES_V6_MAP, CONNECT_ATTEMPTS_V4_MAP, CONNECT_ATTEMPTS_V6_MAP]
        {
            loader.map_max_entries(name, destinations);
        }
        let mut ebpf = loader
            .map_max_entries(UDP_FLOWS_V4_MAP, limits.max_udp_flows.max(1))
            .map_max_entries(UDP_FLOWS_V6_MAP, limits.max_udp_flows.max(1))
            .map_max_entries(SYN_PENDING_V4_MAP, limits.max_pending_syns.max(1))
            .map_max_entries(SYN_PENDING_V6_MAP, limits.max_pending_syns.max(1))
            .load(EBPF_OBJECT)
            .map_err(ObserveError::Load)?;
        for name in [programs.ethernet, programs.l3] {
            let program = classifier(&mut ebpf, name)?;
            if program.fd().is_err() {
                program.load().map_err(|source| ObserveError::LoadProgram { name, source })?;
            }
        }
        // After the load: the loaded programs hold their own reference to the log map, so the
        // logger may be dropped (no runtime) without breaking them.
        forward_ebpf_logs(&mut ebpf);
        let shield = RefusalShield::take_from(&mut ebpf)?;
        let slots = Box::new(Slots::new(destinations));
        slots.publish(&mut ebpf)?;
        Ok(Self { ebpf, attachments: Vec::new(), programs, shield, slots })
    }

    /// The shield of this counter's program: it holds back the node's refusals of a VIP while the
    /// VIP's scheduler changes (see [`RefusalShield`]). It works where this counter is attached
    /// at [`Direction::Egress`] of the interface the refusals leave by, the client-facing one;
    /// anywhere else it drops nothing.
    pub fn refusal_shield(&self) -> RefusalShield {
        self.shield.clone()
    }

    /// Whether this counter is attached to `interface` in `direction`.
    pub fn is_attached(&self, interface: &str, direction: Direction) -> bool {
        self.position(interface, direction).is_some()
    }

    /// Attaches the counter to `interface` in `direction`, with the program for the interface's
    /// link type ([`Framing`]); a link type the program cannot parse is refused
    /// ([`ObserveError::UnsupportedLink`]) and nothing is attached. Attaching where this counter
    /// is already attached does nothing; a filter left by an earlier process (netlink clsact) is
    /// replaced.
    pub fn attach(&mut self, interface: &str, direction: Direction) -> Result<(), ObserveError> {
        if self.position(interface, direction).is_some() {
            return Ok(());
        }
        let name = self.programs.for_framing(framing_of(interface)?);
        let attachment = attach::attach(classifier(&mut self.ebpf, name)?, name, interface, direction)?;
        self.attachments.push(attachment);
        Ok(())
    }

    /// Detaches the counter from `interface` in `direction`; nothing if it is not attached there.
    pub fn detach(&mut self, interface: &str, direction: Direction) -> Result<(), ObserveError> {
        let Some(index) = self.position(interface, direction) else { return Ok(()) };
        let attachment = self.attachments.swap_remove(index);
        attach::detach(classifier(&mut self.ebpf, attachment.program)?, attachment)
    }

    /// The kernel's id of the program loaded for `framing` (as `tc filter show` and `bpftool`
    /// print it).
    pub fn program_id(&mut self, framing: Framing) -> Result<u32, ObserveError> {
        let name = self.programs.for_framing(framing);
        let info = classifier(&mut self.ebpf, name)?
            .info()
            .map_err(|source| ObserveError::ProgramInfo { name, source })?;
        Ok(info.id())
    }

    /// The Ethernet program's run-time statistics so far (zero unless [`enable_run_time_stats`]
    /// is held).
    pub fn run_stats(&mut self) -> Result<RunStats, ObserveError> {
        let name = self.programs.ethernet;
        let info = classifier(&mut self.ebpf, name)?
            .info()
            .map_err(|source| ObserveError::ProgramInfo { name, source })?;
        Ok(RunStats { run_time: info.run_time(), run_count: info.run_count() })
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

    fn position(&self, interface: &str, direction: Direction) -> Option<usize> {
        self.attachments.iter().position(|at| at.interface == interface && at.direction == direction)
    }

    /// Inserts `value` on every CPU under `key` unless the key is there: what is there keeps
    /// its counts.
    pub(super) fn insert_new<K: Pod, V: Pod>(
        &mut self,
        name: &'static str,
        key: K,
        value: V,
    ) -> Result<(), ObserveError> {
        let cpus = aya::util::nr_cpus().map_err(|(path, source)| ObserveError::Cpus { path, source })?;
        let values = PerCpuValues::try_from(vec![value; cpus]).map_err(ObserveError::PerCpuValues)?;
        match self.per_cpu_map_mut::<K, V>(name)?.insert(key, values, BPF_NOEXIST) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(err)) if err.io_error.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(())
            }
            Err(source) => Err(map_error("inserting a watched destination", name, source)),
        }
    }

    pub(super) fn remove<K: Pod, V: Pod>(&mut self, name: &'static str, key: &K) -> Result<(), ObserveError> {
        match self.per_cpu_map_mut::<K, V>(name)?.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(map_error("removing a watched destination", name, source)),
        }
    }

    pub(super) fn collect_keys<K: Pod + Into<DestKey>, V: Pod>(
        &self,
        name: &'static str,
        out: &mut BTreeSet<DestKey>,
    ) -> Result<(), ObserveError> {
        for key in self.per_cpu_map::<K, V>(name)?.keys() {
            out.insert(key.map_err(|source| map_error("listing keys", name, source))?.into());
        }
        Ok(())
    }

    /// Calls `each` with every entry of the per-CPU hash map `name`: its key and its values.
    pub(super) fn for_each_entry<K: Pod + Into<DestKey>, V: Pod>(
        &self,
        name: &'static str,
        mut each: impl FnMut(DestKey, &PerCpuValues<V>),
    ) -> Result<(), ObserveError> {
        for entry in self.per_cpu_map::<K, V>(name)?.iter() {
            let (key, values) = entry.map_err(|source| map_error("reading", name, source))?;
            each(key.into(), &values);
        }
        Ok(())
    }

    pub(super) fn per_cpu_map<K: Pod, V: Pod>(
        &self,
        name: &'static str,
    ) -> Result<PerCpuHashMap<&MapData, K, V>, ObserveError> {
        let map = self.ebpf.map(name).ok_or(missing_map(name))?;
        PerCpuHashMap::try_from(map).map_err(|source| map_error("opening", name, source))
    }

    pub(super) fn per_cpu_map_mut<K: Pod, V: Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<PerCpuHashMap<&mut MapData, K, V>, ObserveError> {
        let map = self.ebpf.map_mut(name).ok_or(missing_map(name))?;
        PerCpuHashMap::try_from(map).map_err(|source| map_error("opening", name, source))
    }
}

impl FlowSource for FlowCounter {
    fn snapshot(&self) -> Result<BTreeMap<DestKey, FlowSnapshot>, ObserveError> {
        let counters = self.counters()?;
        let outcomes = self.connect_outcomes()?;
        let (now_ns, now) = monotonic_now_ns();
        let mut snapshot: BTreeMap<DestKey, FlowSnapshot> = counters
            .into_iter()
            .map(|(key, value)| (key, FlowSnapshot::from_kernel(value, now_ns, now)))
            .collect();
        for (key, outcomes) in outcomes {
            snapshot.entry(key).or_default().connects = Some(outcomes);
        }
        Ok(snapshot)
    }

    fn sync_connects(
        &mut self,
        backends: &BTreeSet<DestKey>,
        side: ConnectSide,
    ) -> Result<SyncReport, ObserveError> {
        self.sync_connect_side(backends, side)
    }

    fn sync(&mut self, watched: &BTreeSet<DestKey>) -> Result<SyncReport, ObserveError> {
        let current = self.watched()?;
        SyncReport::apply(&current, watched, |key, change| match change {
            Change::Remove => self.unwatch(key),
            Change::Add => self.watch(*key),
        })
    }
}

impl Drop for FlowCounter {
    fn drop(&mut self) {
        for attachment in std::mem::take(&mut self.attachments) {
            let detached = classifier(&mut self.ebpf, attachment.program)
                .and_then(|program| attach::detach(program, attachment));
            if let Err(err) = detached {
                tracing::warn!(error = %err, "detaching the flow counter failed");
            }
        }
    }
}

pub(super) fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, ObserveError> {
    let program = ebpf.program_mut(name).ok_or(ObserveError::Missing { kind: "program", name })?;
    program.try_into().map_err(|_| ObserveError::Missing { kind: "TC classifier", name })
}

pub(super) fn missing_map(name: &'static str) -> ObserveError {
    ObserveError::Missing { kind: "map", name }
}

pub(super) fn map_error(operation: &'static str, map: &'static str, source: MapError) -> ObserveError {
    ObserveError::Map { operation, map, source }
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
