//! Resolving a payment whose outcome is not yet known, as Alipay prescribes: query; while
//! the buyer may still pay, query again later; when their time is up, end the trade. A trade
//! whose code or trade number the buyer holds is known to be unpaid by the last query, so it
//! is closed (`alipay.trade.close`): a payment that beats the close makes the close fail and
//! is honoured, never refunded behind the back of a dispense. A trade whose creation answer
//! was lost is cancelled (`alipay.trade.cancel`, which also refunds a payment). Never guess.

use alipay::api::trade::{Cancel, CancelAction, Close, Query};
use alipay::{CallOptions, Outcome, TradeStatus};

use super::Next;
use crate::domain::order::{OrderEvent, OrderState};
use crate::services::Services;
use crate::store::orders::{self, Order, OrderError};

/// One step of resolving order `order_id`.
pub async fn resolve(svc: &Services, order_id: i64) -> anyhow::Result<Next> {
    let Some(mut order) = orders::by_id(&svc.db, order_id).await? else {
        return Ok(Next::Done);
    };
    if !matches!(
        order.state,
        OrderState::AwaitingPayment | OrderState::PaymentUnknown
    ) {
        return Ok(Next::Done);
    }
    let now = svc.now();
    if order.state == OrderState::AwaitingPayment
        && order.qr_code.is_none()
        && order.trade_no.is_none()
    {
        // By the first query nobody holds a code or trade number: Alipay's answer is lost
        // (or its job still failing). Say so before cancelling, in the row a late answer
        // needs to find waiting, so that answer is never shown for a cancelled trade.
        if !give_up_unanswered(svc, order.id, now).await? {
            // An answer was recorded in between: look again.
            return Ok(Next::At(now));
        }
        order.state = OrderState::PaymentUnknown;
    }
    // The buyer can pay until their time is up if they hold something to pay with: the QR code
    // on the machine's screen, or the trade number the H5 page passes to `tradePay`. Without
    // either (the create/precreate answer was lost) nobody can pay: resolve at once.
    // Once a cancel went out, the trade ends by it: nothing is waited for.
    let can_still_pay = (order.qr_code.is_some() || order.trade_no.is_some())
        && now < order.expires_at
        && order.cancel_sent_at.is_none();
    let poll_again = Next::At(
        (now + i64::from(svc.sale_terms.poll_interval_secs) * 1000)
            .min(order.expires_at.max(now + 1000)),
    );
    match svc
        .alipay
        .execute(
            &Query::by_out_trade_no(&order.out_trade_no),
            &CallOptions::default(),
        )
        .await
    {
        Outcome::Success(q) => match q.trade_status {
            // Paid after the cancel went out (or before it was carried out): that cancel,
            // sent again as Alipay prescribes, refunds it. Nothing is served.
            TradeStatus::TradeSuccess | TradeStatus::TradeFinished
                if order.cancel_sent_at.is_some() =>
            {
                // Kept first, as a notification of it would: the order is then never
                // closed as unpaid, whatever the cancel answers.
                if order.trade_no.is_none() && !keep_paid_trade(svc, &order, &q.trade_no).await? {
                    return Ok(Next::At(now));
                }
                let paid = Found::Paid {
                    trade_no: &q.trade_no,
                };
                cancel(svc, &order, paid).await
            }
            TradeStatus::TradeSuccess | TradeStatus::TradeFinished => {
                confirm_paid(svc, &order, &q.trade_no, "query").await?;
                Ok(Next::Done)
            }
            // Closed after a payment: refunded in full, by a cancel whose answer or commit
            // was lost, or by hand. The money went back, and the order says so. A payment
            // seen after the cancel went out (its trade number kept) counts, whatever the
            // query's answer shows of it.
            TradeStatus::TradeClosed
                if q.send_pay_date.is_some()
                    || q.buyer_pay_amount.is_some_and(|a| a.fen() > 0)
                    || (order.cancel_sent_at.is_some() && order.trade_no.is_some()) =>
            {
                cancelled_with_refund(
                    svc,
                    &order,
                    Some(&q.trade_no),
                    "query says TRADE_CLOSED after a payment: refunded in full",
                )
                .await?;
                Ok(Next::Done)
            }
            TradeStatus::TradeClosed => {
                close_unpaid(svc, &order, "query says TRADE_CLOSED").await?;
                Ok(Next::Done)
            }
            TradeStatus::WaitBuyerPay if can_still_pay => Ok(poll_again),
            TradeStatus::WaitBuyerPay => end_unpaid(svc, &order, Found::Unpaid).await,
        },
        // Before the buyer scans a precreated code, Alipay does not know the trade yet.
        Outcome::Failure(f) if f.sub_code() == "ACQ.TRADE_NOT_EXIST" => {
            if can_still_pay {
                Ok(poll_again)
            } else {
                end_unpaid(svc, &order, Found::Nothing).await
            }
        }
        Outcome::Failure(f) => anyhow::bail!("query refused: {f}"),
        Outcome::Unknown(u) => anyhow::bail!("query result unknown: {u}"),
    }
}

