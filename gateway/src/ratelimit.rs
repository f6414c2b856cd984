//! Token buckets for Strait's RateLimit kind, refilled as Envoy's local rate limit
//! fills them (the whole allowance at each period), kept beside the snapshot under
//! the RateLimit's name so that a reload does not hand out a fresh allowance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strait_config::ratelimit::RateLimit;

/// Buckets kept before idle (full) ones are dropped.
const MAX_BUCKETS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    filled_at: Instant,
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The allowance per period.
    pub limit: u32,
    /// Tokens left in the bucket.
    pub remaining: u32,
    /// Seconds until the next fill (rounded up).
    pub reset_secs: u64,
}

/// All buckets of all RateLimits.
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

impl Limiter {
    /// Takes a token from the bucket of `key` under `limit`.
    pub fn take(&self, limit: &RateLimit, key: &str, now: Instant) -> Verdict {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            // A bucket untouched for a whole period would be full again: forget it.
            buckets.retain(|_, b| now.duration_since(b.filled_at) < limit.per);
        }
        let bucket = buckets.entry((limit.id.clone(), key.to_string())).or_insert(Bucket {
            tokens: limit.requests,
            filled_at: now,
        });
        let per = limit.per.max(Duration::from_millis(1));
        let periods = now.duration_since(bucket.filled_at).as_nanos() / per.as_nanos();
        if periods > 0 {
            bucket.tokens = limit.requests;
            let advance = per.saturating_mul(u32::try_from(periods).unwrap_or(u32::MAX));
            bucket.filled_at += advance;
        }
        let allowed = bucket.tokens > 0;
        if allowed {
            bucket.tokens -= 1;
        }
        // `per` comes from the config: past what an Instant holds, the next fill is never.
        let next_fill = bucket
            .filled_at
            .checked_add(per)
            .map_or(Duration::MAX, |t| t.saturating_duration_since(now));
        Verdict {
            allowed,
            limit: limit.requests,
            remaining: bucket.tokens,
            reset_secs: next_fill
                .as_secs()
                .saturating_add(u64::from(next_fill.subsec_nanos() > 0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_config::ratelimit::RateKey;

    #[test]
    fn exactly_the_allowance_per_period() {
        let limit = RateLimit {
            id: "default/r".into(),
            requests: 3,
            per: Duration::from_secs(10),
            key: RateKey::ClientIp,
        };
        let l = Limiter::default();
        let t0 = Instant::now();
        let allowed = (0..5).filter(|_| l.take(&limit, "a", t0).allowed).count();
        assert_eq!(allowed, 3);
        assert!(l.take(&limit, "b", t0).allowed, "another key has its own bucket");
        let denied = l.take(&limit, "a", t0 + Duration::from_secs(4));
        assert_eq!((denied.allowed, denied.remaining, denied.reset_secs), (false, 0, 6));
        let refilled = l.take(&limit, "a", t0 + Duration::from_secs(10));
        assert_eq!((refilled.allowed, refilled.remaining), (true, 2));
    }

    #[test]
    fn a_period_beyond_any_instant_never_refills() {
        let limit = RateLimit {
            id: "default/r".into(),
            requests: 1,
            per: Duration::MAX,
            key: RateKey::ClientIp,
        };
        let l = Limiter::default();
        assert!(l.take(&limit, "a", Instant::now()).allowed);
        let denied = l.take(&limit, "a", Instant::now());
        assert_eq!((denied.allowed, denied.reset_secs), (false, u64::MAX));
    }
}
