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
    /// How long since eBPF last saw a packet to the backend; `None` if it saw none since it
    /// started watching. `observed: false` when no eBPF observer runs: only the grace period
    /// and the timeout can end the drain then.
    Udp { idle: Option<Duration>, observed: bool },
}

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// TCP: no connection left (active, and inactive when asked).
    ConnectionsClosed,
    /// UDP: the grace period passed and no packet reached the backend for the quiet window.
    GraceAndQuiet,
    /// UDP without an eBPF observer: only the grace period could be waited for.
    GraceOnlyNoTrafficSignal,
    /// The timeout passed first; traffic may have been cut.
    Timeout,
}

impl Ending {
    /// The sentence operators read.
    pub fn describe(self) -> &'static str {
        match self {
            Self::ConnectionsClosed => "drained: no connections left",
            Self::GraceAndQuiet => "drained: grace period over and no traffic for the quiet window",
            Self::GraceOnlyNoTrafficSignal => {
                "grace period over; no eBPF traffic signal, so UDP quiet was not verified"
            }
            Self::Timeout => "TIMEOUT: the backend still had traffic when the drain timed out",
        }
    }
}

/// `None` while the drain goes on.
pub fn evaluate(rules: &Rules, elapsed: Duration, signal: Signal) -> Option<Ending> {
    let ended = match signal {
        Signal::Tcp { active, inactive } => {
            let left = if rules.include_inactive { active + inactive } else { active };
            (left == 0).then_some(Ending::ConnectionsClosed)
        }
        Signal::Udp { .. } if elapsed < rules.grace => None,
        Signal::Udp { observed: false, .. } => Some(Ending::GraceOnlyNoTrafficSignal),
        Signal::Udp { idle, observed: true } => {
            // No packet since watching started means quiet for as long as the drain has run.
            let quiet_for = idle.unwrap_or(elapsed);
            (quiet_for >= rules.quiet).then_some(Ending::GraceAndQuiet)
        }
    };
    ended.or_else(|| (elapsed >= rules.timeout).then_some(Ending::Timeout))
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

    #[test]
    fn tcp_ends_when_active_connections_reach_zero() {
        assert_eq!(evaluate(&RULES, secs(1), Signal::Tcp { active: 2, inactive: 0 }), None);
        assert_eq!(
            evaluate(&RULES, secs(2), Signal::Tcp { active: 0, inactive: 7 }),
            Some(Ending::ConnectionsClosed)
        );
    }

    #[test]
    fn tcp_can_wait_for_inactive_connections_too() {
        let rules = Rules { include_inactive: true, ..RULES };
        assert_eq!(evaluate(&rules, secs(2), Signal::Tcp { active: 0, inactive: 7 }), None);
        assert_eq!(
            evaluate(&rules, secs(3), Signal::Tcp { active: 0, inactive: 0 }),
            Some(Ending::ConnectionsClosed)
        );
    }

    #[test]
    fn tcp_times_out_with_connections_left() {
        assert_eq!(evaluate(&RULES, secs(60), Signal::Tcp { active: 1, inactive: 0 }), Some(Ending::Timeout));
    }

    #[test]
    fn udp_never_ends_inside_the_grace_period_even_when_quiet() {
        let quiet = Signal::Udp { idle: Some(secs(30)), observed: true };
        assert_eq!(evaluate(&RULES, secs(9), quiet), None);
        assert_eq!(evaluate(&RULES, secs(10), quiet), Some(Ending::GraceAndQuiet));
    }

    #[test]
    fn udp_waits_for_the_quiet_window_after_the_grace_period() {
        assert_eq!(evaluate(&RULES, secs(20), Signal::Udp { idle: Some(secs(1)), observed: true }), None);
        assert_eq!(
            evaluate(&RULES, secs(25), Signal::Udp { idle: Some(secs(5)), observed: true }),
            Some(Ending::GraceAndQuiet)
        );
    }

    #[test]
    fn udp_with_no_packet_seen_is_quiet_since_the_drain_began() {
        assert_eq!(
            evaluate(&RULES, secs(10), Signal::Udp { idle: None, observed: true }),
            Some(Ending::GraceAndQuiet)
        );
    }

    #[test]
    fn udp_traffic_that_never_stops_times_out() {
        assert_eq!(
            evaluate(&RULES, secs(60), Signal::Udp { idle: Some(secs(0)), observed: true }),
            Some(Ending::Timeout)
        );
    }

    #[test]
    fn udp_without_an_observer_ends_after_the_grace_period_and_says_so() {
        let blind = Signal::Udp { idle: None, observed: false };
        assert_eq!(evaluate(&RULES, secs(9), blind), None);
        assert_eq!(evaluate(&RULES, secs(10), blind), Some(Ending::GraceOnlyNoTrafficSignal));
    }
}
