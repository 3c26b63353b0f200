//! The machine page, the order, the payment page and its status.
//!
//! The machine page lists the machine's slots with the server's prices and free stock. The
//! order form carries the prices the page showed; the server prices the lines again from its
//! catalogue and refuses the order if any shown price or the shown total differs (a tampered
//! form or a stale page), so the buyer is never charged an amount they did not see. The order
//! is written with its stock reserved, then `alipay.trade.create` makes the trade for the
//! signed-in buyer; the payment page calls JSAPI `tradePay` with its `trade_no`. The result
//! code is a hint: the page tells the server (`6001` cancels the trade through the resolver,
//! anything else asks it to query now) and shows the server's state, polled until final.

use std::sync::Arc;

use alipay::api::trade::Create;
use alipay::{CallOptions, Outcome};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::json;

use super::html::{self, Lang, esc, js, yuan};
use super::oauth;
use super::session::Session;
use super::{H5, PageResult, cross_site, see_other};
use crate::domain::order::OrderState;
use crate::pay::checkout::{self, SaleError, SaleItem};
use crate::store::{get_int, orders};

/// The signed-in buyer's session, or the response that gets them there.
async fn buyer(
    h5: &H5,
    headers: &HeaderMap,
    machine: &str,
) -> Result<Result<(Session, i64), Response>, super::Internal> {
    match h5.session(headers).await? {
        Some(s) => match s.account_id {
            Some(a) => Ok(Ok((s, a))),
            None => Ok(Err(see_other("/m/phone", &[]))),
        },
        None => {
            if h5.sandbox_url.is_none() && !oauth::inside_alipay(headers) {
                return Ok(Err(oauth::open_in_alipay(Lang::from_headers(headers))));
            }
            Ok(Err(oauth::start(h5, headers, machine, "auth_base").await?))
        }
    }
}

fn unknown_machine(lang: Lang, code: &str) -> Response {
    let text = match lang {
        Lang::Zh => format!("没有编号为 {code} 的售货机。请检查二维码。"),
        Lang::En => format!("There is no machine {code}. Check the code you scanned."),
    };
    html::message(
        StatusCode::NOT_FOUND,
        lang,
        lang.t("找不到售货机", "Machine not found"),
        &text,
        None,
    )
}

/// A slot as the machine page shows it.
struct Offer {
    slot: String,
    name: String,
    price: i64,
    free: i64,
}

async fn offers(h5: &H5, machine_id: i64) -> Result<Vec<Offer>, crate::store::Error> {
    let rows = crate::store::query(
        "SELECT s.code, p.name, s.price_fen, s.stock, s.reserved, CAST(CASE WHEN s.enabled THEN 1 ELSE 0 END AS BIGINT) AS enabled \
         FROM slots s JOIN products p ON p.id = s.product_id WHERE s.machine_id = $1 ORDER BY s.code",
    )
    .bind(machine_id)
    .fetch_all(&h5.svc.db.pool)
    .await?;
    rows.iter()
        .map(|r| offer(r, r.try_get("code")?, r.try_get("name")?))
        .collect()
}

fn offer(r: &crate::store::Row, slot: String, name: String) -> Result<Offer, crate::store::Error> {
    let enabled = get_int(r, "enabled")? != 0;
    let free = get_int(r, "stock")? - get_int(r, "reserved")?;
    Ok(Offer {
        slot,
        name,
        price: r.try_get("price_fen")?,
        free: if enabled { free.max(0) } else { 0 },
    })
}

