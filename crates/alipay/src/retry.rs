//! When to retry: a pure function of the call kind, the attempt and why the result is unknown.
//!
//! Only read-only calls (queries) are retried automatically. A call with effects (pay, refund,
//! cancel) that ends unknown is handed back to the caller, who resolves it by querying and
//! re-sending with the *same* idempotency key.

use std::time::Duration;

use crate::outcome::Unknown;

/// Retry settings for read-only calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Delay before the first retry; doubled each time.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_retries: 0,
        base_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
    };

    /// The delay before retry number `attempt + 1`, or `None` to stop.
    pub fn delay(&self, read_only: bool, attempt: u32, why: &Unknown) -> Option<Duration> {
        if !read_only || attempt >= self.max_retries {
            return None;
        }
        let transient = match why {
            Unknown::Timeout | Unknown::Connection(_) | Unknown::Gateway(_) => true,
            Unknown::HttpStatus(status) => *status >= 500 || *status == 429,
            Unknown::InProcess { .. }
            | Unknown::BadSignature
            | Unknown::UnsignedSuccess
            | Unknown::Malformed(_)
            | Unknown::CertificateUnavailable(_) => false,
        };
        if !transient {
            return None;
        }
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        Some(self.base_delay.saturating_mul(factor).min(self.max_delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::AlipayError;

    #[test]
    fn retry_table() {
        let p = RetryPolicy::default();
        let sys = Unknown::Gateway(AlipayError {
            code: "40004".into(),
            msg: "Business Failed".into(),
            sub_code: Some("ACQ.SYSTEM_ERROR".into()),
            sub_msg: None,
        });
        let cases: &[(bool, u32, Unknown, Option<Duration>)] = &[
            (true, 0, Unknown::Timeout, Some(Duration::from_millis(200))),
            (true, 1, Unknown::Timeout, Some(Duration::from_millis(400))),
            (true, 2, Unknown::Timeout, None),
            (false, 0, Unknown::Timeout, None),
            (
                true,
                0,
                Unknown::HttpStatus(502),
                Some(Duration::from_millis(200)),
            ),
            (true, 0, Unknown::HttpStatus(404), None),
            (true, 0, Unknown::BadSignature, None),
            (true, 0, sys.clone(), Some(Duration::from_millis(200))),
            (false, 0, sys, None),
            (
                true,
                0,
                Unknown::Connection("reset".into()),
                Some(Duration::from_millis(200)),
            ),
        ];
        for (read_only, attempt, why, want) in cases {
            assert_eq!(
                p.delay(*read_only, *attempt, why),
                *want,
                "{read_only} {attempt} {why:?}"
            );
        }
        let capped = RetryPolicy {
            max_retries: 40,
            ..p
        };
        assert_eq!(
            capped.delay(true, 35, &Unknown::Timeout),
            Some(Duration::from_secs(2))
        );
    }
}