/// [`orders::give_up_unanswered`] with its timeline entry; false when an answer came first.
async fn give_up_unanswered(svc: &Services, order_id: i64, now: i64) -> anyhow::Result<bool> {
    let mut tx = svc.db.begin().await?;
    if !orders::give_up_unanswered(&mut *tx, order_id, now).await? {
        return Ok(false);
    }
    orders::add_event(
        &mut *tx,
        order_id,
        now,
        "system",
        "answer_lost",
        "no QR code or trade number recorded by the first query: resolved by query, then cancel",
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Refusals of a cancel that no repeat changes (Alipay's cancel errors).
const CANCEL_NEVER: [&str; 3] = [
    "ACQ.TRADE_CANCEL_TIME_OUT",
    "ACQ.CANCEL_NOT_ALLOWED",
    "ACQ.TRADE_HAS_FINISHED",
];

/// Keeps on the order the number of a trade the query found paid after its cancel went out
/// (as [`orders::record_paid_after_cancel`]); false when the order moved on meanwhile.
async fn keep_paid_trade(svc: &Services, order: &Order, trade_no: &str) -> anyhow::Result<bool> {
    let mut tx = svc.db.begin().await?;
    match orders::record_paid_after_cancel(&mut tx, order.id, trade_no, svc.now()).await {
        Ok(()) => {}
        Err(OrderError::Concurrent(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    match tx.commit().await {
        Ok(()) => Ok(true),
        Err(e) if e.is_rows_not_as_expected() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What the query just before a cancel found of the trade.
#[derive(Debug, Clone, Copy)]
enum Found<'a> {
    /// No trade.
    Nothing,
    /// The trade, waiting for the buyer.
    Unpaid,
    /// The trade, paid, found so after the cancel first went out.
    Paid {
        /// Alipay's trade number.
        trade_no: &'a str,
    },
}

/// Ends a trade the last query found unpaid or did not find, right after that query.
async fn end_unpaid(svc: &Services, order: &Order, found: Found<'_>) -> anyhow::Result<Next> {
    match order.state {
        OrderState::AwaitingPayment => close(svc, order).await,
        _ => cancel(svc, order, found).await,
    }
}

/// Closes a trade known to be unpaid. If the buyer paid in between, Alipay refuses the close
/// and the next query finds the payment, which is then served like any other.
async fn close(svc: &Services, order: &Order) -> anyhow::Result<Next> {
    match svc
        .alipay
        .execute(
            &Close::by_out_trade_no(&order.out_trade_no),
            &CallOptions::default(),
        )
        .await
    {
        Outcome::Success(_) => {
            close_unpaid(svc, order, "closed after the buyer's time ran out").await?;
            Ok(Next::Done)
        }
        // Never scanned: Alipay has no trade to close, and no money exists.
        Outcome::Failure(f) if f.sub_code() == "ACQ.TRADE_NOT_EXIST" => {
            close_unpaid(svc, order, "never scanned").await?;
            Ok(Next::Done)
        }
        // No longer waiting: paid (or closed) since the query. Ask again.
        Outcome::Failure(f) if f.sub_code() == "ACQ.TRADE_STATUS_ERROR" => {
            Ok(Next::At(svc.now() + 1_000))
        }
        Outcome::Failure(f) => anyhow::bail!("close refused: {f}"),
        Outcome::Unknown(u) => anyhow::bail!("close result unknown: {u}"),
    }
}

/// Cancels the order's trade, as `found` by the query just before. That the cancel goes out
/// is stored first: a payment notified while it is on its way is then left for it to refund,
/// never served.
async fn cancel(svc: &Services, order: &Order, found: Found<'_>) -> anyhow::Result<Next> {
    if order.cancel_sent_at.is_none()
        && !orders::mark_cancel_sent(&svc.db, order.id, svc.now()).await?
    {
        // Paid or ended since it was read: look again.
        return Ok(Next::At(svc.now()));
    }
    match svc
        .alipay
        .execute(
            &Cancel::by_out_trade_no(&order.out_trade_no),
            &CallOptions::default(),
        )
        .await
    {
        Outcome::Success(c) => {
            if c.retry_flag == Some(true) {
                return Ok(Next::At(svc.now() + 3_000));
            }
            match c.action {
                Some(CancelAction::Refund) => {
                    cancelled_with_refund(
                        svc,
                        order,
                        c.trade_no.as_deref(),
                        "paid at the last moment; cancel refunded it in full",
                    )
                    .await?;
                }
                Some(CancelAction::Close) => {
                    close_unpaid(svc, order, "cancelled after the buyer's time ran out").await?
                }
                // No action named: "trade not found, or the call failed". The query before
                // found no trade: none exists, and no money. It found one: the call failed,
                // and the next query tells whether it was paid (and refunded) or closed.
                None | Some(CancelAction::Other(_)) if matches!(found, Found::Nothing) => {
                    close_unpaid(svc, order, "never created: cancel found no trade").await?
                }
                None | Some(CancelAction::Other(_)) => return Ok(Next::At(svc.now() + 3_000)),
            }
            Ok(Next::Done)
        }
        // The query just found it paid: ask again, backing off.
        Outcome::Failure(f)
            if f.sub_code() == "ACQ.TRADE_NOT_EXIST" && matches!(found, Found::Paid { .. }) =>
        {
            anyhow::bail!("cancel found no trade the query found paid: {f}")
        }
        // Nothing to cancel: the code was never scanned, so no trade and no money exist.
        Outcome::Failure(f) if f.sub_code() == "ACQ.TRADE_NOT_EXIST" => {
            close_unpaid(svc, order, "never scanned").await?;
            Ok(Next::Done)
        }
        // A paid trade Alipay will never cancel (its 24 hours are over, cancelling is not
        // allowed for it, it finished): the payment goes back by a refund instead, as
        // Alipay's answer says. Asking again would never end. Any other refusal may pass.
        Outcome::Failure(f) if CANCEL_NEVER.contains(&f.sub_code()) => match found {
            Found::Paid { trade_no } => refund_instead(svc, order, trade_no, &f.to_string()).await,
            _ => anyhow::bail!("cancel refused: {f}"),
        },
        Outcome::Failure(f) => anyhow::bail!("cancel refused: {f}"),
        Outcome::Unknown(u) => anyhow::bail!("cancel result unknown: {u}"),
    }
}

/// Records that the trade was paid and then refunded in full by Alipay (a cancel that
/// refunded): the order ends refunded, its stock released, on the timeline and the audit trail.
async fn cancelled_with_refund(
    svc: &Services,
    order: &Order,
    trade_no: Option<&str>,
    why: &str,
) -> anyhow::Result<()> {
    let mut tx = svc.db.begin().await?;
    refunded_in_full_in(&mut tx, order, trade_no, svc.now(), why).await?;
    tx.commit().await?;
    stop_showing(svc, order).await;
    Ok(())
}

/// [`cancelled_with_refund`]'s writes, in the caller's transaction (a notification's).
/// `trade_no`, Alipay's number for the trade when the answer named it, is kept on the order
/// (unless one is already there) so support can find the trade the money went through.
pub async fn refunded_in_full_in(
    tx: &mut crate::store::Tx,
    order: &Order,
    trade_no: Option<&str>,
    now: i64,
    why: &str,
) -> Result<(), OrderError> {
    orders::transition(
        &mut **tx,
        order.id,
        order.state,
        OrderEvent::CancelledWithRefund,
        now,
    )
    .await?;
    orders::release_reservations(&mut **tx, order.id).await?;
    crate::store::query(
        "UPDATE orders SET refunded_fen = total_fen, trade_no = COALESCE(trade_no, $2) WHERE id = $1",
    )
    .bind(order.id)
    .bind(trade_no)
    .execute(&mut **tx)
    .await?;
    orders::add_event(&mut **tx, order.id, now, "alipay", "cancelled", why).await?;
    crate::store::audit::record(
        &mut **tx,
        now,
        "alipay",
        "cancelled_with_refund",
        &format!("order:{}", order.id),
        &match trade_no.or(order.trade_no.as_deref()) {
            Some(t) => format!(
                "{} paid and refunded in full by Alipay, trade {t}",
                order.total
            ),
            None => format!("{} paid and refunded in full by Alipay", order.total),
        },
    )
    .await?;
    Ok(())
}

/// Closes the order as unpaid. One whose payment was unknown is not closed once a payment
/// of it was notified after its cancel went out (`Concurrent`: the next query decides).
async fn close_unpaid(svc: &Services, order: &Order, why: &str) -> anyhow::Result<()> {
    let now = svc.now();
    let mut tx = svc.db.begin().await?;
    if order.state == OrderState::PaymentUnknown {
        orders::close_cancelled_unpaid(&mut tx, order.id, now).await?;
        orders::release_reservations(&mut *tx, order.id).await?;
    } else {
        orders::close_unpaid_in(&mut tx, order.id, order.state, now).await?;
    }
    orders::add_event(&mut *tx, order.id, now, "system", "closed", why).await?;
    tx.commit().await?;
    stop_showing(svc, order).await;
    Ok(())
}

/// A trade paid after its cancel went out, whose cancel Alipay then refused for good
/// (`refusal`): the order closes with nothing served, its stock released, and the payment
/// goes back by a refund of all of it under the order's fixed number.
async fn refund_instead(
    svc: &Services,
    order: &Order,
    trade_no: &str,
    refusal: &str,
) -> anyhow::Result<Next> {
    let now = svc.now();
    let mut tx = svc.db.begin().await?;
    orders::close_unpaid_in(&mut tx, order.id, order.state, now).await?;
    let why =
        format!("trade {trade_no} paid, its cancel refused ({refusal}): refunded in full instead");
    let refund = crate::pay::refund::refund_unserved_payment(
        &mut tx,
        now,
        (order.id, &order.out_trade_no, trade_no),
        order.total,
        "after its cancel went out",
        ("cancel_refused", &why),
    )
    .await?;
    tx.commit().await?;
    svc.run_soon(crate::pay::refund::job_key(refund.id));
    stop_showing(svc, order).await;
    Ok(Next::Done)
}

/// Tells the machine to take the order's QR code off its screen. Best effort: a machine that
/// misses it shows a code that can no longer be paid, and stops at the code's expiry anyway.
async fn stop_showing(svc: &Services, order: &Order) {
    if order.qr_code.is_none() {
        return;
    }
    let machine = match orders::machine_code(&svc.db, order.id).await {
        Ok(Some(m)) => m,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(order_id = order.id, error = %e, "could not look up the machine");
            return;
        }
    };
    let cancel = crate::device::Command::Cancel {
        order_id: order.out_trade_no.clone(),
    };
    if let Err(e) = svc.device.send(&machine, cancel).await {
        tracing::warn!(order_id = order.id, error = %e, "could not tell the machine to cancel");
    }
}

/// Marks an order paid (from a query) and records its dispense, then delivers it.
pub async fn confirm_paid(
    svc: &Services,
    order: &Order,
    trade_no: &str,
    source: &str,
) -> anyhow::Result<()> {
    let machine = orders::machine_code(&svc.db, order.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("order {} has no machine", order.id))?;
    let now = svc.now();
    let mut tx = svc.db.begin().await?;
    // Read first: on PostgreSQL the paid transition (its check included) and everything
    // after it go out with the commit.
    let lines = orders::lines(&mut *tx, order.id).await?;
    let watch = (now, super::dispense::watch_at(svc, now));
    orders::mark_paid(
        &mut tx,
        order.id,
        order.state,
        (trade_no, None),
        watch,
        source,
    )
    .await?;
    let dispense = super::dispense::record_paid(
        svc,
        &mut tx,
        (order.id, &order.out_trade_no, &machine),
        lines,
        now,
    )
    .await?;
    tx.commit().await?;
    svc.device.deliver(&dispense).await;
    Ok(())
}
