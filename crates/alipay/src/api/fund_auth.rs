//! Fund authorisation (资金预授权, §7.1): freeze a buyer's funds before the cabinet opens,
//! charge what was taken with [`super::trade::Pay::pre_auth`], release the rest.

use serde::{Deserialize, Serialize};

use super::checks::{
    validate_max_chars, validate_merchant_no, validate_timeout_express, validate_trade_amount,
    validate_user_id,
};
use crate::money::Amount;
use crate::request::ApiRequest;
use crate::types::UserRef;

/// A `post_payments` entry (what will be charged after use, shown to the buyer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PostPayment {
    /// Item name.
    pub name: String,
    /// Amount text shown.
    pub amount: String,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `alipay.fund.auth.order.app.freeze`: an online freeze, signed on the server and sent by the
/// app or mini program. Build the `orderStr` with [`crate::Client::sdk_execute`]; it is never
/// sent to the gateway by this crate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AppFreeze {
    /// Our freeze order number.
    pub out_order_no: String,
    /// Our operation number (idempotency key of this freeze).
    pub out_request_no: String,
    /// Title shown to the buyer.
    pub order_title: String,
    /// Amount to freeze.
    pub amount: Amount,
    /// `PRE_AUTH_ONLINE` (newest docs: `PREAUTH_PAY`).
    pub product_code: String,
    /// Payee `2088…` id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payee_user_id: Option<String>,
    /// Payee login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payee_logon_id: Option<String>,
    /// Payment timeout (e.g. `15m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pay_timeout: Option<String>,
    /// Relative timeout (default 15m).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_express: Option<String>,
    /// JSON text, e.g. `{"category":"…","outStoreCode":"…"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_param: Option<String>,
    /// Channels to allow (JSON text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_pay_channels: Option<String>,
    /// Channels to exclude (JSON text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_pay_channels: Option<String>,
    /// Scene, e.g. `ONLINE_AUTH_COMMON_SCENE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scene_code: Option<String>,
    /// `POSTPAY`, `POSTPAY_UNCERTAIN` or `DEPOSIT_ONLY` (credit 免押).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deposit_product_mode: Option<String>,
    /// Charges after use, shown to the buyer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_payments: Option<Vec<PostPayment>>,
    /// Identity check parameters (JSON text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_params: Option<String>,
    /// Business parameters (JSON text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_params: Option<String>,
}

fn validate_freeze(
    out_order_no: &str,
    out_request_no: &str,
    order_title: &str,
    amount: Amount,
    payee_user_id: Option<&str>,
    enable: Option<&str>,
    disable: Option<&str>,
) -> Result<(), String> {
    validate_merchant_no("out_order_no", out_order_no, 64)?;
    validate_merchant_no("out_request_no", out_request_no, 64)?;
    if order_title.is_empty() {
        return Err("order_title is required".into());
    }
    validate_max_chars("order_title", order_title, 100)?;
    validate_trade_amount("amount", amount)?;
    if let Some(p) = payee_user_id {
        validate_user_id("payee_user_id", p)?;
    }
    if enable.is_some() && disable.is_some() {
        return Err("enable_pay_channels and disable_pay_channels are mutually exclusive".into());
    }
    Ok(())
}

impl ApiRequest for AppFreeze {
    const METHOD: &'static str = "alipay.fund.auth.order.app.freeze";
    type Response = FreezeResult;
    fn validate(&self) -> Result<(), String> {
        validate_freeze(
            &self.out_order_no,
            &self.out_request_no,
            &self.order_title,
            self.amount,
            self.payee_user_id.as_deref(),
            self.enable_pay_channels.as_deref(),
            self.disable_pay_channels.as_deref(),
        )?;
        for (field, value) in [
            ("pay_timeout", &self.pay_timeout),
            ("timeout_express", &self.timeout_express),
        ] {
            if let Some(v) = value {
                validate_timeout_express(field, v)?;
            }
        }
        if !matches!(
            self.product_code.as_str(),
            "PRE_AUTH_ONLINE" | "PREAUTH_PAY"
        ) {
            return Err("product_code must be PRE_AUTH_ONLINE or PREAUTH_PAY".into());
        }
        Ok(())
    }
}

