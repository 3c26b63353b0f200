//! JSAPI `tradePay` in a plain browser: `/bridge.js` defines `window.AlipayJSBridge`, whose
//! `call('tradePay', {tradeNO}, cb)` opens the sandbox cashier in an overlay iframe; the buyer
//! confirms or cancels there, and the cashier posts the result code back (`9000` paid,
//! `6001` cancelled, `4000` failed). Opened as a page with `return=URL`, the cashier
//! redirects there with `resultCode` instead.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::qr::{not_payable, trade_card};
use super::{
    buyer_select, error_page, hidden, html_escape, is_http_url, page, resolve_buyer, see_other,
    with_query,
};
use crate::Ctx;
use crate::api::fields::mask_logon;
use crate::api::trade;
use crate::model::Trade;

const BRIDGE_JS: &str = r#"(function () {
  'use strict';
  // Alipay sandbox stand-in for the Alipay app's JSAPI bridge.
  var BASE = __BASE__;
  var ORIGIN = __ORIGIN__;
  if (window.AlipayJSBridge) { return; }
  function tradePay(params, cb) {
    var tradeNO = params && (params.tradeNO || params.trade_no);
    if (!tradeNO) { if (cb) { cb({ resultCode: '4000', memo: 'tradeNO is required' }); } return; }
    var overlay = document.createElement('div');
    overlay.id = 'alipay-sandbox-cashier';
    overlay.style.cssText = 'position:fixed;inset:0;z-index:2147483647;background:rgba(0,0,0,.45);display:flex;align-items:flex-end;justify-content:center';
    var frame = document.createElement('iframe');
    frame.src = BASE + '/cashier?embed=1&trade_no=' + encodeURIComponent(tradeNO);
    frame.title = 'Alipay sandbox cashier';
    frame.style.cssText = 'width:100%;max-width:420px;height:80%;border:0;border-radius:12px 12px 0 0;background:#fff';
    overlay.appendChild(frame);
    document.body.appendChild(overlay);
    function onMessage(ev) {
      var d = ev.data;
      if (ev.origin !== ORIGIN || !d || d.source !== 'alipay-sandbox-cashier') { return; }
      window.removeEventListener('message', onMessage);
      if (overlay.parentNode) { overlay.parentNode.removeChild(overlay); }
      if (cb) { cb({ resultCode: String(d.resultCode), memo: d.memo || '', result: d.result || '' }); }
    }
    window.addEventListener('message', onMessage);
  }
  window.AlipayJSBridge = {
    sandbox: true,
    call: function (name, params, cb) {
      if (typeof params === 'function') { cb = params; params = {}; }
      if (name === 'tradePay') { return tradePay(params || {}, cb); }
      if (cb) { cb({ error: 1, errorMessage: 'not available in the Alipay sandbox: ' + name }); }
    }
  };
  function ready() {
    var ev;
    try { ev = new Event('AlipayJSBridgeReady'); }
    catch (e) { ev = document.createEvent('Event'); ev.initEvent('AlipayJSBridgeReady', false, false); }
    document.dispatchEvent(ev);
  }
  if (document.readyState === 'loading') { document.addEventListener('DOMContentLoaded', ready); }
  else { setTimeout(ready, 0); }
})();
"#;

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after..].find('/') {
        Some(i) => &url[..after + i],
        None => url,
    }
}

/// `GET /bridge.js`.
pub async fn bridge_js(State(ctx): State<Arc<Ctx>>) -> Response {
    let js_string = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let body = BRIDGE_JS
        .replace("__BASE__", &js_string(&ctx.base_url))
        .replace("__ORIGIN__", &js_string(origin(&ctx.base_url)));
    (
        [(
            header::CONTENT_TYPE,
            "application/javascript; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct CashierParams {
    #[serde(default)]
    trade_no: String,
    #[serde(default, rename = "return")]
    return_url: String,
    #[serde(default)]
    embed: String,
    #[serde(default)]
    buyer_id: String,
    /// `pay` or `cancel`.
    #[serde(default)]
    decision: String,
}

fn load(ctx: &Ctx, trade_no: &str) -> Option<Trade> {
    let now = ctx.clock.now_ms();
    let mut store = ctx.store();
    trade::refresh_expiry(ctx, &mut store, trade_no, now);
    store.data.trades.get(trade_no).cloned()
}

fn check_return(p: &CashierParams) -> Result<(), Box<Response>> {
    if !p.return_url.is_empty() && !is_http_url(&p.return_url) {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "return地址无效：应为http(s)地址",
            "return must be an http(s) URL",
        )));
    }
    Ok(())
}

