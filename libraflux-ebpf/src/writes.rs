//! Who changes the IPVS table: a kprobe the loader attaches to the kernel's two entry points for
//! changes to it, `ip_vs_genl_set_cmd` (generic netlink: every command that adds, edits, deletes,
//! flushes or zeroes, and the timeouts) and `do_ip_vs_set_ctl` (the older setsockopt interface),
//! counts the calls by writer: slot [`OTHERS`] for every process but the daemon, slot [`OURS`]
//! for the daemon itself, whose thread group id the loader sets in [`WATCHER_TGID`].
//!
//! The daemon reads the whole table on its interval only when slot [`OTHERS`] moved; slot
//! [`OURS`] is how it knows the probe sees writes at all. A call is counted at entry, whether the
//! kernel then accepts it or not: a refused write also makes the daemon read.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{kprobe, map},
    maps::PerCpuArray,
    programs::ProbeContext,
};

const OTHERS: u32 = 0;
const OURS: u32 = 1;

/// The daemon's thread group id (its pid as the initial pid namespace sees it); set at load.
#[unsafe(no_mangle)]
static WATCHER_TGID: u32 = 0;

/// Calls per writer, per CPU: [`OTHERS`], [`OURS`].
#[map(name = "IPVS_WRITES")]
static IPVS_WRITES: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

#[kprobe]
pub fn libraflux_ipvs_write(_ctx: ProbeContext) -> u32 {
    // The upper half is the thread group id.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a constant the loader writes before the program loads; read volatile so that the
    // compiler does not fold the 0 it is built with.
    let watcher = unsafe { core::ptr::read_volatile(&WATCHER_TGID) };
    let slot = if tgid == watcher { OURS } else { OTHERS };
    if let Some(count) = IPVS_WRITES.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *count += 1 };
    }
    0
}
