//! The reliability suite's accounting: each failure and cut charged to the operation whose window
//! contains its send time, the figures printed and written to `target/reliability/results-SERIES.json`,
//! the assertions, and the verdict table of docs/reliability.md.

use std::{fmt::Write as _, time::Instant};

use libraflux_tests::load::{Event, Kind, Outcome, Tally};

use super::{KNOWN_LOSS, SETTLE};
use crate::vm::support::{kernel, results_file, workspace};

/// An operation's window: from `start` to `settled` (its end plus [`SETTLE`]).
pub struct Window {
    pub name: &'static str,
    pub detail: String,
    pub start: Instant,
    pub end: Instant,
    pub settled: Instant,
    pub allowance: Option<Allowance>,
}

impl Window {
    fn contains(&self, at: Instant) -> bool {
        self.start <= at && at <= self.settled
    }
}

/// Losses that an operation may cause by design: of these kinds, sent within `from..=to`.
pub struct Allowance {
    pub kinds: &'static [Kind],
    pub from: Instant,
    pub to: Instant,
    /// The rule, as the doc states it.
    pub rule: String,
    /// The verdict, as the doc states it.
    pub verdict: &'static str,
}

impl Allowance {
    fn covers(&self, event: &Event) -> bool {
        self.kinds.contains(&event.kind) && self.from <= event.at && event.at <= self.to
    }
}

pub fn load_started(events: &[Event]) -> Instant {
    events.first().map_or_else(Instant::now, |event| event.at)
}

/// The figures of one window.
struct Figures<'a> {
    window: &'a Window,
    tallies: [Tally; 3],
    /// Failures and cuts in this window, in time order.
    losses: Vec<&'a Event>,
    /// Those of `losses` that the window's allowance does not cover.
    unexpected: Vec<&'a Event>,
    known: Option<&'static str>,
}

impl Figures<'_> {
    /// What the doc says per load kind, and the verdict: only what the assertions fix.
    fn verdict(&self) -> ([String; 3], String) {
        if let Some(why) = self.known {
            let cells = ["measured, not asserted"; 3].map(str::to_owned);
            return (cells, format!("loses traffic (known: {why})"));
        }
        let allowance = self.window.allowance.as_ref();
        let cells = Kind::ALL.map(|kind| match allowance {
            Some(allowance) if allowance.kinds.contains(&kind) => format!("losses {}", allowance.rule),
            _ => self.unexpected_losses(kind),
        });
        (cells, allowance.map_or("no loss", |allowance| allowance.verdict).to_owned())
    }

    /// The losses of `kind` that nothing allows: "N failed", and for long-lived "N cut, M failed".
    fn unexpected_losses(&self, kind: Kind) -> String {
        let of_kind = || self.unexpected.iter().filter(move |event| event.kind == kind);
        let failed = of_kind().filter(|event| matches!(event.outcome, Outcome::Failed(_))).count();
        let cut = of_kind().filter(|event| matches!(event.outcome, Outcome::Cut { .. })).count();
        match kind {
            Kind::LongLived => format!("{cut} cut, {failed} failed"),
            _ => format!("{failed} failed"),
        }
    }
}

pub struct Report<'a> {
    figures: Vec<Figures<'a>>,
    /// Failures and cuts that no window contains.
    outside: Vec<&'a Event>,
    origin: Instant,
}

fn lost(event: &Event) -> bool {
    !matches!(event.outcome, Outcome::Answered { .. })
}

impl<'a> Report<'a> {
    pub fn new(windows: &'a [Window], events: &'a [Event], origin: Instant) -> Self {
        for (name, _) in KNOWN_LOSS {
            assert!(
                windows.iter().any(|window| window.name == *name),
                "KNOWN_LOSS names no operation: {name}"
            );
        }
        let figures = windows
            .iter()
            .map(|window| {
                let inside: Vec<&Event> = events.iter().filter(|event| window.contains(event.at)).collect();
                let tallies = Kind::ALL
                    .map(|kind| Tally::of(inside.iter().copied().filter(|event| event.kind == kind)));
                let losses: Vec<&Event> = inside.into_iter().filter(|event| lost(event)).collect();
                let unexpected = losses
                    .iter()
                    .copied()
                    .filter(|event| {
                        !window.allowance.as_ref().is_some_and(|allowance| allowance.covers(event))
                    })
                    .collect();
                let known = KNOWN_LOSS.iter().find(|(name, _)| *name == window.name).map(|(_, why)| *why);
                Figures { window, tallies, losses, unexpected, known }
            })
            .collect();
        let outside = events
            .iter()
            .filter(|event| lost(event) && !windows.iter().any(|window| window.contains(event.at)))
            .collect();
        Self { figures, outside, origin }
    }

