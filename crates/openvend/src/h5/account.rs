//! `GET /m/account`: the signed-in buyer's phone (in full: they own it), their orders with
//! state and refunds, newest first.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use super::html::{self, Lang, esc, yuan};
use super::shop::state_label;
use super::{H5, PageResult, accounts, see_other};
use crate::domain::order::OrderState;

fn beijing(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(alipay::time::BEIJING);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// `GET /m/account`.
pub async fn show_account(State(h5): State<Arc<H5>>, headers: HeaderMap) -> PageResult {
    let lang = Lang::from_headers(&headers);
    let Some(s) = h5.session(&headers).await? else {
        return Ok(super::sign_in_needed(lang));
    };
    let Some(account) = s.account_id else {
        return Ok(see_other("/m/phone", &[]));
    };
    let db = &h5.svc.db;
    let (full, masked) = accounts::phone_of(db, &h5.keys, account)
        .await?
        .unwrap_or((None, String::new()));
    let profile = crate::store::query(
        "SELECT nick_name, avatar FROM alipay_users WHERE account_id = $1 AND nick_name IS NOT NULL ORDER BY created_at DESC LIMIT 1",
    )
    .bind(account)
    .fetch_optional(&db.pool)
    .await?;
    let nick: Option<String> = profile
        .as_ref()
        .map(|r| r.try_get(0))
        .transpose()?
        .flatten();
    let orders = crate::store::query(
        "SELECT o.id, o.state, o.total_fen, o.refunded_fen, o.created_at, m.code FROM account_orders a \
         JOIN orders o ON o.id = a.order_id JOIN machines m ON m.id = o.machine_id \
         WHERE a.account_id = $1 ORDER BY o.id DESC LIMIT 50",
    )
    .bind(account)
    .fetch_all(&db.pool)
    .await?;
    let refunds = crate::store::query(
        "SELECT r.order_id, r.amount_fen, r.state, r.reason FROM refunds r JOIN account_orders a ON a.order_id = r.order_id \
         WHERE a.account_id = $1 ORDER BY r.id",
    )
    .bind(account)
    .fetch_all(&db.pool)
    .await?;
    let mut list = String::new();
    for o in &orders {
        let id: i64 = o.try_get("id")?;
        let state: String = o.try_get("state")?;
        let refunded: i64 = o.try_get("refunded_fen")?;
        let mut extra = String::new();
        let mut money_back = refunded > 0;
        for r in refunds
            .iter()
            .filter(|r| r.try_get::<i64, _>("order_id").ok() == Some(id))
        {
            money_back = true;
            let rstate: String = r.try_get("state")?;
            let rlabel = match rstate.as_str() {
                "succeeded" => lang.t("已退款", "refunded"),
                "failed" => lang.t("退款失败，客服处理中", "refund failed; support is on it"),
                _ => lang.t("退款中", "refund in progress"),
            };
            extra.push_str(&format!(
                "<div class=\"muted refund\">{} {} · {} · {}</div>",
                esc(lang.t("退款", "Refund")),
                esc(&yuan(r.try_get("amount_fen")?)),
                esc(rlabel),
                esc(&r.try_get::<String, _>("reason")?),
            ));
        }
        if refunded > 0 && extra.is_empty() {
            extra = format!(
                "<div class=\"muted refund\">{} {}</div>",
                esc(lang.t("已退款", "Refunded")),
                esc(&yuan(refunded))
            );
        }
        let label = OrderState::parse(&state)
            .map(|st| state_label(lang, st, money_back))
            .unwrap_or("");
        list.push_str(&format!(
            "<a class=\"row order\" href=\"/m/o/{id}\" data-state=\"{}\"><div><div>#{id} · {}</div><div class=\"muted\">{}</div>{extra}</div>\
<div><div class=\"price\">{}</div><div class=\"muted\">{}</div></div></a>",
            esc(&state),
            esc(&o.try_get::<String, _>("code")?),
            esc(&beijing(o.try_get("created_at")?)),
            esc(&yuan(o.try_get("total_fen")?)),
            esc(label),
        ));
    }
    if orders.is_empty() {
        list = format!(
            "<p class=\"muted\">{}</p>",
            esc(lang.t("还没有订单。", "No orders yet."))
        );
    }
    let body = format!(
        "<div class=\"card\"><p>{}</p><p>{} <span id=\"phone\">{}</span></p><p class=\"muted\">{} {}</p></div>\
<div class=\"card\" id=\"orders\"><strong>{}</strong>{list}</div>",
        esc(nick.as_deref().unwrap_or("")),
        esc(lang.t("手机号", "Phone")),
        esc(full.as_deref().unwrap_or(&masked)),
        esc(lang.t("订单数", "Orders")),
        orders.len(),
        esc(lang.t("我的订单", "My orders")),
    );
    Ok(html::page(
        StatusCode::OK,
        lang,
        lang.t("我的", "My account"),
        "",
        &body,
    ))
}