/// `GET /m/{code}`: the machine page (signed in), or the way to sign in.
#[tracing::instrument(skip_all, fields(machine = %code))]
pub async fn show_machine(
    State(h5): State<Arc<H5>>,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    let lang = Lang::from_headers(&headers);
    // One query for the machine and its shelves: this page is the hot path.
    let rows = crate::store::query(
        "SELECT m.fault, s.code, p.name, s.price_fen, s.stock, s.reserved, \
         CAST(CASE WHEN s.enabled THEN 1 ELSE 0 END AS BIGINT) AS enabled \
         FROM machines m LEFT JOIN slots s ON s.machine_id = m.id LEFT JOIN products p ON p.id = s.product_id \
         WHERE m.code = $1 ORDER BY s.code",
    )
    .bind(&code)
    .fetch_all(&h5.svc.db.pool)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(unknown_machine(lang, &code));
    };
    if first.try_get::<Option<String>, _>("fault")?.is_some() {
        return Ok(html::message(
            StatusCode::SERVICE_UNAVAILABLE,
            lang,
            lang.t("暂停服务", "Out of service"),
            lang.t(
                "这台售货机暂停服务，请稍后再试。",
                "This machine is out of service; please try later.",
            ),
            None,
        ));
    }
    if let Err(r) = buyer(&h5, &headers, &code).await? {
        return Ok(r);
    }
    let mut offers = Vec::new();
    for r in &rows {
        if let (Some(slot), Some(name)) = (
            r.try_get::<Option<String>, _>("code")?,
            r.try_get::<Option<String>, _>("name")?,
        ) {
            offers.push(offer(r, slot, name)?);
        }
    }
    Ok(machine_page(lang, StatusCode::OK, &code, &offers, None))
}

fn machine_page(
    lang: Lang,
    status: StatusCode,
    code: &str,
    offers: &[Offer],
    note: Option<&str>,
) -> Response {
    let mut rows = String::new();
    for o in offers {
        let max = o.free.min(10);
        let input = if max > 0 {
            format!(
                "<input class=\"qty\" type=\"number\" name=\"qty.{s}\" id=\"qty-{s}\" min=\"0\" max=\"{max}\" value=\"0\" data-price=\"{p}\">",
                s = esc(&o.slot),
                p = o.price
            )
        } else {
            format!(
                "<span class=\"muted\">{}</span>",
                esc(lang.t("售罄", "Sold out"))
            )
        };
        rows.push_str(&format!(
            "<div class=\"row\"><div><div>{}</div><div class=\"muted\">{} · {} {}</div></div>\
<div><span class=\"price\">{}</span> {input}<input type=\"hidden\" name=\"price.{}\" value=\"{}\"></div></div>",
            esc(&o.name),
            esc(&o.slot),
            esc(lang.t("余", "left")),
            o.free,
            esc(&yuan(o.price)),
            esc(&o.slot),
            o.price,
        ));
    }
    let note = note
        .map(|t| format!("<p id=\"message\" class=\"err card\">{}</p>", esc(t)))
        .unwrap_or_default();
    let body = format!(
        "{note}<form method=\"post\" action=\"/m/{c}/order\" class=\"card\" id=\"order\">\
<div class=\"muted\">{machine} {c}</div>{rows}\
<div class=\"row\"><strong>{total_label}</strong><strong class=\"price\" id=\"total\">¥0.00</strong></div>\
<input type=\"hidden\" name=\"total\" id=\"total-fen\" value=\"\">\
<button type=\"submit\" id=\"buy\" disabled>{buy}</button></form>\
<script>(function(){{var f=document.getElementById('order');function sum(){{var t=0;\
f.querySelectorAll('input.qty').forEach(function(i){{var q=parseInt(i.value,10)||0;t+=q*parseInt(i.dataset.price,10);}});\
document.getElementById('total').textContent='¥'+(t/100).toFixed(2);document.getElementById('total-fen').value=t;\
document.getElementById('buy').disabled=t<=0;}}f.addEventListener('input',sum);sum();}})();</script>",
        c = esc(code),
        machine = esc(lang.t("售货机", "Machine")),
        total_label = esc(lang.t("合计", "Total")),
        buy = esc(lang.t("立即支付", "Pay now")),
    );
    html::page(
        status,
        lang,
        lang.t("选择商品", "Choose products"),
        "",
        &body,
    )
}

/// What the order form says: quantities, and the prices and total the page showed.
struct OrderForm {
    items: Vec<SaleItem>,
    shown_prices: Vec<(String, i64)>,
    shown_total: Option<i64>,
}

