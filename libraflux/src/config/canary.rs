//! A backend's `canary:` (docs/canary.md): the steps of its rollout and how long each is held.

use marked_yaml::Node;

use super::{
    decode::{Diagnostics, Field},
    error::Position,
    keys::{Default, Key, Section, Shape},
};
use crate::canary::{DEFAULT_INTERVAL, DEFAULT_STEPS, Rollout, unweighted_reason};

pub(super) const CANARY: Section = Section {
    context: "canary",
    doc: "Roll the backend in gradually by its share of new connections (docs/canary.md).",
    keys: &[&STEPS, &INTERVAL],
};

const STEPS: Key = Key::defaults_to(
    "steps",
    Shape::List { item: &Shape::Percent, min: 1, max: None },
    Default::Percents(DEFAULT_STEPS),
    "Shares of the service's new connections, increasing, the last 100%.",
);
const INTERVAL: Key = Key::defaults_to(
    "interval",
    Shape::Duration,
    Default::Duration(DEFAULT_INTERVAL),
    "How long each step is held.",
);

/// `canary: { steps: [5%, 25%, 50%, 100%], interval: 2m }`; both keys have defaults.
pub(super) fn canary(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<Rollout> {
    let map = d.section(field.value, field.position(), &CANARY)?;
    let before = d.errors.len();
    let steps = match map.get(STEPS.name) {
        None => Some(DEFAULT_STEPS.to_vec()),
        Some(steps_field) => {
            let items = d.sequence(steps_field)?;
            let steps: Vec<Option<u8>> = items.iter().map(|item| step(d, steps_field.item(item))).collect();
            steps.into_iter().collect()
        }
    };
    let interval = INTERVAL.duration_or_default(d, &map);
    let rollout = Rollout { steps: steps?, interval: interval? };
    if d.errors.len() != before {
        return None;
    }
    if let Some(why) = rollout.invalid() {
        let at = map.get(STEPS.name).and_then(|field| field.position()).or_else(|| field.position());
        d.error(at, format!("canary: {why}"));
        return None;
    }
    Some(rollout)
}

/// What [`parse_step`] takes, as a regular expression.
pub(super) const STEP_PATTERN: &str = r"^\s*\+?0*([1-9][0-9]?|100)\s*%?$";

/// One step: `5%`, or `5`.
fn step(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<u8> {
    let text = match field.value {
        Node::Scalar(scalar) => scalar.as_str(),
        _ => "",
    };
    let parsed = parse_step(text);
    if parsed.is_none() {
        let message = format!("{}: {text:?} is not a step; write a share from 1% to 100%", field.label());
        d.error(field.position(), message);
    }
    parsed
}

/// A share from 1 to 100, with or without `%`.
pub(super) fn parse_step(text: &str) -> Option<u8> {
    text.strip_suffix('%').unwrap_or(text).trim().parse::<u8>().ok().filter(|p| (1..=100).contains(p))
}

/// The checks that relate canaries to their service: a weighted scheduler, one canary at a
/// time, and a configured weight to roll in to.
pub(super) fn check_service(
    d: &mut Diagnostics<'_>,
    scheduler: Option<&str>,
    canaries: &[(Option<Position>, u32)],
) {
    let Some((first_at, _)) = canaries.first() else { return };
    if let Some(why) = scheduler.and_then(unweighted_reason) {
        d.error(*first_at, why);
    }
    if let Some((second_at, _)) = canaries.get(1) {
        let message = "only one backend of a service can be a canary at a time: each step's share is computed \
                       from the other backends' weights";
        d.error(*second_at, message);
    }
    for (at, weight) in canaries {
        if *weight == 0 {
            d.error(
                *at,
                "a canary of weight 0 has nothing to roll in to: give it the weight it should end with",
            );
        }
    }
}
