//! 统一收单 trade APIs: precreate, create, pay, query, cancel, close, refund, refund query
//! (§3 of the reference), and the field checks they share.

use serde::{Deserialize, Serialize};

use super::checks::{
    validate_bar_code, validate_ftoken, validate_max_chars, validate_timeout_express,
    validate_trade_ids, validate_user_id,
};
use super::royalty::{RoyaltyInfo, RoyaltyParameter};
// Re-exported: these were first published from this module.
pub use super::checks::{validate_merchant_no, validate_subject, validate_trade_amount};
use super::wire;
use crate::money::Amount;
use crate::request::ApiRequest;
use crate::types::{FundBill, TradeStatus, UserRef};

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
    pub royalty_info: Option<RoyaltyInfo>,
    /// Business parameters (e.g. `mc_create_trade_ip`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_params: Option<serde_json::Value>,
    /// Echoed in the notification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passback_params: Option<String>,
    /// Part of the amount open to discounts; with `undiscountable_amount` they sum to
    /// `total_amount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discountable_amount: Option<Amount>,
    /// Part of the amount closed to discounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undiscountable_amount: Option<Amount>,
    /// Channels to exclude (comma list); exclusive with `enable_pay_channels`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_pay_channels: Option<String>,
    /// Channels to allow (comma list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_pay_channels: Option<String>,
    /// Our original order number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_order_no: Option<String>,
    /// Extra answer sections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_options: Option<Vec<String>>,
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

impl Precreate {
    /// Sets `qr_code_timeout_express`: how long the code can be scanned, counted from this
    /// call (at most 2 hours); `timeout_express` counts from the scan.
    pub fn qr_code_timeout_express(mut self, t: impl Into<String>) -> Self {
        self.qr_code_timeout_express = Some(t.into());
        self
    }

    /// Sets the per-trade split (legacy `royalty_info`), checked against the amount by
    /// `validate()`.
    pub fn royalty_info(mut self, info: RoyaltyInfo) -> Self {
        self.royalty_info = Some(info);
        self
    }
}

impl ApiRequest for Precreate {
    const METHOD: &'static str = "alipay.trade.precreate";
    type Response = PrecreateResponse;
    fn out_trade_no(&self) -> Option<&str> {
        Some(&self.out_trade_no)
    }
    fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.qr_code_timeout_express {
            validate_timeout_express("qr_code_timeout_express", t)?;
        }
        validate_order(&OrderFields {
            out_trade_no: &self.out_trade_no,
            total_amount: self.total_amount,
            subject: &self.subject,
            body: self.body.as_deref(),
            store_id: self.store_id.as_deref(),
            terminal_id: self.terminal_id.as_deref(),
            operator_id: self.operator_id.as_deref(),
            seller_id: self.seller_id.as_deref(),
            goods_detail: self.goods_detail.as_deref(),
            royalty_info: self.royalty_info.as_ref(),
            discountable_amount: self.discountable_amount,
            undiscountable_amount: self.undiscountable_amount,
            disable_pay_channels: self.disable_pay_channels.as_deref(),
            enable_pay_channels: self.enable_pay_channels.as_deref(),
            timeout_express: self.timeout_express.as_deref(),
            time_expire: self.time_expire.as_deref(),
        })
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
    /// Extra sections: `trade_settle_info`, `fund_bill_list`, `voucher_detail_list`,
    /// `discount_goods_detail`, `mdiscount_amount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_options: Option<Vec<String>>,
    /// The merchant's PID, for ISV queries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_pid: Option<String>,
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
        validate_trade_ids(self.out_trade_no.as_deref(), self.trade_no.as_deref())
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
    /// Store name.
    pub store_name: Option<String>,
    /// Echo of `passback_params`.
    pub passback_params: Option<String>,
    /// Settlement (split) details, with query option `trade_settle_info`.
    pub trade_settle_info: Option<TradeSettleInfo>,
    /// `CREDIT_PREAUTH_PAY` for credit pre-auth payments.
    pub auth_trade_pay_mode: Option<String>,
    /// `CORPORATE` or `PRIVATE`.
    pub buyer_user_type: Option<String>,
    /// Platform discount.
    pub discount_amount: Option<Amount>,
    /// Merchant discount.
    pub mdiscount_amount: Option<Amount>,
}

impl QueryResponse {
    /// The buyer, by user id or open_id.
    pub fn buyer(&self) -> Option<UserRef> {
        UserRef::from_pair(self.buyer_user_id.as_deref(), self.buyer_open_id.as_deref())
    }
}

/// `trade_settle_info` of a query answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TradeSettleInfo {
    /// Settlement operations.
    #[serde(default)]
    pub trade_settle_detail_list: Vec<TradeSettleDetail>,
    /// Still unsettled.
    pub trade_unsettled_amount: Option<Amount>,
}

