//! Field checks shared by the typed requests, run by `validate()` before anything is sent.
//!
//! Each returns a message naming the field and the rule, which becomes `Failure::NotSent`.

use crate::money::Amount;
use crate::types::is_user_id;

/// Checks an `out_trade_no`-like merchant number: 1..=max of letters, digits, `_`, `-`.
pub fn validate_merchant_no(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max {
        return Err(format!("{field} must be 1 to {max} characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "{field} may hold only letters, digits, `_` and `-`"
        ));
    }
    Ok(())
}

/// Checks a trade amount: at least 0.01.
pub fn validate_trade_amount(field: &str, amount: Amount) -> Result<(), String> {
    if !amount.is_positive() {
        return Err(format!("{field} must be at least 0.01"));
    }
    Ok(())
}

/// Checks a subject: present, ≤256 characters, without `/ = &`.
pub fn validate_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() || subject.chars().count() > 256 {
        return Err("subject must be 1 to 256 characters".into());
    }
    if subject.contains(['/', '=', '&']) {
        return Err("subject must not contain `/`, `=` or `&`".into());
    }
    Ok(())
}

/// Checks that an optional text is at most `max` characters.
pub fn validate_max_chars(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.chars().count() > max {
        return Err(format!("{field} must be at most {max} characters"));
    }
    Ok(())
}

/// Checks an Alipay user id: `2088` + 12 digits.
pub fn validate_user_id(field: &str, value: &str) -> Result<(), String> {
    if !is_user_id(value) {
        return Err(format!(
            "{field} must be a 16-digit Alipay user id starting with 2088, not {value:?}"
        ));
    }
    Ok(())
}

/// Checks the "one of `out_trade_no` or `trade_no`" rule of query, cancel, close and refund.
pub fn validate_trade_ids(
    out_trade_no: Option<&str>,
    trade_no: Option<&str>,
) -> Result<(), String> {
    let out = out_trade_no.filter(|s| !s.is_empty());
    let tn = trade_no.filter(|s| !s.is_empty());
    if out.is_none() && tn.is_none() {
        return Err("one of out_trade_no or trade_no is required".into());
    }
    if let Some(o) = out {
        validate_merchant_no("out_trade_no", o, 64)?;
    }
    if let Some(t) = tn {
        validate_trade_no(t)?;
    }
    Ok(())
}

/// Checks a relative timeout: an integer with unit `m`, `h` or `d` between 1m and 15d, or
/// `1c` (closes at midnight). Fractions are refused (`1.5h` must be written `90m`).
pub fn validate_timeout_express(field: &str, value: &str) -> Result<(), String> {
    let err = || {
        format!(
            "{field} must be an integer with unit m, h or d between 1m and 15d, or 1c; not {value:?}"
        )
    };
    if value == "1c" {
        return Ok(());
    }
    let split = value.len().checked_sub(1).ok_or_else(err)?;
    let (number, unit) = value.split_at(split);
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    let n: u32 = number.parse().map_err(|_| err())?;
    let max = match unit {
        "m" => 15 * 24 * 60,
        "h" => 15 * 24,
        "d" => 15,
        _ => return Err(err()),
    };
    if n == 0 || n > max {
        return Err(err());
    }
    Ok(())
}

/// Checks a payment code: 16–24 digits starting with 25–30.
pub fn validate_bar_code(code: &str) -> Result<(), String> {
    let digits = code.bytes().all(|b| b.is_ascii_digit());
    let prefix_ok = code
        .get(..2)
        .and_then(|p| p.parse::<u8>().ok())
        .is_some_and(|p| (25..=30).contains(&p));
    if !digits || !(16..=24).contains(&code.len()) || !prefix_ok {
        return Err(
            "auth_code for scene bar_code must be 16 to 24 digits starting with 25 to 30".into(),
        );
    }
    Ok(())
}

/// Checks an Alipay trade number: 1–64 digits (28 in practice).
pub fn validate_trade_no(trade_no: &str) -> Result<(), String> {
    if trade_no.is_empty() || trade_no.len() > 64 || !trade_no.bytes().all(|b| b.is_ascii_digit()) {
        return Err("trade_no must be Alipay's numeric trade number".into());
    }
    Ok(())
}

/// Checks a face token: `fp` followed by 33 more characters (35 in all), letters and digits.
pub fn validate_ftoken(field: &str, token: &str) -> Result<(), String> {
    if token.len() != 35
        || !token.starts_with("fp")
        || !token.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(format!(
            "{field} must be a face token: `fp` followed by 33 letters or digits (35 characters)"
        ));
    }
    Ok(())
}
