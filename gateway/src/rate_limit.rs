//! A tenant's request rate limit: a token bucket that holds a minute's worth of requests and
//! refills continuously, so bursts up to the per-minute figure pass and a steady overload gets
//! 429 with the time until the next token. A fleet shares one such bucket per tenant in Redis
//! (`shared_state/scripts/admit.lua`); this one serves a gateway on its own, and a fleet's
//! replica while Redis is unreachable.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimiter {
    capacity: f64,
    per_second: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A bucket of `requests` a minute.
    pub fn new(requests: u32) -> Self {
        let capacity = f64::from(requests.max(1));
        Self {
            capacity,
            per_second: capacity / 60.0,
            bucket: Mutex::new(Bucket {
                tokens: capacity,
                updated: Instant::now(),
            }),
        }
    }

    /// Takes one token, or says how long until one is there.
    pub fn acquire(&self, now: Instant) -> Result<(), Duration> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let limiter = RateLimiter::new(3);
        let start = Instant::now();
        assert!((0..3).all(|_| limiter.acquire(start).is_ok()));
        let wait = limiter.acquire(start).unwrap_err();
        assert_eq!(wait.as_secs(), 20);
        assert!(limiter.acquire(start + Duration::from_secs(19)).is_err());
        assert!(limiter.acquire(start + Duration::from_secs(21)).is_ok());
    }
}
