//! The table's running totals, `/proc/net/ip_vs_stats`: one read of a small file that tells
//! whether any service's counters moved, where the statistics of every service take a dump of
//! the whole table.
//!
//! The kernel counts each packet and connection of a destination in the destination, in its
//! service, and in the namespace's totals (`ip_vs_in_stats`, `ip_vs_out_stats`,
//! `ip_vs_conn_stats`); its estimator sums the per-CPU counters of each of them every 2 s, each on
//! its own tick. Totals that did not move mean no service's counters moved, once every estimator
//! has seen the packets the totals last counted.

use std::path::Path;

/// Where the kernel shows the totals of the reading process's network namespace.
pub const PATH: &str = "/proc/net/ip_vs_stats";

/// Connections, packets and bytes since IPVS started in the namespace (or since they were last
/// zeroed), as the estimator last summed them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub connections: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The totals of `path`; `None` when it cannot be read or does not read as the kernel writes it.
/// It is a file of procfs, answered from memory: read in place, not on a blocking thread.
pub fn read(path: &Path) -> Option<Totals> {
    parse(&std::fs::read_to_string(path).ok()?)
}

/// The first line of five hexadecimal numbers: the counts (the rates follow on a later line).
///
/// ```text
///    Total Incoming Outgoing         Incoming         Outgoing
///    Conns  Packets  Packets            Bytes            Bytes
///        3       2A        0             1F40                0
/// ```
pub fn parse(text: &str) -> Option<Totals> {
    text.lines().find_map(|line| {
        let fields: Vec<u64> = line
            .split_whitespace()
            .map(|field| u64::from_str_radix(field, 16).ok())
            .collect::<Option<_>>()?;
        let [connections, packets_in, packets_out, bytes_in, bytes_out] = fields[..] else { return None };
        Some(Totals { connections, packets_in, packets_out, bytes_in, bytes_out })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As 6.1 and 6.12 write it (`ip_vs_stats_show`).
    const SHOWN: &str = "   Total Incoming Outgoing         Incoming         Outgoing
   Conns  Packets  Packets            Bytes            Bytes
       3       2A        0             1F40                0

 Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s
       1        5        0              3E8                0
";

    #[test]
    fn the_counts_are_the_first_line_of_five_numbers() {
        let want = Totals { connections: 3, packets_in: 42, packets_out: 0, bytes_in: 8000, bytes_out: 0 };
        assert_eq!(parse(SHOWN), Some(want));
    }

    #[test]
    fn anything_else_reads_as_unknown() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("   Total Incoming Outgoing         Incoming         Outgoing\n"), None);
        assert_eq!(parse("       3       2A        0             1F40\n"), None, "four numbers");
        assert_eq!(parse("       3       2A        0             1F40  0 0\n"), None, "six numbers");
        assert_eq!(parse("       3       2G        0             1F40  0\n"), None, "not hexadecimal");
        assert_eq!(read(Path::new("/nonexistent/ip_vs_stats")), None);
    }
}
