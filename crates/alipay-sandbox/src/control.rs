//! The JSON control API: what a test or script does as the buyer, the clock or the operator
//! of the sandbox. Routes live under `/control/`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::fields::yuan;
use crate::api::trade;
use crate::config::{AppConfig, AppKeyMode};
use crate::fault::Rule;
use crate::ids;
use crate::model::{App, Buyer, KeyMode};
use crate::{Ctx, gateway};

/// The control routes.
pub fn router() -> Router<Arc<Ctx>> {
    Router::new()
        .route("/control/info", get(info))
        .route("/control/apps", get(list_apps).post(register_app))
        .route("/control/buyers", get(list_buyers).post(create_buyer))
        .route("/control/buyers/{user_id}", get(get_buyer))
        .route("/control/trades", get(list_trades))
        .route("/control/trades/pay", post(pay_trade))
        .route("/control/qr/pay", post(pay_qr))
        .route("/control/clock", get(get_clock))
        .route("/control/clock/advance", post(advance_clock))
        .route("/control/notifications", get(list_notifications))
        .route("/control/notifications/{notify_id}", get(get_notification))
        .route(
            "/control/notifications/{notify_id}/resend",
            post(resend_notification),
        )
        .route(
            "/control/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .merge(crate::api::control_routes::router())
}

/// A control API error: 4xx with a reason.
#[derive(Debug)]
pub struct ControlError(StatusCode, String);

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ControlError {
    ControlError(StatusCode::UNPROCESSABLE_ENTITY, msg.into())
}

fn not_found(msg: impl Into<String>) -> ControlError {
    ControlError(StatusCode::NOT_FOUND, msg.into())
}

type Result<T> = std::result::Result<T, ControlError>;

/// Registers an app from its configuration in public-key mode (a PID is generated when absent).
pub fn register_app_config(ctx: &Ctx, cfg: AppConfig) -> anyhow::Result<App> {
    register_app_as(ctx, cfg, AppKeyMode::PublicKey)
}

/// Registers an app in the given key mode (a PID is generated when absent).
pub fn register_app_as(ctx: &Ctx, cfg: AppConfig, mode: AppKeyMode) -> anyhow::Result<App> {
    let key = gateway::parse_app_key(&cfg.public_key).ok_or_else(|| {
        anyhow::anyhow!(
            "app {}: public_key is not an RSA public key (SPKI PEM or base64)",
            cfg.app_id
        )
    })?;
    let seller_pid = match cfg.seller_pid {
        Some(p) if alipay::types::is_user_id(&p) => p,
        Some(p) => anyhow::bail!("app {}: seller_pid {p:?} is not a 2088… PID", cfg.app_id),
        None => {
            let existing = ctx.app(&cfg.app_id).map(|a| a.seller_pid);
            existing.unwrap_or_else(|| {
                let mut store = ctx.store();
                ids::user_id(store.next_seq())
            })
        }
    };
    if cfg.app_id.is_empty() || !cfg.app_id.bytes().all(|b| b.is_ascii_digit()) {
        anyhow::bail!("app_id {:?} must be digits", cfg.app_id);
    }
    let key_mode = match mode {
        AppKeyMode::PublicKey => KeyMode::PublicKey,
        AppKeyMode::Cert => cert_key_mode(ctx, &cfg.app_id, &key)?,
    };
    let app = App {
        app_id: cfg.app_id,
        public_key: key.to_spki_base64(),
        seller_pid,
        allowed_seller_ids: cfg.allowed_seller_ids,
        notify_url: cfg.notify_url,
        gateway_notify_url: cfg.gateway_notify_url,
        redirect_uris: cfg.redirect_uris,
        id_mode: cfg.id_mode,
        key_mode,
    };
    ctx.register_app(app.clone())?;
    Ok(app)
}

/// The certificate of an app in certificate mode: the one it has when it registers again with
/// the same key (a config file registers its apps at every start), else a new one.
fn cert_key_mode(ctx: &Ctx, app_id: &str, key: &alipay::PublicKey) -> anyhow::Result<KeyMode> {
    if let Some(existing) = ctx.app(app_id)
        && existing.public_key == key.to_spki_base64()
        && let KeyMode::Certificate { app_cert_pem, .. } = &existing.key_mode
        && !app_cert_pem.is_empty()
    {
        return Ok(existing.key_mode.clone());
    }
    let issued = ctx.ca.issue_app_cert(app_id, key)?;
    Ok(KeyMode::Certificate {
        app_cert_sn: issued.sn,
        app_cert_pem: issued.pem,
    })
}

/// Creates a buyer.
pub fn new_buyer(
    ctx: &Ctx,
    balance_fen: i64,
    phone: Option<String>,
    nick_name: Option<String>,
) -> Buyer {
    let mut store = ctx.store();
    let seq = store.next_seq();
    let user_id = ids::user_id(seq);
    let tail = &user_id[user_id.len() - 4..];
    let buyer = Buyer {
        logon_id: format!("buyer{tail}@sandbox.com"),
        nick_name: nick_name.unwrap_or_else(|| format!("沙箱买家{tail}")),
        phone: phone.unwrap_or_else(|| format!("1380000{tail}")),
        avatar: String::new(),
        balance_fen,
        user_id,
    };
    store.put_buyer(buyer.clone());
    store.flush();
    buyer
}

/// Creates `n` demo buyers when the store has none.
pub fn ensure_demo_buyers(ctx: &Ctx, n: usize) {
    if !ctx.store().data.buyers.is_empty() {
        return;
    }
    for _ in 0..n {
        new_buyer(ctx, 1_000_000, None, None);
    }
}

fn buyer_json(b: &Buyer) -> Value {
    json!({
        "user_id": b.user_id, "logon_id": b.logon_id, "nick_name": b.nick_name, "phone": b.phone,
        "balance": yuan(b.balance_fen), "balance_fen": b.balance_fen,
    })
}

async fn info(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    let apps: Vec<String> = ctx.store().data.apps.keys().cloned().collect();
    Json(json!({
        "gateway_url": format!("{}/gateway.do", ctx.base_url),
        "base_url": ctx.base_url,
        "alipay_public_key": ctx.public_key.to_spki_base64(),
        "apps": apps,
        "clock_offset_ms": ctx.clock.offset_ms(),
    }))
}

async fn list_apps(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    let apps: Vec<Value> = ctx
        .store()
        .data
        .apps
        .values()
        .map(|a| json!({ "app_id": a.app_id, "seller_pid": a.seller_pid, "id_mode": a.id_mode, "key_mode": a.key_mode, "notify_url": a.notify_url }))
        .collect();
    Json(json!({ "apps": apps }))
}

/// `POST /control/apps`: an `[[apps]]` entry, plus `key_mode`.
#[derive(Debug, Deserialize)]
struct RegisterApp {
    #[serde(flatten)]
    app: AppConfig,
    #[serde(default)]
    key_mode: AppKeyMode,
}

async fn register_app(
    State(ctx): State<Arc<Ctx>>,
    Json(req): Json<RegisterApp>,
) -> Result<Json<Value>> {
    let app = register_app_as(&ctx, req.app, req.key_mode).map_err(|e| bad(e.to_string()))?;
    let mut answer = json!({ "app_id": app.app_id, "seller_pid": app.seller_pid, "alipay_public_key": ctx.public_key.to_spki_base64() });
    if let (Some(obj), Some(certs)) = (
        answer.as_object_mut(),
        crate::cert_routes::certs_json(&ctx, &app),
    ) {
        obj.extend(certs);
    }
    Ok(Json(answer))
}

#[derive(Debug, Deserialize)]
struct NewBuyer {
    /// Yuan, e.g. "100.00"; default 10000.00.
    balance: Option<String>,
    phone: Option<String>,
    nick_name: Option<String>,
}

async fn create_buyer(
    State(ctx): State<Arc<Ctx>>,
    Json(req): Json<NewBuyer>,
) -> Result<Json<Value>> {
    let balance_fen = match req.balance.as_deref() {
        None => 1_000_000,
        Some(b) => alipay::Amount::parse(b)
            .map_err(|e| bad(format!("balance: {e}")))?
            .fen(),
    };
    let buyer = new_buyer(&ctx, balance_fen, req.phone, req.nick_name);
    Ok(Json(buyer_json(&buyer)))
}

#[derive(Debug, Deserialize)]
struct AppFilter {
    app_id: Option<String>,
}

async fn list_buyers(State(ctx): State<Arc<Ctx>>, Query(f): Query<AppFilter>) -> Json<Value> {
    let store = ctx.store();
    let buyers: Vec<Value> = store
        .data
        .buyers
        .values()
        .map(|b| {
            let mut v = buyer_json(b);
            if let Some(app_id) = &f.app_id {
                v["open_id"] = ids::open_id(app_id, &b.user_id).into();
            }
            v
        })
        .collect();
    Json(json!({ "buyers": buyers }))
}

async fn get_buyer(
    State(ctx): State<Arc<Ctx>>,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    let store = ctx.store();
    let b = store
        .data
        .buyers
        .get(&user_id)
        .ok_or_else(|| not_found("no such buyer"))?;
    Ok(Json(buyer_json(b)))
}

async fn list_trades(State(ctx): State<Arc<Ctx>>, Query(f): Query<AppFilter>) -> Json<Value> {
    let store = ctx.store();
    let trades: Vec<Value> = store
        .data
        .trades
        .values()
        .filter(|t| f.app_id.as_ref().is_none_or(|a| *a == t.app_id))
        .map(|t| {
            let refunds: Vec<Value> = store
                .refunds_of(&t.trade_no)
                .iter()
                .map(|r| json!({ "out_request_no": r.out_request_no, "amount": yuan(r.amount_fen), "amount_fen": r.amount_fen }))
                .collect();
            json!({
                "app_id": t.app_id, "trade_no": t.trade_no, "out_trade_no": t.out_trade_no,
                "state": t.state, "trade_status": t.state.wire(), "total_fen": t.total_fen,
                "refunded_fen": t.refunded_fen, "unsettled_fen": t.unsettled_fen, "terminal_id": t.terminal_id,
                "seller_id": t.seller_id, "buyer_user_id": t.buyer_user_id, "refunds": refunds,
            })
        })
        .collect();
    Json(json!({ "trades": trades }))
}

#[derive(Debug, Deserialize)]
struct PayTrade {
    app_id: String,
    trade_no: Option<String>,
    out_trade_no: Option<String>,
    buyer_id: String,
}

async fn pay_trade(State(ctx): State<Arc<Ctx>>, Json(req): Json<PayTrade>) -> Result<Json<Value>> {
    let now = ctx.clock.now_ms();
    let trade_no = {
        let store = ctx.store();
        store
            .find_trade(
                &req.app_id,
                req.trade_no.as_deref(),
                req.out_trade_no.as_deref(),
            )
            .map(|t| t.trade_no.clone())
            .ok_or_else(|| not_found("no such trade"))?
    };
    pay_as(&ctx, &trade_no, &req.buyer_id, now)
}

#[derive(Debug, Deserialize)]
struct PayQr {
    qr_code: String,
    buyer_id: String,
}

async fn pay_qr(State(ctx): State<Arc<Ctx>>, Json(req): Json<PayQr>) -> Result<Json<Value>> {
    let now = ctx.clock.now_ms();
    let trade_no = qr_trade_no(&ctx, &req.qr_code)
        .ok_or_else(|| not_found("this QR code is not one the sandbox issued"))?;
    pay_as(&ctx, &trade_no, &req.buyer_id, now)
}

/// The trade a QR code content names, when the code's token matches.
pub fn qr_trade_no(ctx: &Ctx, qr_code: &str) -> Option<String> {
    let store = ctx.store();
    let path = qr_code.split("/qr/").nth(1)?;
    let trade_no = path.split('?').next()?;
    let trade = store.data.trades.get(trade_no)?;
    (trade.qr_code.as_deref() == Some(qr_code)).then(|| trade.trade_no.clone())
}

fn pay_as(ctx: &Ctx, trade_no: &str, buyer_id: &str, now: i64) -> Result<Json<Value>> {
    let result = {
        let mut store = ctx.store();
        let r = trade::pay(ctx, &mut store, trade_no, buyer_id, now);
        store.flush();
        r
    };
    ctx.wake_notifier();
    match result {
        Ok(t) => Ok(Json(
            json!({ "trade_no": t.trade_no, "out_trade_no": t.out_trade_no, "trade_status": t.state.wire() }),
        )),
        Err(e) => Err(ControlError(
            StatusCode::CONFLICT,
            format!("{}: {}", e.sub_code, e.sub_msg),
        )),
    }
}

async fn get_clock(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    Json(
        json!({ "now_ms": ctx.clock.now_ms(), "offset_ms": ctx.clock.offset_ms(), "now": crate::clock::fmt_ms(ctx.clock.now_ms()) }),
    )
}

#[derive(Debug, Deserialize)]
struct Advance {
    seconds: i64,
}

async fn advance_clock(
    State(ctx): State<Arc<Ctx>>,
    Json(req): Json<Advance>,
) -> Result<Json<Value>> {
    if req.seconds < 0 {
        return Err(bad("the clock only moves forward"));
    }
    let offset = ctx.clock.advance(req.seconds.saturating_mul(1000));
    {
        let mut store = ctx.store();
        store.set_clock_offset(offset);
        store.flush();
    }
    ctx.wake_notifier();
    Ok(Json(
        json!({ "offset_ms": offset, "now_ms": ctx.clock.now_ms() }),
    ))
}

#[derive(Debug, Deserialize)]
struct NotificationFilter {
    app_id: Option<String>,
    out_trade_no: Option<String>,
    trade_no: Option<String>,
}

fn notification_json(ctx: &Ctx, n: &crate::model::Notification) -> Value {
    let params: serde_json::Map<String, Value> = n
        .params
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "notify_id": n.notify_id, "app_id": n.app_id, "url": n.url, "params": params,
        "created_at": n.created_at, "acknowledged": n.acknowledged, "attempts": n.attempts,
        "max_attempts": ctx.config.notify_schedule_secs.len(),
        "next_attempt_at": n.next_attempt_at, "deliveries": n.deliveries,
    })
}

