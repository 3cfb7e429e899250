//! Telling the daemon's generic-netlink requests apart in a [`Counts`]: which sockets are its
//! own, and what each request was (IPVS command, dump or not, nlctrl).

use std::collections::{BTreeMap, BTreeSet};

use super::genl_trace::Counts;

/// Generic netlink's own family (nlctrl): family lookups.
pub const GENL_ID_CTRL: u16 = 16;

/// The port ids of a process's netlink sockets: /proc/net/netlink (this namespace's, which must
/// be the process's) matched by inode to the sockets among its open files.
pub fn netlink_ports(pid: &str) -> Result<BTreeSet<u32>, String> {
    let dir = format!("/proc/{pid}/fd");
    let inodes: BTreeSet<String> = std::fs::read_dir(&dir)
        .map_err(|err| format!("{dir}: {err}"))?
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(target.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table =
        std::fs::read_to_string("/proc/net/netlink").map_err(|err| format!("/proc/net/netlink: {err}"))?;
    Ok(table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 10 && inodes.contains(fields[9])).then(|| fields[2].parse().ok()).flatten()
        })
        .collect())
}

/// IPVS's command names (include/uapi/linux/ip_vs.h).
pub fn ipvs_command(cmd: u8) -> &'static str {
    const NAMES: [&str; 18] = [
        "UNSPEC",
        "NEW_SERVICE",
        "SET_SERVICE",
        "DEL_SERVICE",
        "GET_SERVICE",
        "NEW_DEST",
        "SET_DEST",
        "DEL_DEST",
        "GET_DEST",
        "NEW_DAEMON",
        "DEL_DAEMON",
        "GET_DAEMON",
        "SET_CONFIG",
        "GET_CONFIG",
        "SET_INFO",
        "GET_INFO",
        "ZERO",
        "FLUSH",
    ];
    NAMES.get(usize::from(cmd)).copied().unwrap_or("?")
}

/// Requests per kind (`GET_DEST dump`, `SET_DEST`, `nlctrl`, ...) for the sockets `keep` accepts.
pub fn by_kind(counts: &Counts, ipvs_family: u16, keep: impl Fn(u32) -> bool) -> BTreeMap<String, u64> {
    let mut kinds = BTreeMap::new();
    for (request, hits) in counts.requests.iter().filter(|(r, _)| keep(r.portid)) {
        let kind = match request.family {
            family if family == ipvs_family => {
                let dump = if request.is_dump() { " dump" } else { "" };
                format!("{}{dump}", ipvs_command(request.cmd))
            }
            GENL_ID_CTRL => "nlctrl".to_owned(),
            other => format!("family {other}"),
        };
        *kinds.entry(kind).or_default() += hits;
    }
    kinds
}
