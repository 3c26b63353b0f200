//! `alipay.trade.pay`: the merchant charges the buyer directly — a payment code scanned at the
//! till (`scene=bar_code`), a face token (`scene=security_code`), a pre-authorisation being
//! converted (`auth_no`), or a withholding agreement (`agreement_params`).
//!
//! Checks that can fail (code, balance, freeze rest) all run before the trade is recorded, so a
//! refused payment leaves nothing behind and the merchant may retry the same `out_trade_no`.

use serde_json::{Map, Value, json};

use super::Call;
use super::fields::*;
use super::trade::{self, TradeRequest};
use super::{agreement, codes, face, fund_auth};
use crate::Ctx;
use crate::clock::fmt_ms;
use crate::error::{ApiError, ApiResult};
use crate::model::{Freeze, Trade, TradeOrigin, TradeState};
use crate::store::Store;

/// In the sandbox, payments of 2000.00 yuan or more wait for the buyer's password (`10003`).
pub const PASSWORD_THRESHOLD_FEN: i64 = 200_000;

/// Who pays, and from what.
enum Payer {
    /// A payment code (`scene=bar_code`).
    Code { user_id: String, code: String },
    /// A face token (`scene=security_code`).
    Face { user_id: String, ftoken: String },
    /// An authorised freeze.
    PreAuth { freeze: Box<Freeze>, complete: bool },
    /// A withholding agreement.
    Agreement {
        user_id: String,
        agreement_no: String,
    },
}

impl Payer {
    fn user_id(&self) -> &str {
        match self {
            Payer::Code { user_id, .. }
            | Payer::Face { user_id, .. }
            | Payer::Agreement { user_id, .. } => user_id,
            Payer::PreAuth { freeze, .. } => freeze.payer_user_id.as_deref().unwrap_or(""),
        }
    }

    /// Code and face payments are confirmed by the buyer; large ones need the password.
    fn buyer_present(&self) -> bool {
        matches!(self, Payer::Code { .. } | Payer::Face { .. })
    }
}

/// `alipay.trade.pay`.
pub fn pay(ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let default_product = default_product(store, call)?;
    let req = trade::read_trade_request(call, &default_product)?;
    if let Some(existing) = trade::existing(ctx, store, call, &req)? {
        return repeat(store, call, &existing);
    }
    let payer = resolve_payer(store, call, &req)?;
    let buyer = store
        .data
        .buyers
        .get(payer.user_id())
        .cloned()
        .ok_or_else(|| ApiError::bad_param("买家不存在"))?;
    match &payer {
        Payer::PreAuth { freeze, .. } => check_freeze_covers(freeze, &req, &buyer.user_id)?,
        _ => trade::check_buyer_can_pay(&buyer, &req.seller_id, req.total_fen)?,
    }
    let mut t = trade::new_trade(store, call, req, TradeOrigin::Pay, TradeState::WaitBuyerPay);
    t.buyer_user_id = Some(buyer.user_id.clone());
    consume_credential(store, &payer);
    if payer.buyer_present() && t.total_fen >= PASSWORD_THRESHOLD_FEN {
        // The trade waits for the buyer's password; the control API confirms it.
        store.put_trade(t.clone());
        return Ok(in_process(store, call, &t));
    }
    let paid = match payer {
        Payer::PreAuth { freeze, complete } => {
            t.auth_no = Some(freeze.auth_no.clone());
            fund_auth::pay_from_freeze(
                store,
                *freeze,
                t.total_fen,
                &t.out_trade_no,
                complete,
                call.now,
            );
            store.put_trade(t.clone());
            trade::mark_paid(ctx, store, t, &buyer.user_id, call.now)
        }
        other => {
            if let Payer::Agreement { agreement_no, .. } = &other {
                t.agreement_no = Some(agreement_no.clone());
            }
            store.put_trade(t.clone());
            trade::pay(ctx, store, &t.trade_no, &buyer.user_id, call.now)?
        }
    };
    Ok(paid_fields(store, call, &paid))
}

