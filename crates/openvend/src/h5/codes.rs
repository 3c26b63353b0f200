//! SMS verification codes and their abuse limits.
//!
//! A code is 6 random digits, stored only as a keyed hash, valid for 5 minutes and for 5
//! tries, and used once. Only the newest code of a phone counts. Sends are limited to one per
//! phone per 60 s (`sms.resend_secs`) and to a daily (rolling 24 h) number per phone and per IP address; the rows
//! of sent codes are the send log the limits count. The answer to a send never says whether
//! the number belongs to an account.

use aws_lc_rs::rand::SecureRandom as _;

use super::keys::Keys;
use crate::store::{Backend, Db, get_int};

/// A code is valid this long.
pub const CODE_TTL_MS: i64 = 5 * 60_000;
/// Wrong tries allowed per code.
pub const MAX_ATTEMPTS: i64 = 5;
const DAY_MS: i64 = 24 * 3_600_000;

/// Send limits (from `[sms]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// One send per phone per this many ms.
    pub resend_ms: i64,
    /// Codes per phone per 24 h.
    pub per_phone: u32,
    /// Codes per IP per 24 h.
    pub per_ip: u32,
}

/// Why no code was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendRefused {
    /// A code went to this phone less than 60 s ago.
    TooSoon {
        /// Seconds to wait.
        wait_secs: i64,
    },
    /// The phone's daily cap is reached.
    PhoneCap,
    /// The IP's daily cap is reached.
    IpCap,
}

/// Why a code was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeRefused {
    /// No code was sent to this phone from this session.
    NoCode,
    /// The code was already used.
    Used,
    /// The code is too old.
    Expired,
    /// Five wrong tries used this code up.
    NoAttemptsLeft,
    /// Wrong; tries left.
    Wrong {
        /// Tries left on this code.
        left: i64,
    },
}

/// Six uniformly random digits.
fn random_code() -> anyhow::Result<String> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    loop {
        let mut b = [0u8; 4];
        rng.fill(&mut b)
            .map_err(|_| anyhow::anyhow!("no randomness for a code"))?;
        let n = u32::from_le_bytes(b);
        // Rejection sampling: no digit is likelier than another.
        if n < 4_294_000_000 {
            return Ok(format!("{:06}", n % 1_000_000));
        }
    }
}

/// Checks the limits and records a new code for `phone_index`; returns the code to send.
pub async fn issue(
    db: &Db,
    keys: &Keys,
    phone_index: &str,
    session_id: i64,
    ip: &str,
    limits: Limits,
    now: i64,
) -> anyhow::Result<Result<String, SendRefused>> {
    let mut tx = db.begin().await?;
    // Serialise sends to one phone, so two requests at once cannot both pass the checks.
    match db.backend {
        Backend::Postgres => {
            crate::store::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(phone_index)
                .execute(&mut *tx)
                .await?;
        }
        // A write as the first statement takes SQLite's write lock for the transaction.
        Backend::Sqlite => {
            crate::store::query("UPDATE sms_codes SET attempts = attempts WHERE id = -1")
                .execute(&mut *tx)
                .await?;
        }
    }
    // Rows older than the longest window count for nothing any more.
    crate::store::query("DELETE FROM sms_codes WHERE sent_at < $1")
        .bind(now - 2 * DAY_MS)
        .execute(&mut *tx)
        .await?;
    let phone = crate::store::query(
        "SELECT COUNT(*) AS n, MAX(sent_at) AS last FROM sms_codes WHERE phone_index = $1 AND sent_at > $2",
    )
    .bind(phone_index)
    .bind(now - DAY_MS)
    .fetch_one(&mut *tx)
    .await?;
    let last: Option<i64> = phone.try_get("last")?;
    if let Some(last) = last
        && now - last < limits.resend_ms
    {
        let wait_secs = (limits.resend_ms - (now - last) + 999) / 1000;
        return Ok(Err(SendRefused::TooSoon { wait_secs }));
    }
    if get_int(&phone, "n")? >= i64::from(limits.per_phone) {
        return Ok(Err(SendRefused::PhoneCap));
    }
    let from_ip =
        crate::store::query("SELECT COUNT(*) AS n FROM sms_codes WHERE ip = $1 AND sent_at > $2")
            .bind(ip)
            .bind(now - DAY_MS)
            .fetch_one(&mut *tx)
            .await?;
    if get_int(&from_ip, "n")? >= i64::from(limits.per_ip) {
        return Ok(Err(SendRefused::IpCap));
    }
    let code = random_code()?;
    crate::store::query(
        "INSERT INTO sms_codes (phone_index, session_id, ip, code_hash, attempts, sent_at, expires_at) VALUES ($1, $2, $3, $4, 0, $5, $6)",
    )
    .bind(phone_index)
    .bind(session_id)
    .bind(ip)
    .bind(keys.code_hash(phone_index, &code))
    .bind(now)
    .bind(now + CODE_TTL_MS)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(code))
}

/// Checks `code` against the newest code of `phone_index`, in the caller's transaction: a
/// wrong try is counted there (commit it), a right one marks the code used.
pub async fn check(
    tx: &mut crate::store::Conn,
    keys: &Keys,
    phone_index: &str,
    session_id: i64,
    code: &str,
    now: i64,
) -> anyhow::Result<Result<(), CodeRefused>> {
    let row = crate::store::query(
        "SELECT id, session_id, code_hash, attempts, expires_at, used_at FROM sms_codes \
         WHERE phone_index = $1 ORDER BY sent_at DESC, id DESC LIMIT 1",
    )
    .bind(phone_index)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(Err(CodeRefused::NoCode));
    };
    if row.try_get::<i64, _>("session_id")? != session_id {
        return Ok(Err(CodeRefused::NoCode));
    }
    let id: i64 = row.try_get("id")?;
    if row.try_get::<Option<i64>, _>("used_at")?.is_some() {
        return Ok(Err(CodeRefused::Used));
    }
    if row.try_get::<i64, _>("expires_at")? <= now {
        return Ok(Err(CodeRefused::Expired));
    }
    let attempts = get_int(&row, "attempts")?;
    if attempts >= MAX_ATTEMPTS {
        return Ok(Err(CodeRefused::NoAttemptsLeft));
    }
    let want: String = row.try_get("code_hash")?;
    let given = keys.code_hash(phone_index, code);
    let right =
        aws_lc_rs::constant_time::verify_slices_are_equal(want.as_bytes(), given.as_bytes())
            .is_ok();
    if !right {
        crate::store::query("UPDATE sms_codes SET attempts = attempts + 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        return Ok(Err(CodeRefused::Wrong {
            left: MAX_ATTEMPTS - attempts - 1,
        }));
    }
    let done =
        crate::store::query("UPDATE sms_codes SET used_at = $1 WHERE id = $2 AND used_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    if done.rows_affected() != 1 {
        return Ok(Err(CodeRefused::Used));
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn codes_are_six_digits() {
        for _ in 0..100 {
            let c = super::random_code().unwrap();
            assert!(c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit()), "{c}");
        }
    }
}
