//! 资金授权 (pre-authorisation): a freeze of the buyer's money that a later `trade.pay` converts
//! into a payment, or an unfreeze releases.
//!
//! A freeze starts `INIT` (voucher QR shown, or app-side order string made) and becomes
//! `AUTHORIZED` when the buyer agrees, which the control API (or a buyer page) does through
//! [`complete_freeze`]; the money leaves the buyer's balance then. It is `FINISH` once nothing
//! is frozen any more, and `CLOSED` when the buyer never agreed in time.
//!
//! Sub_codes of this family carry no `ACQ.` prefix at Alipay; the exact names are unconfirmed.

use serde_json::{Map, Value};

use super::Call;
use super::fields::*;
use crate::Ctx;
use crate::clock::fmt_ms;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::model::{App, Freeze, FundOperation, IdMode, Millis};
use crate::notify;
use crate::store::Store;

/// Default time a buyer has to agree to a freeze: 15 minutes.
const DEFAULT_FREEZE_TIMEOUT_MS: i64 = 15 * 60_000;

/// Strips `ACQ.` from a shared field reader's error: fund-auth sub_codes are unprefixed.
fn plain(mut e: ApiError) -> ApiError {
    if let Some(rest) = e.sub_code.strip_prefix("ACQ.") {
        e.sub_code = rest.to_owned();
    }
    e
}

fn err(sub_code: &str, msg: &str) -> ApiError {
    ApiError::business(sub_code, msg)
}

/// Which freeze a control call names.
#[derive(Debug, Clone, Copy)]
pub enum FreezeKey<'a> {
    /// By `auth_no`.
    AuthNo(&'a str),
    /// By the merchant's `out_order_no`.
    OutOrderNo(&'a str),
}

/// The freeze an app names, closed first if its agreement time ran out.
pub fn find_freeze(
    store: &mut Store,
    app_id: &str,
    key: FreezeKey<'_>,
    now: Millis,
) -> Option<Freeze> {
    let freeze = match key {
        FreezeKey::AuthNo(no) => store.data.freezes.get(no).filter(|f| f.app_id == app_id),
        FreezeKey::OutOrderNo(no) => store.freeze_by_out_order_no(app_id, no),
    }?
    .clone();
    if freeze.order_status == "INIT" && now >= freeze.expires_at {
        let mut closed = freeze;
        closed.order_status = "CLOSED".into();
        for op in closed.operations.iter_mut().filter(|o| o.status == "INIT") {
            op.status = "CLOSED".into();
        }
        store.put_freeze(closed.clone());
        return Some(closed);
    }
    Some(freeze)
}

/// Fields shared by `voucher.create` and `app.freeze`.
struct FreezeRequest {
    out_order_no: String,
    out_request_no: String,
    order_title: String,
    amount_fen: i64,
    product_code: String,
    payee_user_id: String,
    timeout_ms: i64,
}

fn read_freeze_request(call: &Call<'_>, products: &[&str]) -> Result<FreezeRequest, ApiError> {
    let biz = &call.biz;
    let out_order_no = req_str(biz, "out_order_no")?.to_owned();
    check_merchant_no("out_order_no", &out_order_no, 64)?;
    let out_request_no = req_str(biz, "out_request_no")?.to_owned();
    check_merchant_no("out_request_no", &out_request_no, 64)?;
    let order_title = req_str(biz, "order_title")?.to_owned();
    check_len("order_title", &order_title, 100)?;
    let amount_fen = req_amount(biz, "amount")?;
    // The first accepted product is the default.
    let product_code = opt_str(biz, "product_code")?
        .or(products.first().copied())
        .unwrap_or_default();
    if !products.contains(&product_code) {
        return Err(ApiError::bad_param(format!(
            "product_code取值{}",
            products.join("或")
        )));
    }
    let payee_user_id = match opt_str(biz, "payee_user_id")? {
        None => call.app.seller_pid.clone(),
        Some(p) if is_payee_of(call.app, p) => p.to_owned(),
        Some(_) => return Err(err("ACQ.PAYEE_NOT_EXIST", "收款方不是商户可收款账户")),
    };
    let timeout = opt_str(biz, "timeout_express")?.or(opt_str(biz, "pay_timeout")?);
    let timeout_ms = match timeout {
        None => DEFAULT_FREEZE_TIMEOUT_MS,
        Some(t) => parse_timeout(t, call.now)
            .ok_or_else(|| ApiError::bad_param("timeout_express格式错误，取值范围1m～15d"))?,
    };
    Ok(FreezeRequest {
        out_order_no,
        out_request_no,
        order_title,
        amount_fen,
        product_code: product_code.to_owned(),
        payee_user_id,
        timeout_ms,
    })
}

fn is_payee_of(app: &App, pid: &str) -> bool {
    app.seller_pid == pid || app.allowed_seller_ids.iter().any(|a| a == pid)
}

/// Creates an `INIT` freeze, or returns the existing one for an identical repeat.
fn create_freeze(store: &mut Store, call: &Call<'_>, req: FreezeRequest) -> ApiResult {
    if let Some(f) = store
        .freeze_by_out_order_no(&call.app.app_id, &req.out_order_no)
        .cloned()
    {
        let same = f.operations.first().is_some_and(|op| {
            op.out_request_no == req.out_request_no && op.amount_fen == req.amount_fen
        }) && f.product_code == req.product_code;
        if !same {
            return Err(err(
                "ORDER_ALREADY_EXIST",
                "商户订单号已存在，且请求信息不一致",
            ));
        }
        return Ok(freeze_created_fields(&f));
    }
    let seq = store.next_seq();
    let freeze = Freeze {
        app_id: call.app.app_id.clone(),
        auth_no: ids::auth_no(call.now, seq),
        out_order_no: req.out_order_no,
        product_code: req.product_code,
        order_status: "INIT".into(),
        payer_user_id: None,
        payee_user_id: req.payee_user_id,
        order_title: req.order_title,
        total_freeze_fen: req.amount_fen,
        total_unfreeze_fen: 0,
        total_pay_fen: 0,
        notify_url: call
            .notify_url
            .clone()
            .or_else(|| call.app.notify_url.clone()),
        operations: vec![FundOperation {
            operation_id: ids::operation_id(call.now, seq),
            out_request_no: req.out_request_no,
            operation_type: "FREEZE".into(),
            amount_fen: req.amount_fen,
            status: "INIT".into(),
            at: call.now,
            remark: None,
        }],
        created_at: call.now,
        expires_at: call.now + req.timeout_ms,
    };
    store.put_freeze(freeze.clone());
    Ok(freeze_created_fields(&freeze))
}

fn freeze_created_fields(f: &Freeze) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("auth_no".into(), f.auth_no.clone().into());
    out.insert("out_order_no".into(), f.out_order_no.clone().into());
    if let Some(op) = f.operations.first() {
        out.insert("operation_id".into(), op.operation_id.clone().into());
        out.insert("out_request_no".into(), op.out_request_no.clone().into());
        out.insert("amount".into(), yuan(op.amount_fen).into());
        out.insert("status".into(), op.status.clone().into());
    }
    out
}

