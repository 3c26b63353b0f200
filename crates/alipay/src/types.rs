//! Types shared by several APIs: trade status, buyer identity, fund bills.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::money::Amount;

/// Alipay's trade status. Only `TradeSuccess` and `TradeFinished` mean "paid".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeStatus {
    /// Created, waiting for the buyer to pay.
    WaitBuyerPay,
    /// Unpaid and closed (timeout, close, cancel), or paid and then fully refunded.
    TradeClosed,
    /// Paid; refundable.
    TradeSuccess,
    /// Paid; no longer refundable.
    TradeFinished,
}

impl TradeStatus {
    /// True for `TRADE_SUCCESS` and `TRADE_FINISHED`.
    pub fn is_paid(self) -> bool {
        matches!(self, TradeStatus::TradeSuccess | TradeStatus::TradeFinished)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TradeStatus::WaitBuyerPay => "WAIT_BUYER_PAY",
            TradeStatus::TradeClosed => "TRADE_CLOSED",
            TradeStatus::TradeSuccess => "TRADE_SUCCESS",
            TradeStatus::TradeFinished => "TRADE_FINISHED",
        }
    }

    /// Parses the wire name, exactly (case-sensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "WAIT_BUYER_PAY" => Some(TradeStatus::WaitBuyerPay),
            "TRADE_CLOSED" => Some(TradeStatus::TradeClosed),
            "TRADE_SUCCESS" => Some(TradeStatus::TradeSuccess),
            "TRADE_FINISHED" => Some(TradeStatus::TradeFinished),
            _ => None,
        }
    }
}

impl fmt::Display for TradeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user as Alipay names them: a `2088…` user id, or an app-scoped `open_id` for apps
/// migrated to open_id. Both are first-class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum UserRef {
    /// `user_id` / `buyer_id`: `2088` + 12 digits.
    UserId(String),
    /// `open_id` / `buyer_open_id`.
    OpenId(String),
}

impl UserRef {
    /// Picks whichever of the two fields is present (user id first).
    pub fn from_pair(user_id: Option<&str>, open_id: Option<&str>) -> Option<UserRef> {
        match (
            user_id.filter(|s| !s.is_empty()),
            open_id.filter(|s| !s.is_empty()),
        ) {
            (Some(u), _) => Some(UserRef::UserId(u.to_owned())),
            (None, Some(o)) => Some(UserRef::OpenId(o.to_owned())),
            (None, None) => None,
        }
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        match self {
            UserRef::UserId(s) | UserRef::OpenId(s) => s,
        }
    }
}

/// True for a well-formed Alipay user id (`2088` + 12 digits).
pub fn is_user_id(s: &str) -> bool {
    s.len() == 16 && s.starts_with("2088") && s.bytes().all(|b| b.is_ascii_digit())
}

/// One funding source of a payment (`fund_bill_list` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundBill {
    /// Channel, e.g. `ALIPAYACCOUNT`, `PCREDIT`, `MDISCOUNT`.
    #[serde(alias = "fundChannel")]
    pub fund_channel: String,
    /// Amount from this channel.
    pub amount: Amount,
    /// Amount actually paid by the buyer through this channel.
    #[serde(default, alias = "realAmount", skip_serializing_if = "Option::is_none")]
    pub real_amount: Option<Amount>,
    /// Bank code for card channels.
    #[serde(default, alias = "bankCode", skip_serializing_if = "Option::is_none")]
    pub bank_code: Option<String>,
    /// Fund type.
    #[serde(default, alias = "fundType", skip_serializing_if = "Option::is_none")]
    pub fund_type: Option<String>,
}
