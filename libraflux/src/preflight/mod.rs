//! Pre-flight checks: named checks with a verdict and a reason, run before apply touches the
//! kernel (and alone as `libraflux preflight`).
//!
//! The checks are pure functions of [`NodeFacts`] (gathered at the edge, in `facts.rs`) and the
//! desired state, so every verdict is unit-tested without a kernel.

mod checks;
mod facts;

use std::fmt;

pub use checks::{CheckInput, run_checks};
pub use facts::{NodeFacts, VsSysctls, gather};
use serde::Serialize;

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
    /// Skipped by name on the command line, or not applicable (`sync` without `sync:`);
    /// reported with the reason, never silent.
    Skipped,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
            Self::Skipped => "skipped",
        })
    }
}

/// One named check and what it found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub name: &'static str,
    pub verdict: Verdict,
    pub reason: String,
}

/// Names of every check, in the order they run; `--skip-check` takes these.
pub const CHECK_NAMES: &[&str] = &[
    "ipvs_available",
    "schedulers_available",
    "vips_present",
    "conn_table_size",
    "service_conflicts",
    "vs_sysctls",
    "sync",
];

/// The results, and whether they allow apply to go on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub checks: Vec<CheckResult>,
}

impl Report {
    pub fn failed(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|check| check.verdict == Verdict::Fail)
    }

    pub fn passed(&self) -> bool {
        self.failed().next().is_none()
    }

    /// One line per check: `pass  vips_present  all 2 VIPs are on eth0`.
    pub fn render_text(&self) -> String {
        let width = self.checks.iter().map(|check| check.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for check in &self.checks {
            out.push_str(&format!(
                "{:<7} {:<width$}  {}\n",
                check.verdict.to_string(),
                check.name,
                check.reason
            ));
        }
        out
    }
}
