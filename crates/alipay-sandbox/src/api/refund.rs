//! `alipay.trade.refund` and `alipay.trade.fastpay.refund.query`, and the money movement a
//! paid-trade cancel shares with them.
//!
//! A refund is identified by (trade, `out_request_no`): a repeat with the same amount answers
//! again without moving money (`fund_change=N`); a different amount is a discordant repeat.

use serde_json::{Map, Value, json};

use super::Call;
use super::fields::*;
use super::trade;
use crate::Ctx;
use crate::clock::fmt_ms;
use crate::error::{ApiError, ApiResult};
use crate::model::{Millis, Refund, Trade, TradeState};
use crate::notify::{self, RefundInfo};
use crate::store::{Store, refund_key};

/// Refunds `amount_fen` of a paid trade to the buyer's balance and records it; a refund of
/// everything left closes the trade. The caller has checked state, amount and idempotency.
pub fn refund_money(
    ctx: &Ctx,
    store: &mut Store,
    mut t: Trade,
    out_request_no: &str,
    amount_fen: i64,
    reason: Option<String>,
    now: Millis,
) -> Trade {
    if let Some(mut buyer) = t
        .buyer_user_id
        .as_ref()
        .and_then(|b| store.data.buyers.get(b))
        .cloned()
    {
        buyer.balance_fen += amount_fen;
        store.put_buyer(buyer);
    }
    t.refunded_fen += amount_fen;
    // Money still frozen for settlement is what a refund takes back first.
    t.unsettled_fen = (t.unsettled_fen - amount_fen).max(0);
    let full = t.refunded_fen >= t.total_fen;
    if full {
        t.state = TradeState::TradeClosed;
        t.closed_at = Some(now);
    }
    store.put_trade(t.clone());
    store.put_refund(Refund {
        trade_no: t.trade_no.clone(),
        out_trade_no: t.out_trade_no.clone(),
        out_request_no: out_request_no.to_owned(),
        amount_fen,
        reason,
        refunded_at: now,
    });
    let policy = ctx.config.notify;
    if (full && policy.trade_closed) || (!full && policy.refunds) {
        let info = RefundInfo {
            out_biz_no: out_request_no.to_owned(),
            at: now,
        };
        notify::trade_status(ctx, store, &t, now, Some(info));
    }
    t
}

/// `alipay.trade.refund`.
pub fn refund(ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let biz = &call.biz;
    let amount_fen = req_amount(biz, "refund_amount")?;
    let reason = opt_string(biz, "refund_reason")?;
    if let Some(r) = &reason {
        check_len("refund_reason", r, 256)?;
    }
    let t = trade::find_for_call(ctx, store, call)?;
    let out_request_no = opt_str(biz, "out_request_no")?
        .unwrap_or(&t.out_trade_no)
        .to_owned();
    check_merchant_no("out_request_no", &out_request_no, 64)?;
    if let Some(done) = store
        .data
        .refunds
        .get(&refund_key(&t.trade_no, &out_request_no))
    {
        if done.amount_fen != amount_fen {
            return Err(ApiError::business(
                "ACQ.DISCORDANT_REPEAT_REQUEST",
                "同一退款请求号的退款金额不一致",
            ));
        }
        return Ok(refund_fields(store, call, &t, done.refunded_at, false));
    }
    match t.state {
        TradeState::Precreated => {
            return Err(ApiError::business("ACQ.TRADE_NOT_EXIST", "交易不存在"));
        }
        TradeState::WaitBuyerPay => {
            return Err(ApiError::business(
                "ACQ.TRADE_STATUS_ERROR",
                "交易状态不合法，未支付的交易不能退款",
            ));
        }
        TradeState::TradeClosed => {
            return Err(ApiError::business("ACQ.TRADE_HAS_CLOSE", "交易已经关闭"));
        }
        TradeState::TradeFinished => {
            return Err(ApiError::business("ACQ.TRADE_HAS_FINISHED", "交易已完结"));
        }
        TradeState::TradeSuccess => {}
    }
    if amount_fen > t.total_fen - t.refunded_fen {
        return Err(ApiError::business(
            "ACQ.REASON_TRADE_REFUND_FEE_ERR",
            "退款金额超过可退金额",
        ));
    }
    let t = refund_money(ctx, store, t, &out_request_no, amount_fen, reason, call.now);
    Ok(refund_fields(store, call, &t, call.now, true))
}

fn refund_fields(
    store: &Store,
    call: &Call<'_>,
    t: &Trade,
    at: Millis,
    moved: bool,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("trade_no".into(), t.trade_no.clone().into());
    out.insert("out_trade_no".into(), t.out_trade_no.clone().into());
    trade::buyer_fields(
        store,
        call.app,
        t.buyer_user_id.as_deref(),
        &mut out,
        "buyer_user_id",
        "buyer_open_id",
    );
    out.insert("fund_change".into(), if moved { "Y" } else { "N" }.into());
    // Cumulative over every refund of the trade, not this call's amount.
    out.insert("refund_fee".into(), yuan(t.refunded_fen).into());
    out.insert("gmt_refund_pay".into(), fmt_ms(at).into());
    if wants(call, "refund_detail_item_list") {
        out.insert(
            "refund_detail_item_list".into(),
            json!([{"fund_channel": "ALIPAYACCOUNT", "amount": yuan(t.refunded_fen)}]),
        );
    }
    out
}

fn wants(call: &Call<'_>, option: &str) -> bool {
    call.biz
        .get("query_options")
        .and_then(Value::as_array)
        .is_some_and(|o| o.iter().any(|v| v == option))
}

/// `alipay.trade.fastpay.refund.query`: an unknown `out_request_no` is `10000` with no refund
/// fields, which callers must read as "no such refund", not as a failure.
pub fn refund_query(ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let out_request_no = req_str(&call.biz, "out_request_no")?.to_owned();
    let t = trade::find_for_call(ctx, store, call)?;
    if t.state == TradeState::Precreated {
        return Err(ApiError::business("ACQ.TRADE_NOT_EXIST", "交易不存在"));
    }
    let mut out = Map::new();
    let Some(r) = store
        .data
        .refunds
        .get(&refund_key(&t.trade_no, &out_request_no))
    else {
        return Ok(out);
    };
    out.insert("trade_no".into(), t.trade_no.clone().into());
    out.insert("out_trade_no".into(), t.out_trade_no.clone().into());
    out.insert("out_request_no".into(), r.out_request_no.clone().into());
    out.insert("total_amount".into(), yuan(t.total_fen).into());
    out.insert("refund_amount".into(), yuan(r.amount_fen).into());
    out.insert("refund_status".into(), "REFUND_SUCCESS".into());
    if let Some(reason) = &r.reason {
        out.insert("refund_reason".into(), reason.clone().into());
    }
    out.insert("gmt_refund_pay".into(), fmt_ms(r.refunded_at).into());
    if wants(call, "refund_detail_item_list") {
        out.insert(
            "refund_detail_item_list".into(),
            json!([{"fund_channel": "ALIPAYACCOUNT", "amount": yuan(r.amount_fen)}]),
        );
    }
    Ok(out)
}