    fn seconds(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.origin).as_secs_f64()
    }

    fn describe(&self, event: &Event) -> String {
        let what = match event.outcome {
            Outcome::Failed(failure) => format!("failed: {}", failure.name()),
            Outcome::Cut { failure, backend } => format!("cut ({}) on {backend}", failure.name()),
            Outcome::Answered { .. } => "answered".to_owned(),
        };
        format!("{:.2} s {} {what}", self.seconds(event.at), event.kind.name())
    }

    pub fn print(&self) {
        eprintln!(
            "{:<48} {:>16} {:>16} {:>22} {:>9}",
            "operation", "tcp sent/failed", "udp sent/failed", "long-lived sent/cut/failed", "seconds"
        );
        for figures in &self.figures {
            let [tcp, udp, long] = figures.tallies;
            eprintln!(
                "{:<48} {:>16} {:>16} {:>22} {:>9.1}",
                figures.window.name,
                format!("{}/{}", tcp.sent, tcp.failed),
                format!("{}/{}", udp.sent, udp.failed),
                format!("{}/{}/{}", long.sent, long.cut, long.failed),
                (figures.window.end - figures.window.start).as_secs_f64(),
            );
            for event in &figures.losses {
                eprintln!("    {}", self.describe(event));
            }
        }
        for event in &self.outside {
            eprintln!("OUTSIDE EVERY WINDOW: {}", self.describe(event));
        }
    }

    pub fn write_json(&self) {
        let operations: Vec<serde_json::Value> = self
            .figures
            .iter()
            .map(|figures| {
                let kinds: serde_json::Map<String, serde_json::Value> = Kind::ALL
                    .iter()
                    .zip(figures.tallies)
                    .map(|(kind, tally)| {
                        (
                            kind.name().to_owned(),
                            serde_json::json!({
                                "sent": tally.sent, "failed": tally.failed, "cut": tally.cut,
                                "slow": tally.slow, "max_latency_ms": tally.max_latency.as_millis(),
                            }),
                        )
                    })
                    .collect();
                serde_json::json!({
                    "operation": figures.window.name,
                    "detail": figures.window.detail,
                    "start_s": self.seconds(figures.window.start),
                    "duration_s": (figures.window.end - figures.window.start).as_secs_f64(),
                    "settle_s": SETTLE.as_secs_f64(),
                    "known_loss": figures.known,
                    "load": kinds,
                    "losses": figures.losses.iter().map(|event| self.describe(event)).collect::<Vec<_>>(),
                    "allowed": figures.window.allowance.as_ref().map(|allowance| &allowance.rule),
                    "unexpected": figures.unexpected.len(),
                })
            })
            .collect();
        let json = serde_json::json!({
            "operations": operations,
            "outside_every_window": self.outside.iter().map(|event| self.describe(event)).collect::<Vec<_>>(),
        });
        std::fs::create_dir_all(workspace().join("target/reliability")).unwrap();
        let path = workspace().join(results_file("reliability"));
        std::fs::write(path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    }

    pub fn assert(&self) {
        let mut problems = Vec::new();
        for event in &self.outside {
            problems.push(format!("outside every operation's window: {}", self.describe(event)));
        }
        for figures in &self.figures {
            for (kind, tally) in Kind::ALL.iter().zip(figures.tallies) {
                if *kind != Kind::LongLived && tally.sent == 0 {
                    problems.push(format!(
                        "{}: no {} sent: the load stalled",
                        figures.window.name,
                        kind.name()
                    ));
                }
            }
            if figures.known.is_none() && !figures.unexpected.is_empty() {
                problems.push(format!(
                    "{} lost traffic and is not in KNOWN_LOSS: {}",
                    figures.window.name,
                    figures
                        .unexpected
                        .iter()
                        .map(|event| self.describe(event))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// The committed table: only what the assertions fix.
    pub fn render(&self) -> String {
        let (_, series) = kernel();
        let mut out = format!(
            "Measured on Linux {series} (Debian's stock kernel, qemu TCG, one vCPU).\n\n\
             | operation | what it does | TCP, new connection per request | UDP, new flow per request | \
             long-lived TCP connections | verdict |\n|---|---|---|---|---|---|\n"
        );
        for figures in &self.figures {
            let (cells, verdict) = figures.verdict();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {verdict} |",
                figures.window.name, figures.window.detail, cells[0], cells[1], cells[2]
            );
        }
        out
    }
}
