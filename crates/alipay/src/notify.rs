//! Asynchronous notifications (异步通知): verification (`rsaCheckV1`) and typed values.
//!
//! A notification is a form POST. It is verified on its raw bytes in its declared charset
//! before anything is decoded: `sign` and `sign_type` removed, empty values dropped, sorted,
//! joined, checked with Alipay's public key. A repeated parameter is refused outright, so the
//! value that was signed and the value that is used can never differ. A `+` inside `sign`
//! that arrived un-escaped (and so became a space) is restored.

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, IntoDeserializer, MapAccess, Visitor};

use crate::form;
use crate::keys::PublicKey;
use crate::money::Amount;
use crate::sign::{Charset, SignScope, SignType, string_to_sign_bytes};
use crate::types::{FundBill, TradeStatus, UserRef};

/// Why a notification was refused. Every variant means: ignore it, change nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// The body is not a valid form.
    #[error("malformed form body: {0}")]
    Form(#[from] form::FormError),
    /// `charset` names something other than utf-8 or gbk.
    #[error("unsupported charset {0:?}")]
    Charset(String),
    /// No `sign` parameter.
    #[error("notification is not signed")]
    MissingSignature,
    /// `sign_type` absent or not RSA2/RSA.
    #[error("bad sign_type: {0}")]
    SignType(String),
    /// The signature does not verify with Alipay's public key.
    #[error("signature does not verify")]
    BadSignature,
    /// A value is not valid in the declared charset.
    #[error("parameter {0:?} is not valid {1}")]
    Encoding(String, Charset),
    /// A field is missing or malformed; names the field.
    #[error("field `{field}`: {problem}")]
    Field {
        /// The parameter name.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

/// A verified notification's parameters, decoded to text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedParams {
    pairs: Vec<(String, String)>,
    /// The charset the notification declared.
    pub charset: Charset,
    /// The algorithm it was signed with.
    pub sign_type: SignType,
}

impl VerifiedParams {
    /// The value of a parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All parameters (excluding `sign`).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Deserializes the parameters into a typed value; errors name the field.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, NotifyError> {
        let de = || FormMap {
            pairs: &self.pairs,
            next: 0,
            value: None,
        };
        // Path tracking costs about as much as the rest of the typing: skip it for the
        // common, valid case and decode again with it only to name the field of an error.
        if let Ok(value) = T::deserialize(de()) {
            return Ok(value);
        }
        serde_path_to_error::deserialize(de()).map_err(|e| {
            let field = e.path().to_string();
            NotifyError::Field {
                field,
                problem: e.into_inner().to_string(),
            }
        })
    }
}

/// Verifies a raw notification body with Alipay's public key. Nothing is decoded or trusted
/// before the signature checks out.
pub fn verify(body: &[u8], alipay_key: &PublicKey) -> Result<VerifiedParams, NotifyError> {
    let raw = form::decode_unique(body)?;
    let find = |name: &str| {
        raw.iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    };
    let charset = match find("charset") {
        None => Charset::Utf8,
        Some(c) => {
            let name = String::from_utf8_lossy(c);
            Charset::parse(&name).ok_or_else(|| NotifyError::Charset(name.into_owned()))?
        }
    };
    let sign = find("sign")
        .filter(|s| !s.is_empty())
        .ok_or(NotifyError::MissingSignature)?;
    // base64 has no spaces: a space is a `+` that a sender did not escape.
    let sign = String::from_utf8_lossy(sign).replace(' ', "+");
    let sign_type = match find("sign_type") {
        None => return Err(NotifyError::SignType("missing".into())),
        Some(t) => String::from_utf8_lossy(t)
            .parse::<SignType>()
            .map_err(NotifyError::SignType)?,
    };
    let pairs = || raw.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
    let v1 = string_to_sign_bytes(pairs(), SignScope::Notification);
    let mut ok = alipay_key.verify(sign_type, &v1, &sign);
    if !ok && find("msg_method").is_some() {
        // App-gateway messages are signed with `sign_type` included (rsaCheckV2).
        let v2 = string_to_sign_bytes(pairs(), SignScope::NotificationV2);
        ok = alipay_key.verify(sign_type, &v2, &sign);
    }
    if !ok {
        return Err(NotifyError::BadSignature);
    }
    let mut decoded = Vec::with_capacity(raw.len());
    for (k, v) in raw {
        if k == b"sign" {
            continue;
        }
        // The decoded bytes are moved into the strings, not copied.
        let key = String::from_utf8(k)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let value = match charset {
            Charset::Utf8 => String::from_utf8(v).ok(),
            Charset::Gbk => charset.decode(&v).ok().map(|t| t.into_owned()),
        }
        .ok_or_else(|| NotifyError::Encoding(key.clone(), charset))?;
        decoded.push((key, value));
    }
    Ok(VerifiedParams {
        pairs: decoded,
        charset,
        sign_type,
    })
}

