//! The sandbox's records: apps, buyers, trades, refunds, settlements, freezes, agreements,
//! OAuth grants, face tokens and notifications. Plain data; the rules live in `api::*`.
//!
//! Every record has a stable key and is persisted whole (see `store`), so a record type may
//! gain fields with `#[serde(default)]` without breaking an existing data folder.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, on the sandbox clock.
pub type Millis = i64;

/// How an app's users are named to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IdMode {
    /// `user_id` / `buyer_id` (2088…).
    #[default]
    UserId,
    /// `open_id` / `buyer_open_id` only (apps migrated to open_id).
    OpenId,
}

/// How an app signs and verifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum KeyMode {
    /// 密钥模式: the app's public key is registered.
    #[default]
    PublicKey,
    /// 公钥证书模式: the sandbox issued the app a certificate with this SN.
    Certificate {
        /// SN of the app certificate the sandbox issued.
        app_cert_sn: String,
        /// That certificate, PEM (served again by `GET /control/apps/{app_id}/certs`).
        #[serde(default)]
        app_cert_pem: String,
    },
}

/// A registered app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// `app_id`.
    pub app_id: String,
    /// The app's public key, SPKI base64.
    pub public_key: String,
    /// The signing merchant's PID (default receiving account).
    pub seller_pid: String,
    /// Other receiving accounts allowed as `seller_id` (收款限制集).
    #[serde(default)]
    pub allowed_seller_ids: Vec<String>,
    /// Default `notify_url` for trade notifications.
    #[serde(default)]
    pub notify_url: Option<String>,
    /// App gateway (应用网关) for app-gateway messages.
    #[serde(default)]
    pub gateway_notify_url: Option<String>,
    /// OAuth redirect URIs this app may use (授权回调地址); empty = any http(s) URL.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// user_id or open_id app.
    #[serde(default)]
    pub id_mode: IdMode,
    /// Public-key or certificate mode.
    #[serde(default)]
    pub key_mode: KeyMode,
}

/// A sandbox buyer account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buyer {
    /// `2088…` user id.
    pub user_id: String,
    /// Login shown masked in answers, e.g. `buyer1234@sandbox.com`.
    pub logon_id: String,
    /// Nickname.
    pub nick_name: String,
    /// Mobile number.
    pub phone: String,
    /// Avatar URL.
    #[serde(default)]
    pub avatar: String,
    /// Balance in fen.
    pub balance_fen: i64,
}

/// Trade state at the sandbox (Alipay's `trade_status`, plus "not yet scanned").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeState {
    /// Precreated; no buyer has scanned yet (query answers `ACQ.TRADE_NOT_EXIST`).
    Precreated,
    /// `WAIT_BUYER_PAY`.
    WaitBuyerPay,
    /// `TRADE_SUCCESS`.
    TradeSuccess,
    /// `TRADE_FINISHED`.
    TradeFinished,
    /// `TRADE_CLOSED`.
    TradeClosed,
}

impl TradeState {
    /// The wire `trade_status`.
    pub fn wire(self) -> &'static str {
        match self {
            TradeState::Precreated | TradeState::WaitBuyerPay => "WAIT_BUYER_PAY",
            TradeState::TradeSuccess => "TRADE_SUCCESS",
            TradeState::TradeFinished => "TRADE_FINISHED",
            TradeState::TradeClosed => "TRADE_CLOSED",
        }
    }

    /// Paid (success or finished).
    pub fn is_paid(self) -> bool {
        matches!(self, TradeState::TradeSuccess | TradeState::TradeFinished)
    }
}

/// Which API created the trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TradeOrigin {
    /// `alipay.trade.precreate`.
    Precreate,
    /// `alipay.trade.create`.
    Create,
    /// `alipay.trade.pay`.
    Pay,
}