/// `alipay.fund.auth.order.voucher.create`: a QR code the buyer scans to agree to a freeze.
pub fn voucher_create(ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let req = read_freeze_request(call, &["PRE_AUTH"]).map_err(plain)?;
    let created = create_freeze(store, call, req)?;
    let auth_no = created
        .get("auth_no")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let code_value = ids::random_hex(16);
    let mut out = Map::new();
    for k in ["out_order_no", "out_request_no"] {
        if let Some(v) = created.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    out.insert("code_type".into(), "qrCode".into());
    out.insert("code_value".into(), code_value.clone().into());
    out.insert(
        "code_url".into(),
        format!("{}/fund_auth/{auth_no}?t={code_value}", ctx.base_url).into(),
    );
    Ok(out)
}

/// `alipay.fund.auth.order.app.freeze`. The real API is signed by the server and sent by the
/// wallet (`my.tradePay({orderStr})`); the sandbox also accepts it at the gateway so a test
/// can create the freeze, then agrees to it through the control API.
pub fn app_freeze(_ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let req = read_freeze_request(call, &["PRE_AUTH_ONLINE", "PREAUTH_PAY"]).map_err(plain)?;
    create_freeze(store, call, req)
}

/// The buyer agrees to a freeze: money leaves the balance and `fund_auth_freeze` is queued.
/// An identical repeat by the same buyer returns the freeze unchanged.
pub fn complete_freeze(
    _ctx: &Ctx,
    store: &mut Store,
    app_id: &str,
    key: FreezeKey<'_>,
    buyer_id: &str,
    now: Millis,
) -> Result<Freeze, ApiError> {
    let mut freeze = find_freeze(store, app_id, key, now)
        .ok_or_else(|| err("AUTH_ORDER_NOT_EXIST", "授权订单不存在"))?;
    match freeze.order_status.as_str() {
        "INIT" => {}
        "AUTHORIZED" if freeze.payer_user_id.as_deref() == Some(buyer_id) => return Ok(freeze),
        "CLOSED" => return Err(err("AUTH_ORDER_HAS_CLOSED", "授权订单已关闭")),
        _ => return Err(err("AUTH_ORDER_STATUS_ERROR", "授权订单状态不是待授权")),
    }
    let mut buyer = store
        .data
        .buyers
        .get(buyer_id)
        .cloned()
        .ok_or_else(|| ApiError::business("INVALID_PARAMETER", "买家不存在"))?;
    if buyer.user_id == freeze.payee_user_id {
        return Err(err("PAYER_PAYEE_EQUAL", "付款方和收款方不能相同"));
    }
    if buyer.balance_fen < freeze.total_freeze_fen {
        return Err(err("PAYER_BALANCE_NOT_ENOUGH", "付款方余额不足"));
    }
    buyer.balance_fen -= freeze.total_freeze_fen;
    store.put_buyer(buyer);
    freeze.order_status = "AUTHORIZED".into();
    freeze.payer_user_id = Some(buyer_id.to_owned());
    let op = freeze.operations.first_mut().map(|first| {
        first.status = "SUCCESS".into();
        first.at = now;
        first.clone()
    });
    store.put_freeze(freeze.clone());
    if let Some(op) = op {
        queue_fund_notification(store, &freeze, &op, "fund_auth_freeze", None, now);
    }
    Ok(freeze)
}

/// Converts part of an authorised freeze into a payment (`trade.pay` with `auth_no`); with
/// `complete`, the rest is unfrozen back to the buyer. The caller has checked the amount.
pub fn pay_from_freeze(
    store: &mut Store,
    mut freeze: Freeze,
    amount_fen: i64,
    out_trade_no: &str,
    complete: bool,
    now: Millis,
) -> Freeze {
    let seq = store.next_seq();
    freeze.total_pay_fen += amount_fen;
    freeze.operations.push(FundOperation {
        operation_id: ids::operation_id(now, seq),
        out_request_no: out_trade_no.to_owned(),
        operation_type: "PAY".into(),
        amount_fen,
        status: "SUCCESS".into(),
        at: now,
        remark: None,
    });
    let rest = freeze.rest_fen();
    if complete && rest > 0 {
        let seq = store.next_seq();
        let op = FundOperation {
            operation_id: ids::operation_id(now, seq),
            out_request_no: format!("{out_trade_no}_COMPLETE"),
            operation_type: "UNFREEZE".into(),
            amount_fen: rest,
            status: "SUCCESS".into(),
            at: now,
            remark: Some("auth_confirm_mode=COMPLETE".into()),
        };
        freeze = release(store, freeze, op.clone());
        queue_fund_notification(store, &freeze, &op, "fund_auth_unfreeze", None, now);
    }
    if freeze.rest_fen() == 0 {
        freeze.order_status = "FINISH".into();
    }
    store.put_freeze(freeze.clone());
    freeze
}

/// Gives `op.amount_fen` back to the payer and records the unfreeze.
fn release(store: &mut Store, mut freeze: Freeze, op: FundOperation) -> Freeze {
    if let Some(mut buyer) = freeze
        .payer_user_id
        .as_ref()
        .and_then(|p| store.data.buyers.get(p))
        .cloned()
    {
        buyer.balance_fen += op.amount_fen;
        store.put_buyer(buyer);
    }
    freeze.total_unfreeze_fen += op.amount_fen;
    freeze.operations.push(op);
    if freeze.rest_fen() == 0 {
        freeze.order_status = "FINISH".into();
    }
    freeze
}

/// `alipay.fund.auth.order.unfreeze`: idempotent by `out_request_no`.
pub fn unfreeze(_ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let biz = &call.biz;
    let auth_no = req_str(biz, "auth_no").map_err(plain)?;
    let out_request_no = req_str(biz, "out_request_no").map_err(plain)?;
    check_merchant_no("out_request_no", out_request_no, 64).map_err(plain)?;
    let amount_fen = req_amount(biz, "amount").map_err(plain)?;
    let remark = req_str(biz, "remark").map_err(plain)?;
    check_len("remark", remark, 100).map_err(plain)?;
    let freeze = find_freeze(
        store,
        &call.app.app_id,
        FreezeKey::AuthNo(auth_no),
        call.now,
    )
    .ok_or_else(|| err("AUTH_ORDER_NOT_EXIST", "授权订单不存在"))?;
    if let Some(op) = freeze
        .operations
        .iter()
        .find(|o| o.operation_type == "UNFREEZE" && o.out_request_no == out_request_no)
    {
        if op.amount_fen != amount_fen {
            return Err(err(
                "DISCORDANT_REPEAT_REQUEST",
                "同一请求号的解冻金额不一致",
            ));
        }
        return Ok(unfreeze_fields(&freeze, op));
    }
    match freeze.order_status.as_str() {
        "AUTHORIZED" => {}
        "FINISH" => return Err(err("AUTH_ORDER_HAS_FINISHED", "授权订单已完结")),
        "CLOSED" => return Err(err("AUTH_ORDER_HAS_CLOSED", "授权订单已关闭")),
        _ => return Err(err("AUTH_ORDER_NOT_PAID", "授权订单未冻结成功")),
    }
    if amount_fen > freeze.rest_fen() {
        return Err(err("REQUEST_AMOUNT_EXCEED", "解冻金额超过剩余冻结金额"));
    }
    let seq = store.next_seq();
    let op = FundOperation {
        operation_id: ids::operation_id(call.now, seq),
        out_request_no: out_request_no.to_owned(),
        operation_type: "UNFREEZE".into(),
        amount_fen,
        status: "SUCCESS".into(),
        at: call.now,
        remark: Some(remark.to_owned()),
    };
    let freeze = release(store, freeze, op.clone());
    store.put_freeze(freeze.clone());
    queue_fund_notification(
        store,
        &freeze,
        &op,
        "fund_auth_unfreeze",
        call.notify_url.clone(),
        call.now,
    );
    Ok(unfreeze_fields(&freeze, &op))
}

fn unfreeze_fields(f: &Freeze, op: &FundOperation) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("auth_no".into(), f.auth_no.clone().into());
    out.insert("out_order_no".into(), f.out_order_no.clone().into());
    out.insert("operation_id".into(), op.operation_id.clone().into());
    out.insert("out_request_no".into(), op.out_request_no.clone().into());
    out.insert("amount".into(), yuan(op.amount_fen).into());
    out.insert("status".into(), op.status.clone().into());
    out.insert("gmt_trans".into(), fmt_ms(op.at).into());
    out
}

