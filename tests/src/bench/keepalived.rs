//! keepalived's `TCP_CHECK` on the health benchmark's backends, for a comparison in the same run:
//! its configuration, and keepalived (the checker process only, `--check`) as a child.
//!
//! keepalived's checker needs IPVS: without it (the host here) the checker process exits at start
//! ("IPVS: Can't initialize ipvs") and checks nothing, so this runs in the VM.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::Daemon;

/// One virtual server: its port on the VIP and its real servers.
#[derive(Clone, Debug)]
pub struct VirtualServer {
    pub port: u16,
    pub real_servers: Vec<(Ipv4Addr, u16)>,
}

/// Checks as the LibraFlux benchmark config has them: every `delay_loop` (1 s), timeout
/// `connect_timeout`, and a server that fails is retried `retry` times, `delay_before_retry` apart,
/// before it is removed: `fall` failed checks in all, one interval apart.
pub fn config(vip: Ipv4Addr, servers: &[VirtualServer], timeout: Duration, fall: u32) -> String {
    let mut text = String::from("global_defs {\n  router_id libraflux_bench\n}\n");
    for server in servers {
        let _ = write!(
            text,
            "virtual_server {vip} {} {{\n  delay_loop 1\n  lb_algo rr\n  lb_kind NAT\n  protocol TCP\n",
            server.port
        );
        for (address, port) in &server.real_servers {
            let _ = write!(
                text,
                "  real_server {address} {port} {{\n    weight 1\n    TCP_CHECK {{\n      connect_timeout {}\n      \
                 retry {}\n      delay_before_retry 1\n    }}\n  }}\n",
                timeout.as_secs_f64(),
                fall.saturating_sub(1)
            );
        }
        text.push_str("}\n");
    }
    text
}

/// keepalived running the checker only; stopped (SIGTERM) when dropped.
#[derive(Debug)]
pub struct Keepalived {
    _parent: Daemon,
    checker: String,
}

impl Keepalived {
    /// Starts `keepalived --check` on `config_path`, logging to `log`; waits for its checker
    /// process to write its pid.
    pub fn start(config_path: &str, work_dir: &str, log: &str) -> Result<Self, String> {
        let checker_pid = format!("{work_dir}/keepalived-checkers.pid");
        let _ = std::fs::remove_file(&checker_pid);
        let child = Command::new("keepalived")
            .args(["--dont-fork", "--log-console", "--check", "-f", config_path])
            .args(["-p", &format!("{work_dir}/keepalived.pid"), "-c", &checker_pid])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).map_err(|err| format!("{log}: {err}"))?)
            .spawn()
            .map_err(|err| format!("start keepalived: {err} (Debian's keepalived package)"))?;
        let parent = Daemon(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(pid) = std::fs::read_to_string(&checker_pid).ok().map(|text| text.trim().to_owned())
                && !pid.is_empty()
                && std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                return Ok(Self { _parent: parent, checker: pid });
            }
            if Instant::now() > deadline {
                let said = std::fs::read_to_string(log).unwrap_or_default();
                return Err(format!("keepalived's checker process did not start within 60 s:\n{said}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The checker process's pid.
    pub fn checker_pid(&self) -> &str {
        &self.checker
    }
}

/// The real servers of the IPVS table with a weight above 0, as `ipvsadm -Ln` lists them
/// (`address:port`).
pub fn serving_real_servers() -> Result<Vec<String>, String> {
    let output = Command::new("ipvsadm").args(["-Ln"]).output().map_err(|err| format!("ipvsadm: {err}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["->", address, _forward, weight, ..] if weight.parse::<u32>().is_ok_and(|w| w > 0) => {
                    Some((*address).to_owned())
                }
                _ => None,
            }
        })
        .collect())
}
