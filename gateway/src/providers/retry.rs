//! How long to wait before trying a target again: exponential backoff with jitter, never less
//! than the upstream's own `Retry-After`.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::config::RetrySettings;

/// The wait before retry number `retry` (0 for the first retry): half of the exponential step
/// plus a random share of the other half ("equal jitter"), so that clients that failed together
/// do not come back together, yet every retry waits a little.
pub fn backoff(settings: &RetrySettings, retry: u32) -> Duration {
    let step = settings
        .initial_backoff
        .saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
        .min(settings.max_backoff);
    step / 2 + step.mul_f64(fastrand::f64() / 2.0)
}

/// Reads `retry-after-ms` (OpenAI's), then `Retry-After` as seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let value = text(RETRY_AFTER.as_str())?;
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let settings = RetrySettings {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(10),
        };
        for _ in 0..100 {
            let first = backoff(&settings, 0);
            assert!((50..=100).contains(&first.as_millis()), "{first:?}");
            let third = backoff(&settings, 2);
            assert!((200..=400).contains(&third.as_millis()), "{third:?}");
            let late = backoff(&settings, 40);
            assert!((500..=1000).contains(&late.as_millis()), "{late:?}");
        }
    }

    #[test]
    fn retry_after_is_read_in_all_its_forms() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(61));
        headers.insert(RETRY_AFTER, in_a_minute.parse().unwrap());
        let secs = retry_after(&headers).unwrap().as_secs();
        assert!((59..=61).contains(&secs), "{secs}");
        headers.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        headers.insert("retry-after-ms", "soon".parse().unwrap());
        assert!(retry_after(&headers).is_some());
    }
}