/// The product a pre-auth payment defaults to is the freeze's; agreements default to
/// `GENERAL_WITHHOLDING`; everything else is 当面付.
fn default_product(store: &Store, call: &Call<'_>) -> Result<String, ApiError> {
    if let Some(auth_no) = opt_str(&call.biz, "auth_no")? {
        return Ok(store
            .data
            .freezes
            .get(auth_no)
            .map(|f| f.product_code.clone())
            .unwrap_or_else(|| "PRE_AUTH".into()));
    }
    if call.biz.contains_key("agreement_params") {
        return Ok("GENERAL_WITHHOLDING".into());
    }
    Ok("FACE_TO_FACE_PAYMENT".into())
}

/// A repeat of an earlier `trade.pay` that is still waiting for the buyer answers `10003`
/// again; anything else under that `out_trade_no` is not a payment this call can make.
fn repeat(store: &Store, call: &Call<'_>, t: &Trade) -> ApiResult {
    if t.origin == TradeOrigin::Pay && t.state == TradeState::WaitBuyerPay {
        return Ok(in_process(store, call, t));
    }
    Err(ApiError::business(
        "ACQ.TRADE_STATUS_ERROR",
        "交易状态不合法",
    ))
}

fn resolve_payer(store: &Store, call: &Call<'_>, req: &TradeRequest) -> Result<Payer, ApiError> {
    let biz = &call.biz;
    if let Some(auth_no) = opt_str(biz, "auth_no")? {
        return pre_auth_payer(store, call, auth_no, req);
    }
    if let Some(params) = biz.get("agreement_params") {
        let agreement_no = params
            .get("agreement_no")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::bad_param("缺少必选参数agreement_params.agreement_no"))?;
        if !matches!(
            req.product_code.as_str(),
            "GENERAL_WITHHOLDING" | "CYCLE_PAY_AUTH"
        ) {
            return Err(ApiError::business(
                "ACQ.AGREEMENT_ERROR",
                "协议支付的product_code应为GENERAL_WITHHOLDING或CYCLE_PAY_AUTH",
            ));
        }
        let a = agreement::chargeable(store, &call.app.app_id, agreement_no)?;
        return Ok(Payer::Agreement {
            user_id: a.user_id,
            agreement_no: a.agreement_no,
        });
    }
    let scene = opt_str(biz, "scene")?.unwrap_or("bar_code");
    let auth_code = req_str(biz, "auth_code")?;
    match scene {
        "bar_code" => Ok(Payer::Code {
            user_id: codes::buyer_of_code(store, auth_code, call.now)?,
            code: auth_code.to_owned(),
        }),
        "security_code" => Ok(Payer::Face {
            user_id: face::buyer_of_ftoken(store, auth_code, call.now)?,
            ftoken: auth_code.to_owned(),
        }),
        _ => Err(ApiError::bad_param("scene取值bar_code或security_code")),
    }
}