/// A trade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    /// The app that created it.
    pub app_id: String,
    /// `out_trade_no`.
    pub out_trade_no: String,
    /// `trade_no` (28 digits, date prefix).
    pub trade_no: String,
    /// Origin API.
    pub origin: TradeOrigin,
    /// Current state.
    pub state: TradeState,
    /// `total_amount` in fen.
    pub total_fen: i64,
    /// `subject`.
    pub subject: String,
    /// `body`.
    #[serde(default)]
    pub body: Option<String>,
    /// Receiving account.
    pub seller_id: String,
    /// `product_code`.
    pub product_code: String,
    /// `store_id`.
    #[serde(default)]
    pub store_id: Option<String>,
    /// `terminal_id`.
    #[serde(default)]
    pub terminal_id: Option<String>,
    /// `operator_id`.
    #[serde(default)]
    pub operator_id: Option<String>,
    /// Buyer user id, once known.
    #[serde(default)]
    pub buyer_user_id: Option<String>,
    /// `notify_url` of the creating call.
    #[serde(default)]
    pub notify_url: Option<String>,
    /// `passback_params`.
    #[serde(default)]
    pub passback_params: Option<String>,
    /// The raw `biz_content` of the creating call, for `ACQ.CONTEXT_INCONSISTENT` checks.
    pub fingerprint: String,
    /// QR code content (precreate).
    #[serde(default)]
    pub qr_code: Option<String>,
    /// Created at.
    pub created_at: Millis,
    /// Unpaid trades close at this time. A precreate nobody has scanned: when its code stops
    /// being valid (`qr_code_timeout_express`, at most 2 hours).
    pub expires_at: Millis,
    /// A precreate's payment time, counted from the scan (`timeout_express`): set as
    /// `expires_at` when its code is scanned.
    #[serde(default)]
    pub pay_timeout_ms: Option<i64>,
    /// Paid at.
    #[serde(default)]
    pub paid_at: Option<Millis>,
    /// Closed at.
    #[serde(default)]
    pub closed_at: Option<Millis>,
    /// Cumulative refunded fen.
    #[serde(default)]
    pub refunded_fen: i64,
    /// `royalty_freeze=true`: funds frozen for `order.settle`.
    #[serde(default)]
    pub royalty_freeze: bool,
    /// Fen still frozen for settlement.
    #[serde(default)]
    pub unsettled_fen: i64,
    /// Per-trade `royalty_info` (real-time split), as sent.
    #[serde(default)]
    pub royalty_info: Option<serde_json::Value>,
    /// Pre-auth `auth_no` this payment converted.
    #[serde(default)]
    pub auth_no: Option<String>,
    /// Agreement charged.
    #[serde(default)]
    pub agreement_no: Option<String>,
}

/// A refund of a trade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// The trade.
    pub trade_no: String,
    /// Its `out_trade_no`.
    pub out_trade_no: String,
    /// `out_request_no` (defaults to `out_trade_no`).
    pub out_request_no: String,
    /// Amount of this refund, fen.
    pub amount_fen: i64,
    /// `refund_reason`.
    #[serde(default)]
    pub reason: Option<String>,
    /// When the money moved.
    pub refunded_at: Millis,
}

/// A settlement (`alipay.trade.order.settle`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// `settle_no`.
    pub settle_no: String,
    /// The trade.
    pub trade_no: String,
    /// `out_request_no`.
    pub out_request_no: String,
    /// The lines, as accepted.
    pub lines: Vec<SettleLine>,
    /// Raw request fingerprint for idempotency checks.
    pub fingerprint: String,
    /// When.
    pub settled_at: Millis,
    /// True when `royalty_finish` released the rest to the seller.
    #[serde(default)]
    pub finished: bool,
}

/// One settled transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleLine {
    /// `transfer` or `replenish`.
    pub royalty_type: String,
    /// Payer account.
    pub trans_out: String,
    /// Receiver account.
    pub trans_in: String,
    /// Receiver account type.
    pub trans_in_type: String,
    /// Fen.
    pub amount_fen: i64,
    /// `detail_id`.
    pub detail_id: String,
}

/// A royalty relation (分账关系) of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoyaltyRelation {
    /// The app.
    pub app_id: String,
    /// `userId`, `loginName` or `openId`.
    pub account_type: String,
    /// The account.
    pub account: String,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Memo.
    #[serde(default)]
    pub memo: Option<String>,
}

/// A pre-authorisation (资金授权) order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    /// The app.
    pub app_id: String,
    /// `auth_no`.
    pub auth_no: String,
    /// `out_order_no`.
    pub out_order_no: String,
    /// `product_code` (`PRE_AUTH`, `PRE_AUTH_ONLINE`, …).
    pub product_code: String,
    /// `INIT`, `AUTHORIZED`, `FINISH`, `CLOSED`.
    pub order_status: String,
    /// Payer (once frozen).
    #[serde(default)]
    pub payer_user_id: Option<String>,
    /// Payee.
    pub payee_user_id: String,
    /// Title.
    pub order_title: String,
    /// Totals in fen.
    pub total_freeze_fen: i64,
    /// Unfrozen so far.
    pub total_unfreeze_fen: i64,
    /// Paid from the freeze.
    pub total_pay_fen: i64,
    /// `notify_url`.
    #[serde(default)]
    pub notify_url: Option<String>,
    /// Operations (freeze, unfreeze, pay).
    pub operations: Vec<FundOperation>,
    /// Created at.
    pub created_at: Millis,
    /// Unfrozen-voucher timeout.
    pub expires_at: Millis,
}

impl Freeze {
    /// Fen still frozen.
    pub fn rest_fen(&self) -> i64 {
        self.total_freeze_fen - self.total_unfreeze_fen - self.total_pay_fen
    }
}

