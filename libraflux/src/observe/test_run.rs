//! Running the counter program on exact frames inside the kernel (`BPF_PROG_TEST_RUN`), for
//! tests and benchmarks: the maps are updated as by real packets.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    time::Duration,
};

use super::{FlowCounter, ObserveError, ebpf::classifier};

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

impl FlowCounter {
    /// Runs the program `repeat` times over `frame` (an Ethernet frame, so the Ethernet instance)
    /// inside the kernel (`BPF_PROG_TEST_RUN`) and returns the kernel's mean time per run: the
    /// cost of the program alone, without the network stack around it. The frame runs as if
    /// received on `lo` (the program skips packets this node sent itself). For benchmarks and
    /// tests; the maps are updated as they would be by `repeat` real packets.
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
        let name = self.programs.ethernet;
        let error = |source| ObserveError::TestRun { name, source };
        let invalid = || error(std::io::ErrorKind::InvalidInput.into());
        let program = classifier(&mut self.ebpf, name)?;
        let fd =
            program.fd().map_err(|source| ObserveError::ProgramInfo { name, source })?.as_fd().as_raw_fd();
        let context = TestRunContext { ingress_ifindex, ..TestRunContext::default() };
        let mut attr = TestRunAttr {
            prog_fd: u32::try_from(fd).map_err(|_| invalid())?,
            data_size_in: u32::try_from(frame.len()).map_err(|_| invalid())?,
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
            return Err(error(std::io::Error::last_os_error()));
        }
        Ok(attr)
    }
}
