//! Notifications: built when a state changes, signed and delivered by a background task,
//! retried on Alipay's schedule with the same `notify_id` until the answer is `success`.
//!
//! Lifecycle of a [`Notification`] record: `enqueue` stores it due now (`next_attempt_at`);
//! the loop in [`run`] picks due records, claims them in an in-memory in-flight set (so a
//! slow or delayed attempt is never started twice), and sends each attempt from its own task.
//! After an attempt the record gets its deliveries, `attempts + 1`, and either
//! `acknowledged = true` (an answer of exactly `success`) or the next due time:
//! `now + notify_schedule_secs[attempts] / time_factor`, or none once the schedule is used
//! up. Due times are on the sandbox clock, so advancing the clock makes retries due at once.
//! Faults (see `fault`) can drop, duplicate, delay, reorder or mis-sign attempts.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alipay::sign::{SignScope, string_to_sign};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Ctx;
use crate::api::fields::{mask_logon, yuan};
use crate::clock::fmt_ms;
use crate::config::NotifyPolicy;
use crate::fault::NotificationFault;
use crate::ids;
use crate::model::{Delivery, IdMode, Millis, Notification, Trade, TradeState};
use crate::store::Store;

/// Refund details carried by a refund notification.
#[derive(Debug, Clone)]
pub struct RefundInfo {
    /// `out_biz_no`: the refund's `out_request_no`.
    pub out_biz_no: String,
    /// When the refund happened.
    pub at: Millis,
}

/// Whether a trade change is notified under `policy` (Alipay 当面付 default: payment only).
///
/// `TRADE_SUCCESS` without a refund (the payment) always is; a partial refund (still
/// `TRADE_SUCCESS`) only with `refunds`; `TRADE_CLOSED` (unpaid close or full refund) only
/// with `trade_closed`; `TRADE_FINISHED` only with `trade_finished`; waiting states never.
pub fn should_notify(policy: &NotifyPolicy, state: TradeState, is_refund: bool) -> bool {
    match state {
        TradeState::Precreated | TradeState::WaitBuyerPay => false,
        TradeState::TradeSuccess if is_refund => policy.refunds,
        TradeState::TradeSuccess => true,
        TradeState::TradeClosed => policy.trade_closed,
        TradeState::TradeFinished => policy.trade_finished,
    }
}

/// Queues a `trade_status_sync` for the trade's current state, if `ctx.config.notify`
/// says this change is notified (see [`should_notify`]).
pub fn trade_status(
    ctx: &Ctx,
    store: &mut Store,
    trade: &Trade,
    now: Millis,
    refund: Option<RefundInfo>,
) {
    if !should_notify(&ctx.config.notify, trade.state, refund.is_some()) {
        return;
    }
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

/// Queues a notification with the given (unsigned) parameters; returns its `notify_id`.
/// Callers wake the notifier (`Ctx::wake_notifier`) after releasing the store.
pub fn enqueue(
    store: &mut Store,
    app_id: &str,
    url: String,
    params: Vec<(String, String)>,
    now: Millis,
) -> String {
    let notify_id = params
        .iter()
        .find(|(k, _)| k == "notify_id")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(ids::notify_id);
    let seq = store.next_seq();
    store.put_notification(Notification {
        notify_id: notify_id.clone(),
        app_id: app_id.to_owned(),
        url,
        params,
        created_at: now,
        next_attempt_at: Some(now),
        deliveries: Vec::new(),
        acknowledged: false,
        attempts: 0,
        seq,
    });
    notify_id
}

/// Signs notification parameters: `sign_type` and `sign` are not part of the signed string.
pub fn signed_body(ctx: &Ctx, params: &[(String, String)]) -> String {
    body_with_sign(ctx, params, false)
}

/// The form body; with `corrupt`, the signature is a real RSA2 signature over a different
/// string, so it parses but never verifies (the `bad_signature` fault).
fn body_with_sign(ctx: &Ctx, params: &[(String, String)], corrupt: bool) -> String {
    let mut to_sign = string_to_sign(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignScope::Notification,
    );
    if corrupt {
        to_sign.push_str("&tampered=1");
    }
    let sign = ctx.key.sign(to_sign.as_bytes());
    let mut pairs: Vec<(&[u8], &[u8])> = params
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    pairs.push((b"sign", sign.as_bytes()));
    alipay::form::encode(pairs)
}

/// The delay before attempt number `attempt` (0-based), scaled by the time factor;
/// `None` once the schedule is used up.
pub fn gap_ms(ctx: &Ctx, attempt: usize) -> Option<i64> {
    let secs = *ctx.config.notify_schedule_secs.get(attempt)?;
    let factor = if ctx.config.time_factor > 0.0 {
        ctx.config.time_factor
    } else {
        1.0
    };
    Some(((secs as f64) * 1000.0 / factor) as i64)
}

/// Makes a notification due now for one more attempt (same `notify_id`). False if unknown.
pub fn resend(ctx: &Ctx, notify_id: &str) -> bool {
    let found = {
        let mut store = ctx.store();
        match store.data.notifications.get(notify_id).cloned() {
            Some(mut n) => {
                n.next_attempt_at = Some(ctx.clock.now_ms());
                store.put_notification(n);
                store.flush();
                true
            }
            None => false,
        }
    };
    if found {
        ctx.wake_notifier();
    }
    found
}

type InFlight = Arc<Mutex<HashSet<String>>>;

/// Removes a notification from the in-flight set when its attempt ends (or is aborted).
struct Claim {
    set: InFlight,
    ids: Vec<String>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        for id in &self.ids {
            set.remove(id);
        }
    }
}