/// The result of an online freeze, as the app receives it (`my.tradePay` result).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FreezeResult {
    /// Fund-auth order number, for [`super::trade::Pay::pre_auth`].
    pub auth_no: Option<String>,
    /// Our freeze order number.
    pub out_order_no: Option<String>,
    /// Operation id.
    pub operation_id: Option<String>,
    /// Our operation number.
    pub out_request_no: Option<String>,
    /// Frozen amount.
    pub amount: Option<Amount>,
    /// `SUCCESS`, …
    pub status: Option<String>,
    /// Credit part.
    pub credit_amount: Option<Amount>,
    /// Funds part.
    pub fund_amount: Option<Amount>,
    /// Payer user id.
    pub payer_user_id: Option<String>,
    /// Payer open id.
    pub payer_open_id: Option<String>,
    /// Time.
    pub gmt_trans: Option<String>,
    /// `CREDIT_AUTH` = nothing actually frozen.
    pub pre_auth_type: Option<String>,
}

impl FreezeResult {
    /// The payer, by user id or open_id.
    pub fn payer(&self) -> Option<UserRef> {
        UserRef::from_pair(self.payer_user_id.as_deref(), self.payer_open_id.as_deref())
    }
}

/// `alipay.fund.auth.order.voucher.create`: a QR code the buyer scans to freeze funds
/// (扫码预授权, product `PRE_AUTH`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VoucherCreate {
    /// Our freeze order number.
    pub out_order_no: String,
    /// Our operation number.
    pub out_request_no: String,
    /// Title shown to the buyer.
    pub order_title: String,
    /// Amount to freeze (≤ 100000000.00).
    pub amount: Amount,
    /// `PRE_AUTH`.
    pub product_code: String,
    /// Payee `2088…` id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payee_user_id: Option<String>,
    /// Payee login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payee_logon_id: Option<String>,
    /// Payment timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pay_timeout: Option<String>,
    /// Relative timeout (default 15m).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_express: Option<String>,
    /// JSON text, e.g. `{"category":"…","outStoreCode":"…"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_param: Option<String>,
    /// Channels to allow (JSON text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_pay_channels: Option<String>,
    /// Channels to exclude (JSON text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_pay_channels: Option<String>,
    /// Identity check parameters (JSON text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_params: Option<String>,
    /// Business parameters (JSON text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_params: Option<String>,
}

impl VoucherCreate {
    /// A `PRE_AUTH` freeze QR for `amount`.
    pub fn new(
        out_order_no: impl Into<String>,
        out_request_no: impl Into<String>,
        order_title: impl Into<String>,
        amount: Amount,
    ) -> Self {
        VoucherCreate {
            out_order_no: out_order_no.into(),
            out_request_no: out_request_no.into(),
            order_title: order_title.into(),
            amount,
            product_code: "PRE_AUTH".into(),
            ..Default::default()
        }
    }
}

impl ApiRequest for VoucherCreate {
    const METHOD: &'static str = "alipay.fund.auth.order.voucher.create";
    type Response = VoucherCreateResponse;
    fn validate(&self) -> Result<(), String> {
        validate_freeze(
            &self.out_order_no,
            &self.out_request_no,
            &self.order_title,
            self.amount,
            self.payee_user_id.as_deref(),
            self.enable_pay_channels.as_deref(),
            self.disable_pay_channels.as_deref(),
        )?;
        for (field, value) in [
            ("pay_timeout", &self.pay_timeout),
            ("timeout_express", &self.timeout_express),
        ] {
            if let Some(v) = value {
                validate_timeout_express(field, v)?;
            }
        }
        if self.product_code != "PRE_AUTH" {
            return Err("product_code must be PRE_AUTH".into());
        }
        Ok(())
    }
}

/// Answer to `alipay.fund.auth.order.voucher.create`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VoucherCreateResponse {
    /// Our freeze order number.
    pub out_order_no: Option<String>,
    /// Our operation number.
    pub out_request_no: Option<String>,
    /// Code type.
    pub code_type: Option<String>,
    /// Code value.
    pub code_value: Option<String>,
    /// URL to render as a QR code.
    pub code_url: Option<String>,
}

/// `alipay.fund.auth.order.unfreeze`: release frozen funds (nothing taken, or the rest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Unfreeze {
    /// Fund-auth order number.
    pub auth_no: String,
    /// Our operation number (idempotency key).
    pub out_request_no: String,
    /// Amount to release.
    pub amount: Amount,
    /// Reason (required, ≤100 characters).
    pub remark: String,
    /// Credit extras (`unfreezeBizInfo`), JSON text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_param: Option<String>,
}

impl ApiRequest for Unfreeze {
    const METHOD: &'static str = "alipay.fund.auth.order.unfreeze";
    type Response = UnfreezeResponse;
    fn validate(&self) -> Result<(), String> {
        if self.auth_no.is_empty() || self.auth_no.len() > 64 {
            return Err("auth_no must be 1 to 64 characters".into());
        }
        validate_merchant_no("out_request_no", &self.out_request_no, 64)?;
        validate_trade_amount("amount", self.amount)?;
        if self.remark.is_empty() {
            return Err("remark is required".into());
        }
        validate_max_chars("remark", &self.remark, 100)
    }
}

