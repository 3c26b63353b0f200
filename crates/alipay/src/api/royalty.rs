//! Profit sharing (分账): the per-trade `royalty_info`, receiver relations, deferred settlement
//! (`alipay.trade.order.settle`) and its queries (§4 of the reference).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::checks::{
    validate_max_chars, validate_merchant_no, validate_trade_no, validate_user_id,
};
use super::wire;
use crate::money::Amount;
use crate::request::ApiRequest;

// ---------------------------------------------------------------------------------------------
// Legacy per-trade split: `royalty_info` on precreate / create / pay (§4.2).

/// `royalty_info`: the legacy per-trade split carried by precreate, create and pay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoyaltyInfo {
    /// `ROYALTY` (normal split), the only documented type; Alipay's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub royalty_type: Option<String>,
    /// The split lines, executed in `serial_no` order.
    pub royalty_detail_infos: Vec<RoyaltyDetailInfo>,
}

/// One line of [`RoyaltyInfo`] (`RoyaltyDetailInfos`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoyaltyDetailInfo {
    /// Execution order: a positive integer, unique in the list (JSON number).
    pub serial_no: i64,
    /// Payer account type; only `userId` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trans_out_type: Option<String>,
    /// Payer account (`2088…`, normally the seller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trans_out: Option<String>,
    /// Receiver account type: `userId` (default), `bankIndex` or `storeId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trans_in_type: Option<String>,
    /// Receiver account.
    pub trans_in: String,
    /// Batch number, used with `bankIndex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_no: Option<String>,
    /// Merchant's unique id for this line (Alipay defaults it to `out_trade_no` + serial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_relation_id: Option<String>,
    /// Split amount; exclusive with `amount_percentage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Amount>,
    /// Split percentage (`"20"` = 20 %), sent as a string; exclusive with `amount`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "wire::int_as_string",
        deserialize_with = "wire::opt_percent"
    )]
    pub amount_percentage: Option<u32>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
}

impl RoyaltyDetailInfo {
    /// A line paying a fixed `amount` to the `2088…` account `trans_in`.
    pub fn amount_to(serial_no: i64, trans_in: impl Into<String>, amount: Amount) -> Self {
        RoyaltyDetailInfo {
            serial_no,
            trans_in: trans_in.into(),
            amount: Some(amount),
            ..Default::default()
        }
    }

    /// A line paying `percent` % to the `2088…` account `trans_in`.
    pub fn percentage_to(serial_no: i64, trans_in: impl Into<String>, percent: u32) -> Self {
        RoyaltyDetailInfo {
            serial_no,
            trans_in: trans_in.into(),
            amount_percentage: Some(percent),
            ..Default::default()
        }
    }

    /// Sets the payer (`trans_out`).
    pub fn from_account(mut self, trans_out: impl Into<String>) -> Self {
        self.trans_out = Some(trans_out.into());
        self
    }
}

impl RoyaltyInfo {
    /// A `ROYALTY` split with these lines.
    pub fn new(lines: Vec<RoyaltyDetailInfo>) -> Self {
        RoyaltyInfo {
            royalty_type: Some("ROYALTY".into()),
            royalty_detail_infos: lines,
        }
    }