fn claim(set: &InFlight, ids: Vec<String>) -> Claim {
    let mut s = set.lock().unwrap_or_else(|p| p.into_inner());
    s.extend(ids.iter().cloned());
    Claim {
        set: set.clone(),
        ids,
    }
}

/// Delivers due notifications until shut down; attempts still running are abandoned then
/// (they stay due and are retried after a restart).
pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let in_flight: InFlight = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let mut due: Vec<Notification> = {
            let store = ctx.store();
            let now = ctx.clock.now_ms();
            let busy = in_flight.lock().unwrap_or_else(|p| p.into_inner());
            store
                .data
                .notifications
                .values()
                .filter(|n| n.next_attempt_at.is_some_and(|t| t <= now))
                .filter(|n| !busy.contains(&n.notify_id))
                .cloned()
                .collect()
        };
        due.sort_by_key(|n| (n.seq, n.created_at));
        // First attempts under an out-of-order rule wait for their batch, per app.
        let mut batches: BTreeMap<String, (u32, Vec<Notification>)> = BTreeMap::new();
        for n in due {
            let fault = ctx.faults.notification_fault(&n.app_id, &n.notify_id);
            if let Some(NotificationFault::OutOfOrder { batch }) = fault
                && n.attempts == 0
            {
                let entry = batches
                    .entry(n.app_id.clone())
                    .or_insert((batch.max(2), Vec::new()));
                entry.1.push(n);
                continue;
            }
            let guard = claim(&in_flight, vec![n.notify_id.clone()]);
            let ctx = ctx.clone();
            tasks.spawn(async move {
                attempt(&ctx, n, fault).await;
                drop(guard);
            });
        }
        for (_, (batch, list)) in batches {
            if list.len() < batch as usize {
                continue;
            }
            let guard = claim(
                &in_flight,
                list.iter().map(|n| n.notify_id.clone()).collect(),
            );
            let ctx = ctx.clone();
            tasks.spawn(async move {
                // Newest first, one after the other, so the receiver sees them reversed.
                for n in list.into_iter().rev() {
                    attempt(&ctx, n, Some(NotificationFault::OutOfOrder { batch })).await;
                }
                drop(guard);
            });
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ctx.notifier.notified() => {},
            _ = tokio::time::sleep(Duration::from_millis(50)) => {},
        }
    }
}

fn fault_name(f: &NotificationFault) -> &'static str {
    match f {
        NotificationFault::Drop { .. } => "drop",
        NotificationFault::Duplicate { .. } => "duplicate",
        NotificationFault::Delay { .. } => "delay",
        NotificationFault::OutOfOrder { .. } => "out_of_order",
        NotificationFault::BadSignature => "bad_signature",
    }
}

