//! The health of one backend as consecutive probe results move it: `rise` successes in a row make
//! an unhealthy backend healthy, `fall` failures in a row make a healthy one unhealthy. Pure.

use serde::Serialize;

/// The state a backend starts in when its check starts (daemon start, or a backend added by a
/// reload).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InitialState {
    /// The default: a daemon restart or a reload must not pull traffic from backends that were
    /// serving it. A dead backend is quiesced after `fall` probes, as if it had just failed.
    #[default]
    Healthy,
    /// For operators who prefer a new backend to earn its traffic with `rise` successes first.
    Unhealthy,
}

/// Consecutive successes and failures, and the verdict they led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BackendState {
    pub healthy: bool,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
}

/// A change of verdict, with the run of probes that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    BecameHealthy { successes: u32 },
    BecameUnhealthy { failures: u32 },
}

impl BackendState {
    pub const fn new(initial: InitialState) -> Self {
        Self {
            healthy: matches!(initial, InitialState::Healthy),
            consecutive_successes: 0,
            consecutive_failures: 0,
        }
    }

    /// Records one probe. `rise` and `fall` below 1 count as 1 (the config requires at least 1).
    pub fn record(&mut self, success: bool, rise: u32, fall: u32) -> Option<Transition> {
        if success {
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            self.consecutive_failures = 0;
            if !self.healthy && self.consecutive_successes >= rise.max(1) {
                self.healthy = true;
                return Some(Transition::BecameHealthy { successes: self.consecutive_successes });
            }
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.consecutive_successes = 0;
            if self.healthy && self.consecutive_failures >= fall.max(1) {
                self.healthy = false;
                return Some(Transition::BecameUnhealthy { failures: self.consecutive_failures });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(state: &mut BackendState, probes: &str, rise: u32, fall: u32) -> Vec<Option<Transition>> {
        probes.chars().map(|probe| state.record(probe == '+', rise, fall)).collect()
    }

    #[test]
    fn starts_as_configured() {
        assert!(BackendState::new(InitialState::Healthy).healthy);
        assert!(!BackendState::new(InitialState::Unhealthy).healthy);
        assert!(BackendState::new(InitialState::default()).healthy);
    }

    #[test]
    fn falls_after_fall_consecutive_failures_only() {
        let mut state = BackendState::new(InitialState::Healthy);
        assert_eq!(run(&mut state, "--+--", 2, 3), [None; 5]);
        assert!(state.healthy, "a success in between restarts the count");
        assert_eq!(state.record(false, 2, 3), Some(Transition::BecameUnhealthy { failures: 3 }));
        assert!(!state.healthy);
        assert_eq!(state.record(false, 2, 3), None, "already unhealthy: no second transition");
    }

    #[test]
    fn rises_after_rise_consecutive_successes_only() {
        let mut state = BackendState::new(InitialState::Unhealthy);
        assert_eq!(run(&mut state, "+-+", 2, 3), [None; 3]);
        assert_eq!(state.record(true, 2, 3), Some(Transition::BecameHealthy { successes: 2 }));
        assert_eq!(state.record(true, 2, 3), None);
        assert_eq!(state, BackendState { healthy: true, consecutive_successes: 3, consecutive_failures: 0 });
    }

    #[test]
    fn a_full_cycle_down_and_up() {
        let mut state = BackendState::new(InitialState::Healthy);
        let transitions: Vec<Transition> = run(&mut state, "+---++-++", 2, 3).into_iter().flatten().collect();
        assert_eq!(
            transitions,
            [Transition::BecameUnhealthy { failures: 3 }, Transition::BecameHealthy { successes: 2 }]
        );
    }

    #[test]
    fn thresholds_of_zero_act_as_one() {
        let mut state = BackendState::new(InitialState::Healthy);
        assert_eq!(state.record(false, 0, 0), Some(Transition::BecameUnhealthy { failures: 1 }));
        assert_eq!(state.record(true, 0, 0), Some(Transition::BecameHealthy { successes: 1 }));
    }

    #[test]
    fn counts_saturate() {
        let mut state =
            BackendState { healthy: true, consecutive_successes: u32::MAX, consecutive_failures: 0 };
        assert_eq!(state.record(true, 2, 3), None);
        assert_eq!(state.consecutive_successes, u32::MAX);
    }
}
