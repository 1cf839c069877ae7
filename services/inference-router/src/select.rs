//! Pure backend-selection math: the per-pool strategies, rendezvous hashing
//! for session affinity and weighted splits across pools. No I/O, no clocks
//! and no locks here: the caller snapshots each backend into a
//! [`Candidate`] and applies the answer, so every rule is unit-testable.
//! This module must never decide health (ejection is the caller's); it only
//! chooses among the candidates it is told are eligible.

/// What a strategy may look at for one backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// May this request use it (healthy, below its cap, not tried yet)?
    pub eligible: bool,
    /// Requests this router has running on it now.
    pub in_flight: usize,
    /// Relative capacity (>= 1).
    pub weight: u32,
    /// EWMA of its time to first byte in seconds; `None` until observed.
    pub ewma_ttft: Option<f64>,
    /// The last scrape of its `/metrics`; `None` until one succeeded.
    pub load: Option<Load>,
}

/// A backend's own view of its load, from vLLM's Prometheus metrics.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Load {
    /// `vllm:num_requests_waiting`
    pub waiting: f64,
    /// `vllm:num_requests_running`
    pub running: f64,
    /// `vllm:kv_cache_usage_perc` (or the older `vllm:gpu_cache_usage_perc`), 0..=1.
    pub kv_cache: f64,
}

/// Weight of a waiting request against a running one in the queue-aware
/// score: a queued request waits for a whole generation slot.
pub const WAITING_WEIGHT: f64 = 4.0;
/// Weight of a full KV cache: near 1.0 the server starts preempting.
pub const KV_CACHE_WEIGHT: f64 = 8.0;

/// The queue-aware score, lower is better:
/// `(4·waiting + running + 8·kv_cache + in_flight) / weight`.
/// `in_flight` (this router's own requests) keeps the score fresh between
/// scrapes; a backend never scraped counts only its in-flight requests.
pub fn queue_score(load: Option<Load>, in_flight: usize, weight: u32) -> f64 {
    let load = load.unwrap_or_default();
    let raw = WAITING_WEIGHT * load.waiting
        + load.running
        + KV_CACHE_WEIGHT * load.kv_cache.clamp(0.0, 1.0)
        + in_flight as f64;
    raw / f64::from(weight.max(1))
}

/// One EWMA step: `alpha` is the weight of the new sample (0 < alpha <= 1);
/// older samples decay by `(1 - alpha)` per observation.
pub fn ewma(previous: Option<f64>, sample: f64, alpha: f64) -> f64 {
    match previous {
        None => sample,
        Some(prev) => alpha * sample + (1.0 - alpha) * prev,
    }
}

