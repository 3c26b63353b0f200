//! Notifications: built when a state changes, signed and delivered by a background task,
//! retried on Alipay's schedule with the same `notify_id` until the answer is `success`.

use std::sync::Arc;
use std::time::Duration;

use alipay::sign::{SignScope, string_to_sign};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Ctx;
use crate::api::fields::{mask_logon, yuan};
use crate::clock::fmt_ms;
use crate::ids;
use crate::model::{Delivery, IdMode, Millis, Notification, Trade};
use crate::store::Store;

/// Refund details carried by a refund notification.
#[derive(Debug, Clone)]
pub struct RefundInfo {
    /// `out_biz_no`: the refund's `out_request_no`.
    pub out_biz_no: String,
    /// When the refund happened.
    pub at: Millis,
}

/// Queues a `trade_status_sync` for the trade's current state.
pub fn trade_status(
    _ctx: &Ctx,
    store: &mut Store,
    trade: &Trade,
    now: Millis,
    refund: Option<RefundInfo>,
) {
    let Some(app) = store.data.apps.get(&trade.app_id).cloned() else {
        return;
    };
    let Some(url) = trade.notify_url.clone().or_else(|| app.notify_url.clone()) else {
        return;
    };
    let mut p: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| {
        if !v.is_empty() {
            p.push((k.to_owned(), v));
        }
    };
    put("gmt_create", fmt_ms(trade.created_at));
    put("charset", "utf-8".into());
    put(
        "seller_email",
        format!(
            "{}@sandbox.com",
            &trade.seller_id[trade.seller_id.len().saturating_sub(4)..]
        ),
    );
    put("subject", trade.subject.clone());
    put("sign_type", "RSA2".into());
    if let Some(uid) = &trade.buyer_user_id {
        match app.id_mode {
            IdMode::UserId => put("buyer_id", uid.clone()),
            IdMode::OpenId => put("buyer_open_id", ids::open_id(&app.app_id, uid)),
        }
        if let Some(b) = store.data.buyers.get(uid) {
            put("buyer_logon_id", mask_logon(&b.logon_id));
        }
    }
    put("body", trade.body.clone().unwrap_or_default());
    put("invoice_amount", yuan(trade.total_fen));
    put("notify_id", ids::notify_id());
    put(
        "fund_bill_list",
        json!([{"amount": yuan(trade.total_fen), "fundChannel": "ALIPAYACCOUNT"}]).to_string(),
    );
    put("notify_type", "trade_status_sync".into());
    put("trade_status", trade.state.wire().into());
    put("receipt_amount", yuan(trade.total_fen));
    put("app_id", trade.app_id.clone());
    put("buyer_pay_amount", yuan(trade.total_fen));
    put("seller_id", trade.seller_id.clone());
    if let Some(at) = trade.paid_at {
        put("gmt_payment", fmt_ms(at));
    }
    put("notify_time", fmt_ms(now));
    put(
        "passback_params",
        trade.passback_params.clone().unwrap_or_default(),
    );
    put("version", "1.0".into());
    put("out_trade_no", trade.out_trade_no.clone());
    put("total_amount", yuan(trade.total_fen));
    put("trade_no", trade.trade_no.clone());
    put("auth_app_id", trade.app_id.clone());
    put("point_amount", "0.00".into());
    if let Some(r) = refund {
        put("out_biz_no", r.out_biz_no);
        put("refund_fee", yuan(trade.refunded_fen));
        put("gmt_refund", fmt_ms(r.at));
    }
    if let Some(at) = trade.closed_at {
        put("gmt_close", fmt_ms(at));
    }
    enqueue(store, &trade.app_id, url, p, now);
}

/// Queues a notification with the given (unsigned) parameters.
pub fn enqueue(
    store: &mut Store,
    app_id: &str,
    url: String,
    params: Vec<(String, String)>,
    now: Millis,
) {
    let notify_id = params
        .iter()
        .find(|(k, _)| k == "notify_id")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(ids::notify_id);
    store.put_notification(Notification {
        notify_id,
        app_id: app_id.to_owned(),
        url,
        params,
        created_at: now,
        next_attempt_at: Some(now),
        deliveries: Vec::new(),
        acknowledged: false,
    });
}

/// Signs notification parameters: `sign_type` and `sign` are not part of the signed string.
pub fn signed_body(ctx: &Ctx, params: &[(String, String)]) -> String {
    let to_sign = string_to_sign(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignScope::Notification,
    );
    let sign = ctx.key.sign(to_sign.as_bytes());
    let mut pairs: Vec<(&[u8], &[u8])> = params
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    pairs.push((b"sign", sign.as_bytes()));
    alipay::form::encode(pairs)
}

/// The delay before attempt number `attempt` (0-based), scaled by the time factor.
pub fn gap_ms(ctx: &Ctx, attempt: usize) -> Option<i64> {
    let secs = *ctx.config.notify_schedule_secs.get(attempt)?;
    let factor = if ctx.config.time_factor > 0.0 {
        ctx.config.time_factor
    } else {
        1.0
    };
    Some(((secs as f64) * 1000.0 / factor) as i64)
}

/// Delivers due notifications until shut down.
pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    loop {
        let due: Vec<Notification> = {
            let store = ctx.store();
            let now = ctx.clock.now_ms();
            store
                .data
                .notifications
                .values()
                .filter(|n| n.next_attempt_at.is_some_and(|t| t <= now))
                .cloned()
                .collect()
        };
        for n in due {
            deliver(&ctx, n).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ctx.notifier.notified() => {},
            _ = tokio::time::sleep(Duration::from_millis(100)) => {},
        }
    }
}

async fn deliver(ctx: &Ctx, n: Notification) {
    let body = signed_body(ctx, &n.params);
    let started = ctx.clock.now_ms();
    let result = ctx
        .http
        .post(&n.url)
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(body)
        .send()
        .await;
    let delivery = match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let success = status == 200 && text == "success";
            Delivery {
                at: started,
                status: Some(status),
                answer: text.chars().take(200).collect(),
                success,
            }
        }
        Err(e) => Delivery {
            at: started,
            status: None,
            answer: e.to_string(),
            success: false,
        },
    };
    let mut store = ctx.store();
    let Some(mut current) = store.data.notifications.get(&n.notify_id).cloned() else {
        return;
    };
    let success = delivery.success;
    current.deliveries.push(delivery);
    if success {
        current.acknowledged = true;
        current.next_attempt_at = None;
    } else {
        let now = ctx.clock.now_ms();
        current.next_attempt_at = gap_ms(ctx, current.deliveries.len()).map(|g| now + g);
    }
    tracing::debug!(notify_id = %current.notify_id, attempts = current.deliveries.len(), success, "notification delivered");
    store.put_notification(current);
    store.flush();
}
