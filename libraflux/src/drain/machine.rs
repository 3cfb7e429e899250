//! The drain state machine, pure: given what a drain asked for, how long it has run and the
//! protocol's signal, is it done, and by which rule? TCP and UDP are separate, explicit branches:
//! IPVS's ActiveConns is a real signal for TCP and reads ~0 for UDP while traffic flows.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The rules of one drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// At least this long at weight 0 (UDP: before the quiet window counts).
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// At most this long, whatever the signal says.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// UDP: how long no packet may have reached the backend.
    #[serde(with = "humantime_serde")]
    pub quiet: Duration,
    /// TCP: also wait for inactive (TIME_WAIT, FIN_WAIT) connections to go.
    pub include_inactive: bool,
}

/// What the kernel says about the backend now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// IPVS's connection counts of the destination.
    Tcp { active: u32, inactive: u32 },
    /// How long no packet has reached the backend, and who saw it.
    Udp { quiet_for: Duration, source: TrafficSource },
}

/// Where a UDP drain's quiet comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrafficSource {
    /// The eBPF counter saw packets to the backend: the time since its last one.
    Ebpf,
    /// No attached counter sees the backend's packets (never seen: its interface is not in
    /// `node.interface`, or it is a DR or tunnel backend, or no observer runs): the time since
    /// IPVS's InPkts counter of the destination last grew. IPVS updates it every 2 s.
    IpvsInPkts,
}

/// Where a drain stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Since the drain was asked for; the timeout counts from here.
    pub elapsed: Duration,
    /// Since IPVS first showed the backend at weight 0 (or without it); `None` until then.
    /// Nothing but the timeout can end a drain before: new connections may still arrive.
    pub at_zero: Option<Duration>,
}

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// TCP: no connection left (active, and inactive when asked) at weight 0.
    ConnectionsClosed,
    /// UDP: the grace period at weight 0 passed and the eBPF counter saw no packet to the
    /// backend for the quiet window.
    GraceAndQuiet,
    /// UDP: the same, with IPVS's InPkts as the signal (no attached counter sees the backend).
    GraceAndQuietIpvs,
    /// Written by versions that had no IPVS fallback; no longer produced.
    GraceOnlyNoTrafficSignal,
    /// The timeout passed first; traffic may have been cut.
    Timeout,
}

impl Ending {
    /// The sentence operators read.
    pub fn describe(self) -> &'static str {
        match self {
            Self::ConnectionsClosed => "drained: no connections left",
            Self::GraceAndQuiet => {
                "drained: grace period over and no traffic for the quiet window (eBPF counter)"
            }
            Self::GraceAndQuietIpvs => {
                "drained: grace period over and no traffic for the quiet window (IPVS InPkts; no eBPF \
                 counter sees this backend)"
            }
            Self::GraceOnlyNoTrafficSignal => {
                "grace period over; no eBPF traffic signal, so UDP quiet was not verified"
            }
            Self::Timeout => "TIMEOUT: the backend still had traffic when the drain timed out",
        }
    }
}

/// How long IPVS's counters may lag the traffic: the kernel folds its per-CPU counters into what
/// netlink reports every 2 s (the rate estimator's timer). A quiet window read from InPkts must
/// last this much longer to mean as much as one read from the eBPF counter.
pub const IPVS_COUNTER_LAG: Duration = Duration::from_secs(2);