/// One settlement operation of a trade.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TradeSettleDetail {
    /// Operation type (e.g. `replenish`, `transfer`).
    pub operation_type: Option<String>,
    /// Operation serial number.
    pub operation_serial_no: Option<String>,
    /// Operation time.
    pub operation_dt: Option<String>,
    /// Payer.
    pub trans_out: Option<String>,
    /// Receiver.
    pub trans_in: Option<String>,
    /// Amount.
    pub amount: Option<Amount>,
    /// Original payer.
    pub ori_trans_out: Option<String>,
    /// Original receiver.
    pub ori_trans_in: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Order checks shared by precreate, create and pay.

/// Checks a buyer given as `buyer_id` or `buyer_open_id` (never both).
fn validate_buyer(buyer_id: Option<&str>, buyer_open_id: Option<&str>) -> Result<(), String> {
    match (buyer_id, buyer_open_id) {
        (Some(_), Some(_)) => Err("give buyer_id or buyer_open_id, not both".into()),
        (Some(id), None) => validate_user_id("buyer_id", id),
        (None, Some(open_id)) => {
            if open_id.is_empty() || open_id.len() > 128 {
                return Err("buyer_open_id must be 1 to 128 characters".into());
            }
            Ok(())
        }
        (None, None) => Ok(()),
    }
}

/// The order fields shared by precreate, create and pay, borrowed for checking.
struct OrderFields<'a> {
    out_trade_no: &'a str,
    total_amount: Amount,
    subject: &'a str,
    body: Option<&'a str>,
    store_id: Option<&'a str>,
    terminal_id: Option<&'a str>,
    operator_id: Option<&'a str>,
    seller_id: Option<&'a str>,
    goods_detail: Option<&'a [GoodsDetail]>,
    royalty_info: Option<&'a RoyaltyInfo>,
    discountable_amount: Option<Amount>,
    undiscountable_amount: Option<Amount>,
    disable_pay_channels: Option<&'a str>,
    enable_pay_channels: Option<&'a str>,
    timeout_express: Option<&'a str>,
    time_expire: Option<&'a str>,
}

/// The §3.0 rules on the fields every order carries.
fn validate_order(o: &OrderFields<'_>) -> Result<(), String> {
    validate_merchant_no("out_trade_no", o.out_trade_no, 64)?;
    validate_trade_amount("total_amount", o.total_amount)?;
    validate_subject(o.subject)?;
    let limits = [
        ("body", o.body, 128),
        ("store_id", o.store_id, 32),
        ("terminal_id", o.terminal_id, 32),
        ("operator_id", o.operator_id, 28),
    ];
    for (field, value, max) in limits {
        if let Some(v) = value {
            validate_max_chars(field, v, max)?;
        }
    }
    if let Some(seller) = o.seller_id {
        validate_user_id("seller_id", seller)?;
    }
    if let Some(goods) = o.goods_detail {
        if goods.len() > 150 {
            return Err("goods_detail holds at most 150 items".into());
        }
        for (i, g) in goods.iter().enumerate() {
            if g.goods_id.is_empty() || g.goods_id.chars().count() > 32 {
                return Err(format!(
                    "goods_detail[{i}].goods_id must be 1 to 32 characters"
                ));
            }
            if g.goods_name.is_empty() || g.goods_name.chars().count() > 256 {
                return Err(format!(
                    "goods_detail[{i}].goods_name must be 1 to 256 characters"
                ));
            }
        }
    }
    if let Some(r) = o.royalty_info {
        r.validate(o.total_amount)?;
    }
    match (o.discountable_amount, o.undiscountable_amount) {
        (Some(d), Some(u)) if d.checked_add(u) != Some(o.total_amount) => {
            return Err(format!(
                "discountable_amount {d} + undiscountable_amount {u} must equal total_amount {}",
                o.total_amount
            ));
        }
        (Some(part), None) | (None, Some(part)) if part > o.total_amount => {
            return Err(format!(
                "discountable/undiscountable amount {part} exceeds total_amount {}",
                o.total_amount
            ));
        }
        _ => {}
    }
    if let Some(t) = o.timeout_express {
        validate_timeout_express("timeout_express", t)?;
    }
    if let Some(t) = o.time_expire
        && crate::time::parse_timestamp(t).is_none()
    {
        return Err(format!(
            "time_expire must be yyyy-MM-dd HH:mm:ss, not {t:?}"
        ));
    }
    validate_channels(o.disable_pay_channels, o.enable_pay_channels)
}

// ---------------------------------------------------------------------------------------------
// alipay.trade.create (§3.2).

