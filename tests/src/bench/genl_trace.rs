//! Counts generic-netlink requests on the kernel's side, so that any program's requests are
//! counted the same way, without touching it (strace would stop the traced daemon at every
//! system call, which under TCG changes what is measured).
//!
//! A kprobe on `genl_rcv_msg` (called once for each request message a `sendmsg` carries, never
//! for a dump's continuation) records the sending socket's port id, the message type (the
//! family), flags and the generic-netlink command, and a hist trigger counts them by those keys.
//! Two more kprobes count `netlink_sendmsg` (datagrams sent, every netlink protocol) and
//! `netlink_dump` (each buffer a dump fills, at the dump's start and at each read that continues
//! it). The kernel counts every process; the benchmark keeps the daemon the only netlink user
//! while it counts.

use std::{collections::BTreeMap, fs, path::Path};

const TRACING: &str = "/sys/kernel/tracing";
const GROUP: &str = "lfbench";

/// The probes, in `kprobe_events` syntax. The port id is `NETLINK_CB(skb).portid`: `skb->cb`
/// sits at offset 40 of `struct sk_buff` and the port id 12 bytes into it (after the sender's
/// credentials), on x86_64 kernels 5.x to 6.x. A hist trigger takes at most three keys, so the
/// message type and flags (adjacent u16s of `struct nlmsghdr`) are read as one u32.
const PROBES: &[&str] = &[
    "p:lfbench/genl genl_rcv_msg portid=+52($arg1):u32 typeflags=+4($arg2):u32 cmd=+16($arg2):u8",
    "p:lfbench/nlsend netlink_sendmsg",
    "p:lfbench/nldump netlink_dump",
];
const HIST: &str = "hist:keys=portid,typeflags,cmd:size=4096";

/// One kind of request, and how many were counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    pub portid: u32,
    pub family: u16,
    pub flags: u16,
    pub cmd: u8,
}

impl Request {
    /// NLM_F_DUMP (NLM_F_ROOT | NLM_F_MATCH) is set.
    pub fn is_dump(&self) -> bool {
        self.flags & 0x300 == 0x300
    }
}

/// What the kernel counted between [`GenlTrace::start`] and [`GenlTrace::stop`].
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub requests: BTreeMap<Request, u64>,
    /// `netlink_sendmsg` calls: datagrams sent to the kernel over any netlink protocol.
    pub datagrams: u64,
    /// `netlink_dump` calls: dump buffers filled.
    pub dump_buffers: u64,
    /// Events the hist trigger could not count (a full table); must be 0.
    pub dropped: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }
}

/// The probes, installed; removed when dropped.
#[derive(Debug)]
pub struct GenlTrace {
    root: &'static Path,
}

impl GenlTrace {
    /// Mounts tracefs where needed and installs the probes (disabled).
    pub fn install() -> Result<Self, String> {
        let root = Path::new(TRACING);
        if !root.join("kprobe_events").exists() {
            super::run("mount", &["-t", "tracefs", "nodev", TRACING])?;
        }
        let trace = Self { root };
        trace.remove_probes();
        for probe in PROBES {
            trace.append("kprobe_events", probe)?;
        }
        Ok(trace)
    }

    /// Starts counting from zero.
    pub fn start(&self) -> Result<Profile, String> {
        self.write(&format!("events/{GROUP}/genl/trigger"), HIST)?;
        let profile = self.profile()?;
        self.write(&format!("events/{GROUP}/enable"), "1")?;
        Ok(profile)
    }

    /// Stops counting and returns what was counted since `started`.
    pub fn stop(&self, started: &Profile) -> Result<Counts, String> {
        self.write(&format!("events/{GROUP}/enable"), "0")?;
        let ended = self.profile()?;
        let hist = self.read(&format!("events/{GROUP}/genl/hist"))?;
        self.append(&format!("events/{GROUP}/genl/trigger"), &format!("!{HIST}"))?;
        let mut counts = parse_hist(&hist)?;
        counts.datagrams = ended.hits("nlsend") - started.hits("nlsend");
        counts.dump_buffers = ended.hits("nldump") - started.hits("nldump");
        Ok(counts)
    }

