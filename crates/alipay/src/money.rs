//! Money as integer fen, parsed and printed strictly at the edge.
//!
//! Alipay writes amounts as yuan strings (`"12.50"`, requests may also send `"12"` or `"12.5"`).
//! Inside, every amount is an [`Amount`] holding fen in an `i64`; no floating point touches money.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest amount Alipay accepts on a trade: 100,000,000.00 yuan.
pub const MAX_FEN: i64 = 100_000_000 * 100;

/// A non-negative amount of money in fen (1 yuan = 100 fen), at most [`MAX_FEN`].
///
/// ```
/// use alipay::Amount;
/// let a: Amount = "12.5".parse().unwrap();
/// assert_eq!(a.fen(), 1250);
/// assert_eq!(a.to_string(), "12.50");
/// assert!("1.234".parse::<Amount>().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(i64);

/// Why an amount string or fen value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// The text is empty.
    #[error("amount is empty")]
    Empty,
    /// The text is not `digits[.d[d]]`.
    #[error("amount {0:?} is not a decimal yuan amount like \"12.50\"")]
    Malformed(String),
    /// More than two digits after the point.
    #[error("amount {0:?} has more than 2 decimal places")]
    TooPrecise(String),
    /// Negative amounts are never valid here.
    #[error("amount {0:?} is negative")]
    Negative(String),
    /// Above Alipay's limit of 100000000 yuan.
    #[error("amount {0:?} exceeds the maximum of 100000000.00 yuan")]
    TooLarge(String),
}

impl Amount {
    /// Zero fen.
    pub const ZERO: Amount = Amount(0);
    /// The largest valid amount.
    pub const MAX: Amount = Amount(MAX_FEN);

    /// An amount from fen; refuses negative values and values above [`MAX_FEN`].
    pub fn from_fen(fen: i64) -> Result<Self, AmountError> {
        if fen < 0 {
            return Err(AmountError::Negative(fen.to_string()));
        }
        if fen > MAX_FEN {
            return Err(AmountError::TooLarge(fen.to_string()));
        }
        Ok(Amount(fen))
    }

    /// The amount in fen.
    pub const fn fen(self) -> i64 {
        self.0
    }

    /// True when the amount is more than zero (trade amounts must be at least 0.01).
    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// `self + other`, or `None` above [`MAX_FEN`].
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        let sum = self.0.checked_add(other.0)?;
        (sum <= MAX_FEN).then_some(Amount(sum))
    }

    /// `self - other`, or `None` below zero.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        let diff = self.0.checked_sub(other.0)?;
        (diff >= 0).then_some(Amount(diff))
    }

    /// Parses Alipay's yuan text strictly: `"12"`, `"12.5"`, `"12.50"`; nothing else.
    pub fn parse(text: &str) -> Result<Self, AmountError> {
        let fen = parse_unsigned_fen(text)?;
        if fen > MAX_FEN {
            return Err(AmountError::TooLarge(text.to_owned()));
        }
        Ok(Amount(fen))
    }
}

/// Parses a yuan string that may carry a leading `-` (bill files print refunds negative)
/// into signed fen. Same strictness as [`Amount::parse`] otherwise.
pub fn parse_signed_fen(text: &str) -> Result<i64, AmountError> {
    match text.strip_prefix('-') {
        Some(rest) => {
            let fen = parse_unsigned_fen(rest).map_err(|e| match e {
                AmountError::Empty => AmountError::Malformed(text.to_owned()),
                other => other,
            })?;
            Ok(-fen)
        }
        None => parse_unsigned_fen(text),
    }
}

