//! Loads the counting program embedded at build time, attaches it at TC and reads its maps.
//!
//! Attach modes: on Linux 6.6+ aya attaches a tcx link. A tcx link is a file descriptor of this
//! process, so the kernel detaches it when the process exits, however it exits: nothing is left
//! behind after a crash. Before 6.6 the program is a netlink `clsact` filter, which outlives the
//! process; so every LibraFlux filter sits at one fixed priority and handle, and attaching first
//! removes the filters named [`COUNT_PROGRAM`] that an earlier (crashed) process left, instead of
//! stacking a second one. One LibraFlux process per node is assumed: a second one would replace
//! the first one's filters.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues},
    programs::{
        ProgramError, SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions, TcHandle},
    },
    util::KernelVersion,
};
use libraflux_common::{
    COUNT_PROGRAM, COUNTERS_V4_MAP, COUNTERS_V6_MAP, Dest4, Dest6, DestEntry, DestKey, FlowCounters, MapKey,
    REFERENCE_PROGRAM, UDP_FLOWS_V4_MAP, UDP_FLOWS_V6_MAP,
};

use super::{
    netns::NetNs,
    shield::RefusalShield,
    source::{FlowSnapshot, FlowSource, SyncReport, monotonic_now_ns},
};

/// The object built from `libraflux-ebpf` by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/libraflux"));

const PARSE_ERRORS_MAP: &str = "PARSE_ERRORS";
/// `BPF_NOEXIST`: insert only if the key is absent, so watching twice keeps the counts.
const BPF_NOEXIST: u64 = 1;
/// `BPF_PROG_TEST_RUN` and its part of `union bpf_attr` (linux/bpf.h, fields up to `batch_size`).
const BPF_PROG_TEST_RUN: libc::c_long = 10;

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    /// Out: mean nanoseconds per run.
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// The start of `struct __sk_buff` (linux/bpf.h) up to `ifindex`: the context given to a test
/// run. The kernel zero-fills the rest and sets the packet's ingress interface from
/// `ingress_ifindex`.
#[repr(C)]
#[derive(Default)]
struct TestRunContext {
    len: u32,
    pkt_type: u32,
    mark: u32,
    queue_mapping: u32,
    protocol: u32,
    vlan_present: u32,
    vlan_tci: u32,
    vlan_proto: u32,
    priority: u32,
    ingress_ifindex: u32,
    ifindex: u32,
}

/// `lo` is interface 1 in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;
/// `TC_ACT_SHOT`: the program's verdict for a packet it drops.
const SHOT: u32 = 2;

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

/// Sizes of the kernel maps, fixed at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How many destinations of each family (IPv4, IPv6) can be watched at once.
    pub max_destinations: u32,
    /// How many UDP 5-tuples of each family are remembered for new-flow counting; beyond it the
    /// least recently used is forgotten and counts as new if it comes back. The LRU maps are
    /// preallocated, about 100 bytes per entry.
    pub max_udp_flows: u32,
}

impl Limits {
    pub const DEFAULT_UDP_FLOWS: u32 = 65_536;