/// One pre-auth operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundOperation {
    /// `operation_id`.
    pub operation_id: String,
    /// `out_request_no`.
    pub out_request_no: String,
    /// `FREEZE`, `UNFREEZE`, `PAY`.
    pub operation_type: String,
    /// Fen.
    pub amount_fen: i64,
    /// `INIT`, `SUCCESS`, `CLOSED`.
    pub status: String,
    /// When.
    pub at: Millis,
    /// Remark.
    #[serde(default)]
    pub remark: Option<String>,
}

/// A withholding agreement (商户代扣).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    /// The app.
    pub app_id: String,
    /// `agreement_no`.
    pub agreement_no: String,
    /// `external_agreement_no`.
    #[serde(default)]
    pub external_agreement_no: Option<String>,
    /// Signer.
    pub user_id: String,
    /// `personal_product_code`.
    pub personal_product_code: String,
    /// `sign_scene`.
    pub sign_scene: String,
    /// `NORMAL`, `TEMP`, `STOP`, `UNSIGN`.
    pub status: String,
    /// Signed at.
    pub signed_at: Millis,
    /// `notify_url` for `dut_user_sign`.
    #[serde(default)]
    pub notify_url: Option<String>,
}

/// An OAuth grant: a one-time code, then tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthGrant {
    /// The app.
    pub app_id: String,
    /// The user.
    pub user_id: String,
    /// `auth_base` / `auth_user` (comma list).
    pub scope: String,
    /// The `auth_code` (single use).
    pub code: String,
    /// Code expiry.
    pub code_expires_at: Millis,
    /// True once exchanged.
    pub code_used: bool,
    /// `access_token`, once exchanged.
    #[serde(default)]
    pub access_token: Option<String>,
    /// `refresh_token`.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Token expiry.
    #[serde(default)]
    pub token_expires_at: Millis,
}

/// A face token issued by the face step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaceToken {
    /// The `fp…` token (35 characters).
    pub ftoken: String,
    /// The buyer it identifies.
    pub user_id: String,
    /// Expiry.
    pub expires_at: Millis,
    /// Single use.
    pub used: bool,
}

/// A payment code (付款码) a buyer shows at a till, for `trade.pay` with `scene=bar_code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCode {
    /// The `auth_code`: 18 digits starting `28`.
    pub code: String,
    /// The buyer it pays from.
    pub user_id: String,
    /// Expiry.
    pub expires_at: Millis,
    /// Single use.
    pub used: bool,
}

/// A notification and its deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// `notify_id` (same across retries).
    pub notify_id: String,
    /// The app.
    pub app_id: String,
    /// Where it goes.
    pub url: String,
    /// The signed parameters, in order.
    pub params: Vec<(String, String)>,
    /// Created at.
    pub created_at: Millis,
    /// Next attempt due (None: done or given up).
    #[serde(default)]
    pub next_attempt_at: Option<Millis>,
    /// Attempts so far.
    #[serde(default)]
    pub deliveries: Vec<Delivery>,
    /// True once the merchant answered `success`.
    #[serde(default)]
    pub acknowledged: bool,
    /// Attempts made (a duplicated attempt counts once; a dropped one counts).
    #[serde(default)]
    pub attempts: u32,
    /// Creation order among notifications.
    #[serde(default)]
    pub seq: u64,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// When.
    pub at: Millis,
    /// HTTP status, if any.
    pub status: Option<u16>,
    /// First bytes of the answer, or the error.
    pub answer: String,
    /// True if the answer was exactly `success`.
    pub success: bool,
    /// Which attempt (0-based) this delivery belongs to.
    #[serde(default)]
    pub attempt: u32,
    /// The injected fault that shaped it (`drop`, `duplicate`, `delay`, `out_of_order`,
    /// `bad_signature`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

/// Everything the sandbox keeps, by key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Data {
    /// Apps by app_id.
    pub apps: BTreeMap<String, App>,
    /// Buyers by user_id.
    pub buyers: BTreeMap<String, Buyer>,
    /// Trades by trade_no.
    pub trades: BTreeMap<String, Trade>,
    /// Refunds by `trade_no|out_request_no`.
    pub refunds: BTreeMap<String, Refund>,
    /// Settlements by settle_no.
    pub settlements: BTreeMap<String, Settlement>,
    /// Royalty relations by `app_id|account`.
    pub relations: BTreeMap<String, RoyaltyRelation>,
    /// Freezes by auth_no.
    pub freezes: BTreeMap<String, Freeze>,
    /// Agreements by agreement_no.
    pub agreements: BTreeMap<String, Agreement>,
    /// OAuth grants by code.
    pub grants: BTreeMap<String, OAuthGrant>,
    /// Face tokens by ftoken.
    pub face_tokens: BTreeMap<String, FaceToken>,
    /// Notifications by notify_id.
    pub notifications: BTreeMap<String, Notification>,
    /// Payment codes by code.
    #[serde(default)]
    pub payment_codes: BTreeMap<String, PaymentCode>,
    /// Counters for ids.
    pub sequence: u64,
    /// Clock offset set through the control API, ms.
    pub clock_offset_ms: i64,
}
