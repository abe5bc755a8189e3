//! Who may write, and how much: bearer tokens that each map to one tenant, and a token
//! bucket of records per second per tenant.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Caller, Refusal};
use crate::config::{AuthConfig, RateLimitConfig};

/// The configured tokens and their tenants.
pub struct Tokens {
    tokens: Vec<(Vec<u8>, String)>,
    tenant_header: String,
}

impl Tokens {
    /// Reads every token (files included). `tenant_header` names the header in refusals.
    pub fn new(config: &AuthConfig, tenant_header: &str) -> Result<Tokens, String> {
        let tokens = config
            .tokens
            .iter()
            .map(|t| Ok((t.value()?.into_bytes(), t.tenant.clone())))
            .collect::<Result<_, String>>()?;
        Ok(Tokens {
            tokens,
            tenant_header: tenant_header.to_string(),
        })
    }

    /// The tenant of the caller's token. No token or an unknown one is 401; a tenant
    /// header naming another tenant than the token's is 403, so a client can never write
    /// into a tenant its token does not own.
    pub fn tenant_of(&self, caller: Caller<'_>) -> Result<String, Refusal> {
        let presented = caller
            .authorization
            .and_then(|v| strip_bearer(v))
            .ok_or_else(|| {
                Refusal::Unauthenticated(
                    "a bearer token is required (authorization: Bearer <token>)".into(),
                )
            })?;
        // Every token is compared in full, so the time taken does not tell how much of a
        // guess was right.
        let mut found = None;
        for (token, tenant) in &self.tokens {
            if constant_time_eq(token, presented) {
                found = Some(tenant);
            }
        }
        let tenant =
            found.ok_or_else(|| Refusal::Unauthenticated("unknown bearer token".into()))?;
        match caller.tenant {
            Some(asked) if asked != tenant.as_bytes() => Err(Refusal::Forbidden(format!(
                "this token writes into tenant `{tenant}` only; {} names `{}`",
                self.tenant_header,
                String::from_utf8_lossy(asked).escape_debug()
            ))),
            _ => Ok(tenant.clone()),
        }
    }
}

fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    (scheme.eq_ignore_ascii_case(b"bearer ")).then(|| value[7..].trim_ascii())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Most tenants tracked at once; beyond, idle (full) buckets are forgotten.
const MAX_TENANTS: usize = 10_000;

/// A token bucket of records per tenant.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(config: &RateLimitConfig) -> RateLimiter {
        RateLimiter {
            rate: config.records_per_second,
            burst: config.burst.unwrap_or(config.records_per_second).max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `records` from the tenant's bucket, or refuses with how long to wait. A
    /// request larger than the burst is let through once the bucket is full, and the
    /// bucket goes into debt, so a big request is slowed down rather than refused forever.
    pub fn take(&self, tenant: Option<&str>, records: u64) -> Result<(), Refusal> {
        self.take_at(tenant, records, Instant::now())
    }

    fn take_at(&self, tenant: Option<&str>, records: u64, now: Instant) -> Result<(), Refusal> {
        let key = tenant.unwrap_or("");
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= MAX_TENANTS {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| refill(b, rate, burst, now) < burst);
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let available = refill(bucket, self.rate, self.burst, now);
        let needed = (records as f64).min(self.burst);
        if available >= needed {
            bucket.tokens = available - records as f64;
            return Ok(());
        }
        let wait = (needed - available) / self.rate;
        Err(Refusal::RateLimited {
            tenant: key.to_string(),
            limit: self.rate,
            retry_after: Duration::from_secs_f64(wait.clamp(0.001, 3600.0)),
        })
    }
}

/// Brings a bucket up to `now` and returns its tokens.
fn refill(bucket: &mut Bucket, rate: f64, burst: f64, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
    bucket.updated = now;
    bucket.tokens
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;

    fn tokens() -> Tokens {
        let config = AuthConfig {
            tokens: vec![
                TokenConfig {
                    token: Some("token-of-team-a-0001".into()),
                    token_file: None,
                    tenant: "team-a".into(),
                },
                TokenConfig {
                    token: Some("token-of-team-b-0002".into()),
                    token_file: None,
                    tenant: "team-b".into(),
                },
            ],
        };
        Tokens::new(&config, "X-Scope-OrgID").unwrap()
    }

    fn caller<'a>(authorization: Option<&'a str>, tenant: Option<&'a str>) -> Caller<'a> {
        Caller {
            tenant: tenant.map(str::as_bytes),
            authorization: authorization.map(str::as_bytes),
        }
    }

    #[test]
    fn a_token_writes_into_its_own_tenant_only() {
        let t = tokens();
        let ok = |a, h| t.tenant_of(caller(a, h));
        assert_eq!(
            ok(Some("Bearer token-of-team-a-0001"), None).unwrap(),
            "team-a"
        );
        assert_eq!(
            ok(Some("bearer token-of-team-b-0002"), Some("team-b")).unwrap(),
            "team-b"
        );
        assert!(matches!(
            ok(Some("Bearer token-of-team-a-0001"), Some("team-b")),
            Err(Refusal::Forbidden(_))
        ));
        for bad in [
            None,
            Some("Bearer nope"),
            Some("Basic dXNlcjpwYXNz"),
            Some("Bearer"),
        ] {
            assert!(
                matches!(ok(bad, None), Err(Refusal::Unauthenticated(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn each_tenant_has_its_own_bucket_and_waits_are_honest() {
        let limiter = RateLimiter::new(&RateLimitConfig {
            records_per_second: 100.0,
            burst: Some(200.0),
        });
        let t0 = Instant::now();
        limiter.take_at(Some("a"), 150, t0).unwrap();
        let refused = limiter.take_at(Some("a"), 100, t0).unwrap_err();
        match refused {
            Refusal::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Duration::from_millis(500))
            }
            other => panic!("{other:?}"),
        }
        limiter.take_at(Some("b"), 200, t0).unwrap();
        limiter.take_at(None, 200, t0).unwrap();
        limiter
            .take_at(Some("a"), 100, t0 + Duration::from_millis(500))
            .unwrap();
    }

    #[test]
    fn a_request_larger_than_the_burst_passes_once_the_bucket_is_full() {
        let limiter = RateLimiter::new(&RateLimitConfig {
            records_per_second: 10.0,
            burst: None,
        });
        let t0 = Instant::now();
        limiter.take_at(None, 1000, t0).unwrap();
        // In debt by 990 records: the next 100 s are refused, then it passes again.
        assert!(
            limiter
                .take_at(None, 1, t0 + Duration::from_secs(99))
                .is_err()
        );
        limiter
            .take_at(None, 1000, t0 + Duration::from_secs(100))
            .unwrap();
    }
}