/// `alipay.trade.create`: create a trade for a known buyer (JSAPI `tradePay` inside Alipay).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Create {
    /// Our order number; the idempotency key.
    pub out_trade_no: String,
    /// Order amount.
    pub total_amount: Amount,
    /// Order title.
    pub subject: String,
    /// Buyer `2088…` id (from OAuth); exclusive with `buyer_open_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_id: Option<String>,
    /// Buyer open_id (open_id apps); exclusive with `buyer_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_open_id: Option<String>,
    /// Mini-program app id for cross-app cases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op_app_id: Option<String>,
    /// Buyer open_id under `op_app_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op_buyer_open_id: Option<String>,
    /// `FACE_TO_FACE_PAYMENT` (default) or `JSAPI_PAY`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_code: Option<String>,
    /// Receiving account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seller_id: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Store number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    /// Machine terminal id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
    /// Operator id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_id: Option<String>,
    /// Relative timeout (`1m`…`15d`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_express: Option<String>,
    /// Absolute expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    /// Goods lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goods_detail: Option<Vec<GoodsDetail>>,
    /// Extension parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extend_params: Option<ExtendParams>,
    /// Per-trade split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub royalty_info: Option<RoyaltyInfo>,
    /// Business parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_params: Option<serde_json::Value>,
    /// Echoed in the notification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passback_params: Option<String>,
    /// Channels to exclude (comma list); exclusive with `enable_pay_channels`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_pay_channels: Option<String>,
    /// Channels to allow (comma list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_pay_channels: Option<String>,
    /// Merchant's original order number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_order_no: Option<String>,
    /// Part of the amount open to discounts; with `undiscountable_amount` they sum to
    /// `total_amount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discountable_amount: Option<Amount>,
    /// Part of the amount closed to discounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undiscountable_amount: Option<Amount>,
}

impl Create {
    /// A trade for `buyer`, who will pay inside Alipay.
    pub fn new(
        out_trade_no: impl Into<String>,
        total_amount: Amount,
        subject: impl Into<String>,
        buyer: UserRef,
    ) -> Self {
        let (buyer_id, buyer_open_id) = split_user(buyer);
        Create {
            out_trade_no: out_trade_no.into(),
            total_amount,
            subject: subject.into(),
            buyer_id,
            buyer_open_id,
            ..Default::default()
        }
    }

    /// Sets `terminal_id`.
    pub fn terminal_id(mut self, id: impl Into<String>) -> Self {
        self.terminal_id = Some(id.into());
        self
    }

    /// Sets the per-trade split.
    pub fn royalty_info(mut self, info: RoyaltyInfo) -> Self {
        self.royalty_info = Some(info);
        self
    }
}

/// `(buyer_id, buyer_open_id)` for a user.
fn split_user(user: UserRef) -> (Option<String>, Option<String>) {
    match user {
        UserRef::UserId(id) => (Some(id), None),
        UserRef::OpenId(id) => (None, Some(id)),
    }
}

fn validate_channels(disable: Option<&str>, enable: Option<&str>) -> Result<(), String> {
    if disable.is_some() && enable.is_some() {
        return Err("disable_pay_channels and enable_pay_channels are mutually exclusive".into());
    }
    Ok(())
}

impl ApiRequest for Create {
    const METHOD: &'static str = "alipay.trade.create";
    type Response = CreateResponse;
    fn out_trade_no(&self) -> Option<&str> {
        Some(&self.out_trade_no)
    }
    fn validate(&self) -> Result<(), String> {
        validate_order(&OrderFields {
            out_trade_no: &self.out_trade_no,
            total_amount: self.total_amount,
            subject: &self.subject,
            body: self.body.as_deref(),
            store_id: self.store_id.as_deref(),
            terminal_id: self.terminal_id.as_deref(),
            operator_id: self.operator_id.as_deref(),
            seller_id: self.seller_id.as_deref(),
            goods_detail: self.goods_detail.as_deref(),
            royalty_info: self.royalty_info.as_ref(),
            discountable_amount: self.discountable_amount,
            undiscountable_amount: self.undiscountable_amount,
            disable_pay_channels: self.disable_pay_channels.as_deref(),
            enable_pay_channels: self.enable_pay_channels.as_deref(),
            timeout_express: self.timeout_express.as_deref(),
            time_expire: self.time_expire.as_deref(),
        })?;
        validate_buyer(self.buyer_id.as_deref(), self.buyer_open_id.as_deref())?;
        if self.buyer_id.is_none()
            && self.buyer_open_id.is_none()
            && self.op_buyer_open_id.is_none()
        {
            return Err("one of buyer_id or buyer_open_id is required".into());
        }
        if self.buyer_id.is_some() && self.buyer_id == self.seller_id {
            return Err("buyer_id and seller_id must differ".into());
        }
        Ok(())
    }
}

/// Answer to `alipay.trade.create`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CreateResponse {
    /// Our order number.
    pub out_trade_no: String,
    /// Alipay's trade number, for `tradePay`.
    pub trade_no: String,
}

// ---------------------------------------------------------------------------------------------
// alipay.trade.pay (§3.3, §6, §7).

/// `scene` of a code payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayScene {
    /// The buyer's payment code (付款码), scanned by the machine.
    BarCode,
    /// Face payment: `auth_code` is the ftoken.
    SecurityCode,
}

/// `auth_confirm_mode` of a pre-auth payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthConfirmMode {
    /// Unfreeze the remaining frozen amount after this payment.
    Complete,
    /// Keep the remainder frozen (Alipay's default).
    NotComplete,
}

