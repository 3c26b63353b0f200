//! 统一收单: precreate, create and query, and the payment step the buyer side triggers.

use serde_json::{Map, Value, json};

use super::Call;
use super::fields::*;
use crate::Ctx;
use crate::clock::fmt_ms;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::model::{App, Buyer, IdMode, Millis, Trade, TradeOrigin, TradeState};
use crate::notify;
use crate::store::Store;

/// Default unpaid lifetime of a 当面付 trade: 3 hours.
const DEFAULT_TIMEOUT_MS: i64 = 3 * 3_600_000;
/// A precreate QR code is valid at most 2 hours.
const QR_MAX_MS: i64 = 2 * 3_600_000;

/// Fields shared by precreate, create and pay.
#[derive(Debug)]
pub struct TradeRequest {
    /// `out_trade_no`.
    pub out_trade_no: String,
    /// Fen.
    pub total_fen: i64,
    /// `subject`.
    pub subject: String,
    /// `body`.
    pub body: Option<String>,
    /// Receiving account.
    pub seller_id: String,
    /// `product_code`.
    pub product_code: String,
    /// `store_id`.
    pub store_id: Option<String>,
    /// `terminal_id`.
    pub terminal_id: Option<String>,
    /// `operator_id`.
    pub operator_id: Option<String>,
    /// Unpaid expiry.
    pub expires_at: Millis,
    /// A precreate's payment time from the scan.
    pub pay_timeout_ms: Option<i64>,
    /// `royalty_freeze`.
    pub royalty_freeze: bool,
    /// `royalty_info`.
    pub royalty_info: Option<Value>,
    /// `passback_params`.
    pub passback_params: Option<String>,
    /// Key-field fingerprint for `ACQ.CONTEXT_INCONSISTENT`.
    pub fingerprint: String,
}

/// Reads and checks the fields every trade-creating API shares.
pub fn read_trade_request(
    call: &Call<'_>,
    default_product: &str,
) -> Result<TradeRequest, ApiError> {
    let biz = &call.biz;
    let out_trade_no = req_str(biz, "out_trade_no")?.to_owned();
    check_merchant_no("out_trade_no", &out_trade_no, 64)?;
    let total_fen = req_amount(biz, "total_amount")?;
    let subject = req_str(biz, "subject")?.to_owned();
    check_len("subject", &subject, 256)?;
    if subject.contains(['/', '=', '&']) {
        return Err(ApiError::bad_param("subject不能包含特殊字符 / = &"));
    }
    let body = opt_string(biz, "body")?;
    if let Some(b) = &body {
        check_len("body", b, 128)?;
    }
    let seller_id = match opt_str(biz, "seller_id")? {
        None => call.app.seller_pid.clone(),
        Some(s)
            if s == call.app.seller_pid || call.app.allowed_seller_ids.iter().any(|a| a == s) =>
        {
            s.to_owned()
        }
        Some(_) => {
            return Err(ApiError::business(
                "ACQ.INVALID_RECEIVE_ACCOUNT",
                "收款账户不在收款账户限制集中",
            ));
        }
    };
    let terminal_id = opt_string(biz, "terminal_id")?;
    if let Some(t) = &terminal_id {
        check_len("terminal_id", t, 32)?;
    }
    let store_id = opt_string(biz, "store_id")?;
    if let Some(s) = &store_id {
        check_len("store_id", s, 32)?;
    }
    let operator_id = opt_string(biz, "operator_id")?;
    let product_code = opt_str(biz, "product_code")?
        .unwrap_or(default_product)
        .to_owned();
    let (expires_at, pay_timeout_ms) = expiry(call)?;
    let royalty_freeze = biz
        .get("extend_params")
        .and_then(|e| e.get("royalty_freeze"))
        .is_some_and(|v| v == "true" || v == true);
    let royalty_info = biz.get("royalty_info").cloned();
    if let Some(info) = &royalty_info {
        super::trade::check_royalty_info(info, total_fen)?;
    }
    let fingerprint = format!(
        "{total_fen}|{subject}|{seller_id}|{product_code}|{}|{}",
        opt_str(biz, "buyer_id")?.unwrap_or(""),
        opt_str(biz, "buyer_open_id")?.unwrap_or("")
    );
    Ok(TradeRequest {
        out_trade_no,
        total_fen,
        subject,
        body,
        seller_id,
        product_code,
        store_id,
        terminal_id,
        operator_id,
        expires_at,
        pay_timeout_ms,
        royalty_freeze,
        royalty_info,
        passback_params: opt_string(biz, "passback_params")?,
        fingerprint,
    })
}

