//! Redelivery policy: how many deliveries a message gets and how long a
//! retryable failure waits before the next one (exponential, jittered).

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Deliveries before a message is dead-lettered (JetStream MaxDeliver).
    pub max_deliver: u32,
    /// Wait after the first failure.
    pub base: Duration,
    /// Upper bound of any wait.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_deliver: 5,
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The nominal (un-jittered) wait after failed delivery number
    /// `delivered` (1-based): `base * 2^(delivered-1)`, capped at `max`.
    pub fn nominal_backoff(&self, delivered: u32) -> Duration {
        let exp = delivered.saturating_sub(1).min(20);
        self.base.saturating_mul(1 << exp).min(self.max)
    }

    /// The wait to use: "equal jitter", uniform in `[nominal/2, nominal]`, so
    /// retries of many tasks failing together spread out but never collapse
    /// to zero.
    pub fn backoff(&self, delivered: u32) -> Duration {
        let nominal = self.nominal_backoff(delivered);
        let half = nominal / 2;
        let jitter = rand::random_range(0.0..=1.0);
        half + half.mul_f64(jitter)
    }

    /// Whether delivery number `delivered` was the last one allowed.
    pub fn is_last(&self, delivered: u32) -> bool {
        delivered >= self.max_deliver
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nominal_doubles_then_caps() {
        let p = RetryPolicy {
            max_deliver: 10,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        let got: Vec<u128> = (1..=6).map(|d| p.nominal_backoff(d).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.nominal_backoff(u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn jitter_stays_within_half_and_full_nominal() {
        let p = RetryPolicy::default();
        for delivered in 1..=12 {
            let nominal = p.nominal_backoff(delivered);
            for _ in 0..50 {
                let b = p.backoff(delivered);
                assert!(b >= nominal / 2 && b <= nominal, "{b:?} vs {nominal:?}");
            }
        }
    }

    #[test]
    fn last_delivery() {
        let p = RetryPolicy {
            max_deliver: 3,
            ..RetryPolicy::default()
        };
        assert!(!p.is_last(2));
        assert!(p.is_last(3));
    }
}
