//! Helpers shared by the integration tests: prerequisites that fail loudly, network namespaces
//! that clean up after themselves, and running code inside a namespace.
//!
//! Test traffic only ever goes to addresses inside namespaces these helpers created.

pub mod bench;
pub mod creds;
pub mod etcd;
pub mod frames;
pub mod load;
pub mod pki;
pub mod tun;
pub mod unit;

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// Fails the test, naming what is missing, unless the process runs as root.
pub fn require_root(why: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test needs root ({why}); run it as root, e.g. through `cargo xtask test`");
}

/// Runs a command to completion and panics with its output if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program} (is it installed?): {err}"));
    assert!(
        output.status.success(),
        "{program} {} failed with {}:\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A network namespace made with `ip netns add`, deleted when dropped.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a fresh namespace with a unique name and brings its loopback up.
    pub fn new(role: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        require_root("creating network namespaces");
        let name = format!("lf-{}-{}-{role}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        run("ip", &["netns", "add", &name]);
        let netns = Self { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS...` and returns its output.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `PROGRAM ARGS...` inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `f` on a new thread that has entered the namespace, and returns its result.
    /// Sockets and interface names inside `f` belong to the namespace.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Like [`NetNs::enter`] but returns the thread's handle so work can overlap.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        spawn_in(&self.name, f)
    }
}

/// Runs `f` on a new thread that has entered the namespace `name` (made by `ip netns add`).
pub fn spawn_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|err| panic!("open {path}: {err}"));
        // SAFETY: a valid namespace fd; setns only changes this thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns into {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Best effort: a failed delete must not hide the test's own failure.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A flow counter loaded in `netns`, attached to `interface` in `direction` and watching
/// `watched`.
pub fn counter_at(
    netns: &NetNs,
    interface: &'static str,
    direction: libraflux::observe::Direction,
    watched: Vec<libraflux::observe::DestKey>,
) -> libraflux::observe::FlowCounter {
    netns.enter(move || {
        let limits = libraflux::observe::Limits::destinations(16);
        let mut counter = libraflux::observe::FlowCounter::load(limits).expect("load the eBPF counter");
        counter.attach(interface, direction).expect("attach");
        for key in watched {
            counter.watch(key).expect("watch");
        }
        counter
    })
}

/// Two namespaces joined by a veth pair with fixed MACs, IPv4 and IPv6 addresses and permanent
/// neighbour entries, so no ARP or neighbour discovery packet ever races the test's traffic.
#[derive(Debug)]
pub struct VethPair {
    pub left: NetNs,
    pub right: NetNs,
}

impl VethPair {
    pub const LEFT_IF: &str = "lf-left";
    pub const RIGHT_IF: &str = "lf-right";
    pub const LEFT_V4: &str = "10.200.0.1";
    pub const RIGHT_V4: &str = "10.200.0.2";
    pub const LEFT_V6: &str = "fd00:200::1";
    pub const RIGHT_V6: &str = "fd00:200::2";
    const LEFT_MAC: &str = "02:00:00:00:00:01";
    const RIGHT_MAC: &str = "02:00:00:00:00:02";

    pub fn new() -> Self {
        let left = NetNs::new("left");
        let right = NetNs::new("right");
        left.ip(&[
            "link",
            "add",
            Self::LEFT_IF,
            "address",
            Self::LEFT_MAC,
            "type",
            "veth",
            "peer",
            "name",
            Self::RIGHT_IF,
            "address",
            Self::RIGHT_MAC,
            "netns",
            right.name(),
        ]);
        for (ns, ifname, v4, v6, peer_v4, peer_v6, peer_mac) in [
            (
                &left,
                Self::LEFT_IF,
                Self::LEFT_V4,
                Self::LEFT_V6,
                Self::RIGHT_V4,
                Self::RIGHT_V6,
                Self::RIGHT_MAC,
            ),
            (
                &right,
                Self::RIGHT_IF,
                Self::RIGHT_V4,
                Self::RIGHT_V6,
                Self::LEFT_V4,
                Self::LEFT_V6,
                Self::LEFT_MAC,
            ),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname]);
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", ifname, "nodad"]);
            ns.ip(&["link", "set", ifname, "up"]);
            ns.ip(&["neigh", "replace", peer_v4, "lladdr", peer_mac, "dev", ifname, "nud", "permanent"]);
            ns.ip(&["neigh", "replace", peer_v6, "lladdr", peer_mac, "dev", ifname, "nud", "permanent"]);
        }
        Self { left, right }
    }
}

impl Default for VethPair {
    fn default() -> Self {
        Self::new()
    }
}

/// Resolves a generic-netlink family id with CTRL_CMD_GETFAMILY, independently of LibraFlux's
/// own client, in the calling thread's network namespace. Panics naming the family if it is
/// unknown (for IPVS: the ip_vs module is not loaded).
pub fn genl_family_id(name: &str) -> u16 {
    use netlink_packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
    use netlink_packet_generic::{
        GenlMessage,
        ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs},
    };

    let mut request = NetlinkMessage::from(GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_owned())],
    }));
    request.header.flags = NLM_F_REQUEST;
    request.finalize();
    let mut buf = vec![0u8; request.buffer_len()];
    request.serialize(&mut buf);

    let mut socket =
        netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_GENERIC).expect("netlink socket");
    socket.bind_auto().expect("bind netlink socket");
    socket.connect(&netlink_sys::SocketAddr::new(0, 0)).expect("connect netlink socket");
    socket.send(&buf, 0).expect("send CTRL_CMD_GETFAMILY");
    let (reply, _) = socket.recv_from_full().expect("receive CTRL_CMD_GETFAMILY reply");
    let message = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(&reply).expect("parse reply");
    match message.payload {
        NetlinkPayload::InnerMessage(genl) => genl
            .payload
            .nlas
            .iter()
            .find_map(|attr| match attr {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .expect("CTRL_CMD_GETFAMILY reply without a family id"),
        NetlinkPayload::Error(err) => panic!("generic netlink family {name:?} does not resolve: {err:?}"),
        other => panic!("unexpected reply to CTRL_CMD_GETFAMILY: {other:?}"),
    }
}

/// What a command run to completion returned.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Ran {
    fn from(output: std::process::Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Ran {
    /// Fails the test, showing both outputs, unless the command exited with `code`.
    pub fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
    }
}

impl NetNs {
    /// Runs `PROGRAM ARGS...` inside the namespace and returns its exit code and output,
    /// whatever the code.
    pub fn run(&self, program: &str, args: &[&str]) -> Ran {
        let output = Command::new("ip")
            .args(["netns", "exec", self.name.as_str(), program])
            .args(args)
            .output()
            .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
        Ran::from(output)
    }
}

/// The `libraflux` binary under test: `$LIBRAFLUX_BIN` (set by `cargo xtask test`), else
/// `target/debug/libraflux` of this workspace.
pub fn libraflux_bin() -> String {
    std::env::var("LIBRAFLUX_BIN")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug/libraflux").to_owned())
}

/// `ipvsadm-save -n` prints services in the kernel's hash-table order, and that hash mixes in
/// the address of the namespace's IPVS state, so the order differs between namespaces and runs.
/// Every line names its service, so comparing sorted lines compares the tables faithfully.
pub fn sorted_lines(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// One eBPF program at a tc hook, as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hooked {
    pub id: u32,
    /// As the kernel keeps it (cut to 15 bytes).
    pub name: String,
}

/// The eBPF programs attached at `interface`'s `direction` (`ingress` or `egress`) hook in
/// `netns`, as the kernel lists them: netlink clsact bpf filters (`tc filter show`; how LibraFlux
/// attaches before Linux 6.6) and tcx programs (a BPF_PROG_QUERY of the hook; 6.6 and later).
/// Both kinds are listed on every kernel, so a stale program of either kind shows.
pub fn attached_programs(netns: &NetNs, interface: &str, direction: &str) -> Vec<Hooked> {
    use aya::programs::{SchedClassifier, tc::TcAttachType};
    let mut programs: Vec<Hooked> = netns
        .exec("tc", &["filter", "show", "dev", interface, direction])
        .lines()
        .filter(|line| line.contains(" bpf ") && line.contains(" handle "))
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let id =
                words.iter().position(|word| *word == "id").and_then(|at| words.get(at + 1)?.parse().ok());
            let name = words.iter().find_map(|word| word.split_once(":[")).map(|(name, _)| name.to_owned());
            Hooked { id: id.expect("tc shows the program id"), name: name.unwrap_or_default() }
        })
        .collect();
    let attach_type = if direction == "egress" { TcAttachType::Egress } else { TcAttachType::Ingress };
    let interface = interface.to_owned();
    programs.extend(netns.enter(move || {
        // Kernels before 6.6 have no tcx hook to query: nothing is attached there.
        let tcx = SchedClassifier::query_tcx(&interface, attach_type).map(|(_, tcx)| tcx).unwrap_or_default();
        tcx.iter()
            .map(|info| Hooked { id: info.id(), name: info.name_as_str().unwrap_or_default().to_owned() })
            .collect::<Vec<_>>()
    }));
    programs
}