fn parse_form(pairs: &[(String, String)]) -> Result<OrderForm, String> {
    let mut items = Vec::new();
    let mut shown_prices = Vec::new();
    let mut shown_total = None;
    if pairs.len() > 64 {
        return Err("too many fields".into());
    }
    for (k, v) in pairs {
        let v = v.trim();
        if let Some(slot) = k.strip_prefix("qty.") {
            let qty: u32 = if v.is_empty() {
                0
            } else {
                v.parse()
                    .map_err(|_| format!("quantity of {slot} is not a number"))?
            };
            if qty > 0 {
                if items.iter().any(|i: &SaleItem| i.slot == slot) {
                    return Err(format!("slot {slot} appears twice"));
                }
                items.push(SaleItem {
                    slot: slot.to_owned(),
                    qty,
                });
            }
        } else if let Some(slot) = k.strip_prefix("price.") {
            let p: i64 = v
                .parse()
                .map_err(|_| format!("price of {slot} is not a number"))?;
            shown_prices.push((slot.to_owned(), p));
        } else if k == "total" {
            if !v.is_empty() {
                shown_total = Some(v.parse().map_err(|_| "total is not a number".to_owned())?);
            }
        } else {
            return Err(format!("unexpected field {k:?}"));
        }
    }
    Ok(OrderForm {
        items,
        shown_prices,
        shown_total,
    })
}

