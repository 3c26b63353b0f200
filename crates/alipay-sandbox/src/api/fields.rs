//! Reading `biz_content` fields with Alipay's errors for missing and malformed values.

use alipay::money::{Amount, AmountError};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// A required string field.
pub fn req_str<'a>(biz: &'a Map<String, Value>, name: &str) -> Result<&'a str, ApiError> {
    opt_str(biz, name)?.ok_or_else(|| ApiError::bad_param(format!("缺少必选参数{name}")))
}

/// An optional string field (empty counts as absent; a non-string is an error).
pub fn opt_str<'a>(biz: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, ApiError> {
    match biz.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_param(format!(
            "参数{name}类型错误，应为字符串"
        ))),
    }
}

/// An optional owned string.
pub fn opt_string(biz: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    Ok(opt_str(biz, name)?.map(str::to_owned))
}

/// A required trade amount in fen, within [0.01, 100000000].
pub fn req_amount(biz: &Map<String, Value>, name: &str) -> Result<i64, ApiError> {
    let text = match biz.get(name) {
        None | Some(Value::Null) => return Err(ApiError::bad_param(format!("缺少必选参数{name}"))),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(ApiError::bad_param(format!("参数{name}类型错误"))),
    };
    parse_amount(name, &text)
}

/// An optional amount.
pub fn opt_amount(biz: &Map<String, Value>, name: &str) -> Result<Option<i64>, ApiError> {
    match biz.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(_) => req_amount(biz, name).map(Some),
    }
}

/// Parses an amount string into positive fen.
pub fn parse_amount(name: &str, text: &str) -> Result<i64, ApiError> {
    match Amount::parse(text) {
        Ok(a) if a.is_positive() => Ok(a.fen()),
        Ok(_) => Err(ApiError::business(
            "ACQ.TOTAL_FEE_EXCEED",
            format!("{name}金额必须大于0"),
        )),
        Err(AmountError::TooLarge(_)) => Err(ApiError::business(
            "ACQ.TOTAL_FEE_EXCEED",
            format!("{name}超出最大金额100000000"),
        )),
        Err(AmountError::Negative(_)) => Err(ApiError::business(
            "ACQ.TOTAL_FEE_EXCEED",
            format!("{name}金额不能为负"),
        )),
        Err(e) => Err(ApiError::bad_param(format!("参数{name}格式错误: {e}"))),
    }
}

/// Prints fen as Alipay prints amounts.
pub fn yuan(fen: i64) -> String {
    alipay::money::format_signed_fen(fen)
}

/// Checks a merchant number (`out_trade_no`, `out_request_no`): 1..=max of letters, digits, `_`.
pub fn check_merchant_no(name: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.is_empty()
        || value.len() > max
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ApiError::bad_param(format!(
            "参数{name}格式错误，应为不超过{max}位的字母、数字或下划线"
        )));
    }
    Ok(())
}

/// Checks a string length limit (in characters).
pub fn check_len(name: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::bad_param(format!("参数{name}超过最大长度{max}")));
    }
    Ok(())
}

/// Parses a relative timeout (`90m`, `3h`, `15d`, `1c`) into ms from `now`; `None` if invalid.
pub fn parse_timeout(text: &str, now: crate::model::Millis) -> Option<i64> {
    if text == "1c" {
        // Closes at 00:00 (Beijing) after today.
        let t = crate::clock::to_datetime(now).to_offset(alipay::time::BEIJING);
        let midnight = t
            .date()
            .next_day()?
            .midnight()
            .assume_offset(alipay::time::BEIJING);
        return Some(midnight.unix_timestamp() * 1000 - now);
    }
    let (num, unit) = text.split_at(text.len().checked_sub(1)?);
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = num.parse().ok()?;
    let minutes = match unit {
        "m" => n,
        "h" => n.checked_mul(60)?,
        "d" => n.checked_mul(1440)?,
        _ => return None,
    };
    // Alipay accepts 1m to 15d.
    if !(1..=15 * 1440).contains(&minutes) {
        return None;
    }
    Some(minutes * 60_000)
}

/// Masks a login the way Alipay shows buyers: `abc***@sandbox.com`, `138******00`.
pub fn mask_logon(logon: &str) -> String {
    match logon.split_once('@') {
        Some((name, domain)) => {
            let keep: String = name.chars().take(3).collect();
            format!("{keep}***@{domain}")
        }
        None => {
            let chars: Vec<char> = logon.chars().collect();
            if chars.len() <= 5 {
                return "***".into();
            }
            let head: String = chars[..3].iter().collect();
            let tail: String = chars[chars.len() - 2..].iter().collect();
            format!("{head}******{tail}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_follow_alipays_syntax() {
        assert_eq!(parse_timeout("5m", 0), Some(300_000));
        assert_eq!(parse_timeout("2h", 0), Some(7_200_000));
        assert_eq!(parse_timeout("15d", 0), Some(15 * 86_400_000));
        assert_eq!(parse_timeout("16d", 0), None);
        assert_eq!(parse_timeout("1.5h", 0), None);
        assert_eq!(parse_timeout("0m", 0), None);
        assert_eq!(parse_timeout("m", 0), None);
        assert_eq!(parse_timeout("", 0), None);
        assert!(parse_timeout("1c", 0).is_some_and(|ms| ms > 0 && ms <= 86_400_000));
    }

    #[test]
    fn amounts_map_to_alipay_errors() {
        assert_eq!(parse_amount("total_amount", "0.01"), Ok(1));
        assert_eq!(
            parse_amount("total_amount", "0").map_err(|e| e.sub_code),
            Err("ACQ.TOTAL_FEE_EXCEED".into())
        );
        assert_eq!(
            parse_amount("total_amount", "100000000.01").map_err(|e| e.sub_code),
            Err("ACQ.TOTAL_FEE_EXCEED".into())
        );
        assert_eq!(
            parse_amount("total_amount", "1.001").map_err(|e| e.sub_code),
            Err("ACQ.INVALID_PARAMETER".into())
        );
    }
}
