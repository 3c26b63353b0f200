//! Refunds, exactly once. A refund is first written down with its `out_request_no` (the
//! idempotency key Alipay honours), then sent by a job. Every retry reuses the same number and
//! amount; a `fund_change` of `Y` or a refund query's `REFUND_SUCCESS` is the only proof of
//! success. The order's refunded total moves in the same transaction as the refund's state,
//! and the database refuses a total above the order's.

use alipay::api::trade::{Refund as RefundCall, RefundQuery};
use alipay::{Amount, CallOptions, Outcome};

use crate::domain::fen::Fen;
use crate::domain::order::RefundState;
use crate::jobs::Next;
use crate::services::Services;
use crate::store::orders::{self, OrderError};
use crate::store::{StoreError, jobs};

/// Why a refund was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    /// Amount of zero or less.
    #[error("a refund must be at least 0.01")]
    NotPositive,
    /// More than what is left to refund.
    #[error("refund of {asked} exceeds the {left} still refundable")]
    TooMuch {
        /// Asked.
        asked: Fen,
        /// Left.
        left: Fen,
    },
    /// The order was never paid.
    #[error("order {0} is not paid")]
    NotPaid(i64),
    /// The same key was used for a different amount.
    #[error("refund {0} exists with another amount")]
    KeyReused(String),
    /// Unknown order.
    #[error("order not found")]
    NotFound,
    /// The store.
    #[error(transparent)]
    Store(#[from] OrderError),
}

impl From<crate::store::Error> for RefundError {
    fn from(e: crate::store::Error) -> Self {
        RefundError::Store(OrderError::from(e))
    }
}

impl From<StoreError> for RefundError {
    fn from(e: StoreError) -> Self {
        RefundError::Store(OrderError::Store(e))
    }
}

/// A refund as written down.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefundRecord {
    /// Row id.
    pub id: i64,
    /// The idempotency key sent to Alipay.
    pub out_request_no: String,
    /// Amount.
    pub amount_fen: i64,
    /// State name.
    pub state: String,
}

/// Writes a refund of `amount` for `order_id` under `out_request_no` and queues it. Calling
/// again with the same number and amount returns the same refund; another amount is refused.
pub async fn request(
    svc: &Services,
    order_id: i64,
    out_request_no: &str,
    amount: Fen,
    reason: &str,
    actor: &str,
) -> Result<RefundRecord, RefundError> {
    let attempt = || async {
        let mut tx = svc.db.begin().await?;
        let asked = request_in(
            &mut tx,
            svc.now(),
            order_id,
            out_request_no,
            amount,
            reason,
            actor,
        )
        .await?;
        tx.commit().await?;
        Ok::<_, RefundError>(asked)
    };
    let (record, asked) = match attempt().await {
        // The same number sent twice at once: the other request wrote it first (its unique
        // index refused this one). Once more finds it and answers as for any repeat.
        Err(e) if e.is_unique_violation() => attempt().await?,
        other => other?,
    };
    // Asked again while still open: sent now, not after its pause or back-off.
    if asked == Asked::Again
        && matches!(record.state.as_str(), "requested" | "unknown")
        && let Err(e) = send_now(svc, record.id).await
    {
        // The refund is written; its job (or, after a day, the attention list) carries on.
        tracing::warn!(refund_id = record.id, error = %e, "could not make a refund asked again due now");
    }
    svc.run_soon(job_key(record.id));
    Ok(record)
}

/// Makes an open refund's job due now, queueing it again should it have gone (nothing else
/// would send the refund then). A job under way keeps its lease.
async fn send_now(svc: &Services, refund_id: i64) -> Result<(), StoreError> {
    let now = svc.now();
    let key = job_key(refund_id);
    jobs::enqueue_or_run_now(&svc.db.pool, "refund", &key, &job_payload(refund_id), now).await?;
    Ok(())
}

impl RefundError {
    /// Whether a unique index refused the write (a concurrent request with the same number).
    fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            RefundError::Store(OrderError::Store(StoreError::Store(e))) if e.is_unique_violation()
        )
    }
}

/// Whether [`request_in`] wrote the refund or found it written under its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// Written now.
    First,
    /// Written before: this is a repeat.
    Again,
}