/// `POST /m/{code}/order`.
#[tracing::instrument(skip_all, fields(machine = %code))]
pub async fn create_order(
    State(h5): State<Arc<H5>>,
    Path(code): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let lang = Lang::from_headers(&headers);
    if !h5.same_origin(&headers) {
        return Ok(cross_site(lang));
    }
    let svc = &h5.svc;
    let machine = match checkout::machine(svc, &code).await {
        Ok(m) => m,
        Err(e) => return Ok(sale_refused(lang, &code, e)),
    };
    let (session, account) = match buyer(&h5, &headers, &machine.code).await? {
        Ok(b) => b,
        Err(r) => return Ok(r),
    };
    let form = match parse_form(&pairs) {
        Ok(f) => f,
        Err(why) => {
            let text = match lang {
                Lang::Zh => format!("订单表单无效：{why}。"),
                Lang::En => format!("The order form is not valid: {why}."),
            };
            return refused_page(&h5, lang, StatusCode::UNPROCESSABLE_ENTITY, &machine, &text)
                .await;
        }
    };
    if form.items.is_empty() {
        let text = lang.t("请至少选择一件商品。", "Pick at least one product.");
        return refused_page(&h5, lang, StatusCode::UNPROCESSABLE_ENTITY, &machine, text).await;
    }
    let priced = match checkout::price(svc, &machine, &form.items).await {
        Ok(p) => p,
        Err(e) => return sale_refused_page(&h5, lang, &machine, e).await,
    };
    // The amounts come from the catalogue; the form's must agree with them exactly.
    for line in &priced.lines {
        let shown = form
            .shown_prices
            .iter()
            .find(|(s, _)| *s == line.slot)
            .map(|(_, p)| *p);
        if shown != Some(line.unit_price.0) {
            let text = match lang {
                Lang::Zh => format!(
                    "{} 的价格与页面不符（页面 {}，实际 {}）。没有扣款，请刷新页面后重新下单。",
                    line.slot,
                    shown.map(yuan).unwrap_or_else(|| "—".into()),
                    yuan(line.unit_price.0)
                ),
                Lang::En => format!(
                    "The price of {} differs from the page (page {}, actual {}). Nothing was charged; reload the page and order again.",
                    line.slot,
                    shown.map(yuan).unwrap_or_else(|| "—".into()),
                    yuan(line.unit_price.0)
                ),
            };
            tracing::info!(slot = %line.slot, ?shown, price = line.unit_price.0, "order refused: price differs");
            return refused_page(&h5, lang, StatusCode::UNPROCESSABLE_ENTITY, &machine, &text)
                .await;
        }
    }
    if let Some(total) = form.shown_total
        && total != priced.total.0
    {
        let text = match lang {
            Lang::Zh => format!(
                "合计金额与页面不符（页面 {}，实际 {}）。没有扣款，请刷新页面后重新下单。",
                yuan(total),
                yuan(priced.total.0)
            ),
            Lang::En => format!(
                "The total differs from the page (page {}, actual {}). Nothing was charged; reload the page and order again.",
                yuan(total),
                yuan(priced.total.0)
            ),
        };
        tracing::info!(
            shown = total,
            total = priced.total.0,
            "order refused: total differs"
        );
        return refused_page(&h5, lang, StatusCode::UNPROCESSABLE_ENTITY, &machine, &text).await;
    }
    let now = svc.now();
    let order = match checkout::reserve(svc, &machine, &priced, "jsapi", Some(account), now).await {
        Ok(o) => o,
        Err(e) => return sale_refused_page(&h5, lang, &machine, e).await,
    };
    // The order and its reservation are committed before Alipay is called.
    let mut create = Create::new(
        order.out_trade_no.clone(),
        priced.amount,
        checkout::subject(&priced.names),
        session.user.user_ref(),
    )
    .terminal_id(machine.terminal_id.clone());
    create.seller_id = Some(machine.seller_pid.clone());
    create.timeout_express = Some(format!("{}m", svc.sale_terms.pay_timeout_minutes));
    match svc.alipay.execute(&create, &CallOptions::default()).await {
        Outcome::Success(answer) => {
            let recorded = checkout::created(
                svc,
                order.order_id,
                &order.out_trade_no,
                None,
                Some(&answer.trade_no),
                ("trade_created", "trade created for the H5 page"),
                now,
            )
            .await;
            match recorded {
                Ok(()) => Ok(see_other(&format!("/m/o/{}?pay=1", order.order_id), &[])),
                Err(e @ SaleError::AnsweredTooLate(_)) => Ok(sale_refused(lang, &machine.code, e)),
                Err(e) => Err(anyhow::Error::from(e).into()),
            }
        }
        Outcome::Failure(f) => {
            let e = checkout::refused(svc, order.order_id, "create_refused", &f, now).await;
            Ok(sale_refused(lang, &machine.code, e))
        }
        Outcome::Unknown(u) => {
            let e = checkout::unknown(
                svc,
                order.order_id,
                &order.out_trade_no,
                "create_unknown",
                &u,
                now,
            )
            .await;
            Ok(sale_refused(lang, &machine.code, e))
        }
    }
}

/// The machine page again, with why the order was refused on top.
async fn refused_page(
    h5: &H5,
    lang: Lang,
    status: StatusCode,
    machine: &checkout::MachineFacts,
    text: &str,
) -> PageResult {
    let offers = offers(h5, machine.id).await?;
    Ok(machine_page(
        lang,
        status,
        &machine.code,
        &offers,
        Some(text),
    ))
}

async fn sale_refused_page(
    h5: &H5,
    lang: Lang,
    machine: &checkout::MachineFacts,
    e: SaleError,
) -> PageResult {
    match e {
        SaleError::Slot(slot, why) => {
            let text = match lang {
                Lang::Zh => format!("{slot} 无法购买（{why}）。没有扣款，请重新选择。"),
                Lang::En => {
                    format!("{slot} cannot be sold ({why}). Nothing was charged; choose again.")
                }
            };
            refused_page(h5, lang, StatusCode::CONFLICT, machine, &text).await
        }
        SaleError::BadItems => {
            let text = lang.t(
                "每单最多 10 种商品，每种最多 10 件。",
                "An order has at most 10 products, at most 10 of each.",
            );
            refused_page(h5, lang, StatusCode::UNPROCESSABLE_ENTITY, machine, text).await
        }
        other => Ok(sale_refused(lang, &machine.code, other)),
    }
}