/// Formats signed fen as yuan with two decimals (`-1` → `"-0.01"`).
pub fn format_signed_fen(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

fn parse_unsigned_fen(text: &str) -> Result<i64, AmountError> {
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    if text.starts_with('-') {
        return Err(AmountError::Negative(text.to_owned()));
    }
    let (int_part, frac_part) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    let malformed = || AmountError::Malformed(text.to_owned());
    if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    // Leading zeros beyond a single "0" are not how Alipay writes amounts; refuse them
    // so that two spellings of one amount cannot both pass a string comparison upstream.
    if int_part.len() > 1 && int_part.starts_with('0') {
        return Err(malformed());
    }
    // 11 integer digits already exceed 100000000; stop before i64 overflow.
    if int_part.len() > 12 {
        return Err(AmountError::TooLarge(text.to_owned()));
    }
    let yuan: i64 = int_part.parse().map_err(|_| malformed())?;
    let frac: i64 = match frac_part {
        None => 0,
        Some(f) => {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            if f.len() > 2 {
                return Err(AmountError::TooPrecise(text.to_owned()));
            }
            let v: i64 = f.parse().map_err(|_| malformed())?;
            if f.len() == 1 { v * 10 } else { v }
        }
    };
    let fen = yuan * 100 + frac;
    if fen > MAX_FEN {
        return Err(AmountError::TooLarge(text.to_owned()));
    }
    Ok(fen)
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl FromStr for Amount {
    type Err = AmountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Amount::parse(s)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Alipay sends amounts as strings; a bare JSON number is tolerated only if it is
        // written exactly like one of the accepted strings (no exponent, ≤2 decimals).
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a yuan amount string like \"12.50\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Amount, E> {
                Amount::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Amount, E> {
                i64::try_from(v)
                    .ok()
                    .and_then(|y| y.checked_mul(100))
                    .ok_or_else(|| E::custom("amount too large"))
                    .and_then(|fen| Amount::from_fen(fen).map_err(E::custom))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_spellings_alipay_uses() {
        assert_eq!(Amount::parse("12").map(Amount::fen), Ok(1200));
        assert_eq!(Amount::parse("12.5").map(Amount::fen), Ok(1250));
        assert_eq!(Amount::parse("12.50").map(Amount::fen), Ok(1250));
        assert_eq!(Amount::parse("0.01").map(Amount::fen), Ok(1));
        assert_eq!(Amount::parse("100000000").map(Amount::fen), Ok(MAX_FEN));
        assert_eq!(Amount::parse("100000000.00").map(Amount::fen), Ok(MAX_FEN));
    }

    #[test]
    fn refuses_everything_else_with_a_reason() {
        for bad in [
            "1.234",
            "-1",
            "1e3",
            " 1",
            "1 ",
            "",
            ".5",
            "5.",
            "1,00",
            "+1",
            "NaN",
            "0x10",
            "01",
            "100000000.01",
            "999999999999999",
            "１",
            "1.2.3",
        ] {
            let err = Amount::parse(bad).expect_err(bad);
            assert!(!err.to_string().is_empty());
        }
        assert!(matches!(
            Amount::parse("1.234"),
            Err(AmountError::TooPrecise(_))
        ));
        assert!(matches!(Amount::parse("-1"), Err(AmountError::Negative(_))));
        assert!(matches!(
            Amount::parse("100000000.01"),
            Err(AmountError::TooLarge(_))
        ));
        assert!(matches!(Amount::parse(""), Err(AmountError::Empty)));
    }

    #[test]
    fn prints_two_decimals() {
        assert_eq!(Amount(0).to_string(), "0.00");
        assert_eq!(Amount(1).to_string(), "0.01");
        assert_eq!(Amount(123456).to_string(), "1234.56");
        assert_eq!(format_signed_fen(-1), "-0.01");
        assert_eq!(parse_signed_fen("-0.01"), Ok(-1));
        assert!(parse_signed_fen("-").is_err());
        assert!(parse_signed_fen("--1").is_err());
    }

    #[test]
    fn serde_round_trip_uses_strings() {
        let a = Amount(1250);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"12.50\"");
        let back: Amount = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        assert!(serde_json::from_str::<Amount>("\"1e3\"").is_err());
        assert!(serde_json::from_str::<Amount>("1.5").is_err());
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Amount(1).checked_sub(Amount(2)), None);
        assert_eq!(Amount::MAX.checked_add(Amount(1)), None);
        assert_eq!(Amount(5).checked_add(Amount(6)), Some(Amount(11)));
    }
}