/// Answer to `alipay.fund.auth.order.unfreeze`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UnfreezeResponse {
    /// Fund-auth order number.
    pub auth_no: String,
    /// Our freeze order number.
    pub out_order_no: Option<String>,
    /// Operation id.
    pub operation_id: Option<String>,
    /// Our operation number.
    pub out_request_no: Option<String>,
    /// Released amount.
    pub amount: Option<Amount>,
    /// `SUCCESS`, …
    pub status: Option<String>,
    /// Time.
    pub gmt_trans: Option<String>,
    /// Credit part.
    pub credit_amount: Option<Amount>,
    /// Funds part.
    pub fund_amount: Option<Amount>,
}

/// `alipay.fund.auth.operation.detail.query`: `auth_no` or `out_order_no`, plus
/// `operation_id` or `out_request_no`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OperationDetailQuery {
    /// Fund-auth order number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_no: Option<String>,
    /// Our freeze order number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_order_no: Option<String>,
    /// Operation id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// Our operation number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_request_no: Option<String>,
}

impl OperationDetailQuery {
    /// Query by our order and operation numbers.
    pub fn by_out_numbers(
        out_order_no: impl Into<String>,
        out_request_no: impl Into<String>,
    ) -> Self {
        OperationDetailQuery {
            out_order_no: Some(out_order_no.into()),
            out_request_no: Some(out_request_no.into()),
            ..Default::default()
        }
    }
}

impl ApiRequest for OperationDetailQuery {
    const METHOD: &'static str = "alipay.fund.auth.operation.detail.query";
    type Response = OperationDetailQueryResponse;
    const READ_ONLY: bool = true;
    fn validate(&self) -> Result<(), String> {
        if self.auth_no.is_none() && self.out_order_no.is_none() {
            return Err("one of auth_no or out_order_no is required".into());
        }
        if self.operation_id.is_none() && self.out_request_no.is_none() {
            return Err("one of operation_id or out_request_no is required".into());
        }
        Ok(())
    }
}

/// Answer to `alipay.fund.auth.operation.detail.query`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OperationDetailQueryResponse {
    /// Fund-auth order number.
    pub auth_no: Option<String>,
    /// Our freeze order number.
    pub out_order_no: Option<String>,
    /// `INIT`, `AUTHORIZED`, `FINISH`, `CLOSED`.
    pub order_status: Option<String>,
    /// Total frozen.
    pub total_freeze_amount: Option<Amount>,
    /// Still frozen.
    pub rest_amount: Option<Amount>,
    /// Total charged.
    pub total_pay_amount: Option<Amount>,
    /// Title.
    pub order_title: Option<String>,
    /// Masked payer login.
    pub payer_logon_id: Option<String>,
    /// Payer user id.
    pub payer_user_id: Option<String>,
    /// Payer open id.
    pub payer_open_id: Option<String>,
    /// Operation id.
    pub operation_id: Option<String>,
    /// Our operation number.
    pub out_request_no: Option<String>,
    /// Operation amount.
    pub amount: Option<Amount>,
    /// `FREEZE`, `UNFREEZE`, `PAY`.
    pub operation_type: Option<String>,
    /// `INIT`, `SUCCESS`, `CLOSED`.
    pub status: Option<String>,
    /// Remark.
    pub remark: Option<String>,
    /// Creation time.
    pub gmt_create: Option<String>,
    /// Processing time.
    pub gmt_trans: Option<String>,
    /// `CREDIT_AUTH` = nothing actually frozen.
    pub pre_auth_type: Option<String>,
    /// Currency.
    pub trans_currency: Option<String>,
    /// Credit part of the operation.
    pub credit_amount: Option<Amount>,
    /// Funds part of the operation.
    pub fund_amount: Option<Amount>,
    /// Credit part of the total freeze.
    pub total_freeze_credit_amount: Option<Amount>,
    /// Funds part of the total freeze.
    pub total_freeze_fund_amount: Option<Amount>,
    /// Credit part still frozen.
    pub rest_credit_amount: Option<Amount>,
    /// Funds part still frozen.
    pub rest_fund_amount: Option<Amount>,
}

impl OperationDetailQueryResponse {
    /// The payer, by user id or open_id.
    pub fn payer(&self) -> Option<UserRef> {
        UserRef::from_pair(self.payer_user_id.as_deref(), self.payer_open_id.as_deref())
    }
}