/// A verified notification in typed form.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// `trade_status_sync`: a trade changed state.
    Trade(TradeNotification),
    /// `fund_auth_freeze` / `fund_auth_unfreeze`: a pre-authorisation operation.
    FundAuth(FundAuthNotification),
    /// `dut_user_sign` / `dut_user_unsign`: an agreement was signed or cancelled.
    Agreement(AgreementNotification),
    /// An app-gateway message (`msg_method` + `biz_content`), e.g. `alipay.trade.order.settle.notify`.
    Message(MessageNotification),
    /// Any other verified notification, untyped.
    Other(VerifiedParams),
}

/// Verifies and types a notification.
pub fn parse(body: &[u8], alipay_key: &PublicKey) -> Result<Notification, NotifyError> {
    let params = verify(body, alipay_key)?;
    if params.get("msg_method").is_some() {
        return params.decode().map(Notification::Message);
    }
    match params.get("notify_type") {
        Some("trade_status_sync") => params
            .decode::<TradeNotificationWire>()
            .and_then(TradeNotification::try_from)
            .map(Notification::Trade),
        Some("fund_auth_freeze" | "fund_auth_unfreeze") => {
            params.decode().map(Notification::FundAuth)
        }
        Some("dut_user_sign" | "dut_user_unsign") => params.decode().map(Notification::Agreement),
        _ => Ok(Notification::Other(params)),
    }
}

/// `trade_status_sync`.
#[derive(Debug, Clone, PartialEq)]
pub struct TradeNotification {
    /// Same across retries of one notification.
    pub notify_id: String,
    /// When this delivery was made.
    pub notify_time: String,
    /// The app of the trade.
    pub app_id: String,
    /// The authorising app (= `app_id` when self-operated).
    pub auth_app_id: Option<String>,
    /// Alipay's trade number.
    pub trade_no: String,
    /// Our order number.
    pub out_trade_no: String,
    /// Refund request number, on refund notices.
    pub out_biz_no: Option<String>,
    /// The buyer (`buyer_id` or `buyer_open_id`).
    pub buyer: Option<UserRef>,
    /// Masked buyer login.
    pub buyer_logon_id: Option<String>,
    /// Receiving account.
    pub seller_id: Option<String>,
    /// Receiving account login.
    pub seller_email: Option<String>,
    /// The new status.
    pub trade_status: TradeStatus,
    /// Order amount.
    pub total_amount: Amount,
    /// Amount the merchant received.
    pub receipt_amount: Option<Amount>,
    /// Invoiceable amount.
    pub invoice_amount: Option<Amount>,
    /// Amount the buyer paid.
    pub buyer_pay_amount: Option<Amount>,
    /// Paid with points.
    pub point_amount: Option<Amount>,
    /// Cumulative refunded amount (refund notices).
    pub refund_fee: Option<Amount>,
    /// Echoed subject.
    pub subject: Option<String>,
    /// Echoed body.
    pub body: Option<String>,
    /// Echoed passback parameters.
    pub passback_params: Option<String>,
    /// Times (Beijing, `yyyy-MM-dd HH:mm:ss`).
    pub gmt_create: Option<String>,
    /// Payment time.
    pub gmt_payment: Option<String>,
    /// Refund time.
    pub gmt_refund: Option<String>,
    /// Close time.
    pub gmt_close: Option<String>,
    /// Funding sources.
    pub fund_bill_list: Vec<FundBill>,
}

#[derive(Deserialize)]
struct TradeNotificationWire {
    notify_id: String,
    notify_time: String,
    app_id: String,
    auth_app_id: Option<String>,
    trade_no: String,
    out_trade_no: String,
    out_biz_no: Option<String>,
    buyer_id: Option<String>,
    buyer_open_id: Option<String>,
    buyer_logon_id: Option<String>,
    seller_id: Option<String>,
    seller_email: Option<String>,
    trade_status: TradeStatus,
    total_amount: Amount,
    receipt_amount: Option<Amount>,
    invoice_amount: Option<Amount>,
    buyer_pay_amount: Option<Amount>,
    point_amount: Option<Amount>,
    refund_fee: Option<Amount>,
    subject: Option<String>,
    body: Option<String>,
    passback_params: Option<String>,
    gmt_create: Option<String>,
    gmt_payment: Option<String>,
    gmt_refund: Option<String>,
    gmt_close: Option<String>,
    fund_bill_list: Option<String>,
}

