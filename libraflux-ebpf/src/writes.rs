//! Who changes the IPVS table: two fentry programs the loader attaches to the kernel's entry
//! points for requests, counting the requests that change the table by writer: slot [`OTHERS`]
//! for every process but the daemon, slot [`OURS`] for the daemon itself, whose thread group id
//! the loader sets in [`WATCHER_TGID`].
//!
//! - `genl_rcv_msg`, where every generic netlink request reaches its family: a request to the
//!   IPVS family (its id, [`IPVS_FAMILY`], set by the loader) with a command that changes the
//!   table ([`is_table_write`]).
//! - `nf_setsockopt`, where IPv4 socket options reach netfilter's handlers: IPVS's older
//!   interface, options `IP_VS_BASE_CTL` to `IP_VS_SO_SET_MAX` (ipvsadm built against it,
//!   keepalived's older versions).
//!
//! Both functions are in the kernel proper, described by its BTF: an fentry program attaches
//! with bpf(2) alone, where a kprobe needs perf_event_open(2), which Debian's kernels keep to
//! CAP_SYS_ADMIN. The daemon reads the whole table on its interval only when slot [`OTHERS`]
//! moved; slot [`OURS`] is how it knows the programs see writes at all. A request is counted at
//! entry, whether the kernel then accepts it or not: a refused write also makes the daemon read.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_buf},
    macros::{fentry, map},
    maps::PerCpuArray,
    programs::FEntryContext,
};

const OTHERS: u32 = 0;
const OURS: u32 = 1;

/// The daemon's thread group id (its pid as the initial pid namespace sees it); set at load.
#[unsafe(no_mangle)]
static WATCHER_TGID: u32 = 0;

/// The generic netlink family id of IPVS (one for the whole node); set at load.
#[unsafe(no_mangle)]
static IPVS_FAMILY: u16 = 0;

/// Requests per writer, per CPU: [`OTHERS`], [`OURS`].
#[map(name = "IPVS_WRITES")]
static IPVS_WRITES: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// `struct nlmsghdr` (16 bytes: length, type, flags, sequence, port) and the first byte of the
/// `struct genlmsghdr` after it, the command.
const HEAD: usize = 17;
const PF_INET: u8 = 2;
/// `IP_VS_BASE_CTL` and `IP_VS_SO_SET_MAX` (linux/ip_vs.h): the options `do_ip_vs_set_ctl` takes.
const SOCKOPT_FIRST: i32 = 64 + 1024 + 64;
const SOCKOPT_LAST: i32 = SOCKOPT_FIRST + 15;

#[fentry(function = "genl_rcv_msg")]
pub fn libraflux_ipvs_genl_write(ctx: FEntryContext) -> u32 {
    // genl_rcv_msg(struct sk_buff *skb, struct nlmsghdr *nlh, struct netlink_ext_ack *extack)
    let nlh: *const u8 = ctx.arg(1);
    let mut head = [0u8; HEAD];
    // SAFETY: a helper that reads kernel memory and fails instead of faulting.
    if unsafe { bpf_probe_read_kernel_buf(nlh, &mut head) }.is_err() {
        return 0;
    }
    // SAFETY: a constant the loader writes before the program loads; read volatile so that the
    // compiler does not fold the 0 it is built with.
    let family = unsafe { core::ptr::read_volatile(&IPVS_FAMILY) };
    if u16::from_ne_bytes([head[4], head[5]]) == family && is_table_write(head[16]) {
        count();
    }
    0
}

#[fentry(function = "nf_setsockopt")]
pub fn libraflux_ipvs_sockopt_write(ctx: FEntryContext) -> u32 {
    // nf_setsockopt(struct sock *sk, u8 pf, int val, sockptr_t opt, unsigned int len)
    let pf: u8 = ctx.arg(1);
    let option: i32 = ctx.arg(2);
    if pf == PF_INET && (SOCKOPT_FIRST..=SOCKOPT_LAST).contains(&option) {
        count();
    }
    0
}

/// The IPVS generic netlink commands (linux/ip_vs.h) that `ip_vs_genl_set_cmd` carries out:
/// adding, editing and deleting services and destinations, setting the timeouts, zeroing the
/// counters, flushing. Reads, and starting or stopping the connection sync daemon, change no
/// table.
fn is_table_write(command: u8) -> bool {
    matches!(command, 1..=3 | 5..=7 | 12 | 16 | 17)
}

fn count() {
    // The upper half is the thread group id.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: as above.
    let watcher = unsafe { core::ptr::read_volatile(&WATCHER_TGID) };
    let slot = if tgid == watcher { OURS } else { OTHERS };
    if let Some(count) = IPVS_WRITES.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *count += 1 };
    }
}