    /// Checks the split against the trade amount: serial numbers positive and unique, each
    /// line with exactly one of amount (> 0) or percentage (1–100), amounts summing to at most
    /// `total`, percentages to at most 100, receiver ≠ payer, `userId` accounts `2088…`.
    pub fn validate(&self, total: Amount) -> Result<(), String> {
        if let Some(t) = &self.royalty_type
            && t != "ROYALTY"
        {
            return Err(format!(
                "royalty_info.royalty_type must be ROYALTY, not {t:?}"
            ));
        }
        if self.royalty_detail_infos.is_empty() {
            return Err("royalty_info.royalty_detail_infos must not be empty".into());
        }
        let mut serials = HashSet::new();
        let mut sum: i64 = 0;
        let mut percent_sum: u32 = 0;
        for (i, line) in self.royalty_detail_infos.iter().enumerate() {
            let at = format!("royalty_info.royalty_detail_infos[{i}]");
            if line.serial_no <= 0 {
                return Err(format!("{at}.serial_no must be a positive integer"));
            }
            if !serials.insert(line.serial_no) {
                return Err(format!(
                    "{at}.serial_no {} is used twice; serial numbers must be unique",
                    line.serial_no
                ));
            }
            if let Some(t) = &line.trans_out_type
                && t != "userId"
            {
                return Err(format!("{at}.trans_out_type must be userId, not {t:?}"));
            }
            if let Some(out) = &line.trans_out {
                validate_user_id(&format!("{at}.trans_out"), out)?;
            }
            let in_type = line.trans_in_type.as_deref().unwrap_or("userId");
            match in_type {
                "userId" => validate_user_id(&format!("{at}.trans_in"), &line.trans_in)?,
                "bankIndex" => {
                    if line.trans_in.len() != 28
                        || !line.trans_in.bytes().all(|b| b.is_ascii_digit())
                    {
                        return Err(format!("{at}.trans_in must be a 28-digit bankIndex"));
                    }
                }
                "storeId" => validate_max_chars(&format!("{at}.trans_in"), &line.trans_in, 64)?,
                other => {
                    return Err(format!(
                        "{at}.trans_in_type must be userId, bankIndex or storeId, not {other:?}"
                    ));
                }
            }
            if line.trans_out.as_deref() == Some(line.trans_in.as_str()) {
                return Err(format!("{at}.trans_in must differ from trans_out"));
            }
            match (line.amount, line.amount_percentage) {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "{at}: give either amount or amount_percentage, not both"
                    ));
                }
                (None, None) => {
                    return Err(format!(
                        "{at}: one of amount or amount_percentage is required"
                    ));
                }
                (Some(a), None) => {
                    if !a.is_positive() {
                        return Err(format!("{at}.amount must be at least 0.01"));
                    }
                    sum += a.fen();
                }
                (None, Some(p)) => {
                    if !(1..=100).contains(&p) {
                        return Err(format!("{at}.amount_percentage must be 1 to 100"));
                    }
                    percent_sum += p;
                }
            }
            if let Some(d) = &line.desc {
                validate_max_chars(&format!("{at}.desc"), d, 1000)?;
            }
        }
        if sum > total.fen() {
            return Err(format!(
                "royalty_info amounts add up to {}, more than the trade amount {total}",
                crate::money::format_signed_fen(sum)
            ));
        }
        if percent_sum > 100 {
            return Err(format!(
                "royalty_info percentages add up to {percent_sum}%, more than 100%"
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Relations (§4.4).

/// Account type of a royalty receiver (`RoyaltyEntity.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RoyaltyAccountType {
    /// `userId`: a `2088…` account id.
    #[serde(rename = "userId")]
    UserId,
    /// `loginName`: an Alipay login; `name` is required.
    #[serde(rename = "loginName")]
    LoginName,
    /// `openId`: for open_id apps.
    #[serde(rename = "openId")]
    OpenId,
}

/// A receiver to bind or unbind (`RoyaltyEntity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoyaltyEntity {
    /// Account type.
    #[serde(rename = "type")]
    pub kind: RoyaltyAccountType,
    /// The account.
    pub account: String,
    /// Real name: required for `loginName`, an optional check for `userId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
}

impl RoyaltyEntity {
    /// A `2088…` receiver.
    pub fn user_id(account: impl Into<String>) -> Self {
        RoyaltyEntity {
            kind: RoyaltyAccountType::UserId,
            account: account.into(),
            name: None,
            memo: None,
        }
    }

    fn validate(&self, at: &str) -> Result<(), String> {
        match self.kind {
            RoyaltyAccountType::UserId => {
                validate_user_id(&format!("{at}.account"), &self.account)?
            }
            RoyaltyAccountType::LoginName => {
                validate_max_chars(&format!("{at}.account"), &self.account, 100)?;
                if self.name.as_deref().is_none_or(str::is_empty) {
                    return Err(format!("{at}.name is required for a loginName receiver"));
                }
            }
            RoyaltyAccountType::OpenId => {
                validate_max_chars(&format!("{at}.account"), &self.account, 128)?
            }
        }
        Ok(())
    }
}

/// `alipay.trade.royalty.relation.bind`: allow receivers to get splits from this merchant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelationBind {
    /// Request number, unique (idempotency key).
    pub out_request_no: String,
    /// Receivers.
    pub receiver_list: Vec<RoyaltyEntity>,
}