/// `agreement_params` of an agreement (withholding) payment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreementParams {
    /// The agreement number from the `dut_user_sign` notification.
    pub agreement_no: String,
    /// Confirmation number (credit agreements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_confirm_no: Option<String>,
    /// Apply token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_token: Option<String>,
    /// Deduction permission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduct_permission: Option<String>,
}

/// `alipay.trade.pay`: charge now, by payment code, face ftoken, frozen funds or agreement.
///
/// Build it with [`Pay::bar_code`], [`Pay::face`], [`Pay::pre_auth`] or [`Pay::agreement`];
/// `validate()` enforces that exactly one of those modes is used, with its fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pay {
    /// Our order number; the idempotency key.
    pub out_trade_no: String,
    /// Order amount.
    pub total_amount: Amount,
    /// Order title.
    pub subject: String,
    /// `bar_code` or `security_code`; only with `auth_code`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scene: Option<PayScene>,
    /// Payment code (16–24 digits, starting 25–30) or face ftoken (`fp…`, 35 chars).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_code: Option<String>,
    /// Product: `FACE_TO_FACE_PAYMENT` (default), `PRE_AUTH`/`PRE_AUTH_ONLINE`/`PREAUTH_PAY`
    /// with `auth_no`, `GENERAL_WITHHOLDING`/`CYCLE_PAY_AUTH` with `agreement_params`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_code: Option<String>,
    /// Fund-auth order number (pre-auth payment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_no: Option<String>,
    /// Whether to release the remainder of the freeze (pre-auth payment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_confirm_mode: Option<AuthConfirmMode>,
    /// Buyer `2088…` id (the payer of the freeze); exclusive with `buyer_open_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_id: Option<String>,
    /// Buyer open_id; exclusive with `buyer_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_open_id: Option<String>,
    /// Receiving account (the payee of the freeze).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seller_id: Option<String>,
    /// Agreement to charge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement_params: Option<AgreementParams>,
    /// IoT SDK business signature (device-signed JSON string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal_params: Option<String>,
    /// Asynchronous agreement payment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_async_pay: Option<bool>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Store number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    /// Machine terminal id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
    /// Operator id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_id: Option<String>,
    /// Relative timeout (default 3h).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_express: Option<String>,
    /// Goods lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goods_detail: Option<Vec<GoodsDetail>>,
    /// Extension parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extend_params: Option<ExtendParams>,
    /// Per-trade split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub royalty_info: Option<RoyaltyInfo>,
    /// Business parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_params: Option<serde_json::Value>,
    /// Echoed in the notification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passback_params: Option<String>,
    /// Part of the amount open to discounts; with `undiscountable_amount` they sum to
    /// `total_amount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discountable_amount: Option<Amount>,
    /// Part of the amount closed to discounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undiscountable_amount: Option<Amount>,
    /// Channels to exclude (comma list); exclusive with `enable_pay_channels`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_pay_channels: Option<String>,
    /// Channels to allow (comma list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_pay_channels: Option<String>,
    /// Extra answer sections (e.g. `fund_bill_list`, `voucher_detail_list`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_options: Option<Vec<String>>,
}

impl Pay {
    fn order(
        out_trade_no: impl Into<String>,
        total_amount: Amount,
        subject: impl Into<String>,
    ) -> Self {
        Pay {
            out_trade_no: out_trade_no.into(),
            total_amount,
            subject: subject.into(),
            ..Default::default()
        }
    }

    /// A payment with the buyer's payment code (`scene=bar_code`).
    pub fn bar_code(
        out_trade_no: impl Into<String>,
        total_amount: Amount,
        subject: impl Into<String>,
        auth_code: impl Into<String>,
    ) -> Self {
        Pay {
            scene: Some(PayScene::BarCode),
            auth_code: Some(auth_code.into()),
            ..Pay::order(out_trade_no, total_amount, subject)
        }
    }

    /// A face payment with the device's ftoken (`scene=security_code`).
    pub fn face(
        out_trade_no: impl Into<String>,
        total_amount: Amount,
        subject: impl Into<String>,
        ftoken: impl Into<String>,
    ) -> Self {
        Pay {
            scene: Some(PayScene::SecurityCode),
            auth_code: Some(ftoken.into()),
            product_code: Some("FACE_TO_FACE_PAYMENT".into()),
            ..Pay::order(out_trade_no, total_amount, subject)
        }
    }

    /// A charge against a freeze: `auth_no` of the freeze, its product code, payer and payee.
    pub fn pre_auth(
        out_trade_no: impl Into<String>,
        total_amount: Amount,
        subject: impl Into<String>,
        auth_no: impl Into<String>,
        product_code: impl Into<String>,
        payer: UserRef,
        payee_id: impl Into<String>,
    ) -> Self {
        let (buyer_id, buyer_open_id) = split_user(payer);
        Pay {
            auth_no: Some(auth_no.into()),
            product_code: Some(product_code.into()),
            buyer_id,
            buyer_open_id,
            seller_id: Some(payee_id.into()),
            ..Pay::order(out_trade_no, total_amount, subject)
        }
    }