/// `GET /cashier?trade_no=…[&return=…][&embed=1]`.
pub async fn show_cashier(State(ctx): State<Arc<Ctx>>, Query(p): Query<CashierParams>) -> Response {
    if let Err(page) = check_return(&p) {
        return *page;
    }
    let Some(trade) = load(&ctx, &p.trade_no) else {
        return error_page(StatusCode::NOT_FOUND, "交易不存在", "No such trade");
    };
    if let Some((zh, en)) = not_payable(&trade) {
        let code = if trade.state.is_paid() {
            "9000"
        } else {
            "4000"
        };
        return finish(&p, &trade, code, zh, en);
    }
    let who = match trade
        .buyer_user_id
        .as_deref()
        .and_then(|u| ctx.store().data.buyers.get(u).cloned())
    {
        Some(b) => format!(
            "<p>付款账户 <span class=\"en\">Paying from</span> {} ({})</p>{}",
            html_escape(&b.nick_name),
            html_escape(&mask_logon(&b.logon_id)),
            hidden("buyer_id", &b.user_id),
        ),
        None => buyer_select(&ctx, "buyer_id"),
    };
    let body = format!(
        "{}<form class=\"card\" method=\"post\" action=\"/cashier/pay\">{}{}{}{}\
<button type=\"submit\" name=\"decision\" value=\"pay\">确认付款<span class=\"en\">Confirm payment</span></button>\
<button type=\"submit\" name=\"decision\" value=\"cancel\" class=\"secondary\">取消<span class=\"en\">Cancel</span></button></form>",
        trade_card(&trade),
        hidden("trade_no", &trade.trade_no),
        hidden("return", &p.return_url),
        hidden("embed", &p.embed),
        who,
    );
    page(StatusCode::OK, "支付宝收银台", "Alipay cashier", &body)
}

/// `POST /cashier/pay`: the buyer's choice.
pub async fn pay_cashier(State(ctx): State<Arc<Ctx>>, Form(p): Form<CashierParams>) -> Response {
    if let Err(page) = check_return(&p) {
        return *page;
    }
    let Some(trade) = load(&ctx, &p.trade_no) else {
        return error_page(StatusCode::NOT_FOUND, "交易不存在", "No such trade");
    };
    if p.decision != "pay" {
        return finish(&p, &trade, "6001", "已取消支付", "Payment cancelled");
    }
    let buyer_id = trade
        .buyer_user_id
        .clone()
        .unwrap_or_else(|| p.buyer_id.clone());
    let Some(buyer) = resolve_buyer(&ctx, &buyer_id) else {
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
        Ok(paid) => finish(&p, &paid, "9000", "支付成功", "Payment successful"),
        Err(e) if e.sub_code == "ACQ.TRADE_HAS_SUCCESS" => finish(
            &p,
            &trade,
            "9000",
            "该订单已支付",
            "This order is already paid",
        ),
        Err(e) => {
            let zh = format!("支付失败：{} {}", e.sub_code, e.sub_msg);
            finish(&p, &trade, "4000", &zh, "Payment failed")
        }
    }
}

/// Ends the cashier: back to the embedding page (`postMessage`), to `return`, or a page.
fn finish(p: &CashierParams, trade: &Trade, code: &str, zh: &str, en: &str) -> Response {
    if p.embed.is_empty() && !p.return_url.is_empty() {
        return see_other(&with_query(
            &p.return_url,
            &[("resultCode", code), ("trade_no", &trade.trade_no)],
        ));
    }
    let class = if code == "9000" { "ok" } else { "err" };
    let message = serde_json::json!({
        "source": "alipay-sandbox-cashier", "resultCode": code, "memo": en, "trade_no": trade.trade_no,
    });
    // JSON in a <script>: `<` escaped so no text can close the element.
    let message = message.to_string().replace('<', "\\u003c");
    let script = if p.embed.is_empty() {
        String::new()
    } else {
        format!("<script>setTimeout(function(){{parent.postMessage({message},'*')}},600)</script>")
    };
    let body = format!(
        "{}<div class=\"card\"><p class=\"{class}\" id=\"result\" data-result-code=\"{}\">{}<span class=\"en\">{} (resultCode {})</span></p></div>{script}",
        trade_card(trade),
        html_escape(code),
        html_escape(zh),
        html_escape(en),
        html_escape(code),
    );
    page(StatusCode::OK, "支付结果", "Payment result", &body)
}