/// `alipay.trade.royalty.relation.unbind`: the reverse of [`RelationBind`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelationUnbind {
    /// Request number, unique (idempotency key).
    pub out_request_no: String,
    /// Receivers.
    pub receiver_list: Vec<RoyaltyEntity>,
}

fn validate_relation(out_request_no: &str, list: &[RoyaltyEntity]) -> Result<(), String> {
    validate_merchant_no("out_request_no", out_request_no, 64)?;
    if list.is_empty() {
        return Err("receiver_list must not be empty".into());
    }
    for (i, r) in list.iter().enumerate() {
        r.validate(&format!("receiver_list[{i}]"))?;
    }
    Ok(())
}

/// Answer to relation bind / unbind.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RelationResponse {
    /// `SUCCESS` or `FAIL`.
    pub result_code: String,
}

impl RelationResponse {
    /// True for `SUCCESS`.
    pub fn is_success(&self) -> bool {
        self.result_code == "SUCCESS"
    }
}

impl ApiRequest for RelationBind {
    const METHOD: &'static str = "alipay.trade.royalty.relation.bind";
    type Response = RelationResponse;
    fn validate(&self) -> Result<(), String> {
        validate_relation(&self.out_request_no, &self.receiver_list)
    }
}

impl ApiRequest for RelationUnbind {
    const METHOD: &'static str = "alipay.trade.royalty.relation.unbind";
    type Response = RelationResponse;
    fn validate(&self) -> Result<(), String> {
        validate_relation(&self.out_request_no, &self.receiver_list)
    }
}

/// `alipay.trade.royalty.relation.batchquery`: list bound receivers, a page at a time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RelationBatchQuery {
    /// Page number, from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_num: Option<u32>,
    /// Page size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
    /// Request number.
    pub out_request_no: String,
}

impl ApiRequest for RelationBatchQuery {
    const METHOD: &'static str = "alipay.trade.royalty.relation.batchquery";
    type Response = RelationBatchQueryResponse;
    const READ_ONLY: bool = true;
    fn validate(&self) -> Result<(), String> {
        validate_merchant_no("out_request_no", &self.out_request_no, 64)?;
        if self.page_num == Some(0) || self.page_size == Some(0) {
            return Err("page_num and page_size start at 1".into());
        }
        Ok(())
    }
}

/// A bound receiver as listed by the batch query.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RoyaltyReceiver {
    /// Account type (`userId`, `loginName`, `openId`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The account.
    pub account: Option<String>,
    /// The account's open_id.
    pub account_open_id: Option<String>,
    /// Login name (masked).
    pub login_name: Option<String>,
    /// Login name given at bind time.
    pub bind_login_name: Option<String>,
    /// Note.
    pub memo: Option<String>,
}

/// Answer to `alipay.trade.royalty.relation.batchquery`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RelationBatchQueryResponse {
    /// `SUCCESS` / `FAIL`.
    pub result_code: Option<String>,
    /// Receivers on this page.
    #[serde(default)]
    pub receiver_list: Vec<RoyaltyReceiver>,
    /// Number of pages.
    #[serde(default, deserialize_with = "wire::opt_int")]
    pub total_page_num: Option<i64>,
    /// Number of receivers.
    #[serde(default, deserialize_with = "wire::opt_int")]
    pub total_record_num: Option<i64>,
    /// This page.
    #[serde(default, deserialize_with = "wire::opt_int")]
    pub current_page_num: Option<i64>,
    /// This page's size.
    #[serde(default, deserialize_with = "wire::opt_int")]
    pub current_page_size: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// Deferred settlement (§4.5, §4.6).

