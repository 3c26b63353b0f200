//! Deferred profit sharing: `alipay.trade.order.settle` splits money frozen at payment
//! (`extend_params.royalty_freeze`) to bound receivers; `settle.query` and `onsettle.query`
//! read the result and what is left.
//!
//! A settle is identified by its `out_request_no` within the app: an identical repeat answers
//! the same `settle_no` and moves nothing; a changed repeat is `ACQ.CONTEXT_INCONSISTENT`.

use serde_json::{Map, Value, json};

use super::Call;
use super::fields::*;
use crate::Ctx;
use crate::clock::fmt_ms;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::model::{SettleLine, Settlement, Trade, TradeState};
use crate::notify;
use crate::store::{Store, relation_key};

fn settle_err(msg: &str) -> ApiError {
    ApiError::business("ACQ.TRADE_SETTLE_ERROR", msg)
}

fn truthy(v: Option<&Value>) -> bool {
    v.is_some_and(|v| v == "true" || v == true)
}

/// The paid, frozen trade of this app a settle names.
fn settle_trade(store: &Store, call: &Call<'_>, trade_no: &str) -> Result<Trade, ApiError> {
    let t = store
        .data
        .trades
        .get(trade_no)
        .filter(|t| t.app_id == call.app.app_id)
        .cloned()
        .ok_or_else(|| ApiError::business("ACQ.TRADE_NOT_EXIST", "交易不存在"))?;
    if t.state != TradeState::TradeSuccess {
        return Err(ApiError::business(
            "ACQ.TRADE_STATUS_ERROR",
            "交易状态不合法，只有支付成功的交易可以分账",
        ));
    }
    if !t.royalty_freeze {
        return Err(settle_err("交易未冻结分账资金(royalty_freeze)，不能分账"));
    }
    Ok(t)
}

/// Reads `royalty_parameters` into settle lines, checking every receiver is bound.
fn read_lines(store: &Store, call: &Call<'_>, t: &Trade) -> Result<Vec<SettleLine>, ApiError> {
    let Some(list) = call.biz.get("royalty_parameters") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| ApiError::bad_param("royalty_parameters必须为数组"))?;
    let mut lines = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let field = |n: &str| {
            item.get(n)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let royalty_type = field("royalty_type").unwrap_or("transfer");
        if !matches!(royalty_type, "transfer" | "replenish") {
            return Err(ApiError::bad_param("royalty_type取值transfer或replenish"));
        }
        let trans_out = field("trans_out").unwrap_or(&t.seller_id);
        if trans_out != t.seller_id {
            return Err(ApiError::bad_param("trans_out必须为交易的收款方"));
        }
        let trans_in =
            field("trans_in").ok_or_else(|| ApiError::bad_param("缺少必选参数trans_in"))?;
        let trans_in_type = field("trans_in_type").unwrap_or("userId");
        if !matches!(trans_in_type, "userId" | "loginName" | "openId") {
            return Err(ApiError::bad_param(
                "trans_in_type取值userId、loginName或openId",
            ));
        }
        if !store
            .data
            .relations
            .contains_key(&relation_key(&call.app.app_id, trans_in))
        {
            return Err(ApiError::business(
                "ACQ.ROYALTY_ACCOUNT_NOT_EXIST",
                format!("分账收入方{trans_in}未绑定分账关系"),
            ));
        }
        let amount_fen = line_amount(item, t.total_fen)?;
        lines.push(SettleLine {
            royalty_type: royalty_type.to_owned(),
            trans_out: trans_out.to_owned(),
            trans_in: trans_in.to_owned(),
            trans_in_type: trans_in_type.to_owned(),
            amount_fen,
            detail_id: format!("{}{:03}", ids::random_hex(16), i + 1),
        });
    }
    Ok(lines)
}

