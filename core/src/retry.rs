//! Exponential backoff with jitter, and reading a server's `Retry-After`.

use std::time::{Duration, SystemTime};

use rand::RngExt;

/// Delays between attempts: `base * 2^attempt`, capped at `max`, each drawn uniformly from
/// its upper half so that many senders retrying at once spread out ("equal jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackoffError {
    #[error("backoff base must be greater than zero")]
    ZeroBase,
    #[error("backoff max ({max:?}) must be at least its base ({base:?})")]
    MaxBelowBase { base: Duration, max: Duration },
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Result<Backoff, BackoffError> {
        if base.is_zero() {
            return Err(BackoffError::ZeroBase);
        }
        if max < base {
            return Err(BackoffError::MaxBelowBase { base, max });
        }
        Ok(Backoff { base, max })
    }

    /// The un-jittered delay before retry number `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay before retry number `attempt`, jittered into `[ceiling/2, ceiling]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = (ceiling - half).as_millis() as u64;
        half + Duration::from_millis(rand::rng().random_range(0..=spread))
    }

    /// The delay to wait given what the server asked for: at least `Retry-After` (capped
    /// by `max_wait` so a hostile or broken server cannot park us for days), else our own
    /// backoff.
    pub fn delay_honouring(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        max_wait: Duration,
    ) -> Duration {
        match retry_after {
            Some(asked) => asked.min(max_wait).max(self.base),
            None => self.delay(attempt),
        }
    }
}

/// Parses an HTTP `Retry-After` value: delay-seconds or an HTTP-date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructor_rejects_invalid_values() {
        assert_eq!(
            Backoff::new(Duration::ZERO, Duration::from_secs(1)),
            Err(BackoffError::ZeroBase)
        );
        assert!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn grows_exponentially_to_the_cap_with_jitter_inside_bounds() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).unwrap();
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(10), Duration::from_secs(5));
        assert_eq!(b.ceiling(200), Duration::from_secs(5));
        for attempt in 0..12 {
            for _ in 0..50 {
                let d = b.delay(attempt);
                assert!(
                    d >= b.ceiling(attempt) / 2 && d <= b.ceiling(attempt),
                    "{d:?}"
                );
            }
        }
    }

    #[test]
    fn honours_retry_after_within_a_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).unwrap();
        let cap = Duration::from_secs(60);
        assert_eq!(
            b.delay_honouring(0, Some(Duration::from_secs(7)), cap),
            Duration::from_secs(7)
        );
        assert_eq!(
            b.delay_honouring(0, Some(Duration::from_secs(3600)), cap),
            cap
        );
        assert_eq!(
            b.delay_honouring(0, Some(Duration::ZERO), cap),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn parses_retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