/// [`request`] inside the caller's transaction, so a refund can be written in the same
/// commit as the state change that makes it due (a failed vend); tells whether the refund
/// was written now or found.
pub async fn request_in(
    tx: &mut crate::store::Conn,
    now: i64,
    order_id: i64,
    out_request_no: &str,
    amount: Fen,
    reason: &str,
    actor: &str,
) -> Result<(RefundRecord, Asked), RefundError> {
    if !amount.is_positive() {
        return Err(RefundError::NotPositive);
    }
    // Two refunds asked at once (two operators, a vend result, a retried request) are
    // checked one after the other: a repeat finds the refund the first one wrote, another
    // sees what is left after it.
    lock_order(tx, order_id).await?;
    if let Some(existing) = existing(tx, out_request_no, amount).await? {
        return Ok((existing, Asked::Again));
    }
    let order = crate::store::query("SELECT state, total_fen FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(RefundError::NotFound)?;
    let state: String = order.try_get(0)?;
    let paid = crate::domain::order::OrderState::parse(&state).is_some_and(|s| s.is_paid());
    if !paid {
        return Err(RefundError::NotPaid(order_id));
    }
    let total: i64 = order.try_get(1)?;
    let left = Fen(total - committed(&mut *tx, order_id).await?);
    if amount > left {
        return Err(RefundError::TooMuch {
            asked: amount,
            left,
        });
    }
    let record = insert_requested(tx, now, order_id, out_request_no, amount, reason, actor).await?;
    Ok((record, Asked::First))
}

/// Locks the order's row until commit on PostgreSQL (on SQLite, whose writers are one at a
/// time already, a plain read). Every transaction that writes an order's refunds takes it first: one that held
/// a refund's row while it waited for the order's (a refund settling, against a refund being
/// asked under the same number, whose unique check waits for the settling one) deadlocked.
async fn lock_order(tx: &mut crate::store::Conn, order_id: i64) -> Result<(), crate::store::Error> {
    crate::store::query("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE")
        .on_sqlite("SELECT 1 FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(())
}

/// A payment nothing will be served for, `when` said in words: one Alipay reports for an
/// order already closed unpaid (a code scanned after its close found no trade to close), or
/// one Alipay would not cancel. All of it goes back, once (its refund number is fixed); the
/// timeline entry `(kind, detail)` saying why is written with that refund only, so a payment
/// reported again adds nothing.
pub async fn refund_unserved_payment(
    tx: &mut crate::store::Conn,
    now: i64,
    (order_id, out_trade_no, trade_no): (i64, &str, &str),
    total: Fen,
    when: &str,
    (kind, detail): (&str, &str),
) -> Result<RefundRecord, RefundError> {
    let out_request_no = format!("{out_trade_no}L");
    lock_order(tx, order_id).await?;
    if let Some(existing) = existing(tx, &out_request_no, total).await? {
        return Ok(existing);
    }
    orders::add_event(&mut *tx, order_id, now, "alipay", kind, detail).await?;
    // The money came in, once: on the audit trail with the refund that returns it.
    let detail = format!("trade {trade_no}, {when}: refunded in full");
    crate::store::audit::payment_received(&mut *tx, now, order_id, &detail).await?;
    let reason = format!("paid {when}");
    insert_requested(tx, now, order_id, &out_request_no, total, &reason, "system").await
}

/// The refund already requested under `out_request_no`; an error when it was for another
/// amount (a number is never reused).
async fn existing(
    tx: &mut crate::store::Conn,
    out_request_no: &str,
    amount: Fen,
) -> Result<Option<RefundRecord>, RefundError> {
    let Some(row) =
        crate::store::query("SELECT id, amount_fen, state FROM refunds WHERE out_request_no = $1")
            .bind(out_request_no)
            .fetch_optional(&mut *tx)
            .await?
    else {
        return Ok(None);
    };
    let amount_fen: i64 = row.try_get(1)?;
    if amount_fen != amount.0 {
        return Err(RefundError::KeyReused(out_request_no.to_owned()));
    }
    Ok(Some(RefundRecord {
        id: row.try_get(0)?,
        out_request_no: out_request_no.to_owned(),
        amount_fen,
        state: row.try_get(2)?,
    }))
}

/// Writes a requested refund with its timeline entry, audit row and job.
async fn insert_requested(
    tx: &mut crate::store::Conn,
    now: i64,
    order_id: i64,
    out_request_no: &str,
    amount: Fen,
    reason: &str,
    actor: &str,
) -> Result<RefundRecord, RefundError> {
    let id: i64 = crate::store::query(
        "INSERT INTO refunds (order_id, out_request_no, amount_fen, state, reason, created_at, updated_at) VALUES ($1, $2, $3, 'requested', $4, $5, $5) RETURNING id",
    )
    .bind(order_id)
    .bind(out_request_no)
    .bind(amount.0)
    .bind(reason)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?
    .try_get(0)?;
    orders::add_event(
        &mut *tx,
        order_id,
        now,
        "system",
        "refund_requested",
        &format!("{out_request_no}: {amount} ({reason})"),
    )
    .await?;
    crate::store::audit::record(
        &mut *tx,
        now,
        actor,
        "refund_requested",
        &format!("order:{order_id}"),
        &format!("{out_request_no} {amount} {reason}"),
    )
    .await?;
    jobs::enqueue_deferred(&mut *tx, "refund", &job_key(id), &job_payload(id), now, now).await?;
    Ok(RefundRecord {
        id,
        out_request_no: out_request_no.to_owned(),
        amount_fen: amount.0,
        state: "requested".into(),
    })
}

/// What refunds not definitively failed add up to on an order: it counts against what can
/// still be refunded.
async fn committed(tx: &mut crate::store::Conn, order_id: i64) -> Result<i64, RefundError> {
    // SUM of BIGINT is NUMERIC on PostgreSQL: cast it back so both engines return an integer.
    let sum: i64 = crate::store::query("SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) FROM refunds WHERE order_id = $1 AND state <> 'failed'")
        .bind(order_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    Ok(sum)
}

/// What can still be refunded on an order: a refund due automatically (a failed vend) is
/// capped at this, since an operator may have refunded by hand before the result came.
pub async fn left_to_refund(
    tx: &mut crate::store::Conn,
    order_id: i64,
) -> Result<Fen, RefundError> {
    let total: i64 = crate::store::query("SELECT total_fen FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(RefundError::NotFound)?
        .try_get(0)?;
    Ok(Fen((total - committed(tx, order_id).await?).max(0)))
}

/// The dedup key of refund `refund_id`'s job.
pub fn job_key(refund_id: i64) -> String {
    format!("refund:{refund_id}")
}

/// The payload of refund `refund_id`'s job.
fn job_payload(refund_id: i64) -> String {
    serde_json::json!({ "refund_id": refund_id }).to_string()
}

/// One step of the refund job: send (or re-send) the refund, or query it.
pub async fn run(svc: &Services, refund_id: i64) -> anyhow::Result<Next> {
    let Some(row) = crate::store::query(
        "SELECT r.order_id, r.out_request_no, r.amount_fen, r.state, r.reason, o.out_trade_no FROM refunds r JOIN orders o ON o.id = r.order_id WHERE r.id = $1",
    )
    .bind(refund_id)
    .fetch_optional(&svc.db.pool)
    .await?
    else {
        return Ok(Next::Done);
    };
    let order_id: i64 = row.try_get(0)?;
    let out_request_no: String = row.try_get(1)?;
    let amount_fen: i64 = row.try_get(2)?;
    let state = match row.try_get::<String, _>(3)?.as_str() {
        "requested" => RefundState::Requested,
        "unknown" => RefundState::Unknown,
        _ => return Ok(Next::Done),
    };
    let reason: String = row.try_get(4)?;
    let out_trade_no: String = row.try_get(5)?;
    let amount = Amount::from_fen(amount_fen)?;
    let call = RefundCall::new(&out_trade_no, amount, &out_request_no).reason(reason);
    match svc.alipay.execute(&call, &CallOptions::default()).await {
        Outcome::Success(r) if r.fund_change == Some(true) => {
            settle(
                svc,
                refund_id,
                order_id,
                amount_fen,
                state,
                RefundState::Succeeded,
                "fund_change=Y",
            )
            .await?;
            Ok(Next::Done)
        }
        // `10000` without `fund_change=Y` (e.g. a repeat): only the refund query can tell.
        Outcome::Success(_) => {
            confirm_by_query(
                svc,
                refund_id,
                order_id,
                amount_fen,
                state,
                RefundQuery::new(&out_trade_no, &out_request_no),
            )
            .await
        }
        Outcome::Failure(f) => {
            refused(
                svc,
                (refund_id, order_id, amount),
                state,
                &f,
                RefundQuery::new(&out_trade_no, &out_request_no),
            )
            .await
        }
        Outcome::Unknown(u) => {
            mark(svc, refund_id, state, RefundState::Unknown).await?;
            anyhow::bail!("refund result unknown ({u}); retrying with the same out_request_no")
        }
    }
}

/// How long a refund whose earlier send had an unknown result is checked again when its
/// repeats are refused and its query finds nothing (a query may not see a refund made moments
/// before) before the refusal is taken as final.
const REFUSED_REPEAT_CHECKED_MS: i64 = 10 * 60_000;

/// A definite refusal. The refund may still have been made by an earlier send: one whose
/// result was unknown, or one a crash cut off before its answer was recorded. Alipay may
/// check the trade before it looks for a repeat, and a trade this very refund closed is then
/// refused (`ACQ.TRADE_HAS_CLOSE`). So the query decides: refunded, it succeeded; not (yet)
/// refunded after an unknown send, it is checked again for a while; otherwise it failed and
/// needs a person.
async fn refused(
    svc: &Services,
    (refund_id, order_id, amount): (i64, i64, Amount),
    state: RefundState,
    refusal: &alipay::Failure,
    query: RefundQuery,
) -> anyhow::Result<Next> {
    let amount_fen = amount.fen();
    let refunded = match svc.alipay.execute(&query, &CallOptions::default()).await {
        Outcome::Success(q) => made(&q, amount),
        // A definite answer of the query (the trade unknown to it): nothing was refunded.
        Outcome::Failure(_) => false,
        Outcome::Unknown(u) => {
            mark(svc, refund_id, state, RefundState::Unknown).await?;
            anyhow::bail!(
                "refund refused ({refusal}), and its query's result is unknown ({u}); retrying"
            )
        }
    };
    if refunded {
        tracing::info!(refund_id, refusal = %refusal, "a refund refused on a repeat was made by an earlier send");
        return settle_found_made(svc, refund_id, order_id, amount_fen, state).await;
    }
    if state == RefundState::Unknown {
        let now = svc.now();
        match mark_unconfirmed(svc, refund_id, state, now).await? {
            // Another run settled it meanwhile.
            None => return Ok(Next::Done),
            Some(since) if now - since < REFUSED_REPEAT_CHECKED_MS => {
                return Ok(Next::At(now + resend_pause_ms(now - since)));
            }
            Some(_) => {}
        }
    }
    settle(
        svc,
        refund_id,
        order_id,
        amount_fen,
        state,
        RefundState::Failed,
        &refusal.to_string(),
    )
    .await?;
    tracing::error!(refund_id, failure = %refusal, "refund refused by Alipay; needs a person");
    Ok(Next::Done)
}

/// Whether a refund query found the refund made, for `amount`: a refund of another amount
/// under the same number is not ours (`ACQ.DISCORDANT_REPEAT_REQUEST`). An answer without
/// the amount is taken for ours, as the status alone was before.
fn made(q: &alipay::api::trade::RefundQueryResponse, amount: Amount) -> bool {
    q.refund_status.as_deref() == Some("REFUND_SUCCESS")
        && q.refund_amount.is_none_or(|a| a == amount)
}

/// Settles a refund the refund query found made.
async fn settle_found_made(
    svc: &Services,
    refund_id: i64,
    order_id: i64,
    amount_fen: i64,
    state: RefundState,
) -> anyhow::Result<Next> {
    settle(
        svc,
        refund_id,
        order_id,
        amount_fen,
        state,
        RefundState::Succeeded,
        "REFUND_SUCCESS",
    )
    .await?;
    Ok(Next::Done)
}

/// Asks Alipay whether the refund `query` names landed.
async fn confirm_by_query(
    svc: &Services,
    refund_id: i64,
    order_id: i64,
    amount_fen: i64,
    state: RefundState,
    query: RefundQuery,
) -> anyhow::Result<Next> {
    match svc.alipay.execute(&query, &CallOptions::default()).await {
        Outcome::Success(q) if made(&q, Amount::from_fen(amount_fen)?) => {
            settle_found_made(svc, refund_id, order_id, amount_fen, state).await
        }
        // Not (yet) refunded: send again with the same number after a pause.
        _ => {
            let now = svc.now();
            let since = mark_unconfirmed(svc, refund_id, state, now).await?;
            Ok(Next::At(now + resend_pause_ms(now - since.unwrap_or(now))))
        }
    }
}

/// Marks an open refund `unknown` after its query could not confirm it; answers since when
/// Alipay has left it unconfirmed (`None` if another run settled it meanwhile).
async fn mark_unconfirmed(
    svc: &Services,
    refund_id: i64,
    from: RefundState,
    now: i64,
) -> anyhow::Result<Option<i64>> {
    from.on(RefundState::Unknown).map_err(anyhow::Error::msg)?;
    let row = crate::store::query(
        "UPDATE refunds SET state = 'unknown', updated_at = $1, unconfirmed_since = COALESCE(unconfirmed_since, $1) \
         WHERE id = $2 AND state IN ('requested', 'unknown') RETURNING unconfirmed_since",
    )
    .bind(now)
    .bind(refund_id)
    .fetch_optional(&svc.db.pool)
    .await?;
    Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?)
}

/// How long a refund Alipay has not confirmed waits before it is sent again, by how long it
/// has been unconfirmed: 10 s at first (Alipay asks for 10 s before a refund is queried), then
/// a sixth of that time, at most 10 minutes. A refund unconfirmed for a day is sent about 170
/// times, not 8,640, and after a day it is on the attention list (`unconfirmed_refunds`).
pub fn resend_pause_ms(age_ms: i64) -> i64 {
    (age_ms / 6).clamp(10_000, 600_000)
}

async fn mark(
    svc: &Services,
    refund_id: i64,
    from: RefundState,
    to: RefundState,
) -> anyhow::Result<()> {
    let to = from.on(to).map_err(anyhow::Error::msg)?;
    // Only a refund still open: a run that outlived its lease must not write over the
    // `succeeded` or `failed` another run settled meanwhile.
    crate::store::query("UPDATE refunds SET state = $1, updated_at = $2 WHERE id = $3 AND state IN ('requested', 'unknown')")
        .bind(state_name(to))
        .bind(svc.now())
        .bind(refund_id)
        .execute(&svc.db.pool)
        .await?;
    Ok(())
}

async fn settle(
    svc: &Services,
    refund_id: i64,
    order_id: i64,
    amount_fen: i64,
    from: RefundState,
    to: RefundState,
    detail: &str,
) -> anyhow::Result<()> {
    let to = from.on(to).map_err(anyhow::Error::msg)?;
    let now = svc.now();
    let mut tx = svc.db.begin().await?;
    lock_order(&mut tx, order_id).await?;
    let moved = crate::store::query("UPDATE refunds SET state = $1, updated_at = $2 WHERE id = $3 AND state IN ('requested', 'unknown')")
        .bind(state_name(to))
        .bind(now)
        .bind(refund_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if moved == 1 && to == RefundState::Succeeded {
        crate::store::query(
            "UPDATE orders SET refunded_fen = refunded_fen + $1, updated_at = $2 WHERE id = $3",
        )
        .bind(amount_fen)
        .bind(now)
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
    }
    let kind = if to == RefundState::Succeeded {
        "refunded"
    } else {
        "refund_failed"
    };
    orders::add_event(&mut *tx, order_id, now, "alipay", kind, detail).await?;
    if moved == 1 {
        crate::store::audit::record(
            &mut *tx,
            now,
            "alipay",
            kind,
            &format!("order:{order_id}"),
            &format!("refund {refund_id}: {amount_fen} fen ({detail})"),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

fn state_name(s: RefundState) -> &'static str {
    match s {
        RefundState::Requested => "requested",
        RefundState::Unknown => "unknown",
        RefundState::Succeeded => "succeeded",
        RefundState::Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::resend_pause_ms;

    #[test]
    fn an_unconfirmed_refund_is_sent_again_less_often_as_it_ages() {
        assert_eq!(resend_pause_ms(0), 10_000, "Alipay's 10 s before a query");
        assert_eq!(resend_pause_ms(-5_000), 10_000, "a clock set back");
        assert_eq!(resend_pause_ms(60_000), 10_000);
        assert_eq!(resend_pause_ms(6 * 60_000), 60_000);
        assert_eq!(resend_pause_ms(60 * 60_000), 600_000);
        assert_eq!(resend_pause_ms(i64::MAX), 600_000);
        let ages = [0, 30_000, 120_000, 900_000, 3_600_000, 86_400_000];
        assert!(
            ages.windows(2)
                .all(|w| resend_pause_ms(w[0]) <= resend_pause_ms(w[1]))
        );
        // A day of pauses: about 170 sends, not one every 10 s.
        let (mut age, mut sends) = (0, 0);
        while age < 86_400_000 {
            age += resend_pause_ms(age);
            sends += 1;
        }
        assert!((100..200).contains(&sends), "{sends} sends in a day");
    }
}