    /// `max_destinations` with the default UDP flow table.
    pub const fn destinations(max_destinations: u32) -> Self {
        Self { max_destinations, max_udp_flows: Self::DEFAULT_UDP_FLOWS }
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
    #[error("reading the kernel's information on program {COUNT_PROGRAM}")]
    ProgramInfo(#[source] ProgramError),
    #[error("adding the clsact qdisc to {interface}")]
    Clsact { interface: String, source: tc::TcError },
    #[error("removing stale {COUNT_PROGRAM} filters from {interface} ({direction:?})")]
    RemoveStale { interface: String, direction: Direction, source: tc::TcError },
    #[error("attaching {COUNT_PROGRAM} to {interface} ({direction:?})")]
    Attach { interface: String, direction: Direction, source: ProgramError },
    #[error("detaching {COUNT_PROGRAM} from {interface} ({direction:?})")]
    Detach { interface: String, direction: Direction, source: ProgramError },
    #[error("opening or entering the network namespace of a netlink filter")]
    Netns(#[source] std::io::Error),
    #[error("{operation} in map {map}")]
    Map { operation: &'static str, map: &'static str, source: MapError },
    #[error("building per-CPU map values")]
    PerCpuValues(#[source] std::io::Error),
    #[error("counting possible CPUs ({path})")]
    Cpus { path: &'static str, source: std::io::Error },
    #[error("enabling the kernel's run-time statistics for eBPF programs")]
    EnableStats(#[source] aya::sys::SyscallError),
    #[error("test-running program {COUNT_PROGRAM} (BPF_PROG_TEST_RUN)")]
    TestRun(#[source] std::io::Error),
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

#[derive(Debug)]
struct Attachment {
    interface: String,
    direction: Direction,
    link: SchedClassifierLinkId,
    /// netlink only: the namespace the filter was added in. Netlink removes a filter by
    /// interface index in the caller's namespace, so detaching from another thread (another
    /// namespace) must enter this one first. tcx links are fds and need nothing.
    netns: Option<NetNs>,
}

/// The per-destination counter program, loaded and possibly attached.
///
/// Dropping it detaches every attachment it made (failures are logged).
#[derive(Debug)]
pub struct FlowCounter {
    ebpf: Ebpf,
    attachments: Vec<Attachment>,
    /// [`COUNT_PROGRAM`], or [`REFERENCE_PROGRAM`] for benchmarks.
    program: &'static str,
    /// The shield maps, taken out of `ebpf`.
    shield: RefusalShield,
}

impl FlowCounter {
    /// Loads the programs and maps, sized by `limits`.
    pub fn load(limits: Limits) -> Result<Self, ObserveError> {
        Self::load_program(limits, COUNT_PROGRAM)
    }

    /// Loads [`REFERENCE_PROGRAM`] in place of the counter: attached the same way, it does
    /// nothing, so it costs what any TC program costs at that hook. For benchmarks (tcx hosts):
    /// the counter's own cost is the difference.
    pub fn load_reference() -> Result<Self, ObserveError> {
        Self::load_program(Limits::destinations(1), REFERENCE_PROGRAM)
    }

    fn load_program(limits: Limits, program_name: &'static str) -> Result<Self, ObserveError> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(COUNTERS_V4_MAP, limits.max_destinations.max(1))
            .map_max_entries(COUNTERS_V6_MAP, limits.max_destinations.max(1))
            .map_max_entries(UDP_FLOWS_V4_MAP, limits.max_udp_flows.max(1))
            .map_max_entries(UDP_FLOWS_V6_MAP, limits.max_udp_flows.max(1))
            .load(EBPF_OBJECT)
            .map_err(ObserveError::Load)?;
        let program = classifier(&mut ebpf, program_name)?;
        program.load().map_err(ObserveError::LoadProgram)?;
        // After the load: the loaded program holds its own reference to the log map, so the
        // logger may be dropped (no runtime) without breaking it.
        forward_ebpf_logs(&mut ebpf);
        let shield = RefusalShield::take_from(&mut ebpf)?;
        Ok(Self { ebpf, attachments: Vec::new(), program: program_name, shield })
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

    /// Attaches the counter to `interface` in `direction` ([`AttachMode::current`]). Attaching
    /// where this counter is already attached does nothing; a filter left by an earlier process
    /// (netlink clsact) is replaced.
    pub fn attach(&mut self, interface: &str, direction: Direction) -> Result<(), ObserveError> {
        if self.position(interface, direction).is_some() {
            return Ok(());
        }
        let program = classifier(&mut self.ebpf, self.program)?;
        let attach_error =
            |source| ObserveError::Attach { interface: interface.to_owned(), direction, source };
        let (link, netns) = match AttachMode::current() {
            AttachMode::Tcx => {
                (program.attach(interface, direction.attach_type()).map_err(attach_error)?, None)
            }
            AttachMode::NetlinkClsact => {
                add_clsact(interface)?;
                remove_stale_filters(interface, direction)?;
                let options =
                    NlOptions { priority: NETLINK_PRIORITY, handle: NETLINK_HANDLE, ..Default::default() };
                let netns = NetNs::current().map_err(ObserveError::Netns)?;
                let link = program
                    .attach_with_options(
                        interface,
                        direction.attach_type(),
                        TcAttachOptions::Netlink(options),
                    )
                    .map_err(attach_error)?;
                (link, Some(netns))
            }
        };
        self.attachments.push(Attachment { interface: interface.to_owned(), direction, link, netns });
        Ok(())
    }

    /// Detaches the counter from `interface` in `direction`; nothing if it is not attached there.
    pub fn detach(&mut self, interface: &str, direction: Direction) -> Result<(), ObserveError> {
        let Some(index) = self.position(interface, direction) else { return Ok(()) };
        let attachment = self.attachments.swap_remove(index);
        detach_from(classifier(&mut self.ebpf, self.program)?, attachment)
    }

    /// The kernel's id of the loaded program (as `tc filter show` and `bpftool` print it).
    pub fn program_id(&mut self) -> Result<u32, ObserveError> {
        let info = classifier(&mut self.ebpf, self.program)?.info().map_err(ObserveError::ProgramInfo)?;
        Ok(info.id())
    }

    /// The program's run-time statistics so far (zero unless [`enable_run_time_stats`] is held).
    pub fn run_stats(&mut self) -> Result<RunStats, ObserveError> {
        let info = classifier(&mut self.ebpf, self.program)?.info().map_err(ObserveError::ProgramInfo)?;
        Ok(RunStats { run_time: info.run_time(), run_count: info.run_count() })
    }

    /// Runs the program `repeat` times over `frame` (an Ethernet frame) inside the kernel
    /// (`BPF_PROG_TEST_RUN`) and returns the kernel's mean time per run: the cost of the program
    /// alone, without the network stack around it. The frame runs as if received on `lo` (the
    /// program skips packets this node sent itself). For benchmarks and tests; the maps are
    /// updated as they would be by `repeat` real packets.
    pub fn test_run(&mut self, frame: &[u8], repeat: u32) -> Result<Duration, ObserveError> {
        let attr = self.run_test(frame, repeat, LOOPBACK_IFINDEX)?;
        Ok(Duration::from_nanos(u64::from(attr.duration)))
    }

    /// Runs the program once over `frame` as a packet this node sends (no ingress interface,
    /// as at the egress of a refusal the node makes) and says whether it dropped it.
    pub fn drops_when_sent(&mut self, frame: &[u8]) -> Result<bool, ObserveError> {
        let attr = self.run_test(frame, 1, 0)?;
        Ok(attr.retval == SHOT)
    }

    fn run_test(
        &mut self,
        frame: &[u8],
        repeat: u32,
        ingress_ifindex: u32,
    ) -> Result<TestRunAttr, ObserveError> {
        let program = classifier(&mut self.ebpf, self.program)?;
        let fd = program.fd().map_err(ObserveError::ProgramInfo)?.as_fd().as_raw_fd();
        let context = TestRunContext { ingress_ifindex, ..TestRunContext::default() };
        let mut attr = TestRunAttr {
            prog_fd: u32::try_from(fd)
                .map_err(|_| ObserveError::TestRun(std::io::ErrorKind::InvalidInput.into()))?,
            data_size_in: u32::try_from(frame.len())
                .map_err(|_| ObserveError::TestRun(std::io::ErrorKind::InvalidInput.into()))?,
            data_in: frame.as_ptr() as u64,
            repeat,
            ctx_size_in: size_of::<TestRunContext>() as u32,
            ctx_in: (&raw const context) as u64,
            ..TestRunAttr::default()
        };
        // SAFETY: attr is a valid BPF_PROG_TEST_RUN attribute block that lives across the call;
        // data_in points at frame.len() readable bytes, ctx_in at the context, which outlives the
        // call too; no output buffer is given.
        let ret = unsafe {
            libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &raw mut attr, size_of::<TestRunAttr>())
        };
        if ret != 0 {
            return Err(ObserveError::TestRun(std::io::Error::last_os_error()));
        }
        Ok(attr)
    }

    /// Starts counting traffic to `key`. Watching an already watched key keeps its counts.
    pub fn watch(&mut self, key: DestKey) -> Result<(), ObserveError> {
        match key.map_key() {
            MapKey::V4(key) => self.insert_zeroed(COUNTERS_V4_MAP, key),
            MapKey::V6(key) => self.insert_zeroed(COUNTERS_V6_MAP, key),
        }
    }

    /// Stops counting traffic to `key` and forgets its counts.
    pub fn unwatch(&mut self, key: &DestKey) -> Result<(), ObserveError> {
        match key.map_key() {
            MapKey::V4(key) => self.remove(COUNTERS_V4_MAP, &key),
            MapKey::V6(key) => self.remove(COUNTERS_V6_MAP, &key),
        }
    }

    /// The destinations being watched, ordered.
    pub fn watched(&self) -> Result<BTreeSet<DestKey>, ObserveError> {
        let mut out = BTreeSet::new();
        self.collect_keys::<Dest4>(COUNTERS_V4_MAP, &mut out)?;
        self.collect_keys::<Dest6>(COUNTERS_V6_MAP, &mut out)?;
        Ok(out)
    }

    /// The counters of every watched destination, combined over CPUs, ordered by key.
    pub fn counters(&self) -> Result<BTreeMap<DestKey, FlowCounters>, ObserveError> {
        let mut out = BTreeMap::new();
        self.collect_counters::<Dest4>(COUNTERS_V4_MAP, &mut out)?;
        self.collect_counters::<Dest6>(COUNTERS_V6_MAP, &mut out)?;
        Ok(out)
    }

    /// What was observed for one destination (one map lookup, summed over CPUs); `None` if it is
    /// not watched.
    pub fn flows(&self, key: &DestKey) -> Result<Option<FlowSnapshot>, ObserveError> {
        let counters = match key.map_key() {
            MapKey::V4(key) => self.counters_of(COUNTERS_V4_MAP, &key)?,
            MapKey::V6(key) => self.counters_of(COUNTERS_V6_MAP, &key)?,
        };
        let (now_ns, now) = monotonic_now_ns();
        Ok(counters.map(|counters| FlowSnapshot::from_kernel(counters, now_ns, now)))
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

    fn insert_zeroed<K: Pod>(&mut self, name: &'static str, key: K) -> Result<(), ObserveError> {
        let cpus = aya::util::nr_cpus().map_err(|(path, source)| ObserveError::Cpus { path, source })?;
        let zeroes =
            PerCpuValues::try_from(vec![DestEntry::default(); cpus]).map_err(ObserveError::PerCpuValues)?;
        match self.counters_map_mut::<K>(name)?.insert(key, zeroes, BPF_NOEXIST) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(err)) if err.io_error.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(())
            }
            Err(source) => Err(map_error("inserting a watched destination", name, source)),
        }
    }

    fn remove<K: Pod>(&mut self, name: &'static str, key: &K) -> Result<(), ObserveError> {
        match self.counters_map_mut::<K>(name)?.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(map_error("removing a watched destination", name, source)),
        }
    }

    fn counters_of<K: Pod>(&self, name: &'static str, key: &K) -> Result<Option<FlowCounters>, ObserveError> {
        match self.counters_map::<K>(name)?.get(key, 0) {
            Ok(values) => Ok(Some(sum_cpus(&values))),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(map_error("reading", name, source)),
        }
    }

    fn collect_keys<K: Pod + Into<DestKey>>(
        &self,
        name: &'static str,
        out: &mut BTreeSet<DestKey>,
    ) -> Result<(), ObserveError> {
        for key in self.counters_map::<K>(name)?.keys() {
            out.insert(key.map_err(|source| map_error("listing keys", name, source))?.into());
        }
        Ok(())
    }

    fn collect_counters<K: Pod + Into<DestKey>>(
        &self,
        name: &'static str,
        out: &mut BTreeMap<DestKey, FlowCounters>,
    ) -> Result<(), ObserveError> {
        for entry in self.counters_map::<K>(name)?.iter() {
            let (key, values) = entry.map_err(|source| map_error("reading", name, source))?;
            out.insert(key.into(), sum_cpus(&values));
        }
        Ok(())
    }

    fn counters_map<K: Pod>(
        &self,
        name: &'static str,
    ) -> Result<PerCpuHashMap<&MapData, K, DestEntry>, ObserveError> {
        let map = self.ebpf.map(name).ok_or(missing_map(name))?;
        PerCpuHashMap::try_from(map).map_err(|source| map_error("opening", name, source))
    }

    fn counters_map_mut<K: Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<PerCpuHashMap<&mut MapData, K, DestEntry>, ObserveError> {
        let map = self.ebpf.map_mut(name).ok_or(missing_map(name))?;
        PerCpuHashMap::try_from(map).map_err(|source| map_error("opening", name, source))
    }
}

impl FlowSource for FlowCounter {
    fn snapshot(&self) -> Result<BTreeMap<DestKey, FlowSnapshot>, ObserveError> {
        let counters = self.counters()?;
        let (now_ns, now) = monotonic_now_ns();
        Ok(counters
            .into_iter()
            .map(|(key, value)| (key, FlowSnapshot::from_kernel(value, now_ns, now)))
            .collect())
    }

    fn sync(&mut self, watched: &BTreeSet<DestKey>) -> Result<SyncReport, ObserveError> {
        let current = self.watched()?;
        let mut report = SyncReport::default();
        for gone in current.difference(watched) {
            self.unwatch(gone)?;
            report.removed += 1;
        }
        for new in watched.difference(&current) {
            self.watch(*new)?;
            report.added += 1;
        }
        Ok(report)
    }
}

impl Drop for FlowCounter {
    fn drop(&mut self) {
        let attachments = std::mem::take(&mut self.attachments);
        let program = match classifier(&mut self.ebpf, self.program) {
            Ok(program) => program,
            Err(err) => {
                tracing::warn!(error = %err, "cannot detach the flow counter");
                return;
            }
        };
        for attachment in attachments {
            if let Err(err) = detach_from(program, attachment) {
                tracing::warn!(error = %err, "detaching the flow counter failed");
            }
        }
    }
}

fn detach_from(program: &mut SchedClassifier, attachment: Attachment) -> Result<(), ObserveError> {
    let Attachment { interface, direction, link, netns } = attachment;
    let detached = match &netns {
        None => program.detach(link),
        Some(netns) => netns.run(|| program.detach(link)).map_err(ObserveError::Netns)?,
    };
    detached.map_err(|source| ObserveError::Detach { interface, direction, source })
}

fn add_clsact(interface: &str) -> Result<(), ObserveError> {
    match tc::qdisc_add_clsact(interface) {
        Ok(()) => Ok(()),
        Err(tc::TcError::IoError(err)) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(tc::TcError::NetlinkError(err)) if err.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(source) => Err(ObserveError::Clsact { interface: interface.to_owned(), source }),
    }
}

/// Removes every netlink filter named [`COUNT_PROGRAM`] at this hook: left by a process that
/// exited without detaching (crash, SIGKILL).
fn remove_stale_filters(interface: &str, direction: Direction) -> Result<(), ObserveError> {
    match tc::qdisc_detach_program(interface, direction.attach_type(), COUNT_PROGRAM) {
        Ok(()) => {
            tracing::info!(
                interface,
                ?direction,
                "removed {COUNT_PROGRAM} filters left by an earlier process"
            );
            Ok(())
        }
        Err(tc::TcError::IoError(err)) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ObserveError::RemoveStale { interface: interface.to_owned(), direction, source }),
    }
}

fn classifier<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut SchedClassifier, ObserveError> {
    let program = ebpf.program_mut(name).ok_or(ObserveError::Missing { kind: "program", name })?;
    program.try_into().map_err(|_| ObserveError::Missing { kind: "TC classifier", name })
}

/// One destination's counters combined over CPUs.
fn sum_cpus(values: &PerCpuValues<DestEntry>) -> FlowCounters {
    values.iter().fold(FlowCounters::default(), |sum, cpu| sum.add(cpu.counters))
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