/// `None` while the drain goes on.
pub fn evaluate(rules: &Rules, progress: Progress, signal: Signal) -> Option<Ending> {
    let drained = progress.at_zero.and_then(|at_zero| match signal {
        Signal::Tcp { active, inactive } => {
            let left = if rules.include_inactive { active + inactive } else { active };
            (left == 0).then_some(Ending::ConnectionsClosed)
        }
        Signal::Udp { .. } if at_zero < rules.grace => None,
        Signal::Udp { quiet_for, source: TrafficSource::Ebpf } => {
            (quiet_for >= rules.quiet).then_some(Ending::GraceAndQuiet)
        }
        Signal::Udp { quiet_for, source: TrafficSource::IpvsInPkts } => {
            (quiet_for >= rules.quiet + IPVS_COUNTER_LAG).then_some(Ending::GraceAndQuietIpvs)
        }
    });
    drained.or_else(|| (progress.elapsed >= rules.timeout).then_some(Ending::Timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        grace: Duration::from_secs(10),
        timeout: Duration::from_secs(60),
        quiet: Duration::from_secs(5),
        include_inactive: false,
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Asked for `elapsed` ago, at weight 0 in IPVS for all of it.
    fn zero(elapsed: u64) -> Progress {
        Progress { elapsed: secs(elapsed), at_zero: Some(secs(elapsed)) }
    }

    fn udp(quiet_for: u64) -> Signal {
        Signal::Udp { quiet_for: secs(quiet_for), source: TrafficSource::Ebpf }
    }

    #[test]
    fn tcp_ends_when_active_connections_reach_zero() {
        assert_eq!(evaluate(&RULES, zero(1), Signal::Tcp { active: 2, inactive: 0 }), None);
        assert_eq!(
            evaluate(&RULES, zero(2), Signal::Tcp { active: 0, inactive: 7 }),
            Some(Ending::ConnectionsClosed)
        );
    }

    /// The defect: a drain whose reconcile never reached IPVS ended as soon as the backend
    /// happened to have no connection, although new ones could still arrive.
    #[test]
    fn nothing_but_the_timeout_ends_a_drain_before_ipvs_shows_weight_0() {
        let not_yet = Progress { elapsed: secs(30), at_zero: None };
        assert_eq!(evaluate(&RULES, not_yet, Signal::Tcp { active: 0, inactive: 0 }), None);
        assert_eq!(evaluate(&RULES, not_yet, udp(30)), None);
        let late = Progress { elapsed: secs(60), at_zero: None };
        assert_eq!(evaluate(&RULES, late, Signal::Tcp { active: 0, inactive: 0 }), Some(Ending::Timeout));
    }

    #[test]
    fn tcp_can_wait_for_inactive_connections_too() {
        let rules = Rules { include_inactive: true, ..RULES };
        assert_eq!(evaluate(&rules, zero(2), Signal::Tcp { active: 0, inactive: 7 }), None);
        assert_eq!(
            evaluate(&rules, zero(3), Signal::Tcp { active: 0, inactive: 0 }),
            Some(Ending::ConnectionsClosed)
        );
    }

    #[test]
    fn tcp_times_out_with_connections_left() {
        assert_eq!(evaluate(&RULES, zero(60), Signal::Tcp { active: 1, inactive: 0 }), Some(Ending::Timeout));
    }

    #[test]
    fn the_udp_grace_period_counts_from_weight_0_not_from_the_request() {
        let late_zero = Progress { elapsed: secs(30), at_zero: Some(secs(9)) };
        assert_eq!(evaluate(&RULES, late_zero, udp(30)), None);
        assert_eq!(evaluate(&RULES, zero(10), udp(30)), Some(Ending::GraceAndQuiet));
    }

    #[test]
    fn udp_waits_for_the_quiet_window_after_the_grace_period() {
        assert_eq!(evaluate(&RULES, zero(20), udp(1)), None);
        assert_eq!(evaluate(&RULES, zero(25), udp(5)), Some(Ending::GraceAndQuiet));
    }

    #[test]
    fn udp_says_which_signal_it_used_and_allows_for_the_ipvs_counters_lag() {
        let ipvs = |quiet: u64| Signal::Udp { quiet_for: secs(quiet), source: TrafficSource::IpvsInPkts };
        assert_eq!(evaluate(&RULES, zero(10), ipvs(6)), None, "5 s quiet plus 2 s of lag");
        assert_eq!(evaluate(&RULES, zero(10), ipvs(7)), Some(Ending::GraceAndQuietIpvs));
        assert!(Ending::GraceAndQuietIpvs.describe().contains("IPVS InPkts"));
    }

    #[test]
    fn udp_traffic_that_never_stops_times_out() {
        assert_eq!(evaluate(&RULES, zero(60), udp(0)), Some(Ending::Timeout));
    }
}