    /// A withholding charge under agreement `agreement_no` (`GENERAL_WITHHOLDING`).
    pub fn agreement(
        out_trade_no: impl Into<String>,
        total_amount: Amount,
        subject: impl Into<String>,
        agreement_no: impl Into<String>,
    ) -> Self {
        Pay {
            product_code: Some("GENERAL_WITHHOLDING".into()),
            agreement_params: Some(AgreementParams {
                agreement_no: agreement_no.into(),
                ..Default::default()
            }),
            ..Pay::order(out_trade_no, total_amount, subject)
        }
    }

    /// Sets `auth_confirm_mode` (pre-auth payments).
    pub fn auth_confirm_mode(mut self, mode: AuthConfirmMode) -> Self {
        self.auth_confirm_mode = Some(mode);
        self
    }

    /// Sets `terminal_id`.
    pub fn terminal_id(mut self, id: impl Into<String>) -> Self {
        self.terminal_id = Some(id.into());
        self
    }

    /// Sets `store_id`.
    pub fn store_id(mut self, id: impl Into<String>) -> Self {
        self.store_id = Some(id.into());
        self
    }

    /// Sets `terminal_params` (IoT SDK signature).
    pub fn terminal_params(mut self, params: impl Into<String>) -> Self {
        self.terminal_params = Some(params.into());
        self
    }

    /// Sets the per-trade split.
    pub fn royalty_info(mut self, info: RoyaltyInfo) -> Self {
        self.royalty_info = Some(info);
        self
    }
}

const PRE_AUTH_PRODUCTS: &[&str] = &["PRE_AUTH", "PRE_AUTH_ONLINE", "PREAUTH_PAY"];
const AGREEMENT_PRODUCTS: &[&str] = &["GENERAL_WITHHOLDING", "CYCLE_PAY_AUTH"];

impl ApiRequest for Pay {
    const METHOD: &'static str = "alipay.trade.pay";
    type Response = PayResponse;
    fn out_trade_no(&self) -> Option<&str> {
        Some(&self.out_trade_no)
    }
    fn validate(&self) -> Result<(), String> {
        validate_order(&OrderFields {
            out_trade_no: &self.out_trade_no,
            total_amount: self.total_amount,
            subject: &self.subject,
            body: self.body.as_deref(),
            store_id: self.store_id.as_deref(),
            terminal_id: self.terminal_id.as_deref(),
            operator_id: self.operator_id.as_deref(),
            seller_id: self.seller_id.as_deref(),
            goods_detail: self.goods_detail.as_deref(),
            royalty_info: self.royalty_info.as_ref(),
            discountable_amount: self.discountable_amount,
            undiscountable_amount: self.undiscountable_amount,
            disable_pay_channels: self.disable_pay_channels.as_deref(),
            enable_pay_channels: self.enable_pay_channels.as_deref(),
            timeout_express: self.timeout_express.as_deref(),
            time_expire: None,
        })?;
        validate_buyer(self.buyer_id.as_deref(), self.buyer_open_id.as_deref())?;
        if self.auth_code.is_none() && self.scene.is_some() {
            return Err("scene is only used with auth_code (code or face payments)".into());
        }
        let product = self.product_code.as_deref();
        let modes = [
            self.auth_code.is_some(),
            self.auth_no.is_some(),
            self.agreement_params.is_some(),
        ];
        match modes.iter().filter(|m| **m).count() {
            0 => return Err("one of auth_code, auth_no or agreement_params is required".into()),
            1 => {}
            _ => {
                return Err(
                    "auth_code, auth_no and agreement_params are mutually exclusive".into(),
                );
            }
        }
        if let Some(code) = &self.auth_code {
            match self.scene.unwrap_or(PayScene::BarCode) {
                PayScene::BarCode => validate_bar_code(code)?,
                PayScene::SecurityCode => {
                    validate_ftoken("auth_code for scene security_code", code)?
                }
            }
        }
        if let Some(auth_no) = &self.auth_no {
            if auth_no.is_empty() || auth_no.len() > 64 {
                return Err("auth_no must be 1 to 64 characters".into());
            }
            if !product.is_some_and(|p| PRE_AUTH_PRODUCTS.contains(&p)) {
                return Err(format!(
                    "a pre-auth payment needs product_code {PRE_AUTH_PRODUCTS:?}, the freeze's product"
                ));
            }
            if self.buyer_id.is_none() && self.buyer_open_id.is_none() {
                return Err(
                    "a pre-auth payment needs the payer as buyer_id or buyer_open_id".into(),
                );
            }
            if self.seller_id.is_none() {
                return Err("a pre-auth payment needs the payee as seller_id".into());
            }
        } else if self.auth_confirm_mode.is_some() {
            return Err("auth_confirm_mode is only used with auth_no".into());
        }
        if let Some(agreement) = &self.agreement_params {
            if agreement.agreement_no.is_empty() {
                return Err("agreement_params.agreement_no is required".into());
            }
            if let Some(p) = product
                && !AGREEMENT_PRODUCTS.contains(&p)
            {
                return Err(format!(
                    "an agreement payment needs product_code {AGREEMENT_PRODUCTS:?}, not {p:?}"
                ));
            }
        } else if self.is_async_pay.is_some() {
            return Err("is_async_pay is only used with agreement_params".into());
        }
        if let Some(tp) = &self.terminal_params
            && tp.is_empty()
        {
            return Err("terminal_params must not be empty when given".into());
        }
        Ok(())
    }
}

