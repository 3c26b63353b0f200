//! `alipay.trade.cancel` (撤销: end a trade whose payment result was unknown, whatever it
//! became) and `alipay.trade.close` (end a trade known to be unpaid).

use serde_json::{Map, Value};

use super::Call;
use super::fields::*;
use super::refund::refund_money;
use super::trade;
use crate::Ctx;
use crate::clock::fmt_ms;
use crate::error::{ApiError, ApiResult};
use crate::model::{Millis, Trade, TradeState};
use crate::notify;
use crate::store::Store;

/// A trade can be cancelled for 24 hours after it was created; later, refund it.
pub const CANCEL_WINDOW_MS: i64 = 24 * 3_600_000;

/// Closes an unpaid trade now, with a `TRADE_CLOSED` notification when configured and the
/// trade was visible to Alipay's side (a never-scanned precreate was not).
fn close_unpaid(ctx: &Ctx, store: &mut Store, mut t: Trade, now: Millis) -> Trade {
    let was_visible = t.state == TradeState::WaitBuyerPay;
    t.state = TradeState::TradeClosed;
    t.closed_at = Some(now);
    store.put_trade(t.clone());
    if was_visible && ctx.config.notify.trade_closed {
        notify::trade_status(ctx, store, &t, now, None);
    }
    t
}

fn ids_of(t: &Trade) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("trade_no".into(), t.trade_no.clone().into());
    out.insert("out_trade_no".into(), t.out_trade_no.clone().into());
    out
}

/// `alipay.trade.cancel`. A repeat on a trade this call already ended answers the same
/// `action` again, so a caller that lost the answer can simply call again.
pub fn cancel(ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let t = trade::find_for_call(ctx, store, call)?;
    if call.now - t.created_at > CANCEL_WINDOW_MS {
        return Err(ApiError::business(
            "ACQ.TRADE_CANCEL_TIME_OUT",
            "超过撤销时间范围，请使用退款接口",
        ));
    }
    let mut out = ids_of(&t);
    out.insert("retry_flag".into(), "N".into());
    match t.state {
        TradeState::Precreated | TradeState::WaitBuyerPay => {
            close_unpaid(ctx, store, t, call.now);
            out.insert("action".into(), "close".into());
        }
        TradeState::TradeSuccess if t.refunded_fen > 0 => {
            return Err(ApiError::business(
                "ACQ.REASON_TRADE_REFUND_FEE_ERR",
                "交易已有退款，请使用退款接口",
            ));
        }
        TradeState::TradeSuccess => {
            let rest = t.total_fen - t.refunded_fen;
            let no = t.out_trade_no.clone();
            refund_money(ctx, store, t, &no, rest, None, call.now);
            out.insert("action".into(), "refund".into());
            out.insert("gmt_refund_pay".into(), fmt_ms(call.now).into());
        }
        TradeState::TradeClosed if t.paid_at.is_some() => {
            out.insert("action".into(), "refund".into());
        }
        TradeState::TradeClosed => {
            out.insert("action".into(), "close".into());
        }
        TradeState::TradeFinished => {
            return Err(ApiError::business("ACQ.TRADE_HAS_FINISHED", "交易已完结"));
        }
    }
    Ok(out)
}

/// `alipay.trade.close`: only a trade waiting for payment (or a precreate nobody scanned).
pub fn close(ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    if let Some(op) = opt_str(&call.biz, "operator_id")? {
        check_len("operator_id", op, 28)?;
    }
    let mut t = trade::find_for_call(ctx, store, call)?;
    if !matches!(t.state, TradeState::Precreated | TradeState::WaitBuyerPay) {
        return Err(ApiError::business(
            "ACQ.TRADE_STATUS_ERROR",
            "交易状态不合法，只能关闭等待付款的交易",
        ));
    }
    // The close call's notify_url is where its TRADE_CLOSED notification goes.
    if let Some(url) = &call.notify_url {
        t.notify_url = Some(url.clone());
    }
    let t = close_unpaid(ctx, store, t, call.now);
    Ok(ids_of(&t))
}
