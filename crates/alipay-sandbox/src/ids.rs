//! Identifier formats: trade numbers, user ids, notify ids, settle numbers, auth numbers.

use crate::clock::to_datetime;
use crate::model::Millis;

fn yyyymmdd(now: Millis) -> String {
    let t = to_datetime(now).to_offset(alipay::time::BEIJING);
    format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day())
}

/// A 28-digit trade number with the date prefix, like `2023060122001462650500142964`.
pub fn trade_no(now: Millis, seq: u64) -> String {
    format!("{}22001{:015}", yyyymmdd(now), seq % 1_000_000_000_000_000)
}

/// A 16-digit user id `2088…`.
pub fn user_id(seq: u64) -> String {
    format!("2088{:012}", 102_000_000_000 + seq % 100_000_000_000)
}

/// An app-scoped open id for a user (stable, different per app).
pub fn open_id(app_id: &str, user_id: &str) -> String {
    let digest = stable_digest(format!("{app_id}:{user_id}").as_bytes());
    format!("0{}", &digest[..40])
}

/// A notify id (34 characters, like Alipay's).
pub fn notify_id() -> String {
    random_hex(34)
}

/// A settle number (32 digits).
pub fn settle_no(now: Millis, seq: u64) -> String {
    format!("{}0025300{:017}", yyyymmdd(now), seq)
}

/// A fund-auth number (`auth_no`, 28 digits).
pub fn auth_no(now: Millis, seq: u64) -> String {
    format!("{}10002001{:012}", yyyymmdd(now), seq % 1_000_000_000_000)
}

/// An operation id.
pub fn operation_id(now: Millis, seq: u64) -> String {
    format!("{}20001{:015}", yyyymmdd(now), seq)
}

/// An agreement number (20 digits).
pub fn agreement_no(now: Millis, seq: u64) -> String {
    format!("{}{:012}", yyyymmdd(now), seq)
}

/// A one-time OAuth code (32 characters, unguessable).
pub fn auth_code() -> String {
    random_hex(32)
}

/// An access or refresh token (unguessable).
pub fn token(prefix: &str) -> String {
    format!("{prefix}{}", random_hex(40))
}

/// A face token: `fp` + 33 characters (unguessable).
pub fn ftoken() -> String {
    format!("fp{}", random_hex(33))
}

/// `len` random hex characters from the system CSPRNG.
pub fn random_hex(len: usize) -> String {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = vec![0u8; len.div_ceil(2)];
    // The system RNG does not fail on Linux; if it ever did, ids would still be unique
    // through the counter-based formats used elsewhere, so fall back to zeros.
    let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes);
    let mut out: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    out.truncate(len);
    out
}

/// A stable digest-like string (FNV-1a based): app-scoped open ids must be the same for the
/// same user and app every time, without storing them.
fn stable_digest(input: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::with_capacity(64);
    for round in 0u64..4 {
        for b in input.iter().chain(round.to_le_bytes().iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}