/// One voucher used on a payment (`voucher_detail_list` entry).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VoucherDetail {
    /// Voucher id.
    pub id: Option<String>,
    /// Voucher name.
    pub name: Option<String>,
    /// Voucher type.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Discount amount.
    pub amount: Option<Amount>,
    /// Merchant's contribution.
    pub merchant_contribute: Option<Amount>,
    /// Other contributions.
    pub other_contribute: Option<Amount>,
    /// Note.
    pub memo: Option<String>,
}

/// Answer to `alipay.trade.pay` (`10000`: accepted and normally paid; confirm by query).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PayResponse {
    /// Alipay's trade number.
    pub trade_no: String,
    /// Our order number.
    pub out_trade_no: String,
    /// Masked buyer login.
    pub buyer_logon_id: Option<String>,
    /// Buyer user id.
    pub buyer_user_id: Option<String>,
    /// Buyer open_id.
    pub buyer_open_id: Option<String>,
    /// Order amount.
    pub total_amount: Amount,
    /// Received by the merchant.
    pub receipt_amount: Option<Amount>,
    /// Paid by the buyer.
    pub buyer_pay_amount: Option<Amount>,
    /// Paid in points.
    pub point_amount: Option<Amount>,
    /// Invoiceable.
    pub invoice_amount: Option<Amount>,
    /// Payment time.
    pub gmt_payment: Option<String>,
    /// Funding sources.
    #[serde(default)]
    pub fund_bill_list: Vec<FundBill>,
    /// Store name.
    pub store_name: Option<String>,
    /// Vouchers used.
    #[serde(default)]
    pub voucher_detail_list: Vec<VoucherDetail>,
    /// Discounted goods (a JSON string).
    pub discount_goods_detail: Option<String>,
    /// `CREDIT_PREAUTH_PAY` for credit pre-auth.
    pub auth_trade_pay_mode: Option<String>,
    /// Asynchronous payment mode (agreement payments).
    pub async_payment_mode: Option<String>,
}

impl PayResponse {
    /// The buyer, by user id or open_id.
    pub fn buyer(&self) -> Option<UserRef> {
        UserRef::from_pair(self.buyer_user_id.as_deref(), self.buyer_open_id.as_deref())
    }
}

// ---------------------------------------------------------------------------------------------
// alipay.trade.cancel / close (§3.5, §3.6).

/// `alipay.trade.cancel`: undo a payment whose result is unknown (close or full refund).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cancel {
    /// Our order number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    /// Alipay's trade number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
}

impl Cancel {
    /// Cancel by our order number.
    pub fn by_out_trade_no(out_trade_no: impl Into<String>) -> Self {
        Cancel {
            out_trade_no: Some(out_trade_no.into()),
            trade_no: None,
        }
    }
}

impl ApiRequest for Cancel {
    const METHOD: &'static str = "alipay.trade.cancel";
    type Response = CancelResponse;
    fn out_trade_no(&self) -> Option<&str> {
        self.out_trade_no.as_deref()
    }
    fn validate(&self) -> Result<(), String> {
        validate_trade_ids(self.out_trade_no.as_deref(), self.trade_no.as_deref())
    }
}

/// What a cancel did (`action`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelAction {
    /// `close`: the trade was unpaid and is now closed; no money moved.
    Close,
    /// `refund`: the trade was paid and has been fully refunded.
    Refund,
    /// A value this client does not know; kept verbatim.
    Other(String),
}

impl<'de> Deserialize<'de> for CancelAction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "close" => CancelAction::Close,
            "refund" => CancelAction::Refund,
            _ => CancelAction::Other(s),
        })
    }
}

/// Answer to `alipay.trade.cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CancelResponse {
    /// Alipay's trade number.
    pub trade_no: Option<String>,
    /// Our order number.
    pub out_trade_no: Option<String>,
    /// `Y`: call cancel again.
    #[serde(default, deserialize_with = "wire::opt_flag")]
    pub retry_flag: Option<bool>,
    /// What happened; absent when the trade was not found or the call failed.
    pub action: Option<CancelAction>,
    /// Refund time when `action` is `refund`.
    pub gmt_refund_pay: Option<String>,
    /// Settlement id (bank-indirect only).
    pub refund_settlement_id: Option<String>,
}