    fn profile(&self) -> Result<Profile, String> {
        let text = self.read("kprobe_profile")?;
        let hits = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let name = fields.next()?.to_owned();
                Some((name, fields.next()?.parse().ok()?))
            })
            .collect();
        Ok(Profile { hits })
    }

    fn remove_probes(&self) {
        let _ = self.write(&format!("events/{GROUP}/enable"), "0");
        let _ = self.append(&format!("events/{GROUP}/genl/trigger"), &format!("!{HIST}"));
        for probe in PROBES {
            let name = probe.split_whitespace().next().unwrap_or_default().trim_start_matches("p:");
            let _ = self.append("kprobe_events", &format!("-:{name}"));
        }
    }

    fn read(&self, file: &str) -> Result<String, String> {
        let path = self.root.join(file);
        fs::read_to_string(&path).map_err(|err| format!("{}: {err}", path.display()))
    }

    fn write(&self, file: &str, text: &str) -> Result<(), String> {
        let path = self.root.join(file);
        fs::write(&path, text).map_err(|err| format!("write {text:?} to {}: {err}", path.display()))
    }

    fn append(&self, file: &str, text: &str) -> Result<(), String> {
        use std::io::Write as _;
        let path = self.root.join(file);
        let mut handle = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|err| format!("{}: {err}", path.display()))?;
        // One write: tracefs parses each write as a command, so a newline written apart fails.
        handle
            .write_all(format!("{text}\n").as_bytes())
            .map_err(|err| format!("append {text:?} to {}: {err}", path.display()))
    }
}

impl Drop for GenlTrace {
    fn drop(&mut self) {
        self.remove_probes();
    }
}

/// Hits per probe, from `kprobe_profile`.
#[derive(Debug)]
pub struct Profile {
    hits: BTreeMap<String, u64>,
}

impl Profile {
    fn hits(&self, probe: &str) -> u64 {
        self.hits.get(probe).copied().unwrap_or(0)
    }
}

/// Reads a hist file: `{ portid: 1, typeflags: 50659360, cmd: 8 } hitcount: 5` lines (type in
/// the low 16 bits, flags in the high ones: little-endian), and `Dropped: N` in the totals.
fn parse_hist(text: &str) -> Result<Counts, String> {
    let mut counts = Counts::default();
    for line in text.lines().map(str::trim) {
        if let Some(dropped) = line.strip_prefix("Dropped:") {
            counts.dropped = dropped.trim().parse().map_err(|_| format!("hist: bad line {line:?}"))?;
        }
        let Some((keys, hits)) = line.strip_prefix('{').and_then(|rest| rest.split_once('}')) else {
            continue;
        };
        let field = |name: &str| -> Result<u64, String> {
            keys.split(',')
                .find_map(|pair| {
                    let (key, value) = pair.split_once(':')?;
                    (key.trim() == name).then(|| value.trim().parse().ok()).flatten()
                })
                .ok_or_else(|| format!("hist: no {name} in {line:?}"))
        };
        let hits = hits.trim().strip_prefix("hitcount:").and_then(|n| n.trim().parse::<u64>().ok());
        let hits = hits.ok_or_else(|| format!("hist: no hitcount in {line:?}"))?;
        let type_flags = field("typeflags")?;
        let request = Request {
            portid: u32::try_from(field("portid")?).map_err(|e| e.to_string())?,
            family: (type_flags & 0xffff) as u16,
            flags: ((type_flags >> 16) & 0xffff) as u16,
            cmd: u8::try_from(field("cmd")?).map_err(|e| e.to_string())?,
        };
        *counts.requests.entry(request).or_default() += hits;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernels_hist_format() {
        let text = "# event histogram\n#\n\n\
                    { portid: 4026, typeflags:   50659360, cmd:          8 } hitcount:       1000\n\
                    { portid: 4026, typeflags:     327712, cmd:          6 } hitcount:          3\n\n\
                    Totals:\n    Hits: 1003\n    Entries: 2\n    Dropped: 0\n";
        let counts = parse_hist(text).unwrap();
        assert_eq!(counts.total(), 1003);
        let dump = Request { portid: 4026, family: 32, flags: 773, cmd: 8 };
        assert_eq!(counts.requests[&dump], 1000);
        assert!(dump.is_dump());
        assert_eq!(counts.dropped, 0);
    }
}