impl TryFrom<TradeNotificationWire> for TradeNotification {
    type Error = NotifyError;
    fn try_from(w: TradeNotificationWire) -> Result<Self, NotifyError> {
        let fund_bill_list = match w.fund_bill_list.as_deref() {
            None | Some("") => Vec::new(),
            Some(json) => serde_json::from_str(json).map_err(|e| NotifyError::Field {
                field: "fund_bill_list".into(),
                problem: e.to_string(),
            })?,
        };
        Ok(TradeNotification {
            buyer: UserRef::from_pair(w.buyer_id.as_deref(), w.buyer_open_id.as_deref()),
            notify_id: w.notify_id,
            notify_time: w.notify_time,
            app_id: w.app_id,
            auth_app_id: w.auth_app_id,
            trade_no: w.trade_no,
            out_trade_no: w.out_trade_no,
            out_biz_no: w.out_biz_no,
            buyer_logon_id: w.buyer_logon_id,
            seller_id: w.seller_id,
            seller_email: w.seller_email,
            trade_status: w.trade_status,
            total_amount: w.total_amount,
            receipt_amount: w.receipt_amount,
            invoice_amount: w.invoice_amount,
            buyer_pay_amount: w.buyer_pay_amount,
            point_amount: w.point_amount,
            refund_fee: w.refund_fee,
            subject: w.subject,
            body: w.body,
            passback_params: w.passback_params,
            gmt_create: w.gmt_create,
            gmt_payment: w.gmt_payment,
            gmt_refund: w.gmt_refund,
            gmt_close: w.gmt_close,
            fund_bill_list,
        })
    }
}

/// `fund_auth_freeze` / `fund_auth_unfreeze`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FundAuthNotification {
    /// Same across retries.
    pub notify_id: String,
    /// `fund_auth_freeze` or `fund_auth_unfreeze`.
    pub notify_type: String,
    /// The app.
    pub app_id: String,
    /// Alipay's authorisation order number.
    pub auth_no: String,
    /// Our authorisation order number.
    pub out_order_no: String,
    /// Alipay's operation number.
    pub operation_id: String,
    /// Our operation request number.
    pub out_request_no: String,
    /// `FREEZE` or `UNFREEZE`.
    pub operation_type: String,
    /// Amount of this operation.
    pub amount: Amount,
    /// `SUCCESS`, `CLOSED`, …
    pub status: String,
    /// Total frozen so far.
    pub total_freeze_amount: Option<Amount>,
    /// Total unfrozen so far.
    pub total_unfreeze_amount: Option<Amount>,
    /// Total paid from the freeze.
    pub total_pay_amount: Option<Amount>,
    /// Still frozen.
    pub rest_amount: Option<Amount>,
    /// The payer's user id.
    pub payer_user_id: Option<String>,
    /// The payer's open id.
    pub payer_open_id: Option<String>,
    /// Masked payer login.
    pub payer_logon_id: Option<String>,
    /// Operation time.
    pub gmt_trans: Option<String>,
    /// `CREDIT_AUTH` when nothing was actually frozen (credit pre-auth).
    pub pre_auth_type: Option<String>,
}

/// `dut_user_sign` / `dut_user_unsign`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AgreementNotification {
    /// Same across retries.
    pub notify_id: String,
    /// `dut_user_sign` or `dut_user_unsign`.
    pub notify_type: String,
    /// The app.
    pub app_id: Option<String>,
    /// Alipay's agreement number.
    pub agreement_no: String,
    /// Our agreement number.
    pub external_agreement_no: Option<String>,
    /// The signer.
    pub alipay_user_id: Option<String>,
    /// The signer's open id.
    pub alipay_open_id: Option<String>,
    /// `NORMAL` after signing, `UNSIGN` after cancelling.
    pub status: String,
    /// Sign scene, e.g. `INDUSTRY|ALIPAYGO`.
    pub sign_scene: Option<String>,
    /// Personal product code, e.g. `GENERAL_WITHHOLDING_P`.
    pub personal_product_code: Option<String>,
    /// Sign time.
    pub sign_time: Option<String>,
    /// Valid from.
    pub valid_time: Option<String>,
    /// Valid until.
    pub invalid_time: Option<String>,
}

/// An app-gateway message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MessageNotification {
    /// Same across retries.
    pub notify_id: String,
    /// e.g. `alipay.trade.order.settle.notify`.
    pub msg_method: String,
    /// The app.
    pub app_id: String,
    /// The message body, JSON text.
    pub biz_content: String,
}

/// A serde map over decoded form pairs; values are strings, `Option` fields see `Some`.
struct FormMap<'a> {
    pairs: &'a [(String, String)],
    next: usize,
    value: Option<&'a str>,
}

impl<'de> de::Deserializer<'de> for FormMap<'de> {
    type Error = de::value::Error;
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(self)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> MapAccess<'de> for FormMap<'de> {
    type Error = de::value::Error;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((k, v)) = self.pairs.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        self.value = Some(v.as_str());
        seed.deserialize(k.as_str().into_deserializer()).map(Some)
    }
    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let v = self.value.take().unwrap_or("");
        seed.deserialize(FormValue(v))
    }
}

/// One form value: a string that also satisfies `Option<T>` (as `Some`).
struct FormValue<'a>(&'a str);

impl<'de> de::Deserializer<'de> for FormValue<'de> {
    type Error = de::value::Error;
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_borrowed_str(self.0)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        if self.0.is_empty() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self.0.into_deserializer())
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}
