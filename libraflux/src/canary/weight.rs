//! The weight that gives a canary a share of its service's new connections.
//!
//! With weighted schedulers a backend of weight `w` among others weighing `S` in all gets
//! `w / (w + S)` of the new connections (exactly with `wrr`, in the long run with the others).
//! For a share `p` that is `w = p / (1 - p) x S`. IPVS weights are whole numbers up to 65,535,
//! so `w` is rounded; when the rounding is too coarse (5 % among three backends of weight 1 asks
//! for 0.16) every other backend's weight is multiplied by the same factor, which keeps their
//! shares among themselves, until the canary's share is within half a percentage point of the
//! target or no larger factor fits.

/// The largest weight IPVS takes from the configuration (`ipvsadm` allows the same).
pub const MAX_WEIGHT: u32 = 65_535;

/// How close to the target the share must come before a larger factor is not tried: half a
/// percentage point.
const GOOD_ENOUGH: f64 = 0.005;

/// The canary's weight and the factor applied to every other backend's weight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Split {
    pub canary: u32,
    /// Every other backend's weight is multiplied by this (1: unchanged).
    pub scale: u32,
    /// The share of new connections these weights give the canary, 0 to 1.
    pub share: f64,
}

/// The weights for a canary to get `percent` (1 to 99) of new connections among backends whose
/// weights sum to `others` (those in service) and of which the largest is `largest`.
/// `None` when no other backend is in service: the canary's share is then all or nothing,
/// whatever its weight.
pub fn split(percent: u8, others: u64, largest: u32) -> Option<Split> {
    if others == 0 || largest == 0 || !(1..=99).contains(&percent) {
        return None;
    }
    let target = f64::from(percent) / 100.0;
    let ratio = target / (1.0 - target);
    let max_scale = (MAX_WEIGHT / largest).max(1);
    let mut best: Option<Split> = None;
    for scale in 1..=max_scale {
        let sum = others * u64::from(scale);
        let wanted = (ratio * sum as f64).round();
        if wanted < 1.0 {
            continue;
        }
        let canary = wanted.min(f64::from(MAX_WEIGHT)) as u32;
        let share = f64::from(canary) / (f64::from(canary) + sum as f64);
        let candidate = Split { canary, scale, share };
        if best.is_none_or(|best| (share - target).abs() < (best.share - target).abs()) {
            best = Some(candidate);
        }
        if (share - target).abs() <= GOOD_ENOUGH {
            break;
        }
    }
    // Not even the largest factor makes the canary's weight reach 1: the smallest share IPVS can
    // express with these weights.
    best.or_else(|| {
        let sum = others * u64::from(max_scale);
        Some(Split { canary: 1, scale: max_scale, share: 1.0 / (1.0 + sum as f64) })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exact_share_keeps_the_others_weights() {
        // 25 % among three of weight 1: w = 1/3 x 3 = 1.
        assert_eq!(split(25, 3, 1), Some(Split { canary: 1, scale: 1, share: 0.25 }));
        assert_eq!(split(50, 3, 1), Some(Split { canary: 3, scale: 1, share: 0.5 }));
        assert_eq!(split(10, 900, 300), Some(Split { canary: 100, scale: 1, share: 0.1 }));
    }

    #[test]
    fn a_share_too_fine_for_the_weights_scales_the_others() {
        // 5 % among three of weight 1 asks for 0.16: x6 gives 1 of 19, 5.3 %.
        let split = split(5, 3, 1).unwrap();
        assert_eq!((split.canary, split.scale), (1, 6));
        assert!((split.share - 0.05).abs() <= GOOD_ENOUGH, "{split:?}");
        // 10 % among 3: x3 gives exactly 1 of 10.
        assert_eq!(super::split(10, 3, 1), Some(Split { canary: 1, scale: 3, share: 0.1 }));
    }

    #[test]
    fn every_share_is_within_half_a_point_when_the_weights_allow_it() {
        for percent in 1..=99 {
            for (others, largest) in [(1, 1), (3, 1), (10, 5), (250, 100)] {
                let split = split(percent, others, largest).unwrap();
                let target = f64::from(percent) / 100.0;
                assert!((split.share - target).abs() <= GOOD_ENOUGH, "{percent}% of {others}: {split:?}");
                assert!(split.canary >= 1 && split.canary <= MAX_WEIGHT);
                assert!(u64::from(largest) * u64::from(split.scale) <= u64::from(MAX_WEIGHT));
                let computed = f64::from(split.canary)
                    / (f64::from(split.canary) + (others * u64::from(split.scale)) as f64);
                assert!((computed - split.share).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn weights_that_cannot_grow_give_the_closest_share_they_can() {
        // The others already at the maximum: 1 % of 2 x 65,535 asks for 1,324, which fits.
        let split = split(1, 2 * u64::from(MAX_WEIGHT), MAX_WEIGHT).unwrap();
        assert_eq!(split.scale, 1);
        assert!((split.share - 0.01).abs() < 0.001, "{split:?}");
        // 99 % of 65,535 asks for more than the largest weight: the closest IPVS can do.
        let split = super::split(99, u64::from(MAX_WEIGHT), MAX_WEIGHT).unwrap();
        assert_eq!((split.canary, split.scale), (MAX_WEIGHT, 1));
        assert!((split.share - 0.5).abs() < 1e-9, "{split:?}");
    }

    #[test]
    fn no_other_backend_in_service_has_no_split() {
        assert_eq!(split(10, 0, 0), None);
        assert_eq!(split(0, 3, 1), None);
        assert_eq!(split(100, 3, 1), None);
    }
}