fn line_amount(item: &Value, total_fen: i64) -> Result<i64, ApiError> {
    if let Some(a) = item.get("amount").filter(|v| !v.is_null()) {
        let text = match a {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(ApiError::bad_param("amount格式错误")),
        };
        return parse_amount("amount", &text);
    }
    let pct = item.get("amount_percentage").and_then(|p| {
        p.as_i64()
            .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
    });
    match pct {
        Some(p) if (1..=100).contains(&p) => Ok(total_fen * p / 100),
        Some(_) => Err(ApiError::bad_param("amount_percentage取值1～100")),
        None => Err(ApiError::bad_param("amount与amount_percentage必须有一个")),
    }
}

/// The settlement of this app with `out_request_no`, if any.
fn earlier<'a>(store: &'a Store, app_id: &str, out_request_no: &str) -> Option<&'a Settlement> {
    store.data.settlements.values().find(|s| {
        s.out_request_no == out_request_no
            && store
                .data
                .trades
                .get(&s.trade_no)
                .is_some_and(|t| t.app_id == app_id)
    })
}

fn settle_answer(s: &Settlement) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("trade_no".into(), s.trade_no.clone().into());
    out.insert("settle_no".into(), s.settle_no.clone().into());
    out
}

/// `alipay.trade.order.settle`.
pub fn settle(ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let biz = &call.biz;
    let out_request_no = req_str(biz, "out_request_no")?.to_owned();
    check_merchant_no("out_request_no", &out_request_no, 64)?;
    let trade_no = req_str(biz, "trade_no")?.to_owned();
    let fingerprint = json!({
        "trade_no": trade_no,
        "royalty_parameters": biz.get("royalty_parameters"),
        "extend_params": biz.get("extend_params"),
    })
    .to_string();
    if let Some(s) = earlier(store, &call.app.app_id, &out_request_no) {
        if s.fingerprint != fingerprint {
            return Err(ApiError::business(
                "ACQ.CONTEXT_INCONSISTENT",
                "同一结算请求号的请求信息不一致",
            ));
        }
        return Ok(settle_answer(s));
    }
    let mut t = settle_trade(store, call, &trade_no)?;
    let (finish, finish_fen) = read_finish(biz)?;
    let lines = read_lines(store, call, &t)?;
    if lines.is_empty() && !finish {
        return Err(ApiError::bad_param("缺少必选参数royalty_parameters"));
    }
    let sum: i64 = lines.iter().map(|l| l.amount_fen).sum();
    if sum > t.unsettled_fen {
        return Err(settle_err("分账金额超过交易待结算金额"));
    }
    if t.unsettled_fen == 0 {
        return Err(settle_err("交易已无待结算金额"));
    }
    let left = t.unsettled_fen - sum;
    let still_frozen = match (finish, finish_fen) {
        (false, _) => left,
        (true, None) => 0,
        (true, Some(fen)) if fen <= left => left - fen,
        (true, Some(_)) => return Err(settle_err("royalty_finish_amount超过分账后剩余冻结金额")),
    };
    credit_receivers(store, &lines);
    t.unsettled_fen = still_frozen;
    store.put_trade(t.clone());
    let seq = store.next_seq();
    let settlement = Settlement {
        settle_no: ids::settle_no(call.now, seq),
        trade_no,
        out_request_no,
        lines,
        fingerprint,
        settled_at: call.now,
        finished: finish,
    };
    store.put_settlement(settlement.clone());
    if opt_str(biz, "royalty_mode")? == Some("async") {
        queue_settle_message(ctx, store, call, &settlement);
    }
    Ok(settle_answer(&settlement))
}

/// `extend_params.royalty_finish` releases what is still frozen to the seller after this
/// split; `royalty_finish_amount` limits the release to that much.
fn read_finish(biz: &Map<String, Value>) -> Result<(bool, Option<i64>), ApiError> {
    let ext = biz.get("extend_params");
    let finish = truthy(ext.and_then(|e| e.get("royalty_finish")));
    let amount = match ext.and_then(|e| e.get("royalty_finish_amount")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(parse_amount("royalty_finish_amount", s)?),
        Some(Value::Number(n)) => Some(parse_amount("royalty_finish_amount", &n.to_string())?),
        Some(_) => return Err(ApiError::bad_param("royalty_finish_amount格式错误")),
    };
    if amount.is_some() && !finish {
        return Err(ApiError::bad_param(
            "royalty_finish_amount需要royalty_finish=true",
        ));
    }
    Ok((finish, amount))
}