/// When an unpaid trade closes, and for a precreate the payment time its scan starts.
///
/// A precreate's `timeout_express` counts from the scan, not from the call (as 当面付
/// documents it): until then only its code's validity applies, `qr_code_timeout_express`
/// from the call, at most 2 hours. So a code whose order the merchant gave up on stays
/// payable until then unless `qr_code_timeout_express` ends it with the order.
fn expiry(call: &Call<'_>) -> Result<(Millis, Option<i64>), ApiError> {
    let biz = &call.biz;
    let precreate = call.method == "alipay.trade.precreate";
    let mut qr_ms = QR_MAX_MS;
    if precreate && let Some(t) = opt_str(biz, "qr_code_timeout_express")? {
        let q = parse_timeout(t, call.now)
            .ok_or_else(|| ApiError::bad_param("qr_code_timeout_express格式错误"))?;
        qr_ms = qr_ms.min(q);
    }
    if let Some(at) = opt_str(biz, "time_expire")? {
        let t = alipay::time::parse_timestamp(at)
            .ok_or_else(|| ApiError::bad_param("time_expire格式错误"))?;
        let ms = t.unix_timestamp() * 1000;
        if ms <= call.now {
            return Err(ApiError::bad_param("time_expire不能早于当前时间"));
        }
        // An absolute time is one whenever the scan comes.
        return Ok(if precreate {
            (ms.min(call.now + qr_ms), None)
        } else {
            (ms, None)
        });
    }
    let mut ms = DEFAULT_TIMEOUT_MS;
    if let Some(t) = opt_str(biz, "timeout_express")? {
        ms = parse_timeout(t, call.now)
            .ok_or_else(|| ApiError::bad_param("timeout_express格式错误，取值范围1m～15d"))?;
    }
    if precreate {
        return Ok((call.now + qr_ms, Some(ms)));
    }
    Ok((call.now + ms, None))
}

/// A precreate's code scanned at `now`: the trade exists for the merchant's query from now
/// on, and its payment time starts. Answers false (and changes nothing) when the code is no
/// longer valid or the trade was not waiting for a scan.
pub fn scan(ctx: &Ctx, store: &mut Store, trade_no: &str, now: Millis) -> bool {
    refresh_expiry(ctx, store, trade_no, now);
    let Some(mut trade) = store.data.trades.get(trade_no).cloned() else {
        return false;
    };
    if trade.state != TradeState::Precreated {
        return false;
    }
    trade.state = TradeState::WaitBuyerPay;
    if let Some(ms) = trade.pay_timeout_ms {
        trade.expires_at = now + ms;
    }
    store.put_trade(trade);
    true
}