fn sale_refused(lang: Lang, code: &str, e: SaleError) -> Response {
    let back = format!("/m/{code}");
    let link = Some((back.as_str(), lang.t("返回", "Back")));
    match e {
        SaleError::UnknownMachine(_) => unknown_machine(lang, code),
        // (RequestHandled cannot happen here: the page sends no request id.)
        SaleError::MachineOffline(_) | SaleError::RequestHandled(..) => html::message(
            StatusCode::SERVICE_UNAVAILABLE,
            lang,
            lang.t("售货机离线", "Machine offline"),
            lang.t(
                "这台售货机暂时连不上，没有下单也没有扣款，请稍后再试。",
                "This machine cannot be reached right now; nothing was ordered or charged. Please try later.",
            ),
            link,
        ),
        SaleError::MachineFaulty(..) | SaleError::MachineDisabled(_) => html::message(
            StatusCode::SERVICE_UNAVAILABLE,
            lang,
            lang.t("暂停服务", "Out of service"),
            lang.t("这台售货机暂停服务，请稍后再试。", "This machine is out of service; please try later."),
            None,
        ),
        SaleError::Refused(why) => {
            let text = match lang {
                Lang::Zh => format!("支付宝拒绝了这笔交易：{why}。没有扣款。"),
                Lang::En => format!("Alipay refused the trade: {why}. Nothing was charged."),
            };
            html::message(StatusCode::CONFLICT, lang, lang.t("无法下单", "Order refused"), &text, link)
        }
        // Too late an answer is, to the buyer, one that never came: the trade is cancelled.
        SaleError::PaymentUnknown(_) | SaleError::AnsweredTooLate(_) => html::message(
            StatusCode::SERVICE_UNAVAILABLE,
            lang,
            lang.t("支付服务无响应", "Payment service unavailable"),
            lang.t(
                "支付宝暂时没有响应，这笔订单不会扣款，请稍后重新下单。",
                "Alipay did not answer; this order will not be charged. Please order again shortly.",
            ),
            link,
        ),
        SaleError::Slot(slot, why) => html::message(
            StatusCode::CONFLICT,
            lang,
            lang.t("无法下单", "Order refused"),
            &format!("{slot}: {why}"),
            link,
        ),
        SaleError::BadItems => html::message(
            StatusCode::UNPROCESSABLE_ENTITY,
            lang,
            lang.t("无法下单", "Order refused"),
            lang.t("每单最多 10 种商品，每种最多 10 件。", "An order has at most 10 products, at most 10 of each."),
            link,
        ),
        SaleError::Order(e) => super::Internal(anyhow::anyhow!(e)).into_response(),
    }
}

/// An order as its buyer sees it.
struct BuyerOrder {
    order: orders::Order,
    machine: String,
    lines: Vec<(String, i64, i64)>,
    dispense_queued: bool,
    /// A payment of it goes (or went) back: refunded, or a refund recorded.
    money_back: bool,
}

