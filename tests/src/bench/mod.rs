//! What the benchmark drivers (`src/bin/*-bench.rs`) share: a namespace of their own holding the
//! backends' address, many TCP listeners in a child process (some of which may flap), the
//! daemon as a child, its `/metrics`, and process CPU and memory from `/proc`.
//!
//! Errors are strings: a driver prints them and exits 1.

pub mod genl_trace;
pub mod keepalived;
pub mod listener;
pub mod requests;

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    process::{Child, Command},
    time::Duration,
};

/// Runs a command to completion; fails naming it unless it succeeds.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let status = Command::new(program).args(args).status().map_err(|err| format!("{program}: {err}"))?;
    if status.success() { Ok(()) } else { Err(format!("{program} {} failed: {status}", args.join(" "))) }
}

/// The lines of `text`, sorted: `ipvsadm-save -n` prints services in hash order.
pub fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort_unstable();
    lines
}

/// `Err("verification failed: ...")` unless `condition` holds.
pub fn check(condition: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if condition { Ok(()) } else { Err(format!("verification failed: {}", what())) }
}

/// Raises the soft open-file limit to the hard one, and the hard one to 65,536 where allowed.
pub fn raise_nofile() -> Result<(), String> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    let wanted = libc::rlimit { rlim_cur: 65_536, rlim_max: 65_536 };
    // SAFETY: setrlimit reads a valid rlimit struct.
    if limit.rlim_max < 65_536 && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
        return Ok(());
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(format!("setrlimit(NOFILE): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// This process (and its later children and threads) in a fresh network namespace, `lo` up and
/// holding `address`: the backends listen there, and the namespace's IPVS table is empty.
pub fn fresh_namespace(address: Ipv4Addr) -> Result<(), String> {
    // SAFETY: unshare has no memory-safety preconditions; called before any other thread exists.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!("unshare(CLONE_NEWNET): {} (run as root)", std::io::Error::last_os_error()));
    }
    run("ip", &["link", "set", "lo", "up"])?;
    run("ip", &["addr", "add", &format!("{address}/32"), "dev", "lo"])
}

/// utime + stime of a process in seconds, from /proc/PID/stat.
pub fn cpu_seconds(pid: &str) -> Result<f64, String> {
    cpu_split(pid).map(|cpu| cpu.total())
}

/// CPU time spent in user space and in the kernel, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cpu {
    pub user: f64,
    pub system: f64,
}

impl Cpu {
    pub fn total(self) -> f64 {
        self.user + self.system
    }
}

impl std::ops::Sub for Cpu {
    type Output = Self;

    fn sub(self, earlier: Self) -> Self {
        Self { user: self.user - earlier.user, system: self.system - earlier.system }
    }
}

/// utime and stime of a process, from /proc/PID/stat.
pub fn cpu_split(pid: &str) -> Result<Cpu, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|err| format!("{path}: {err}"))?;
    let after = stat.rsplit_once(')').ok_or("bad stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based) -> indexes 11 and 12.
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok()).ok_or("bad stat");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(Cpu { user: ticks(11)? as f64 / hz, system: ticks(12)? as f64 / hz })
}

/// This process's own CPU time (all its threads, not its children), from getrusage.
pub fn own_cpu() -> Cpu {
    // SAFETY: getrusage fills the struct we pass.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    Cpu { user: seconds(usage.ru_utime), system: seconds(usage.ru_stime) }
}

/// TCP connections this network namespace has opened actively (`TcpActiveOpens` of
/// /proc/net/snmp): every connect, whoever in the namespace made it.
pub fn tcp_active_opens() -> Result<u64, String> {
    let snmp =
        std::fs::read_to_string("/proc/self/net/snmp").map_err(|err| format!("/proc/net/snmp: {err}"))?;
    let mut tcp = snmp.lines().filter(|line| line.starts_with("Tcp:"));
    let (names, values) = (tcp.next().ok_or("no Tcp: header")?, tcp.next().ok_or("no Tcp: values")?);
    let index = names.split_whitespace().position(|name| name == "ActiveOpens").ok_or("no ActiveOpens")?;
    values
        .split_whitespace()
        .nth(index)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "bad ActiveOpens".to_owned())
}

/// VmRSS and VmHWM in KiB.
pub fn memory_kib(pid: &str) -> Result<(u64, u64), String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|err| format!("{path}: {err}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| format!("{path}: no {name}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The text of `http://{address}/metrics`, over HTTP/1.0 (headers included).
pub fn scrape(address: &str) -> Result<String, String> {
    let target = address.parse::<SocketAddr>().map_err(|err| format!("{address}: {err}"))?;
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(10))
        .map_err(|err| format!("connect {address}: {err}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n").map_err(|e| e.to_string())?;
    let mut body = String::new();
    stream.read_to_string(&mut body).map_err(|err| format!("read /metrics: {err}"))?;
    Ok(body)
}

/// The start of a benchmark config: the change limits raised to a table of `services` x
/// `backends`, metrics served on `metrics`; the `services:` list follows.
pub fn config_head(services: u32, backends: u32, metrics: &str) -> String {
    format!(
        "limits:\n  max_services_created: {services}\n  max_backends_per_service: {backends}\n  \
         max_services_deleted: {services}\nmetrics:\n  listen: {metrics}\nservices:\n"
    )
}

/// The value of label `name` in a Prometheus text line.
pub fn label(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_owned())
}

/// The sum of every sample of `metric` (a name and its labels, or the name alone) in a scrape.
pub fn metric_sum(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(metric).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit_once(' ').and_then(|(_, value)| value.parse::<f64>().ok()))
        .sum()
}

/// A daemon child: SIGTERM when dropped (so it closes its sockets), SIGKILL if it lingers.
#[derive(Debug)]
pub struct Daemon(pub Child);

impl Daemon {
    pub fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = libc::pid_t::try_from(self.0.id()).unwrap_or(0);
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