/// Checks the legacy per-trade `royalty_info` (`royalty_detail_infos`).
pub fn check_royalty_info(info: &Value, total_fen: i64) -> Result<(), ApiError> {
    let err = |m: &str| ApiError::business("ACQ.INVALID_PARAMETER", format!("royalty_info: {m}"));
    let details = info
        .get("royalty_detail_infos")
        .and_then(Value::as_array)
        .ok_or_else(|| err("缺少royalty_detail_infos"))?;
    if let Some(t) = info.get("royalty_type").and_then(Value::as_str)
        && t != "ROYALTY"
    {
        return Err(err("royalty_type只支持ROYALTY"));
    }
    let mut serials = std::collections::HashSet::new();
    let mut sum = 0i64;
    for d in details {
        let serial = d.get("serial_no").and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        });
        match serial {
            Some(n) if n > 0 && serials.insert(n) => {}
            _ => return Err(err("serial_no必须为唯一的正整数")),
        }
        let trans_in = d.get("trans_in").and_then(Value::as_str).unwrap_or("");
        let trans_out = d.get("trans_out").and_then(Value::as_str).unwrap_or("");
        if trans_in.is_empty() {
            return Err(err("缺少trans_in"));
        }
        if trans_in == trans_out {
            return Err(err("trans_in与trans_out不能相同"));
        }
        let in_type = d
            .get("trans_in_type")
            .and_then(Value::as_str)
            .unwrap_or("userId");
        if in_type == "userId" && !alipay::types::is_user_id(trans_in) {
            return Err(err("trans_in必须为2088开头的16位用户号"));
        }
        match (
            d.get("amount").and_then(Value::as_str),
            d.get("amount_percentage"),
        ) {
            (Some(a), _) => sum += parse_amount("amount", a).map_err(|_| err("amount格式错误"))?,
            (None, Some(p)) => {
                let pct = p
                    .as_i64()
                    .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
                    .unwrap_or(0);
                if !(1..=100).contains(&pct) {
                    return Err(err("amount_percentage取值1～100"));
                }
                sum += total_fen * pct / 100;
            }
            (None, None) => return Err(err("amount与amount_percentage必须有一个")),
        }
    }
    if sum > total_fen {
        return Err(ApiError::business(
            "ACQ.ROYALTY_AMOUNT_EXCEED",
            "分账金额之和超过订单金额",
        ));
    }
    Ok(())
}

/// Closes a trade whose unpaid time is over. Returns true when it changed.
pub fn refresh_expiry(ctx: &Ctx, store: &mut Store, trade_no: &str, now: Millis) -> bool {
    let Some(trade) = store.data.trades.get(trade_no) else {
        return false;
    };
    if !matches!(
        trade.state,
        TradeState::Precreated | TradeState::WaitBuyerPay
    ) || now < trade.expires_at
    {
        return false;
    }
    let mut t = trade.clone();
    let was_visible = t.state == TradeState::WaitBuyerPay;
    t.state = TradeState::TradeClosed;
    t.closed_at = Some(t.expires_at);
    store.put_trade(t.clone());
    if was_visible && ctx.config.notify.trade_closed {
        notify::trade_status(ctx, store, &t, now, None);
    }
    true
}

/// Checks whether a repeat of a creating call is the same request.
pub(crate) fn existing(
    ctx: &Ctx,
    store: &mut Store,
    call: &Call<'_>,
    req: &TradeRequest,
) -> Result<Option<Trade>, ApiError> {
    let Some(trade) = store
        .trade_by_out_no(&call.app.app_id, &req.out_trade_no)
        .cloned()
    else {
        return Ok(None);
    };
    refresh_expiry(ctx, store, &trade.trade_no, call.now);
    let trade = store
        .data
        .trades
        .get(&trade.trade_no)
        .cloned()
        .unwrap_or(trade);
    if trade.fingerprint != req.fingerprint {
        return Err(ApiError::business(
            "ACQ.CONTEXT_INCONSISTENT",
            "交易信息被篡改",
        ));
    }
    match trade.state {
        TradeState::TradeSuccess | TradeState::TradeFinished => {
            Err(ApiError::business("ACQ.TRADE_HAS_SUCCESS", "交易已被支付"))
        }
        TradeState::TradeClosed => Err(ApiError::business("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")),
        _ => Ok(Some(trade)),
    }
}