impl CancelResponse {
    /// True when Alipay asks for the cancel to be called again (`retry_flag=Y`).
    pub fn should_retry(&self) -> bool {
        self.retry_flag == Some(true)
    }
}

/// `alipay.trade.close`: close an unpaid trade.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Close {
    /// Our order number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    /// Alipay's trade number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    /// Operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_id: Option<String>,
}

impl Close {
    /// Close by our order number.
    pub fn by_out_trade_no(out_trade_no: impl Into<String>) -> Self {
        Close {
            out_trade_no: Some(out_trade_no.into()),
            ..Default::default()
        }
    }
}

impl ApiRequest for Close {
    const METHOD: &'static str = "alipay.trade.close";
    type Response = CloseResponse;
    fn out_trade_no(&self) -> Option<&str> {
        self.out_trade_no.as_deref()
    }
    fn validate(&self) -> Result<(), String> {
        validate_trade_ids(self.out_trade_no.as_deref(), self.trade_no.as_deref())?;
        if let Some(op) = &self.operator_id {
            validate_max_chars("operator_id", op, 28)?;
        }
        Ok(())
    }
}

/// Answer to `alipay.trade.close`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CloseResponse {
    /// Alipay's trade number.
    pub trade_no: Option<String>,
    /// Our order number.
    pub out_trade_no: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// alipay.trade.refund / fastpay.refund.query (§3.7, §3.8).

/// One goods line of a refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundGoodsDetail {
    /// Goods id.
    pub goods_id: String,
    /// Amount refunded for it.
    pub refund_amount: Amount,
}

/// `alipay.trade.refund`. Retrying a refund must reuse its `out_request_no`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Refund {
    /// Our order number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    /// Alipay's trade number (wins when both are given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    /// Amount to refund now.
    pub refund_amount: Amount,
    /// Refund request number (≤64, unique per trade); required for partial refunds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_request_no: Option<String>,
    /// Reason (≤256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_reason: Option<String>,
    /// Goods refunded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_goods_detail: Option<Vec<RefundGoodsDetail>>,
    /// Split refunds (§4.7).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_royalty_parameters: Option<Vec<RoyaltyParameter>>,
    /// Operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_id: Option<String>,
    /// Store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    /// Terminal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
    /// Extra answer sections (`refund_detail_item_list`, `deposit_back_info`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_options: Option<Vec<String>>,
}

impl Refund {
    /// Refund `amount` of our order `out_trade_no` under request number `out_request_no`.
    pub fn new(
        out_trade_no: impl Into<String>,
        refund_amount: Amount,
        out_request_no: impl Into<String>,
    ) -> Self {
        Refund {
            out_trade_no: Some(out_trade_no.into()),
            refund_amount,
            out_request_no: Some(out_request_no.into()),
            ..Default::default()
        }
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.refund_reason = Some(reason.into());
        self
    }
}

impl ApiRequest for Refund {
    const METHOD: &'static str = "alipay.trade.refund";
    type Response = RefundResponse;
    fn out_trade_no(&self) -> Option<&str> {
        self.out_trade_no.as_deref()
    }
    fn validate(&self) -> Result<(), String> {
        validate_trade_ids(self.out_trade_no.as_deref(), self.trade_no.as_deref())?;
        validate_trade_amount("refund_amount", self.refund_amount)?;
        if let Some(r) = &self.out_request_no {
            validate_merchant_no("out_request_no", r, 64)?;
        }
        if let Some(r) = &self.refund_reason {
            validate_max_chars("refund_reason", r, 256)?;
        }
        if let Some(list) = &self.refund_royalty_parameters {
            for (i, p) in list.iter().enumerate() {
                p.validate(&format!("refund_royalty_parameters[{i}]"))?;
            }
        }
        let limits = [
            ("operator_id", self.operator_id.as_deref(), 28),
            ("store_id", self.store_id.as_deref(), 32),
            ("terminal_id", self.terminal_id.as_deref(), 32),
        ];
        for (field, value, max) in limits {
            if let Some(v) = value {
                validate_max_chars(field, v, max)?;
            }
        }
        Ok(())
    }
}

/// Answer to `alipay.trade.refund`. `code=10000` alone is not success: look at
/// [`RefundResponse::fund_change`], else query the refund.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RefundResponse {
    /// Alipay's trade number.
    pub trade_no: String,
    /// Our order number.
    pub out_trade_no: String,
    /// Masked buyer login.
    pub buyer_logon_id: Option<String>,
    /// Buyer user id.
    pub buyer_user_id: Option<String>,
    /// Buyer open_id.
    pub buyer_open_id: Option<String>,
    /// `Y` → `true`: money moved in this call, the refund succeeded. `N` or absent →
    /// `false`: confirm with [`RefundQuery`].
    #[serde(default, deserialize_with = "wire::opt_flag")]
    pub fund_change: Option<bool>,
    /// Cumulative refunded amount of the trade (not this call's amount).
    pub refund_fee: Amount,
    /// Refund time.
    pub gmt_refund_pay: Option<String>,
    /// Refunded funding sources.
    #[serde(default)]
    pub refund_detail_item_list: Vec<FundBill>,
    /// Amount returned to the buyer's card (with a query option).
    pub send_back_fee: Option<Amount>,
    /// Store name.
    pub store_name: Option<String>,
    /// Refunded to the buyer (present/voucher accounting).
    pub present_refund_buyer_amount: Option<Amount>,
    /// Platform discount refunded.
    pub present_refund_discount_amount: Option<Amount>,
    /// Merchant discount refunded.
    pub present_refund_mdiscount_amount: Option<Amount>,
}