/// One attempt of a notification, shaped by its fault, then recorded.
async fn attempt(ctx: &Ctx, n: Notification, fault: Option<NotificationFault>) {
    let no = n.attempts;
    let tag = fault.as_ref().map(|f| fault_name(f).to_owned());
    let deliveries = match fault {
        Some(NotificationFault::Drop { first }) if first.is_none_or(|f| no < f) => {
            vec![Delivery {
                at: ctx.clock.now_ms(),
                status: None,
                answer: "dropped by fault injection (never sent)".into(),
                success: false,
                attempt: no,
                fault: tag,
            }]
        }
        Some(NotificationFault::Drop { .. }) => {
            vec![send(ctx, &n.url, signed_body(ctx, &n.params), no, None).await]
        }
        Some(NotificationFault::Duplicate { times }) => {
            let body = signed_body(ctx, &n.params);
            let mut copies = tokio::task::JoinSet::new();
            for _ in 0..times.max(2) {
                let (http, url, body, tag) =
                    (ctx.http.clone(), n.url.clone(), body.clone(), tag.clone());
                let started = ctx.clock.now_ms();
                copies.spawn(async move { post(&http, &url, body, started, no, tag).await });
            }
            let mut out = Vec::new();
            while let Some(d) = copies.join_next().await {
                if let Ok(d) = d {
                    out.push(d);
                }
            }
            out
        }
        Some(NotificationFault::Delay { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            vec![send(ctx, &n.url, signed_body(ctx, &n.params), no, tag).await]
        }
        Some(NotificationFault::BadSignature) => {
            vec![send(ctx, &n.url, body_with_sign(ctx, &n.params, true), no, tag).await]
        }
        Some(NotificationFault::OutOfOrder { .. }) if no == 0 => {
            vec![send(ctx, &n.url, signed_body(ctx, &n.params), no, tag).await]
        }
        _ => vec![send(ctx, &n.url, signed_body(ctx, &n.params), no, None).await],
    };
    record(ctx, &n.notify_id, deliveries);
}

async fn send(ctx: &Ctx, url: &str, body: String, attempt: u32, fault: Option<String>) -> Delivery {
    post(&ctx.http, url, body, ctx.clock.now_ms(), attempt, fault).await
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    body: String,
    started: Millis,
    attempt: u32,
    fault: Option<String>,
) -> Delivery {
    let result = http
        .post(url)
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(body)
        .send()
        .await;
    match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            Delivery {
                at: started,
                status: Some(status),
                success: status == 200 && text == "success",
                answer: text.chars().take(200).collect(),
                attempt,
                fault,
            }
        }
        Err(e) => {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why.push_str(": ");
                why.push_str(&s.to_string());
                source = s.source();
            }
            Delivery {
                at: started,
                status: None,
                answer: why,
                success: false,
                attempt,
                fault,
            }
        }
    }
}

/// Records an attempt's deliveries and schedules the next attempt (or none).
fn record(ctx: &Ctx, notify_id: &str, deliveries: Vec<Delivery>) {
    let mut store = ctx.store();
    let Some(mut current) = store.data.notifications.get(notify_id).cloned() else {
        return;
    };
    let success = deliveries.iter().any(|d| d.success);
    current.deliveries.extend(deliveries);
    current.attempts += 1;
    if success || current.acknowledged {
        current.acknowledged = true;
        current.next_attempt_at = None;
    } else {
        let now = ctx.clock.now_ms();
        current.next_attempt_at = gap_ms(ctx, current.attempts as usize).map(|g| now + g);
    }
    tracing::debug!(notify_id = %current.notify_id, attempts = current.attempts, success, "notification attempt");
    store.put_notification(current);
    store.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_notifies_payment_only() {
        let p = NotifyPolicy::default();
        assert!(should_notify(&p, TradeState::TradeSuccess, false));
        assert!(!should_notify(&p, TradeState::TradeSuccess, true));
        assert!(!should_notify(&p, TradeState::TradeClosed, false));
        assert!(!should_notify(&p, TradeState::TradeClosed, true));
        assert!(!should_notify(&p, TradeState::TradeFinished, false));
        assert!(!should_notify(&p, TradeState::WaitBuyerPay, false));
    }

    #[test]
    fn each_policy_switch_adds_its_change() {
        let all = NotifyPolicy {
            trade_closed: true,
            trade_finished: true,
            refunds: true,
        };
        assert!(should_notify(&all, TradeState::TradeSuccess, true));
        assert!(should_notify(&all, TradeState::TradeClosed, true));
        assert!(should_notify(&all, TradeState::TradeFinished, false));
        assert!(!should_notify(&all, TradeState::Precreated, false));
        let closed_only = NotifyPolicy {
            trade_closed: true,
            ..NotifyPolicy::default()
        };
        assert!(should_notify(&closed_only, TradeState::TradeClosed, false));
        assert!(!should_notify(&closed_only, TradeState::TradeSuccess, true));
    }
}