pub(crate) fn new_trade(
    store: &mut Store,
    call: &Call<'_>,
    req: TradeRequest,
    origin: TradeOrigin,
    state: TradeState,
) -> Trade {
    let seq = store.next_seq();
    Trade {
        app_id: call.app.app_id.clone(),
        out_trade_no: req.out_trade_no,
        trade_no: ids::trade_no(call.now, seq),
        origin,
        state,
        total_fen: req.total_fen,
        subject: req.subject,
        body: req.body,
        seller_id: req.seller_id,
        product_code: req.product_code,
        store_id: req.store_id,
        terminal_id: req.terminal_id,
        operator_id: req.operator_id,
        buyer_user_id: None,
        notify_url: call
            .notify_url
            .clone()
            .or_else(|| call.app.notify_url.clone()),
        passback_params: req.passback_params,
        fingerprint: req.fingerprint,
        qr_code: None,
        created_at: call.now,
        expires_at: req.expires_at,
        pay_timeout_ms: req.pay_timeout_ms,
        paid_at: None,
        closed_at: None,
        refunded_fen: 0,
        royalty_freeze: req.royalty_freeze,
        unsettled_fen: 0,
        royalty_info: req.royalty_info,
        auth_no: None,
        agreement_no: None,
    }
}

/// `alipay.trade.precreate`.
pub fn precreate(ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let req = read_trade_request(call, "FACE_TO_FACE_PAYMENT")?;
    let mut out = Map::new();
    if let Some(trade) = existing(ctx, store, call, &req)? {
        // An identical retry while unpaid gets the same code, so a client retry is safe.
        if trade.origin != TradeOrigin::Precreate {
            return Err(ApiError::business(
                "ACQ.APPLY_PC_MERCHANT_CODE_ERROR",
                "同一笔订单不能重复申请二维码",
            ));
        }
        out.insert("out_trade_no".into(), trade.out_trade_no.clone().into());
        out.insert(
            "qr_code".into(),
            trade.qr_code.clone().unwrap_or_default().into(),
        );
        return Ok(out);
    }
    let mut trade = new_trade(
        store,
        call,
        req,
        TradeOrigin::Precreate,
        TradeState::Precreated,
    );
    let qr = format!(
        "{}/qr/{}?t={}",
        ctx.base_url,
        trade.trade_no,
        ids::random_hex(12)
    );
    trade.qr_code = Some(qr.clone());
    store.put_trade(trade.clone());
    out.insert("out_trade_no".into(), trade.out_trade_no.into());
    out.insert("qr_code".into(), qr.into());
    Ok(out)
}

/// Resolves the buyer of a create/pay call (`buyer_id` or `buyer_open_id`).
pub fn resolve_buyer(
    store: &Store,
    app: &App,
    biz: &Map<String, Value>,
) -> Result<Option<Buyer>, ApiError> {
    if let Some(id) = opt_str(biz, "buyer_id")? {
        if app.id_mode == IdMode::OpenId {
            return Err(ApiError::bad_param(
                "该应用已升级为openid，请使用buyer_open_id",
            ));
        }
        return store
            .data
            .buyers
            .get(id)
            .cloned()
            .map(Some)
            .ok_or_else(|| ApiError::bad_param("买家不存在"));
    }
    if let Some(open_id) = opt_str(biz, "buyer_open_id")? {
        return find_by_open_id(store, &app.app_id, open_id)
            .map(Some)
            .ok_or_else(|| ApiError::bad_param("买家不存在"));
    }
    Ok(None)
}

/// Finds a buyer by an app-scoped open id.
pub fn find_by_open_id(store: &Store, app_id: &str, open_id: &str) -> Option<Buyer> {
    store
        .data
        .buyers
        .values()
        .find(|b| ids::open_id(app_id, &b.user_id) == open_id)
        .cloned()
}

/// `alipay.trade.create`: a trade for a known buyer, waiting for JSAPI `tradePay`.
pub fn create(ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let req = read_trade_request(call, "FACE_TO_FACE_PAYMENT")?;
    let buyer = resolve_buyer(store, call.app, &call.biz)?
        .ok_or_else(|| ApiError::bad_param("缺少必选参数buyer_id或buyer_open_id"))?;
    if buyer.user_id == req.seller_id {
        return Err(ApiError::business(
            "ACQ.BUYER_SELLER_EQUAL",
            "买卖家不能相同",
        ));
    }
    let mut out = Map::new();
    if let Some(trade) = existing(ctx, store, call, &req)? {
        out.insert("out_trade_no".into(), trade.out_trade_no.into());
        out.insert("trade_no".into(), trade.trade_no.into());
        return Ok(out);
    }
    let mut trade = new_trade(
        store,
        call,
        req,
        TradeOrigin::Create,
        TradeState::WaitBuyerPay,
    );
    trade.buyer_user_id = Some(buyer.user_id);
    store.put_trade(trade.clone());
    out.insert("out_trade_no".into(), trade.out_trade_no.into());
    out.insert("trade_no".into(), trade.trade_no.into());
    Ok(out)
}