async fn list_notifications(
    State(ctx): State<Arc<Ctx>>,
    Query(f): Query<NotificationFilter>,
) -> Json<Value> {
    let param = |n: &crate::model::Notification, k: &str| {
        n.params
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
    };
    let mut list: Vec<crate::model::Notification> = {
        let store = ctx.store();
        store
            .data
            .notifications
            .values()
            .filter(|n| f.app_id.as_ref().is_none_or(|a| *a == n.app_id))
            .filter(|n| {
                f.out_trade_no
                    .as_ref()
                    .is_none_or(|o| param(n, "out_trade_no").as_ref() == Some(o))
            })
            .filter(|n| {
                f.trade_no
                    .as_ref()
                    .is_none_or(|t| param(n, "trade_no").as_ref() == Some(t))
            })
            .cloned()
            .collect()
    };
    list.sort_by_key(|n| (n.seq, n.created_at));
    let list: Vec<Value> = list.iter().map(|n| notification_json(&ctx, n)).collect();
    Json(json!({ "notifications": list }))
}

async fn get_notification(
    State(ctx): State<Arc<Ctx>>,
    Path(notify_id): Path<String>,
) -> Result<Json<Value>> {
    let n = ctx
        .store()
        .data
        .notifications
        .get(&notify_id)
        .cloned()
        .ok_or_else(|| not_found("no such notification"))?;
    Ok(Json(notification_json(&ctx, &n)))
}

async fn resend_notification(
    State(ctx): State<Arc<Ctx>>,
    Path(notify_id): Path<String>,
) -> Result<Json<Value>> {
    if !crate::notify::resend(&ctx, &notify_id) {
        return Err(not_found("no such notification"));
    }
    Ok(Json(json!({ "notify_id": notify_id, "resend": true })))
}

fn faults_json(ctx: &Ctx) -> Value {
    json!({
        "gateway": ctx.faults.gateway_rules(),
        "notification": ctx.faults.notification_rules(),
        "face": ctx.faults.face_rules(),
        "seed": ctx.config.seed,
    })
}

async fn list_faults(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    Json(faults_json(&ctx))
}

async fn add_fault(State(ctx): State<Arc<Ctx>>, Json(rule): Json<Value>) -> Result<Json<Value>> {
    let rule = Rule::from_json(rule).map_err(bad)?;
    ctx.faults.add(rule);
    ctx.wake_notifier();
    Ok(Json(faults_json(&ctx)))
}

async fn clear_faults(State(ctx): State<Arc<Ctx>>) -> StatusCode {
    ctx.faults.clear();
    // Notifications held for an out-of-order batch are released.
    ctx.wake_notifier();
    StatusCode::NO_CONTENT
}