/// One split of `alipay.trade.order.settle` (`OpenApiRoyaltyDetailInfoPojo`); also the
/// `refund_royalty_parameters` of a refund.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoyaltyParameter {
    /// `transfer` (default) or `replenish` (补差).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub royalty_type: Option<String>,
    /// Payer account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trans_out: Option<String>,
    /// Payer account type: `userId` / `loginName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trans_out_type: Option<String>,
    /// Receiver account (required).
    pub trans_in: String,
    /// Receiver type: `userId`, `cardAliasNo`, `loginName`, `openId`, `alipayWallet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trans_in_type: Option<String>,
    /// Receiver's real name, checked by Alipay when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trans_in_name: Option<String>,
    /// Split amount; exclusive with `amount_percentage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Amount>,
    /// Split percentage, an integer 1–100 (JSON number); exclusive with `amount`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "wire::opt_percent"
    )]
    pub amount_percentage: Option<u32>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    /// One of `达人佣金`, `平台服务费`, `技术服务费`, `其他`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub royalty_scene: Option<String>,
}

const ROYALTY_SCENES: &[&str] = &["达人佣金", "平台服务费", "技术服务费", "其他"];
const SETTLE_TRANS_IN_TYPES: &[&str] = &[
    "userId",
    "cardAliasNo",
    "loginName",
    "openId",
    "alipayWallet",
];

impl RoyaltyParameter {
    /// A `transfer` of `amount` to the `2088…` account `trans_in`.
    pub fn transfer(trans_in: impl Into<String>, amount: Amount) -> Self {
        RoyaltyParameter {
            royalty_type: Some("transfer".into()),
            trans_in: trans_in.into(),
            trans_in_type: Some("userId".into()),
            amount: Some(amount),
            ..Default::default()
        }
    }

    /// Checks one split; `at` names it in messages.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if let Some(t) = &self.royalty_type
            && t != "transfer"
            && t != "replenish"
        {
            return Err(format!(
                "{at}.royalty_type must be transfer or replenish, not {t:?}"
            ));
        }
        if self.trans_in.is_empty() {
            return Err(format!("{at}.trans_in is required"));
        }
        let in_type = self.trans_in_type.as_deref().unwrap_or("userId");
        if !SETTLE_TRANS_IN_TYPES.contains(&in_type) {
            return Err(format!(
                "{at}.trans_in_type must be one of {SETTLE_TRANS_IN_TYPES:?}, not {in_type:?}"
            ));
        }
        if in_type == "userId" {
            validate_user_id(&format!("{at}.trans_in"), &self.trans_in)?;
        }
        if let Some(t) = &self.trans_out_type
            && t != "userId"
            && t != "loginName"
        {
            return Err(format!(
                "{at}.trans_out_type must be userId or loginName, not {t:?}"
            ));
        }
        if let Some(out) = &self.trans_out {
            if self.trans_out_type.as_deref().unwrap_or("userId") == "userId" {
                validate_user_id(&format!("{at}.trans_out"), out)?;
            }
            if *out == self.trans_in {
                return Err(format!("{at}.trans_in must differ from trans_out"));
            }
        }
        match (self.amount, self.amount_percentage) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{at}: give either amount or amount_percentage, not both"
                ));
            }
            (None, None) => {
                return Err(format!(
                    "{at}: one of amount or amount_percentage is required"
                ));
            }
            (Some(a), None) if !a.is_positive() => {
                return Err(format!("{at}.amount must be at least 0.01"));
            }
            (None, Some(p)) if !(1..=100).contains(&p) => {
                return Err(format!("{at}.amount_percentage must be 1 to 100"));
            }
            _ => {}
        }
        if let Some(s) = &self.royalty_scene
            && !ROYALTY_SCENES.contains(&s.as_str())
        {
            return Err(format!(
                "{at}.royalty_scene must be one of {ROYALTY_SCENES:?}"
            ));
        }
        Ok(())
    }
}