/// The order, only for the account that placed it.
async fn owned_order(
    h5: &H5,
    account: i64,
    id: i64,
) -> Result<Option<BuyerOrder>, super::Internal> {
    let owner = crate::store::query("SELECT account_id FROM account_orders WHERE order_id = $1")
        .bind(id)
        .fetch_optional(&h5.svc.db.pool)
        .await?;
    let owned = owner.map(|r| r.try_get::<i64, _>(0)).transpose()? == Some(account);
    if !owned {
        return Ok(None);
    }
    let Some(order) = orders::by_id(&h5.svc.db, id)
        .await
        .map_err(anyhow::Error::from)?
    else {
        return Ok(None);
    };
    let machine: String = crate::store::query("SELECT code FROM machines WHERE id = $1")
        .bind(order.machine_id)
        .fetch_one(&h5.svc.db.pool)
        .await?
        .try_get(0)?;
    let lines = crate::store::query(
        "SELECT COALESCE(p.name, l.slot_code) AS name, l.qty, l.unit_price_fen FROM order_lines l LEFT JOIN products p ON p.id = l.product_id \
         WHERE l.order_id = $1 ORDER BY l.line_no",
    )
    .bind(id)
    .fetch_all(&h5.svc.db.pool)
    .await?
    .iter()
    .map(|r| Ok((r.try_get("name")?, get_int(r, "qty")?, r.try_get("unit_price_fen")?)))
    .collect::<Result<Vec<_>, crate::store::Error>>()?;
    // The dispense is watched: by the order's own watch until it comes, then by its job.
    let dispense_queued = matches!(order.state, OrderState::Paid | OrderState::Dispensing)
        && crate::store::query(
            "SELECT 1 FROM orders WHERE id = $1 AND watch_at IS NOT NULL \
             UNION ALL SELECT 1 FROM jobs WHERE dedup_key = $2",
        )
        .bind(id)
        .bind(crate::store::orders::dispense_key(id))
        .fetch_optional(&h5.svc.db.pool)
        .await?
        .is_some();
    // A closed order was paid only if its payment goes back (paid after its close or its
    // cancel): asked only then.
    let money_back = order.refunded.0 > 0
        || (order.state == OrderState::Closed
            && crate::store::query("SELECT 1 FROM refunds WHERE order_id = $1")
                .bind(id)
                .fetch_optional(&h5.svc.db.pool)
                .await?
                .is_some());
    Ok(Some(BuyerOrder {
        order,
        machine,
        lines,
        dispense_queued,
        money_back,
    }))
}

/// The words for an order in `state`; `money_back` when a payment of it goes (or went)
/// back to the buyer.
pub fn state_label(lang: Lang, state: OrderState, money_back: bool) -> &'static str {
    match state {
        // Paid when it could no longer be served (after its close, or its cancel).
        OrderState::Closed if money_back => lang.t(
            "已关闭，款项原路退回",
            "Closed; your payment goes back to you",
        ),
        OrderState::AwaitingPayment => lang.t("待支付", "Waiting for payment"),
        OrderState::PaymentUnknown => lang.t("正在确认支付结果", "Confirming the payment"),
        OrderState::Paid => lang.t("已支付，正在出货", "Paid; the machine is dispensing"),
        OrderState::Dispensing => lang.t("正在出货", "Dispensing"),
        OrderState::Completed => lang.t("已出货", "Dispensed"),
        OrderState::Refunded => lang.t("已退款", "Refunded"),
        OrderState::Closed => lang.t("已关闭（未支付）", "Closed (not paid)"),
        OrderState::Dispute => lang.t("处理中", "Being checked"),
    }
}

fn status_json(lang: Lang, o: &BuyerOrder) -> serde_json::Value {
    let state = o.order.state;
    json!({
        "id": o.order.id,
        "state": state.as_str(),
        "label": state_label(lang, state, o.money_back),
        "final": state.is_terminal(),
        "paid": state.is_paid(),
        "can_pay": state == OrderState::AwaitingPayment && o.order.trade_no.is_some() && !state.is_paid(),
        "total_fen": o.order.total.0,
        "refunded_fen": o.order.refunded.0,
        "dispense_queued": o.dispense_queued,
    })
}

fn not_found(lang: Lang) -> Response {
    html::message(
        StatusCode::NOT_FOUND,
        lang,
        lang.t("找不到订单", "Order not found"),
        lang.t(
            "没有这笔订单，或它不属于你。",
            "There is no such order, or it is not yours.",
        ),
        Some(("/m/account", lang.t("我的订单", "My orders"))),
    )
}

async fn signed_in(h5: &H5, headers: &HeaderMap) -> Result<Option<i64>, super::Internal> {
    Ok(h5.session(headers).await?.and_then(|s| s.account_id))
}

