//! KEDA's scaling rule, one polling tick at a time.
//!
//! - Activation: the workload is active while `lag > activationLagThreshold`.
//!   From zero, an active workload goes to `max(minReplicaCount, 1)`.
//! - While running, the HPA rule: `ceil(lag / lagThreshold)` within
//!   `[max(min, 1), max]`, unchanged when within HPA's 10% tolerance of the
//!   current count; scale-up is immediate, scale-down takes the highest
//!   recommendation of the stabilization window.
//! - Inactive for `cooldownPeriod` with `minReplicaCount: 0`: to zero.

use std::collections::VecDeque;
use std::time::Instant;

use crate::ScalePolicy;

/// HPA's default tolerance on the metric ratio.
const TOLERANCE: f64 = 0.1;

#[derive(Debug)]
pub struct Scaler {
    policy: ScalePolicy,
    last_active: Instant,
    recommendations: VecDeque<(Instant, u32)>,
}

impl Scaler {
    pub fn new(policy: ScalePolicy, now: Instant) -> Self {
        Self {
            policy,
            // KEDA counts the cooldown from the object's creation too.
            last_active: now,
            recommendations: VecDeque::new(),
        }
    }

    pub fn policy(&self) -> &ScalePolicy {
        &self.policy
    }

    /// The replica count to run after a tick that saw `lag` with
    /// `current` replicas running.
    pub fn step(&mut self, current: u32, lag: u64, now: Instant) -> u32 {
        let p = &self.policy;
        let active = lag > p.activation_lag_threshold;
        if active {
            self.last_active = now;
        }
        if current == 0 {
            return if active {
                p.min_replicas.max(1)
            } else {
                p.min_replicas
            };
        }
        if !active
            && p.min_replicas == 0
            && now.saturating_duration_since(self.last_active) >= p.cooldown
        {
            self.recommendations.clear();
            return 0;
        }
        let floor = p.min_replicas.max(1);
        let needed = lag.div_ceil(p.lag_threshold);
        let mut recommended =
            u32::try_from(needed.clamp(u64::from(floor), u64::from(p.max_replicas)))
                .unwrap_or(p.max_replicas);
        let ratio = lag as f64 / (p.lag_threshold as f64 * f64::from(current));
        if (ratio - 1.0).abs() <= TOLERANCE && (floor..=p.max_replicas).contains(&current) {
            recommended = current;
        }
        self.recommendations.push_back((now, recommended));
        while let Some((at, _)) = self.recommendations.front() {
            if now.saturating_duration_since(*at) > p.scale_down_stabilization {
                self.recommendations.pop_front();
            } else {
                break;
            }
        }
        if recommended >= current {
            return recommended;
        }
        // Scale down no further than the highest recent recommendation.
        let highest = self
            .recommendations
            .iter()
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(recommended);
        highest.min(current).max(recommended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn policy(min: u32, max: u32, threshold: u64, activation: u64) -> ScalePolicy {
        ScalePolicy {
            name: "t".into(),
            min_replicas: min,
            max_replicas: max,
            polling_interval: Duration::from_secs(1),
            cooldown: Duration::from_secs(10),
            scale_down_stabilization: Duration::from_secs(5),
            stream: "TASKS".into(),
            consumer: "agent-t".into(),
            lag_threshold: threshold,
            activation_lag_threshold: activation,
        }
    }

    #[test]
    fn a_burst_scales_up_then_down_then_to_zero() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut s = Scaler::new(policy(0, 4, 50, 0), t0);
        assert_eq!(s.step(0, 0, at(0)), 0, "idle stays at zero");
        assert_eq!(s.step(0, 500, at(1)), 1, "activation");
        assert_eq!(s.step(1, 500, at(2)), 4, "ceil(500/50)=10, capped at 4");
        assert_eq!(s.step(4, 120, at(3)), 4, "stabilization holds the recent 4");
        assert_eq!(s.step(4, 120, at(9)), 3, "after the window: ceil(120/50)");
        assert_eq!(s.step(3, 0, at(10)), 3, "the 3 is recent: held");
        assert_eq!(
            s.step(3, 0, at(16)),
            1,
            "inactive but still cooling down: the floor"
        );
        assert_eq!(
            s.step(1, 0, at(18)),
            1,
            "cooldown counts from the last active tick (9)"
        );
        assert_eq!(s.step(1, 0, at(19)), 0, "cooldown over");
    }

    #[test]
    fn tolerance_keeps_the_count() {
        let t0 = Instant::now();
        let mut s = Scaler::new(policy(1, 10, 10, 0), t0);
        assert_eq!(s.step(4, 42, t0), 4, "42/40 is within 10%");
        assert_eq!(s.step(4, 45, t0), 5);
    }

    #[test]
    fn the_activation_threshold_gates_scale_from_zero() {
        let t0 = Instant::now();
        let mut s = Scaler::new(policy(0, 5, 10, 3), t0);
        assert_eq!(s.step(0, 3, t0), 0);
        assert_eq!(s.step(0, 4, t0), 1);
    }

    proptest! {
        #[test]
        fn decisions_stay_within_bounds(
            min in 0u32..4,
            extra in 1u32..8,
            threshold in 1u64..100,
            activation in 0u64..20,
            ticks in prop::collection::vec((0u64..2000, 0u64..30), 1..40),
        ) {
            let max = min + extra;
            let t0 = Instant::now();
            let mut s = Scaler::new(policy(min, max, threshold, activation), t0);
            let mut current = 0u32;
            let mut now = t0;
            for (lag, secs) in ticks {
                now += Duration::from_secs(secs);
                let next = s.step(current, lag, now);
                prop_assert!(next <= max);
                prop_assert!(next >= min);
                if lag > activation {
                    prop_assert!(next >= 1, "active means at least one replica");
                }
                if next > current && current > 0 {
                    // Scale-up never goes beyond what the lag needs.
                    let needed = lag.div_ceil(threshold).max(u64::from(min.max(1)));
                    prop_assert!(u64::from(next) <= needed.min(u64::from(max)));
                }
                current = next;
            }
        }
    }
}