/// `royalty_mode` of a settle call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoyaltyMode {
    /// Result in the response (default).
    Sync,
    /// Result via `alipay.trade.order.settle.notify` to the app gateway.
    Async,
}

/// `extend_params` of a settle call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleExtendParams {
    /// `"true"`: release every remaining frozen amount to the seller after this split.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "wire::bool_as_string",
        deserialize_with = "wire::opt_flag"
    )]
    pub royalty_finish: Option<bool>,
    /// Release only this much (needs `royalty_finish`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub royalty_finish_amount: Option<Amount>,
}

/// `alipay.trade.order.settle`: split the frozen funds of a paid trade.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Settle {
    /// Settlement request number (≤32, letters, digits, `_`); the idempotency key.
    pub out_request_no: String,
    /// Alipay trade number.
    pub trade_no: String,
    /// The splits; may be omitted when only finishing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub royalty_parameters: Option<Vec<RoyaltyParameter>>,
    /// `sync` (default) or `async`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub royalty_mode: Option<RoyaltyMode>,
    /// `royalty_finish` / `royalty_finish_amount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extend_params: Option<SettleExtendParams>,
    /// Operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_id: Option<String>,
}

impl Settle {
    /// Splits `parameters` off trade `trade_no`.
    pub fn new(
        out_request_no: impl Into<String>,
        trade_no: impl Into<String>,
        parameters: Vec<RoyaltyParameter>,
    ) -> Self {
        Settle {
            out_request_no: out_request_no.into(),
            trade_no: trade_no.into(),
            royalty_parameters: Some(parameters),
            ..Default::default()
        }
    }

    /// A pure "finish" call: no split, release all frozen funds to the seller.
    pub fn finish(out_request_no: impl Into<String>, trade_no: impl Into<String>) -> Self {
        Settle {
            out_request_no: out_request_no.into(),
            trade_no: trade_no.into(),
            extend_params: Some(SettleExtendParams {
                royalty_finish: Some(true),
                royalty_finish_amount: None,
            }),
            ..Default::default()
        }
    }

    /// Also release the remaining frozen funds after this split (`royalty_finish=true`).
    pub fn and_finish(mut self) -> Self {
        let mut ext = self.extend_params.take().unwrap_or_default();
        ext.royalty_finish = Some(true);
        self.extend_params = Some(ext);
        self
    }
}

impl ApiRequest for Settle {
    const METHOD: &'static str = "alipay.trade.order.settle";
    type Response = SettleResponse;
    fn validate(&self) -> Result<(), String> {
        if self.out_request_no.is_empty()
            || self.out_request_no.len() > 32
            || !self
                .out_request_no
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err("out_request_no must be 1 to 32 letters, digits or `_`".into());
        }
        validate_trade_no(&self.trade_no)?;
        let finish = self
            .extend_params
            .as_ref()
            .and_then(|e| e.royalty_finish)
            .unwrap_or(false);
        match &self.royalty_parameters {
            Some(list) if !list.is_empty() => {
                for (i, p) in list.iter().enumerate() {
                    p.validate(&format!("royalty_parameters[{i}]"))?;
                }
            }
            _ if finish => {}
            _ => {
                return Err(
                    "royalty_parameters is required unless extend_params.royalty_finish is true"
                        .into(),
                );
            }
        }
        if let Some(ext) = &self.extend_params
            && let Some(a) = ext.royalty_finish_amount
        {
            if !finish {
                return Err("royalty_finish_amount needs royalty_finish=true".into());
            }
            if !a.is_positive() {
                return Err("royalty_finish_amount must be at least 0.01".into());
            }
        }
        if let Some(op) = &self.operator_id {
            validate_max_chars("operator_id", op, 64)?;
        }
        Ok(())
    }
}