/// `GET /m/o/{id}`: pay (JSAPI `tradePay`) and follow the order.
pub async fn show_order(
    State(h5): State<Arc<H5>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> PageResult {
    let lang = Lang::from_headers(&headers);
    let Some(account) = signed_in(&h5, &headers).await? else {
        return Ok(super::sign_in_needed(lang));
    };
    let Some(o) = owned_order(&h5, account, id).await? else {
        return Ok(not_found(lang));
    };
    let mut lines = String::new();
    for (name, qty, price) in &o.lines {
        lines.push_str(&format!(
            "<div class=\"row\"><span>{} × {qty}</span><span>{}</span></div>",
            esc(name),
            esc(&yuan(price * qty))
        ));
    }
    let bridge = match &h5.sandbox_url {
        Some(url) => format!("<script src=\"{}/bridge.js\"></script>", esc(url)),
        None => String::new(),
    };
    let config = json!({
        "id": o.order.id,
        "tradeNO": o.order.trade_no,
        "sandbox": h5.sandbox_url.is_some(),
        "texts": {
            "9000": lang.t("支付成功，正在确认…", "Paid; confirming…"),
            "6001": lang.t("你取消了支付，订单将关闭。", "You cancelled the payment; the order will be closed."),
            "unknown": lang.t("支付结果未知，正在向服务器确认…", "The result is unknown; asking the server…"),
            "4000": lang.t("支付失败，可以重试。", "The payment failed; you can try again."),
            "noBridge": lang.t("请在支付宝中打开此页面完成支付。", "Open this page in Alipay to pay."),
            "dispenseQueued": lang.t("已通知售货机出货", "The machine has been told to dispense"),
        },
    });
    let body = format!(
        "<div class=\"card\"><div class=\"muted\">{order_label} #{id} · {machine}</div>{lines}\
<div class=\"row\"><strong>{total_label}</strong><strong class=\"price\">{total}</strong></div></div>\
<div class=\"card\"><p id=\"status\" data-state=\"{state}\">{label}</p><p id=\"result\" class=\"muted\"></p>\
<p id=\"dispense\" class=\"muted\"></p>\
<button type=\"button\" id=\"pay\" style=\"display:none\">{pay}</button></div>\
<p><a href=\"/m/{machine}\">{back}</a> · <a href=\"/m/account\">{orders}</a></p>\
<script>var ORDER={config};</script><script>{script}</script>",
        order_label = esc(lang.t("订单", "Order")),
        id = o.order.id,
        machine = esc(&o.machine),
        total_label = esc(lang.t("合计", "Total")),
        total = esc(&yuan(o.order.total.0)),
        state = esc(o.order.state.as_str()),
        label = esc(state_label(lang, o.order.state, o.money_back)),
        pay = esc(lang.t("使用支付宝支付", "Pay with Alipay")),
        back = esc(lang.t("继续购买", "Buy more")),
        orders = esc(lang.t("我的订单", "My orders")),
        config = js(&config),
        script = PAY_SCRIPT,
    );
    let initial = status_json(lang, &o);
    let body = format!("{body}<script>ORDER_STATUS({});</script>", js(&initial));
    Ok(html::page(
        StatusCode::OK,
        lang,
        lang.t("支付订单", "Pay"),
        &bridge,
        &body,
    ))
}

/// The payment page's script: `tradePay` on the bridge, report the result code, poll the
/// server's state (which wins) until it is final.
const PAY_SCRIPT: &str = r#"(function(){
var O=ORDER,st=document.getElementById('status'),res=document.getElementById('result'),
 disp=document.getElementById('dispense'),btn=document.getElementById('pay'),polls=0,timer=null,started=false;
function render(s){st.textContent=s.label;st.dataset.state=s.state;
 disp.textContent=(s.dispense_queued&&!s.final)?O.texts.dispenseQueued:'';
 btn.style.display=s.can_pay?'block':'none';btn.disabled=false;
 if(s.final){res.textContent='';if(timer){clearInterval(timer);timer=null;}}}
function poll(){if(polls++>300){clearInterval(timer);timer=null;return;}
 fetch('/m/o/'+O.id+'/status',{credentials:'same-origin'}).then(function(r){return r.json();}).then(render).catch(function(){});}
function follow(){if(!timer){timer=setInterval(poll,1000);}}
function report(code){var t=O.texts[code]||(code==='8000'||code==='6004'?O.texts.unknown:O.texts.unknown);
 res.textContent=t+' (resultCode '+code+')';res.dataset.code=code;
 fetch('/m/o/'+O.id+'/result',{method:'POST',credentials:'same-origin',
  headers:{'content-type':'application/x-www-form-urlencoded'},body:'code='+encodeURIComponent(code)})
 .then(function(r){return r.json();}).then(function(s){render(s);follow();}).catch(follow);}
function ready(cb){if(window.AlipayJSBridge){cb();}else{document.addEventListener('AlipayJSBridgeReady',cb,false);
 setTimeout(function(){if(!window.AlipayJSBridge){res.textContent=O.texts.noBridge;}},3000);}}
function pay(){if(!O.tradeNO){return;}btn.disabled=true;ready(function(){
 AlipayJSBridge.call('tradePay',{tradeNO:O.tradeNO},function(r){report(String(r&&r.resultCode));});});}
btn.addEventListener('click',pay);
window.ORDER_STATUS=function(s){render(s);if(!s.final){follow();}
 if(s.can_pay&&!started&&/[?&]pay=1/.test(location.search)){started=true;pay();}};
})();"#;