fn pre_auth_payer(
    store: &Store,
    call: &Call<'_>,
    auth_no: &str,
    req: &TradeRequest,
) -> Result<Payer, ApiError> {
    let freeze = store
        .data
        .freezes
        .get(auth_no)
        .filter(|f| f.app_id == call.app.app_id)
        .cloned()
        .ok_or_else(|| ApiError::business("ACQ.AUTH_NO_ERROR", "预授权号错误"))?;
    match freeze.order_status.as_str() {
        "AUTHORIZED" => {}
        "FINISH" => {
            return Err(ApiError::business(
                "ACQ.AUTH_ORDER_HAS_FINISHED",
                "预授权订单已完结",
            ));
        }
        "CLOSED" => {
            return Err(ApiError::business(
                "ACQ.AUTH_ORDER_HAS_CLOSED",
                "预授权订单已关闭",
            ));
        }
        _ => {
            return Err(ApiError::business(
                "ACQ.AUTH_ORDER_NOT_PAID",
                "预授权订单未冻结成功",
            ));
        }
    }
    if req.product_code != freeze.product_code {
        return Err(ApiError::business(
            "ACQ.PRE_AUTH_PROD_CODE_INCONSISTENT",
            "支付产品码与预授权产品码不一致",
        ));
    }
    let complete = match opt_str(&call.biz, "auth_confirm_mode")?.unwrap_or("NOT_COMPLETE") {
        "COMPLETE" => true,
        "NOT_COMPLETE" => false,
        _ => {
            return Err(ApiError::bad_param(
                "auth_confirm_mode取值COMPLETE或NOT_COMPLETE",
            ));
        }
    };
    let named = trade::resolve_buyer(store, call.app, &call.biz)?
        .ok_or_else(|| ApiError::bad_param("缺少必选参数buyer_id"))?;
    if freeze.payer_user_id.as_deref() != Some(named.user_id.as_str()) {
        return Err(ApiError::business(
            "ACQ.BUYER_NOT_MATCH",
            "买家与预授权付款方不一致",
        ));
    }
    Ok(Payer::PreAuth {
        freeze: Box::new(freeze),
        complete,
    })
}

fn check_freeze_covers(freeze: &Freeze, req: &TradeRequest, buyer: &str) -> Result<(), ApiError> {
    if req.seller_id != freeze.payee_user_id {
        return Err(ApiError::bad_param("seller_id与预授权收款方不一致"));
    }
    if buyer == req.seller_id {
        return Err(ApiError::business(
            "ACQ.BUYER_SELLER_EQUAL",
            "买卖家不能相同",
        ));
    }
    if req.total_fen > freeze.rest_fen() {
        return Err(ApiError::business(
            "ACQ.AUTH_AMOUNT_NOT_ENOUGH",
            "支付金额超过预授权剩余冻结金额",
        ));
    }
    Ok(())
}

fn consume_credential(store: &mut Store, payer: &Payer) {
    match payer {
        Payer::Code { code, .. } => codes::consume(store, code),
        Payer::Face { ftoken, .. } => face::consume(store, ftoken),
        _ => {}
    }
}

fn buyer_and_trade(store: &Store, call: &Call<'_>, t: &Trade, out: &mut Map<String, Value>) {
    out.insert("trade_no".into(), t.trade_no.clone().into());
    out.insert("out_trade_no".into(), t.out_trade_no.clone().into());
    trade::buyer_fields(
        store,
        call.app,
        t.buyer_user_id.as_deref(),
        out,
        "buyer_user_id",
        "buyer_open_id",
    );
    out.insert("total_amount".into(), yuan(t.total_fen).into());
}

/// The `10003` answer. `Ctx::answer` writes `code`/`msg` first and then these fields, so
/// setting them here replaces the success code: the answer is still signed, as Alipay's is.
fn in_process(store: &Store, call: &Call<'_>, t: &Trade) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("code".into(), "10003".into());
    out.insert("msg".into(), " order success pay inprocess".into());
    buyer_and_trade(store, call, t, &mut out);
    out
}

fn paid_fields(store: &Store, call: &Call<'_>, t: &Trade) -> Map<String, Value> {
    let mut out = Map::new();
    buyer_and_trade(store, call, t, &mut out);
    let amount = yuan(t.total_fen);
    for k in ["receipt_amount", "buyer_pay_amount", "invoice_amount"] {
        out.insert(k.into(), amount.clone().into());
    }
    out.insert("point_amount".into(), "0.00".into());
    out.insert(
        "gmt_payment".into(),
        fmt_ms(t.paid_at.unwrap_or(call.now)).into(),
    );
    out.insert(
        "fund_bill_list".into(),
        json!([{"fund_channel": "ALIPAYACCOUNT", "amount": amount, "real_amount": amount}]),
    );
    out
}