/// Answer to `alipay.trade.order.settle`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SettleResponse {
    /// Alipay trade number.
    pub trade_no: String,
    /// Alipay settlement number.
    pub settle_no: Option<String>,
}

/// `alipay.trade.order.settle.query`: by `settle_no`, or by `out_request_no` + `trade_no`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SettleQuery {
    /// Alipay settlement number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settle_no: Option<String>,
    /// Our settlement request number (with `trade_no`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_request_no: Option<String>,
    /// Alipay trade number (with `out_request_no`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
}

impl SettleQuery {
    /// Query by settlement number.
    pub fn by_settle_no(settle_no: impl Into<String>) -> Self {
        SettleQuery {
            settle_no: Some(settle_no.into()),
            ..Default::default()
        }
    }

    /// Query by our request number and the trade.
    pub fn by_request(out_request_no: impl Into<String>, trade_no: impl Into<String>) -> Self {
        SettleQuery {
            settle_no: None,
            out_request_no: Some(out_request_no.into()),
            trade_no: Some(trade_no.into()),
        }
    }
}

impl ApiRequest for SettleQuery {
    const METHOD: &'static str = "alipay.trade.order.settle.query";
    type Response = SettleQueryResponse;
    const READ_ONLY: bool = true;
    fn validate(&self) -> Result<(), String> {
        match (&self.settle_no, &self.out_request_no, &self.trade_no) {
            (Some(s), _, _) if !s.is_empty() => Ok(()),
            (_, Some(r), Some(t)) if !r.is_empty() => validate_trade_no(t),
            _ => Err("give settle_no, or out_request_no together with trade_no".into()),
        }
    }
}

/// One executed split (`RoyaltyDetail`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RoyaltyDetail {
    /// `transfer`, `transfer_refund`, `replenish`, `replenish_refund`.
    pub operation_type: Option<String>,
    /// Execution time.
    pub execute_dt: Option<String>,
    /// Payer.
    pub trans_out: Option<String>,
    /// Payer type.
    pub trans_out_type: Option<String>,
    /// Payer open_id.
    pub trans_out_open_id: Option<String>,
    /// Receiver.
    pub trans_in: Option<String>,
    /// Receiver type.
    pub trans_in_type: Option<String>,
    /// Receiver open_id.
    pub trans_in_open_id: Option<String>,
    /// Amount.
    pub amount: Option<Amount>,
    /// `SUCCESS`, `FAIL` or `PROCESSING`.
    pub state: Option<String>,
    /// Split id.
    pub detail_id: Option<String>,
    /// Error code when failed.
    pub error_code: Option<String>,
    /// Error text when failed.
    pub error_desc: Option<String>,
}

/// Answer to `alipay.trade.order.settle.query`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SettleQueryResponse {
    /// Our request number.
    pub out_request_no: Option<String>,
    /// Settlement time.
    pub operation_dt: Option<String>,
    /// The splits.
    #[serde(default)]
    pub royalty_detail_list: Vec<RoyaltyDetail>,
    /// Settlement number (sandbox answers carry it).
    pub settle_no: Option<String>,
    /// Result code (sandbox answers carry it).
    pub result_code: Option<String>,
}

/// `alipay.trade.order.onsettle.query`: how much of a trade can still be split.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OnsettleQuery {
    /// Alipay trade number.
    pub trade_no: String,
    /// `unsettled` = from the pending-settlement funds; absent = after-sale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub royalty_source: Option<String>,
}

impl ApiRequest for OnsettleQuery {
    const METHOD: &'static str = "alipay.trade.order.onsettle.query";
    type Response = OnsettleQueryResponse;
    const READ_ONLY: bool = true;
    fn validate(&self) -> Result<(), String> {
        validate_trade_no(&self.trade_no)
    }
}

/// Answer to `alipay.trade.order.onsettle.query`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OnsettleQueryResponse {
    /// Still splittable.
    pub unsettled_amount: Amount,
}
