//! A service's `circuit_breaker:` (docs/circuit-breakers.md).

use super::{
    decode::{Diagnostics, Field},
    keys::{Default, Key, Section, Shape},
};
use crate::breaker::Settings;

pub(super) const CIRCUIT_BREAKER: Section = Section {
    context: "circuit_breaker",
    doc: "Eject a backend whose connection attempts keep failing (docs/circuit-breakers.md).",
    keys: &[&CONSECUTIVE_FAILURES, &EJECTION, &MAX_EJECTION, &MAX_EJECTED_PERCENT],
};

const CONSECUTIVE_FAILURES: Key = Key::defaults_to(
    "consecutive_failures",
    Shape::Integer { min: 1, max: 1000 },
    Default::Integer(Settings::DEFAULT.consecutive_failures as u64),
    "Failures in a row, in real traffic or the health check, that eject a backend.",
);
const EJECTION: Key = Key::defaults_to(
    "ejection",
    Shape::Duration,
    Default::Duration(Settings::DEFAULT.ejection),
    "How long the first ejection lasts (times the number of ejections); at least 1s.",
);
const MAX_EJECTION: Key = Key::defaults_to(
    "max_ejection",
    Shape::Duration,
    Default::Duration(Settings::DEFAULT.max_ejection),
    "The longest ejection; not shorter than ejection.",
);
const MAX_EJECTED_PERCENT: Key = Key::defaults_to(
    "max_ejected_percent",
    Shape::Integer { min: 0, max: 100 },
    Default::Integer(Settings::DEFAULT.max_ejected_percent as u64),
    "The most of a service's backends ejected at once (at least one may always be).",
);

/// `circuit_breaker: { consecutive_failures: 5, ejection: 30s, max_ejection: 5m,
/// max_ejected_percent: 50 }`; every key has that default.
pub(super) fn circuit_breaker(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<Settings> {
    let map = d.section(field.value, field.position(), &CIRCUIT_BREAKER)?;
    let failures = CONSECUTIVE_FAILURES.integer_or_default(d, &map);
    let ejection = EJECTION.duration_or_default(d, &map);
    let max_ejection = MAX_EJECTION.duration_or_default(d, &map);
    let percent = MAX_EJECTED_PERCENT.integer_or_default(d, &map);
    let settings = Settings {
        consecutive_failures: failures?,
        ejection: ejection?,
        max_ejection: max_ejection?,
        max_ejected_percent: percent?,
    };
    if settings.ejection < std::time::Duration::from_secs(1) {
        let at = map.get(EJECTION.name).and_then(|f| f.position());
        d.error(at, "circuit_breaker.ejection: must be at least 1s");
        return None;
    }
    if settings.max_ejection < settings.ejection {
        let at = map.get(MAX_EJECTION.name).and_then(|f| f.position()).or_else(|| map.position());
        let message = format!(
            "circuit_breaker.max_ejection: {} is shorter than ejection {}",
            humantime::format_duration(settings.max_ejection),
            humantime::format_duration(settings.ejection)
        );
        d.error(at, message);
        return None;
    }
    Some(settings)
}
