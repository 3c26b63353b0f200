//! The sandbox clock: real time plus an offset that the control API can advance, so tests
//! can expire trades, codes and bill URLs, and run notification schedules, without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

use crate::model::Millis;

/// Real time shifted by an adjustable offset.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    /// A clock with the given offset.
    pub fn with_offset(offset_ms: i64) -> Self {
        Clock {
            offset_ms: AtomicI64::new(offset_ms),
        }
    }

    /// Now, in ms since the epoch.
    pub fn now_ms(&self) -> Millis {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        real + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Now, as a date-time.
    pub fn now(&self) -> OffsetDateTime {
        to_datetime(self.now_ms())
    }

    /// Moves the clock forward by `ms`; returns the new offset.
    pub fn advance(&self, ms: i64) -> i64 {
        self.offset_ms.fetch_add(ms, Ordering::Relaxed) + ms
    }

    /// The current offset.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

/// Milliseconds to a UTC date-time.
pub fn to_datetime(ms: Millis) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Alipay's `yyyy-MM-dd HH:mm:ss` (Beijing) for a time in ms.
pub fn fmt_ms(ms: Millis) -> String {
    alipay::time::format_timestamp(to_datetime(ms))
}
