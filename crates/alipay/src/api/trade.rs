//! 统一收单 trade APIs: precreate, create, pay, query, cancel, close, refund, refund query.

use serde::{Deserialize, Serialize};

use crate::money::Amount;
use crate::request::ApiRequest;
use crate::types::{FundBill, TradeStatus};

/// `alipay.trade.precreate`: create a trade and get a QR code for the buyer to scan.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Precreate {
    /// Our order number (≤64, letters, digits, underscore); the idempotency key.
    pub out_trade_no: String,
    /// Order amount.
    pub total_amount: Amount,
    /// Order title (no `/ = &`).
    pub subject: String,
    /// Product code; default `FACE_TO_FACE_PAYMENT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_code: Option<String>,
    /// Receiving account (collection restriction: the operator's PID).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seller_id: Option<String>,
    /// Description, echoed in notifications and the bill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Store number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    /// The machine's terminal id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
    /// Operator (staff) id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_id: Option<String>,
    /// Relative timeout (`1m`…`15d`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_express: Option<String>,
    /// Absolute expiry (`yyyy-MM-dd HH:mm:ss`); wins over `timeout_express`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    /// QR validity, counted from generation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qr_code_timeout_express: Option<String>,
    /// Goods lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goods_detail: Option<Vec<GoodsDetail>>,
    /// Extension parameters (e.g. `royalty_freeze`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extend_params: Option<ExtendParams>,
    /// Per-trade royalty split (legacy `royalty_info`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub royalty_info: Option<serde_json::Value>,
    /// Business parameters (e.g. `mc_create_trade_ip`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_params: Option<serde_json::Value>,
    /// Echoed in the notification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passback_params: Option<String>,
}

impl Precreate {
    /// A precreate with the required fields.
    pub fn new(
        out_trade_no: impl Into<String>,
        total_amount: Amount,
        subject: impl Into<String>,
    ) -> Self {
        Precreate {
            out_trade_no: out_trade_no.into(),
            total_amount,
            subject: subject.into(),
            ..Default::default()
        }
    }

    /// Sets `terminal_id`.
    pub fn terminal_id(mut self, id: impl Into<String>) -> Self {
        self.terminal_id = Some(id.into());
        self
    }

    /// Sets `seller_id`.
    pub fn seller_id(mut self, id: impl Into<String>) -> Self {
        self.seller_id = Some(id.into());
        self
    }

    /// Sets `timeout_express`.
    pub fn timeout_express(mut self, t: impl Into<String>) -> Self {
        self.timeout_express = Some(t.into());
        self
    }
}

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

impl ApiRequest for Precreate {
    const METHOD: &'static str = "alipay.trade.precreate";
    type Response = PrecreateResponse;
    fn out_trade_no(&self) -> Option<&str> {
        Some(&self.out_trade_no)
    }
    fn validate(&self) -> Result<(), String> {
        validate_merchant_no("out_trade_no", &self.out_trade_no, 64)?;
        validate_trade_amount("total_amount", self.total_amount)?;
        validate_subject(&self.subject)?;
        if let Some(t) = &self.terminal_id
            && t.len() > 32
        {
            return Err("terminal_id must be at most 32 characters".into());
        }
        Ok(())
    }
}

/// Answer to `alipay.trade.precreate`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PrecreateResponse {
    /// Our order number.
    pub out_trade_no: String,
    /// The QR code content to render.
    pub qr_code: String,
}

/// One goods line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoodsDetail {
    /// Goods id.
    pub goods_id: String,
    /// Goods name.
    pub goods_name: String,
    /// Quantity.
    pub quantity: u32,
    /// Unit price.
    pub price: Amount,
    /// Category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goods_category: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// `extend_params`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtendParams {
    /// ISV PID for rebates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sys_service_provider_id: Option<String>,
    /// `"true"` freezes the funds for a later `alipay.trade.order.settle`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub royalty_freeze: Option<String>,
    /// Specified seller name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub specified_seller_name: Option<String>,
}

/// `alipay.trade.query`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Query {
    /// Our order number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    /// Alipay's trade number (wins when both are given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    /// Extra sections: `trade_settle_info`, `fund_bill_list`, …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_options: Option<Vec<String>>,
}

impl Query {
    /// Query by our order number.
    pub fn by_out_trade_no(out_trade_no: impl Into<String>) -> Self {
        Query {
            out_trade_no: Some(out_trade_no.into()),
            ..Default::default()
        }
    }

    /// Query by Alipay's trade number.
    pub fn by_trade_no(trade_no: impl Into<String>) -> Self {
        Query {
            trade_no: Some(trade_no.into()),
            ..Default::default()
        }
    }
}

impl ApiRequest for Query {
    const METHOD: &'static str = "alipay.trade.query";
    type Response = QueryResponse;
    const READ_ONLY: bool = true;
    fn out_trade_no(&self) -> Option<&str> {
        self.out_trade_no.as_deref()
    }
    fn validate(&self) -> Result<(), String> {
        if self.out_trade_no.is_none() && self.trade_no.is_none() {
            return Err("one of out_trade_no or trade_no is required".into());
        }
        Ok(())
    }
}

/// Answer to `alipay.trade.query`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QueryResponse {
    /// Alipay's trade number.
    pub trade_no: String,
    /// Our order number.
    pub out_trade_no: String,
    /// Current status.
    pub trade_status: TradeStatus,
    /// Order amount.
    pub total_amount: Amount,
    /// Buyer user id (user_id apps).
    pub buyer_user_id: Option<String>,
    /// Buyer open id (open_id apps).
    pub buyer_open_id: Option<String>,
    /// Masked buyer login.
    pub buyer_logon_id: Option<String>,
    /// Paid by the buyer.
    pub buyer_pay_amount: Option<Amount>,
    /// Received by the merchant.
    pub receipt_amount: Option<Amount>,
    /// Invoiceable.
    pub invoice_amount: Option<Amount>,
    /// Paid in points.
    pub point_amount: Option<Amount>,
    /// Payment time.
    pub send_pay_date: Option<String>,
    /// Store.
    pub store_id: Option<String>,
    /// Terminal (machine).
    pub terminal_id: Option<String>,
    /// Funding sources.
    #[serde(default)]
    pub fund_bill_list: Vec<FundBill>,
    /// Subject.
    pub subject: Option<String>,
    /// Body.
    pub body: Option<String>,
}