/// `GET /m/o/{id}/status`: the server's state of the order.
pub async fn order_status(
    State(h5): State<Arc<H5>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Result<Response, super::Internal> {
    let lang = Lang::from_headers(&headers);
    let Some(account) = signed_in(&h5, &headers).await? else {
        return Ok((
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "not signed in" })),
        )
            .into_response());
    };
    match owned_order(&h5, account, id).await? {
        Some(o) => Ok((
            [(header::CACHE_CONTROL, "no-store")],
            Json(status_json(lang, &o)),
        )
            .into_response()),
        None => Ok((
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such order" })),
        )
            .into_response()),
    }
}

/// The result form.
#[derive(Debug, Deserialize)]
pub struct ResultForm {
    #[serde(default)]
    code: String,
}

/// `POST /m/o/{id}/result`: the page's `tradePay` result code. `6001` (the buyer cancelled)
/// ends the buyer's time now, so the resolver cancels the trade; any other code asks the
/// resolver to query now. Either way the answer is the server's state.
#[tracing::instrument(skip_all, fields(order.id = id))]
pub async fn pay_result(
    State(h5): State<Arc<H5>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(f): Form<ResultForm>,
) -> Result<Response, super::Internal> {
    let lang = Lang::from_headers(&headers);
    if !h5.same_origin(&headers) {
        return Ok((
            StatusCode::FORBIDDEN,
            Json(json!({ "error": "cross-site request" })),
        )
            .into_response());
    }
    let Some(account) = signed_in(&h5, &headers).await? else {
        return Ok((
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "not signed in" })),
        )
            .into_response());
    };
    if f.code.is_empty() || f.code.len() > 8 || !f.code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "code must be a tradePay resultCode" })),
        )
            .into_response());
    }
    let Some(o) = owned_order(&h5, account, id).await? else {
        return Ok((
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such order" })),
        )
            .into_response());
    };
    if matches!(
        o.order.state,
        OrderState::AwaitingPayment | OrderState::PaymentUnknown
    ) {
        let now = h5.svc.now();
        let mut tx = h5.svc.db.begin().await?;
        orders::add_event(
            &mut *tx,
            id,
            now,
            "system",
            "buyer_page",
            &format!("tradePay resultCode {}", f.code),
        )
        .await
        .map_err(anyhow::Error::from)?;
        if f.code == "6001" {
            crate::store::query("UPDATE orders SET expires_at = $1 WHERE id = $2 AND state = 'awaiting_payment' AND expires_at > $1")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        crate::store::watches::resolve_now(&mut *tx, id, now).await?;
        tx.commit().await?;
        h5.svc.run_soon(checkout::resolve_key(id));
    }
    let o = owned_order(&h5, account, id).await?.unwrap_or(o);
    Ok(Json(status_json(lang, &o)).into_response())
}
