//! Payment codes (付款码): what the buyer's wallet shows at a till and the merchant scans for
//! `alipay.trade.pay` with `scene=bar_code`. The control API issues them for a buyer.

use crate::error::ApiError;
use crate::ids;
use crate::model::{Millis, PaymentCode};
use crate::store::Store;

/// How long a payment code is accepted. A wallet refreshes its code every minute; real codes
/// stay valid a little longer (exact lifetime unconfirmed), so the sandbox allows two minutes.
pub const CODE_TTL_MS: i64 = 2 * 60_000;

/// Issues a fresh single-use payment code for an existing buyer.
pub fn issue_payment_code(
    store: &mut Store,
    user_id: &str,
    now: Millis,
) -> Result<PaymentCode, String> {
    if !store.data.buyers.contains_key(user_id) {
        return Err(format!("no buyer {user_id}"));
    }
    let code = PaymentCode {
        code: format!("28{}", random_digits(16)),
        user_id: user_id.to_owned(),
        expires_at: now + CODE_TTL_MS,
        used: false,
    };
    store.put_payment_code(code.clone());
    Ok(code)
}

/// True for text shaped like a payment code: 16–24 digits starting 25–30.
pub fn is_payment_code_shape(code: &str) -> bool {
    (16..=24).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_digit())
        && matches!(code.get(..2), Some("25" | "26" | "27" | "28" | "29" | "30"))
}

/// The buyer behind a usable payment code (not consumed: see [`consume`]).
pub fn buyer_of_code(store: &Store, code: &str, now: Millis) -> Result<String, ApiError> {
    if !is_payment_code_shape(code) {
        return Err(invalid_code());
    }
    store
        .data
        .payment_codes
        .get(code)
        .filter(|c| !c.used && now < c.expires_at)
        .map(|c| c.user_id.clone())
        .ok_or_else(invalid_code)
}

/// Marks a payment code used, once a trade has been made with it.
pub fn consume(store: &mut Store, code: &str) {
    if let Some(mut c) = store.data.payment_codes.get(code).cloned() {
        c.used = true;
        store.put_payment_code(c);
    }
}

/// Alipay's answer to a wrong, expired or already used payment code or face token.
pub fn invalid_code() -> ApiError {
    ApiError::business(
        "ACQ.PAYMENT_AUTH_CODE_INVALID",
        "支付失败，获取顾客账户信息失败，请顾客刷新付款码后重新收款",
    )
}

/// `n` random decimal digits. Derived from random hex with `% 10`: the slight bias towards
/// low digits does not matter for sandbox codes, which only need to be unguessable in practice.
fn random_digits(n: usize) -> String {
    ids::random_hex(n)
        .bytes()
        .map(|b| {
            let v = (b as char).to_digit(16).unwrap_or(0) % 10;
            char::from(b'0' + v as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_code_shapes_follow_alipays_rule() {
        assert!(is_payment_code_shape("281234567890123456"));
        assert!(is_payment_code_shape("2512345678901234"));
        assert!(!is_payment_code_shape("311234567890123456"));
        assert!(!is_payment_code_shape("24123456789012345"));
        assert!(!is_payment_code_shape("28123456789012"));
        assert!(!is_payment_code_shape("28123456789012345a"));
        assert!(!is_payment_code_shape(""));
    }

    #[test]
    fn codes_are_only_issued_to_known_buyers() {
        let mut store = Store::in_memory();
        assert!(issue_payment_code(&mut store, "2088000000000001", 0).is_err());
    }
}
