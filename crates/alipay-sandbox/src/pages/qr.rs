//! The page a precreate `qr_code` opens: the buyer "scans" (the trade becomes visible to
//! `trade.query` as `WAIT_BUYER_PAY`, as when a real buyer scans), picks an account and pays.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{buyer_select, error_page, hidden, html_escape, page, resolve_buyer};
use crate::Ctx;
use crate::api::fields::yuan;
use crate::api::trade;
use crate::model::{Trade, TradeState};

#[derive(Debug, Deserialize)]
pub struct Token {
    #[serde(default)]
    t: String,
}

/// The trade a QR URL names, when its token is the one the sandbox issued.
fn trade_for(ctx: &Ctx, trade_no: &str, token: &str) -> Option<Trade> {
    let now = ctx.clock.now_ms();
    let mut store = ctx.store();
    trade::refresh_expiry(ctx, &mut store, trade_no, now);
    let trade = store.data.trades.get(trade_no)?.clone();
    let issued = trade.qr_code.as_deref()?.rsplit_once("?t=")?.1.to_owned();
    (!token.is_empty() && issued == token).then_some(trade)
}

fn invalid_code() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "二维码无效或已过期",
        "This QR code is unknown or not valid",
    )
}

/// Subject, amount and merchant of a trade.
pub fn trade_card(trade: &Trade) -> String {
    let app_id = html_escape(&trade.app_id);
    format!(
        "<div class=\"card\"><p class=\"amount\" id=\"amount\">¥{}</p><dl>\
<dt>商品 <span class=\"en\">Subject</span></dt><dd id=\"subject\">{}</dd>\
<dt>收款方 <span class=\"en\">Merchant</span></dt><dd>{} (app {app_id})</dd>\
<dt>交易号 <span class=\"en\">Trade number</span></dt><dd><code>{}</code></dd>\
<dt>订单号 <span class=\"en\">Merchant order</span></dt><dd><code>{}</code></dd></dl></div>",
        html_escape(&yuan(trade.total_fen)),
        html_escape(&trade.subject),
        html_escape(&trade.seller_id),
        html_escape(&trade.trade_no),
        html_escape(&trade.out_trade_no),
    )
}

/// A line saying why a trade cannot be paid, if it cannot.
pub fn not_payable(trade: &Trade) -> Option<(&'static str, &'static str)> {
    match trade.state {
        TradeState::Precreated | TradeState::WaitBuyerPay => None,
        TradeState::TradeSuccess | TradeState::TradeFinished => {
            Some(("该订单已支付", "This order is already paid"))
        }
        TradeState::TradeClosed => Some(("交易已关闭", "This trade is closed")),
    }
}

/// `GET /qr/{trade_no}?t=…`.
pub async fn show_qr(
    State(ctx): State<Arc<Ctx>>,
    Path(trade_no): Path<String>,
    Query(q): Query<Token>,
) -> Response {
    let Some(found) = trade_for(&ctx, &trade_no, &q.t) else {
        return invalid_code();
    };
    // Scanning makes the trade exist for the merchant's query and starts its payment time;
    // a code past its validity shows the trade closed.
    let trade = {
        let mut store = ctx.store();
        let now = ctx.clock.now_ms();
        crate::api::trade::scan(&ctx, &mut store, &found.trade_no, now);
        store.flush();
        store
            .data
            .trades
            .get(&found.trade_no)
            .cloned()
            .unwrap_or(found)
    };
    let mut body = trade_card(&trade);
    match not_payable(&trade) {
        Some((zh, en)) => body.push_str(&format!(
            "<div class=\"card\"><p id=\"status\">{zh}<span class=\"en\">{en}</span></p></div>"
        )),
        None => body.push_str(&format!(
            "<form class=\"card\" method=\"post\" action=\"/qr/{}/pay\">{}{}\
<button type=\"submit\">确认付款<span class=\"en\">Pay</span></button></form>",
            html_escape(&trade.trade_no),
            hidden("t", &q.t),
            buyer_select(&ctx, "buyer_id"),
        )),
    }
    page(StatusCode::OK, "扫码付款", "Scan to pay", &body)
}

#[derive(Debug, Deserialize)]
pub struct PayForm {
    #[serde(default)]
    t: String,
    #[serde(default)]
    buyer_id: String,
}

/// `POST /qr/{trade_no}/pay`: pays as the chosen buyer.
pub async fn pay_qr(
    State(ctx): State<Arc<Ctx>>,
    Path(trade_no): Path<String>,
    Form(form): Form<PayForm>,
) -> Response {
    let Some(trade) = trade_for(&ctx, &trade_no, &form.t) else {
        return invalid_code();
    };
    let Some(buyer) = resolve_buyer(&ctx, &form.buyer_id) else {
        return error_page(StatusCode::BAD_REQUEST, "买家不存在", "No such buyer");
    };
    let result = {
        let now = ctx.clock.now_ms();
        let mut store = ctx.store();
        let r = trade::pay(&ctx, &mut store, &trade.trade_no, &buyer.user_id, now);
        store.flush();
        r
    };
    ctx.wake_notifier();
    match result {
        Ok(paid) => {
            let body = format!(
                "{}<div class=\"card\"><p class=\"ok\" id=\"status\">支付成功<span class=\"en\">Payment successful</span></p>\
<p>付款人 <span class=\"en\">Paid by</span> {}</p></div>",
                trade_card(&paid),
                html_escape(&buyer.nick_name),
            );
            page(StatusCode::OK, "支付成功", "Paid", &body)
        }
        Err(e) => {
            let body = format!(
                "{}<div class=\"card\"><p class=\"err\" id=\"status\">支付失败<span class=\"en\">Payment failed</span></p>\
<p id=\"reason\"><code>{}</code> {}</p></div>",
                trade_card(&trade),
                html_escape(&e.sub_code),
                html_escape(&e.sub_msg),
            );
            page(StatusCode::CONFLICT, "支付失败", "Payment failed", &body)
        }
    }
}
