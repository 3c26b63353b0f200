//! `POST /alipay/notify`: Alipay's asynchronous notifications.
//!
//! Every check of Alipay's merchant rules, in order: signature (on the raw bytes), `app_id`,
//! `out_trade_no` known, `total_amount` equal to the order's, `seller_id` the operator's. Only
//! `TRADE_SUCCESS`/`TRADE_FINISHED` mean paid. The answer is `success` only after the new state
//! is committed; a repeat (same `notify_id` and status) answers `success` and changes nothing.
//! Anything that fails a check answers 400 with the reason and changes nothing.

use std::sync::Arc;

use alipay::TradeStatus;
use alipay::notify::{Notification, TradeNotification};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::domain::order::OrderState;
use crate::services::Services;
use crate::store::orders::{self, OrderError};

/// Notifications are small; anything larger is refused before it is read.
pub const MAX_NOTIFY_BYTES: usize = 64 * 1024;

/// The notification route.
pub fn router() -> Router<Arc<Services>> {
    Router::new()
        .route("/alipay/notify", post(receive_notification))
        .layer(DefaultBodyLimit::max(MAX_NOTIFY_BYTES))
}

fn refuse(reason: impl Into<String>) -> Response {
    let reason = reason.into();
    tracing::warn!(%reason, "notification refused");
    (StatusCode::BAD_REQUEST, reason).into_response()
}

#[tracing::instrument(skip_all)]
async fn receive_notification(State(svc): State<Arc<Services>>, body: Bytes) -> Response {
    let notification = match alipay::notify::parse(&body, &svc.alipay_key) {
        Ok(n) => n,
        Err(e) => return refuse(format!("notification rejected: {e}")),
    };
    let Notification::Trade(n) = notification else {
        // Other kinds (pre-auth, agreements, settlement messages) belong to flows not built yet:
        // acknowledged after verification so Alipay stops retrying, and logged.
        tracing::info!("verified non-trade notification acknowledged");
        return "success".into_response();
    };
    match handle_trade(&svc, &n).await {
        Ok(()) => "success".into_response(),
        Err(NotifyFailure::Refused(reason)) => refuse(reason),
        Err(NotifyFailure::Internal(e)) => {
            tracing::error!(error = %e, out_trade_no = %n.out_trade_no, "notification not stored");
            (StatusCode::INTERNAL_SERVER_ERROR, "fail").into_response()
        }
    }
}

enum NotifyFailure {
    Refused(String),
    Internal(String),
}

impl From<OrderError> for NotifyFailure {
    fn from(e: OrderError) -> Self {
        NotifyFailure::Internal(e.to_string())
    }
}

impl From<crate::store::Error> for NotifyFailure {
    fn from(e: crate::store::Error) -> Self {
        NotifyFailure::Internal(e.to_string())
    }
}

impl From<crate::store::StoreError> for NotifyFailure {
    fn from(e: crate::store::StoreError) -> Self {
        NotifyFailure::Internal(e.to_string())
    }
}