/// The trade a query-like call names, after closing it if expired.
pub fn find_for_call(ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> Result<Trade, ApiError> {
    let trade_no = opt_str(&call.biz, "trade_no")?;
    let out_trade_no = opt_str(&call.biz, "out_trade_no")?;
    if trade_no.is_none() && out_trade_no.is_none() {
        return Err(ApiError::bad_param("out_trade_no和trade_no不能同时为空"));
    }
    let trade = store
        .find_trade(&call.app.app_id, trade_no, out_trade_no)
        .cloned()
        .ok_or_else(|| ApiError::business("ACQ.TRADE_NOT_EXIST", "交易不存在"))?;
    refresh_expiry(ctx, store, &trade.trade_no, call.now);
    Ok(store
        .data
        .trades
        .get(&trade.trade_no)
        .cloned()
        .unwrap_or(trade))
}

/// The buyer fields of an answer, per the app's id mode.
pub fn buyer_fields(
    store: &Store,
    app: &App,
    user_id: Option<&str>,
    out: &mut Map<String, Value>,
    user_key: &str,
    open_key: &str,
) {
    let Some(uid) = user_id else { return };
    match app.id_mode {
        IdMode::UserId => {
            out.insert(user_key.into(), uid.into());
        }
        IdMode::OpenId => {
            out.insert(open_key.into(), ids::open_id(&app.app_id, uid).into());
        }
    }
    if let Some(b) = store.data.buyers.get(uid) {
        out.insert("buyer_logon_id".into(), mask_logon(&b.logon_id).into());
    }
}

/// `alipay.trade.query`.
pub fn query(ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let trade = find_for_call(ctx, store, call)?;
    if trade.state == TradeState::Precreated {
        // Nobody has scanned the code yet: to Alipay the trade does not exist.
        return Err(ApiError::business("ACQ.TRADE_NOT_EXIST", "交易不存在"));
    }
    let mut out = Map::new();
    out.insert("trade_no".into(), trade.trade_no.clone().into());
    out.insert("out_trade_no".into(), trade.out_trade_no.clone().into());
    buyer_fields(
        store,
        call.app,
        trade.buyer_user_id.as_deref(),
        &mut out,
        "buyer_user_id",
        "buyer_open_id",
    );
    out.insert("trade_status".into(), trade.state.wire().into());
    out.insert("total_amount".into(), yuan(trade.total_fen).into());
    if trade.state.is_paid() || trade.paid_at.is_some() {
        out.insert("buyer_pay_amount".into(), yuan(trade.total_fen).into());
        out.insert("receipt_amount".into(), yuan(trade.total_fen).into());
        out.insert("invoice_amount".into(), yuan(trade.total_fen).into());
        out.insert("point_amount".into(), "0.00".into());
        if let Some(at) = trade.paid_at {
            out.insert("send_pay_date".into(), fmt_ms(at).into());
        }
        out.insert(
            "fund_bill_list".into(),
            json!([{"fund_channel": "ALIPAYACCOUNT", "amount": yuan(trade.total_fen)}]),
        );
    }
    if let Some(s) = &trade.store_id {
        out.insert("store_id".into(), s.clone().into());
    }
    if let Some(t) = &trade.terminal_id {
        out.insert("terminal_id".into(), t.clone().into());
    }
    out.insert("subject".into(), trade.subject.clone().into());
    if let Some(b) = &trade.body {
        out.insert("body".into(), b.clone().into());
    }
    let wants_settle = call
        .biz
        .get("query_options")
        .and_then(Value::as_array)
        .is_some_and(|o| o.iter().any(|v| v == "trade_settle_info"));
    if wants_settle {
        out.insert("trade_settle_info".into(), settle_info(store, &trade));
    }
    Ok(out)
}

fn settle_info(store: &Store, trade: &Trade) -> Value {
    let mut details = Vec::new();
    for s in store
        .data
        .settlements
        .values()
        .filter(|s| s.trade_no == trade.trade_no)
    {
        for l in &s.lines {
            details.push(json!({
                "operation_type": l.royalty_type, "operation_serial_no": s.out_request_no,
                "operation_dt": fmt_ms(s.settled_at), "trans_out": l.trans_out, "trans_in": l.trans_in,
                "amount": yuan(l.amount_fen),
            }));
        }
    }
    json!({ "trade_settle_detail_list": details, "trade_unsettled_amount": yuan(trade.unsettled_fen) })
}

/// The buyer pays a trade (QR scan + confirm, cashier, face, or `trade.pay`).
pub fn pay(
    ctx: &Ctx,
    store: &mut Store,
    trade_no: &str,
    buyer_user_id: &str,
    now: Millis,
) -> Result<Trade, ApiError> {
    refresh_expiry(ctx, store, trade_no, now);
    let trade = store
        .data
        .trades
        .get(trade_no)
        .cloned()
        .ok_or_else(|| ApiError::business("ACQ.TRADE_NOT_EXIST", "交易不存在"))?;
    match trade.state {
        TradeState::Precreated | TradeState::WaitBuyerPay => {}
        TradeState::TradeSuccess | TradeState::TradeFinished => {
            return Err(ApiError::business("ACQ.TRADE_HAS_SUCCESS", "交易已被支付"));
        }
        TradeState::TradeClosed => {
            return Err(ApiError::business("ACQ.TRADE_HAS_CLOSE", "交易已经关闭"));
        }
    }
    if let Some(expected) = &trade.buyer_user_id
        && expected != buyer_user_id
    {
        return Err(ApiError::business(
            "ACQ.BUYER_NOT_MATCH",
            "付款人与订单买家不一致",
        ));
    }
    let mut buyer = store
        .data
        .buyers
        .get(buyer_user_id)
        .cloned()
        .ok_or_else(|| ApiError::bad_param("买家不存在"))?;
    check_buyer_can_pay(&buyer, &trade.seller_id, trade.total_fen)?;
    buyer.balance_fen -= trade.total_fen;
    store.put_buyer(buyer);
    Ok(mark_paid(ctx, store, trade, buyer_user_id, now))
}

/// The buyer-side checks of a balance payment (the sandbox pays from balance only).
pub fn check_buyer_can_pay(buyer: &Buyer, seller_id: &str, total_fen: i64) -> Result<(), ApiError> {
    if buyer.user_id == seller_id {
        return Err(ApiError::business(
            "ACQ.BUYER_SELLER_EQUAL",
            "买卖家不能相同",
        ));
    }
    if buyer.balance_fen < total_fen {
        return Err(ApiError::business(
            "ACQ.BUYER_BALANCE_NOT_ENOUGH",
            "买家余额不足",
        ));
    }
    Ok(())
}

/// Records a trade as paid by `buyer_user_id` (the money has already moved) and queues the
/// `TRADE_SUCCESS` notification.
pub fn mark_paid(
    ctx: &Ctx,
    store: &mut Store,
    mut trade: Trade,
    buyer_user_id: &str,
    now: Millis,
) -> Trade {
    trade.state = TradeState::TradeSuccess;
    trade.buyer_user_id = Some(buyer_user_id.to_owned());
    trade.paid_at = Some(now);
    if trade.royalty_freeze {
        trade.unsettled_fen = trade.total_fen;
    }
    store.put_trade(trade.clone());
    notify::trade_status(ctx, store, &trade, now, None);
    trade
}