/// Smooth weighted round robin (nginx's): every eligible backend gains its
/// weight, the highest current value wins and pays the eligible total.
/// Over any `sum(weights)` consecutive picks each backend is chosen exactly
/// `weight` times, interleaved rather than in bursts.
pub fn round_robin(current: &mut Vec<i64>, candidates: &[Candidate]) -> Option<usize> {
    current.resize(candidates.len(), 0);
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    for (i, c) in candidates.iter().enumerate() {
        if !c.eligible {
            continue;
        }
        let weight = i64::from(c.weight.max(1));
        current[i] += weight;
        total += weight;
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let best = best?;
    current[best] -= total;
    Some(best)
}

/// Fewest in-flight requests per unit of weight; ties go to the first.
pub fn least_outstanding(candidates: &[Candidate]) -> Option<usize> {
    lowest(candidates, |c| {
        c.in_flight as f64 / f64::from(c.weight.max(1))
    })
}

/// Lowest EWMA time to first byte. A backend not yet observed scores 0 so
/// it gets tried (and measured); in-flight requests break ties.
pub fn ewma_ttft(candidates: &[Candidate]) -> Option<usize> {
    lowest(candidates, |c| {
        c.ewma_ttft.unwrap_or(0.0) * (1.0 + c.in_flight as f64) / f64::from(c.weight.max(1))
    })
}

/// Lowest [`queue_score`].
pub fn queue_aware(candidates: &[Candidate]) -> Option<usize> {
    lowest(candidates, |c| queue_score(c.load, c.in_flight, c.weight))
}

fn lowest(candidates: &[Candidate], score: impl Fn(&Candidate) -> f64) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, c) in candidates.iter().enumerate().filter(|(_, c)| c.eligible) {
        let s = score(c);
        if best.is_none_or(|(_, b)| s < b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

/// A stable 64-bit hash (FNV-1a, then a SplitMix64 finaliser for
/// avalanche): the same key maps to the same backend on every replica and
/// across restarts, unlike std's randomly seeded hasher.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Rendezvous (highest random weight) hashing: the backend whose
/// `hash(key, backend)` is highest among `backends` (their identities, e.g.
/// URLs) for which `usable` holds. Removing a backend moves only the keys
/// that preferred it.
pub fn rendezvous(key: &str, backends: &[&str], usable: impl Fn(usize) -> bool) -> Option<usize> {
    backends
        .iter()
        .enumerate()
        .filter(|(i, _)| usable(*i))
        .max_by_key(|(_, b)| stable_hash(&[key, b]))
        .map(|(i, _)| i)
}

/// Picks an index with probability proportional to its weight, given a
/// uniform `roll` in `0..sum(weights)`. `None` when every weight is 0.
pub fn weighted(weights: &[u32], roll: u64) -> Option<usize> {
    let mut acc = 0u64;
    for (i, w) in weights.iter().enumerate() {
        acc += u64::from(*w);
        if roll < acc {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn candidate(in_flight: usize) -> Candidate {
        Candidate {
            eligible: true,
            in_flight,
            weight: 1,
            ewma_ttft: None,
            load: None,
        }
    }

    #[test]
    fn least_outstanding_picks_the_idlest_eligible() {
        let mut c = vec![candidate(3), candidate(1), candidate(2)];
        assert_eq!(least_outstanding(&c), Some(1));
        c[1].eligible = false;
        assert_eq!(least_outstanding(&c), Some(2));
        c.iter_mut().for_each(|c| c.eligible = false);
        assert_eq!(least_outstanding(&c), None);
    }

    #[test]
    fn ewma_ttft_prefers_the_fast_and_tries_the_unmeasured() {
        let mut c = vec![candidate(0), candidate(0), candidate(0)];
        c[0].ewma_ttft = Some(0.5);
        c[1].ewma_ttft = Some(0.05);
        c[2].ewma_ttft = Some(0.2);
        assert_eq!(ewma_ttft(&c), Some(1));
        c[2].ewma_ttft = None;
        assert_eq!(ewma_ttft(&c), Some(2), "an unmeasured backend is tried");
    }

    #[test]
    fn ewma_decays_toward_new_samples() {
        let mut v = ewma(None, 1.0, 0.3);
        assert!((v - 1.0).abs() < 1e-9, "the first sample is taken as is");
        for _ in 0..30 {
            v = ewma(Some(v), 0.1, 0.3);
        }
        assert!((v - 0.1).abs() < 1e-3, "{v}");
    }

    #[test]
    fn queue_aware_reads_waiting_running_and_kv_cache() {
        let mut c = vec![candidate(0), candidate(0), candidate(0)];
        c[0].load = Some(Load {
            waiting: 2.0,
            running: 1.0,
            kv_cache: 0.1,
        });
        c[1].load = Some(Load {
            waiting: 0.0,
            running: 6.0,
            kv_cache: 0.2,
        });
        c[2].load = Some(Load {
            waiting: 0.0,
            running: 1.0,
            kv_cache: 0.95,
        });
        // scores: 8+1+0.8 = 9.8, 6+1.6 = 7.6, 1+7.6 = 8.6
        assert_eq!(queue_aware(&c), Some(1));
        assert!((queue_score(c[0].load, 1, 2) - 5.4).abs() < 1e-9);
    }

    #[test]
    fn weighted_round_robin_interleaves() {
        let mut c = vec![candidate(0), candidate(0)];
        c[0].weight = 2;
        let mut state = Vec::new();
        let picks: Vec<_> = (0..6)
            .map(|_| round_robin(&mut state, &c).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 0, 0, 1, 0]);
    }

    #[test]
    fn stable_hash_is_stable() {
        // Pinned: a change here moves every session to another backend.
        assert_eq!(stable_hash(&["a", "b"]), stable_hash(&["a", "b"]));
        assert_ne!(stable_hash(&["ab", ""]), stable_hash(&["a", "b"]));
    }

    proptest! {
        #[test]
        fn round_robin_is_fair_over_k_rounds(
            weights in proptest::collection::vec(1u32..5, 1..8),
            k in 1usize..5,
        ) {
            let c: Vec<_> = weights.iter().map(|w| Candidate { weight: *w, ..candidate(0) }).collect();
            let total: u32 = weights.iter().sum();
            let mut state = Vec::new();
            let mut counts = vec![0u32; c.len()];
            for _ in 0..(k * total as usize) {
                counts[round_robin(&mut state, &c).unwrap()] += 1;
            }
            for (i, w) in weights.iter().enumerate() {
                prop_assert_eq!(counts[i], w * k as u32);
            }
        }

        #[test]
        fn round_robin_never_picks_the_ineligible(
            eligible in proptest::collection::vec(any::<bool>(), 1..8),
        ) {
            let c: Vec<_> = eligible.iter().map(|e| Candidate { eligible: *e, ..candidate(0) }).collect();
            let mut state = Vec::new();
            for _ in 0..20 {
                match round_robin(&mut state, &c) {
                    Some(i) => prop_assert!(eligible[i]),
                    None => prop_assert!(eligible.iter().all(|e| !e)),
                }
            }
        }

        #[test]
        fn rendezvous_keeps_keys_when_a_backend_leaves(
            n in 2usize..10,
            removed_seed in any::<usize>(),
        ) {
            let names: Vec<String> = (0..n).map(|i| format!("http://10.0.0.{i}:8000")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let removed = removed_seed % n;
            let mut moved = 0;
            let mut on_removed = 0;
            for key in 0..400 {
                let key = format!("session-{key}");
                let before = rendezvous(&key, &refs, |_| true).unwrap();
                let after = rendezvous(&key, &refs, |i| i != removed).unwrap();
                if before == removed {
                    on_removed += 1;
                } else if before != after {
                    moved += 1;
                }
            }
            prop_assert_eq!(moved, 0, "only the removed backend's keys move");
            // Each backend gets roughly 1/n of the keys.
            let expected = 400.0 / n as f64;
            prop_assert!((f64::from(on_removed) - expected).abs() < expected * 0.6 + 10.0,
                "{} keys on one of {} backends", on_removed, n);
        }

        #[test]
        fn scored_strategies_pick_an_eligible_minimum(
            loads in proptest::collection::vec(
                (any::<bool>(), 0usize..20, 1u32..4, 0.0f64..5.0, 0.0f64..20.0, 0.0f64..1.0),
                1..8,
            ),
        ) {
            let c: Vec<Candidate> = loads
                .iter()
                .map(|(eligible, in_flight, weight, ttft, waiting, kv)| Candidate {
                    eligible: *eligible,
                    in_flight: *in_flight,
                    weight: *weight,
                    ewma_ttft: Some(*ttft),
                    load: Some(Load { waiting: *waiting, running: 1.0, kv_cache: *kv }),
                })
                .collect();
            let any_eligible = c.iter().any(|c| c.eligible);
            for (pick, score) in [
                (least_outstanding(&c), &(|c: &Candidate| c.in_flight as f64 / f64::from(c.weight)) as &dyn Fn(&Candidate) -> f64),
                (queue_aware(&c), &|c: &Candidate| queue_score(c.load, c.in_flight, c.weight)),
            ] {
                match pick {
                    None => prop_assert!(!any_eligible),
                    Some(i) => {
                        prop_assert!(c[i].eligible);
                        for other in c.iter().filter(|o| o.eligible) {
                            prop_assert!(score(&c[i]) <= score(other));
                        }
                    }
                }
            }
        }

        #[test]
        fn weighted_split_converges_to_the_weights(
            weights in proptest::collection::vec(0u32..100, 1..5),
        ) {
            let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
            prop_assume!(total > 0);
            // A uniform sweep of every roll hits each index exactly `weight` times.
            let mut counts = vec![0u64; weights.len()];
            for roll in 0..total {
                counts[weighted(&weights, roll).unwrap()] += 1;
            }
            for (i, w) in weights.iter().enumerate() {
                prop_assert_eq!(counts[i], u64::from(*w));
            }
            prop_assert_eq!(weighted(&weights, total), None);
        }
    }
}