impl RefundResponse {
    /// True only when `fund_change` is `Y`.
    pub fn funds_moved(&self) -> bool {
        self.fund_change == Some(true)
    }

    /// The buyer, by user id or open_id.
    pub fn buyer(&self) -> Option<UserRef> {
        UserRef::from_pair(self.buyer_user_id.as_deref(), self.buyer_open_id.as_deref())
    }
}

/// `alipay.trade.fastpay.refund.query`: the status of one refund.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RefundQuery {
    /// Our order number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    /// Alipay's trade number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    /// The refund's request number (or `out_trade_no` if the refund had none).
    pub out_request_no: String,
    /// Extra sections (`refund_detail_item_list`, `gmt_refund_pay`, `deposit_back_info`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_options: Option<Vec<String>>,
}

impl RefundQuery {
    /// Query refund `out_request_no` of our order `out_trade_no`.
    pub fn new(out_trade_no: impl Into<String>, out_request_no: impl Into<String>) -> Self {
        RefundQuery {
            out_trade_no: Some(out_trade_no.into()),
            out_request_no: out_request_no.into(),
            ..Default::default()
        }
    }
}

impl ApiRequest for RefundQuery {
    const METHOD: &'static str = "alipay.trade.fastpay.refund.query";
    type Response = RefundQueryResponse;
    const READ_ONLY: bool = true;
    fn out_trade_no(&self) -> Option<&str> {
        self.out_trade_no.as_deref()
    }
    fn validate(&self) -> Result<(), String> {
        validate_trade_ids(self.out_trade_no.as_deref(), self.trade_no.as_deref())?;
        validate_merchant_no("out_request_no", &self.out_request_no, 64)
    }
}

/// One royalty pulled back by a refund (`refund_royaltys` entry).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RefundRoyalty {
    /// Amount pulled back.
    pub refund_amount: Option<Amount>,
    /// Royalty type.
    pub royalty_type: Option<String>,
    /// Result code (`SUCCESS`, …).
    pub result_code: Option<String>,
    /// Payer.
    pub trans_out: Option<String>,
    /// Payer login.
    pub trans_out_email: Option<String>,
    /// Receiver.
    pub trans_in: Option<String>,
    /// Receiver login.
    pub trans_in_email: Option<String>,
}

/// `deposit_back_info` of a refund query.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DepositBackInfo {
    /// `true` when money went back to a bank card.
    pub has_deposit_back: Option<String>,
    /// `S` success, `F` failed, `P` processing.
    pub dback_status: Option<String>,
    /// Amount sent back.
    pub dback_amount: Option<Amount>,
    /// Bank acknowledgement time.
    pub bank_ack_time: Option<String>,
    /// Estimated arrival time.
    pub est_bank_receipt_time: Option<String>,
}

/// Answer to `alipay.trade.fastpay.refund.query`. Every field may be absent: a `10000`
/// answer without `refund_status` means "no such refund received (yet)", not a failure.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RefundQueryResponse {
    /// Alipay's trade number.
    pub trade_no: Option<String>,
    /// Our order number.
    pub out_trade_no: Option<String>,
    /// The refund's request number.
    pub out_request_no: Option<String>,
    /// Order amount.
    pub total_amount: Option<Amount>,
    /// This refund's amount.
    pub refund_amount: Option<Amount>,
    /// `REFUND_SUCCESS`; absent = not received or failed.
    pub refund_status: Option<String>,
    /// Reason.
    pub refund_reason: Option<String>,
    /// Refund time.
    pub gmt_refund_pay: Option<String>,
    /// Royalties pulled back.
    #[serde(default)]
    pub refund_royaltys: Vec<RefundRoyalty>,
    /// Refunded funding sources.
    #[serde(default)]
    pub refund_detail_item_list: Vec<FundBill>,
    /// Amount returned to the buyer's card.
    pub send_back_fee: Option<Amount>,
    /// Bank-card return details.
    pub deposit_back_info: Option<DepositBackInfo>,
    /// Error code (asynchronous refunds only).
    pub error_code: Option<String>,
}

impl RefundQueryResponse {
    /// True only when `refund_status` is `REFUND_SUCCESS`.
    pub fn is_refunded(&self) -> bool {
        self.refund_status.as_deref() == Some("REFUND_SUCCESS")
    }
}