/// Receivers that are sandbox buyers see the money arrive in their balance.
fn credit_receivers(store: &mut Store, lines: &[SettleLine]) {
    for l in lines {
        if let Some(mut b) = store.data.buyers.get(&l.trans_in).cloned() {
            b.balance_fen += l.amount_fen;
            store.put_buyer(b);
        }
    }
}

fn detail_list(s: &Settlement) -> Vec<Value> {
    s.lines
        .iter()
        .map(|l| {
            json!({
                "operation_type": l.royalty_type, "execute_dt": fmt_ms(s.settled_at),
                "trans_out": l.trans_out, "trans_out_type": "userId",
                "trans_in": l.trans_in, "trans_in_type": l.trans_in_type,
                "amount": yuan(l.amount_fen), "state": "SUCCESS", "detail_id": l.detail_id,
            })
        })
        .collect()
}

/// `royalty_mode=async`: the result goes to the app gateway as `alipay.trade.order.settle.notify`.
fn queue_settle_message(_ctx: &Ctx, store: &mut Store, call: &Call<'_>, s: &Settlement) {
    let Some(url) = call.app.gateway_notify_url.clone() else {
        return;
    };
    let biz = json!({
        "trade_no": s.trade_no, "settle_no": s.settle_no, "out_request_no": s.out_request_no,
        "operation_dt": fmt_ms(s.settled_at), "royalty_detail_list": detail_list(s),
    });
    let p: Vec<(String, String)> = vec![
        ("notify_id".into(), ids::notify_id()),
        (
            "msg_method".into(),
            "alipay.trade.order.settle.notify".into(),
        ),
        ("app_id".into(), call.app.app_id.clone()),
        ("charset".into(), "utf-8".into()),
        ("version".into(), "1.0".into()),
        ("sign_type".into(), "RSA2".into()),
        ("utc_timestamp".into(), call.now.to_string()),
        ("biz_content".into(), biz.to_string()),
    ];
    notify::enqueue(store, &call.app.app_id, url, p, call.now);
}

/// `alipay.trade.order.settle.query`: by `settle_no`, or `out_request_no` + `trade_no`.
pub fn settle_query(_ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let biz = &call.biz;
    let app_id = &call.app.app_id;
    let found = match (opt_str(biz, "settle_no")?, opt_str(biz, "out_request_no")?) {
        (Some(no), _) => store.data.settlements.get(no).filter(|s| {
            store
                .data
                .trades
                .get(&s.trade_no)
                .is_some_and(|t| t.app_id == *app_id)
        }),
        (None, Some(req_no)) => {
            let trade_no = req_str(biz, "trade_no")?;
            earlier(store, app_id, req_no).filter(|s| s.trade_no == trade_no)
        }
        (None, None) => {
            return Err(ApiError::bad_param("settle_no和out_request_no不能同时为空"));
        }
    };
    let s = found.ok_or_else(|| settle_err("结算单据不存在"))?;
    let mut out = Map::new();
    out.insert("out_request_no".into(), s.out_request_no.clone().into());
    out.insert("operation_dt".into(), fmt_ms(s.settled_at).into());
    out.insert("settle_no".into(), s.settle_no.clone().into());
    out.insert("royalty_detail_list".into(), detail_list(s).into());
    Ok(out)
}

/// `alipay.trade.order.onsettle.query`: what is still frozen for splitting.
pub fn onsettle_query(_ctx: &Ctx, store: &mut Store, call: &Call<'_>) -> ApiResult {
    let trade_no = req_str(&call.biz, "trade_no")?;
    let t = store
        .data
        .trades
        .get(trade_no)
        .filter(|t| t.app_id == call.app.app_id && t.state != TradeState::Precreated)
        .ok_or_else(|| ApiError::business("ACQ.TRADE_NOT_EXIST", "交易不存在"))?;
    let mut out = Map::new();
    out.insert("unsettled_amount".into(), yuan(t.unsettled_fen).into());
    Ok(out)
}