/// `alipay.fund.auth.operation.detail.query`: one operation of a freeze (the freeze itself
/// when no operation is named).
pub fn detail_query(_ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let biz = &call.biz;
    let key = match (
        opt_str(biz, "auth_no").map_err(plain)?,
        opt_str(biz, "out_order_no").map_err(plain)?,
    ) {
        (Some(a), _) => FreezeKey::AuthNo(a),
        (None, Some(o)) => FreezeKey::OutOrderNo(o),
        (None, None) => {
            return Err(ApiError::business(
                "INVALID_PARAMETER",
                "auth_no和out_order_no不能同时为空",
            ));
        }
    };
    let freeze = find_freeze(store, &call.app.app_id, key, call.now)
        .ok_or_else(|| err("AUTH_ORDER_NOT_EXIST", "授权订单不存在"))?;
    let operation_id = opt_str(biz, "operation_id").map_err(plain)?;
    let out_request_no = opt_str(biz, "out_request_no").map_err(plain)?;
    let op = freeze
        .operations
        .iter()
        .find(|o| match (operation_id, out_request_no) {
            (Some(id), _) => o.operation_id == id,
            (None, Some(no)) => o.out_request_no == no,
            (None, None) => o.operation_type == "FREEZE",
        })
        .ok_or_else(|| err("AUTH_OPERATION_NOT_EXIST", "授权操作不存在"))?;
    let mut out = Map::new();
    out.insert("auth_no".into(), freeze.auth_no.clone().into());
    out.insert("out_order_no".into(), freeze.out_order_no.clone().into());
    out.insert("order_status".into(), freeze.order_status.clone().into());
    let frozen = if freeze.payer_user_id.is_some() {
        freeze.total_freeze_fen
    } else {
        0
    };
    out.insert("total_freeze_amount".into(), yuan(frozen).into());
    out.insert(
        "total_unfreeze_amount".into(),
        yuan(freeze.total_unfreeze_fen).into(),
    );
    out.insert("total_pay_amount".into(), yuan(freeze.total_pay_fen).into());
    let rest = if freeze.payer_user_id.is_some() {
        freeze.rest_fen()
    } else {
        0
    };
    out.insert("rest_amount".into(), yuan(rest).into());
    out.insert("operation_id".into(), op.operation_id.clone().into());
    out.insert("out_request_no".into(), op.out_request_no.clone().into());
    out.insert("operation_type".into(), op.operation_type.clone().into());
    out.insert("amount".into(), yuan(op.amount_fen).into());
    out.insert("status".into(), op.status.clone().into());
    out.insert("order_title".into(), freeze.order_title.clone().into());
    if let Some(r) = &op.remark {
        out.insert("remark".into(), r.clone().into());
    }
    out.insert("gmt_create".into(), fmt_ms(freeze.created_at).into());
    if op.status == "SUCCESS" {
        out.insert("gmt_trans".into(), fmt_ms(op.at).into());
    }
    out.insert("trans_currency".into(), "CNY".into());
    payer_fields(store, call.app, &freeze, &mut out);
    Ok(out)
}

