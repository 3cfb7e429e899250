//! A service's `circuit_breaker:` (docs/circuit-breakers.md).

use super::decode::{Diagnostics, Field};
use crate::breaker::Settings;

const KEYS: &[&str] = &["consecutive_failures", "ejection", "max_ejection", "max_ejected_percent"];

/// `circuit_breaker: { consecutive_failures: 5, ejection: 30s, max_ejection: 5m,
/// max_ejected_percent: 50 }`; every key has that default.
pub(super) fn circuit_breaker(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<Settings> {
    let map = d.mapping(field.value, field.position(), "circuit_breaker", KEYS)?;
    let defaults = Settings::default();
    let failures = map
        .get("consecutive_failures")
        .map_or(Some(defaults.consecutive_failures), |f| d.integer(f, 1, 1000));
    let ejection = map.get("ejection").map_or(Some(defaults.ejection), |f| d.duration(f));
    let max_ejection = map.get("max_ejection").map_or(Some(defaults.max_ejection), |f| d.duration(f));
    let percent =
        map.get("max_ejected_percent").map_or(Some(defaults.max_ejected_percent), |f| d.integer(f, 0, 100));
    let settings = Settings {
        consecutive_failures: failures?,
        ejection: ejection?,
        max_ejection: max_ejection?,
        max_ejected_percent: percent?,
    };
    if settings.ejection < std::time::Duration::from_secs(1) {
        let at = map.get("ejection").and_then(|f| f.position());
        d.error(at, "circuit_breaker.ejection: must be at least 1s");
        return None;
    }
    if settings.max_ejection < settings.ejection {
        let at = map.get("max_ejection").and_then(|f| f.position()).or_else(|| map.position());
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