async fn handle_trade(svc: &Services, n: &TradeNotification) -> Result<(), NotifyFailure> {
    if n.app_id != svc.app_id {
        return Err(NotifyFailure::Refused(format!(
            "app_id {} is not ours",
            n.app_id
        )));
    }
    let now = svc.now();
    let mut tx = svc.db.begin().await?;
    // The order and its lines are read with the statement that records the notification, in
    // one round trip; a refusal below drops the transaction, and with it that record. On
    // PostgreSQL everything after it goes out with the commit: the paid transition's own
    // check included (`orders::mark_paid`).
    let payable = orders::payable_later(&mut *tx, &n.out_trade_no).await?;
    let lines = orders::lines_by_trade_no_later(&mut *tx, &n.out_trade_no).await?;
    let first = crate::store::query(
        "INSERT INTO processed_notifications (notify_id, trade_status, out_trade_no, received_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (notify_id, trade_status) DO NOTHING",
    )
    .bind(&n.notify_id)
    .bind(n.trade_status.as_str())
    .bind(&n.out_trade_no)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let payable = orders::payable_from(payable.first()?)?.ok_or_else(|| {
        NotifyFailure::Refused(format!("unknown out_trade_no {}", n.out_trade_no))
    })?;
    let order = &payable.order;
    if n.total_amount.fen() != order.total.0 {
        return Err(NotifyFailure::Refused(format!(
            "total_amount {} differs from the order's {}",
            n.total_amount, order.total
        )));
    }
    if n.seller_id.as_deref() != Some(payable.seller_pid.as_str()) {
        return Err(NotifyFailure::Refused(
            "seller_id is not the order's receiving account".into(),
        ));
    }
    if !first {
        return Ok(()); // already acted on; answering success again stops the retries
    }
    let detail = format!("{} notify_id={}", n.trade_status, n.notify_id);
    orders::add_event(&mut *tx, order.id, now, "alipay", "notified", &detail).await?;
    let mut dispense = None;
    // A job to wake once this is stored: a refund, or the resolver.
    let mut wake_job = None;
    match n.trade_status {
        TradeStatus::TradeSuccess | TradeStatus::TradeFinished => {
            if order.state == OrderState::PaymentUnknown && order.cancel_sent_at.is_some() {
                // The resolver's cancel is out, and this payment goes back: nothing is
                // served. The trade number kept means the order is never closed on a "not
                // paid" answer; the resolver (made due, or left to the run under way) finds
                // the trade refunded, sends the cancel again, or refunds it if Alipay will not
                // cancel it.
                orders::record_paid_after_cancel(&mut tx, order.id, &n.trade_no, now).await?;
                orders::add_event(
                    &mut *tx,
                    order.id,
                    now,
                    "alipay",
                    "paid_after_cancel",
                    &format!(
                        "trade {} paid, its cancel already out: the payment goes back, nothing is served",
                        n.trade_no
                    ),
                )
                .await?;
                crate::store::watches::resolve_now(&mut *tx, order.id, now).await?;
                wake_job = Some(orders::resolve_key(order.id));
            } else if matches!(
                order.state,
                OrderState::AwaitingPayment | OrderState::PaymentUnknown
            ) {
                let buyer = n.buyer.as_ref().map(|b| b.as_str().to_owned());
                let lines = orders::lines_from(&lines.rows()?)?;
                orders::mark_paid(
                    &mut tx,
                    order.id,
                    order.state,
                    (&n.trade_no, buyer.as_deref()),
                    (now, crate::jobs::dispense::watch_at(svc, now)),
                    "notification",
                )
                .await?;
                dispense = Some(
                    crate::jobs::dispense::record_paid(
                        svc,
                        &mut tx,
                        (order.id, &order.out_trade_no, &payable.machine),
                        lines,
                        now,
                    )
                    .await
                    .map_err(|e| NotifyFailure::Internal(e.to_string()))?,
                );
            } else if order.state == OrderState::Closed {
                // The code was paid after the order closed (Alipay had no trade to close when
                // it was never scanned). The machine has long moved on, so nothing is served:
                // the money goes back in full, and a person can see why on the timeline.
                tracing::warn!(out_trade_no = %n.out_trade_no, "payment notified for an order closed as unpaid; refunding it");
                let why = format!(
                    "trade {} paid after the order closed: refunded in full",
                    n.trade_no
                );
                let refund = crate::pay::refund::refund_unserved_payment(
                    &mut tx,
                    now,
                    (order.id, &order.out_trade_no, &n.trade_no),
                    order.total,
                    "after the order closed",
                    ("paid_after_close", &why),
                )
                .await
                .map_err(|e| NotifyFailure::Internal(e.to_string()))?;
                wake_job = Some(crate::pay::refund::job_key(refund.id));
            }
        }
        TradeStatus::TradeClosed => {
            let was_paid = n.buyer_pay_amount.is_some_and(|a| a.fen() > 0)
                || n.refund_fee.is_some_and(|a| a.fen() > 0);
            if matches!(
                order.state,
                OrderState::AwaitingPayment | OrderState::PaymentUnknown
            ) && was_paid
            {
                // Paid, then refunded in full (a cancel whose answer was lost): the money
                // went back, and the order says so, as the resolver's query would.
                crate::jobs::payment::refunded_in_full_in(
                    &mut tx,
                    order,
                    Some(&n.trade_no),
                    now,
                    "notified TRADE_CLOSED after a payment: refunded in full",
                )
                .await?;
            } else if order.state == OrderState::PaymentUnknown && order.cancel_sent_at.is_some() {
                // The resolver's cancel may have refunded a payment this notice does not
                // mention: its query (which tells a payment date) decides; made due (or left
                // to the run under way).
                crate::store::watches::resolve_now(&mut *tx, order.id, now).await?;
                wake_job = Some(orders::resolve_key(order.id));
            } else if matches!(
                order.state,
                OrderState::AwaitingPayment | OrderState::PaymentUnknown
            ) {
                orders::close_unpaid_in(&mut tx, order.id, order.state, now).await?;
            }
        }
        TradeStatus::WaitBuyerPay => {}
    }
    if dispense.is_some() {
        crate::failpoint::crash_if_armed(crate::failpoint::NOTIFY_PAID_BEFORE_COMMIT);
    }
    tx.commit().await?;
    if let Some(key) = wake_job {
        svc.run_soon(key);
    }
    if let Some(dispense) = dispense {
        // Recorded, so Alipay can have its answer now: a publish that waits for a broker
        // link that is down must not hold the notification (the ledger re-delivers).
        let device = svc.device.clone();
        tokio::spawn(async move { device.deliver(&dispense).await });
    }
    Ok(())
}