fn payer_fields(store: &Store, app: &App, freeze: &Freeze, out: &mut Map<String, Value>) {
    let Some(payer) = &freeze.payer_user_id else {
        return;
    };
    match app.id_mode {
        IdMode::UserId => out.insert("payer_user_id".into(), payer.clone().into()),
        IdMode::OpenId => out.insert(
            "payer_open_id".into(),
            ids::open_id(&app.app_id, payer).into(),
        ),
    };
    if let Some(b) = store.data.buyers.get(payer) {
        out.insert("payer_logon_id".into(), mask_logon(&b.logon_id).into());
    }
}

/// Queues `fund_auth_freeze` / `fund_auth_unfreeze` (§2.7) for one operation.
fn queue_fund_notification(
    store: &mut Store,
    freeze: &Freeze,
    op: &FundOperation,
    notify_type: &str,
    url: Option<String>,
    now: Millis,
) {
    let Some(app) = store.data.apps.get(&freeze.app_id).cloned() else {
        return;
    };
    let Some(url) = url
        .or_else(|| freeze.notify_url.clone())
        .or_else(|| app.notify_url.clone())
    else {
        return;
    };
    let mut fields = Map::new();
    payer_fields(store, &app, freeze, &mut fields);
    let mut p: Vec<(String, String)> = vec![
        ("notify_id".into(), ids::notify_id()),
        ("notify_type".into(), notify_type.into()),
        ("notify_time".into(), fmt_ms(now)),
        ("app_id".into(), freeze.app_id.clone()),
        ("auth_app_id".into(), freeze.app_id.clone()),
        ("charset".into(), "utf-8".into()),
        ("version".into(), "1.0".into()),
        ("sign_type".into(), "RSA2".into()),
        ("auth_no".into(), freeze.auth_no.clone()),
        ("out_order_no".into(), freeze.out_order_no.clone()),
        ("operation_id".into(), op.operation_id.clone()),
        ("out_request_no".into(), op.out_request_no.clone()),
        ("operation_type".into(), op.operation_type.clone()),
        ("amount".into(), yuan(op.amount_fen)),
        ("status".into(), op.status.clone()),
        ("total_freeze_amount".into(), yuan(freeze.total_freeze_fen)),
        (
            "total_unfreeze_amount".into(),
            yuan(freeze.total_unfreeze_fen),
        ),
        ("total_pay_amount".into(), yuan(freeze.total_pay_fen)),
        ("rest_amount".into(), yuan(freeze.rest_fen())),
        ("gmt_create".into(), fmt_ms(freeze.created_at)),
        ("gmt_trans".into(), fmt_ms(op.at)),
        ("trans_currency".into(), "CNY".into()),
    ];
    for (k, v) in fields {
        if let Value::String(s) = v {
            p.push((k, s));
        }
    }
    notify::enqueue(store, &freeze.app_id, url, p, now);
}
